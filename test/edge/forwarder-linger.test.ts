/**
 * The forwarder's linger (cloud.lingerMs, docs/ingest-protocol.md "When the gateway sends"): a
 * batch short of the working size waits up to lingerMs for more readings, a full one goes at once,
 * close() sends a held one at once; and end to end, a steady trickle of readings becomes one ingest
 * request per lingerMs instead of one per commit, with nothing lost and nothing held beyond the
 * linger and a round trip.
 */
import { performance } from 'node:perf_hooks';
import type { MqttClient } from 'mqtt';
import { insertReadings, range, seqsOf, until, useForwarderHarness } from '../support/forwarder-fixtures.js';
import { type TestGateway, connectDevice, endClient, eventually, publish, startTestGateway, tempDir } from '../support/gateway.js';
import { recordRoute, startRecordedCloud } from '../support/request-recorder.js';
import { credentials } from '../cloud/speed-fixtures.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('linger, against a scripted cloud', () => {
  const h = useForwarderHarness();

  test('a small batch waits for more; the batch that fills it goes at once, whole, and the rest (waiting as long) after it', async () => {
    const { fwd } = h.make({ lingerMs: 60_000, batchMaxReadings: 10, idlePollMs: 60_000 });
    await fwd.start();
    await insertReadings(h.fx, 1, 4);
    fwd.notify(4);
    await sleep(300);
    expect(h.cloud.requests).toHaveLength(0);
    await insertReadings(h.fx, 5, 3);
    fwd.notify(7);
    await sleep(100);
    expect(h.cloud.requests).toHaveLength(0);
    await insertReadings(h.fx, 8, 5);
    fwd.notify(12); // 12 pending >= 10: a full batch, no waiting out the minute
    await until(async () => (await h.pending()) === 0, 5000, 'everything acknowledged');
    expect(h.cloud.requests.map(seqsOf)).toEqual([range(1, 10), [11, 12]]);
  });

  test('without a lastSeq hint, notify() re-reads and still sends only a full batch at once', async () => {
    const { fwd } = h.make({ lingerMs: 60_000, batchMaxReadings: 5, idlePollMs: 60_000 });
    await fwd.start();
    await insertReadings(h.fx, 1, 2);
    fwd.notify();
    await sleep(200);
    expect(h.cloud.requests).toHaveLength(0);
    await insertReadings(h.fx, 3, 3);
    fwd.notify();
    await until(() => h.cloud.requests.length === 1, 5000, 'the full batch');
    expect(h.cloud.requests.map(seqsOf)).toEqual([range(1, 5)]);
  });

  test('a held batch goes once lingerMs has passed since its first commit', async () => {
    // The second commit must come inside the linger (150 ms after the first, 1,350 ms to spare: a
    // stall of 150 ms in a loaded run sent 1..3 alone when the linger was 300 ms).
    const LINGER_MS = 1_500;
    const { fwd } = h.make({ lingerMs: LINGER_MS, idlePollMs: 60_000 });
    await fwd.start();
    const t0 = performance.now();
    await insertReadings(h.fx, 1, 3);
    fwd.notify(3);
    await sleep(150);
    await insertReadings(h.fx, 4, 3);
    fwd.notify(6); // later rows do not restart the clock
    await h.cloud.waitForRequests(1, 10_000);
    expect(h.cloud.requests[0].at - t0).toBeGreaterThanOrEqual(LINGER_MS - 5);
    expect(h.cloud.requests.map(seqsOf)).toEqual([range(1, 6)]);
  });

  test('rows found without a commit notice (a backlog at start) go at once', async () => {
    await insertReadings(h.fx, 1, 3);
    const { fwd } = h.make({ lingerMs: 60_000 });
    await fwd.start();
    await h.cloud.waitForRequests(1, 5000);
    expect(h.cloud.requests.map(seqsOf)).toEqual([range(1, 3)]);
  });

  test('close() sends a held batch at once instead of leaving it for the next start', async () => {
    const { fwd } = h.make({ lingerMs: 60_000, idlePollMs: 60_000 });
    await fwd.start();
    await insertReadings(h.fx, 1, 3);
    fwd.notify(3);
    await sleep(100);
    expect(h.cloud.requests).toHaveLength(0);
    expect(await fwd.close()).toEqual({ pending: 0 });
    expect(h.cloud.requests.map(seqsOf)).toEqual([range(1, 3)]);
  });

  test('lingerMs 0 sends after every commit; a negative lingerMs is refused with the key named', async () => {
    const { fwd } = h.make({ lingerMs: 0, idlePollMs: 60_000 });
    await fwd.start();
    await insertReadings(h.fx, 1, 2);
    fwd.notify(2);
    await h.cloud.waitForRequests(1, 10_000);
    expect(h.cloud.requests.map(seqsOf)).toEqual([range(1, 2)]);
    expect(() => h.make({ lingerMs: -1 })).toThrow(expect.objectContaining({ code: 'BRAID_ERR_CONFIG_INVALID', message: expect.stringContaining('lingerMs') }));
  });
});

describe('linger, end to end: MQTT.js device -> gateway -> real cloud', () => {
  const GW = 'gw-linger';
  let cloudDir: { path: string; remove: () => void };
  let closeCloud: (() => Promise<void>) | null = null;
  let gw: TestGateway | null = null;
  let client: MqttClient | null = null;

  beforeEach(() => { cloudDir = tempDir('braid-linger-cloud-'); });
  afterEach(async () => {
    if (client) await endClient(client);
    client = null;
    await gw?.close();
    gw = null;
    await closeCloud?.();
    closeCloud = null;
    cloudDir.remove();
  });

  test('a steady trickle becomes one ingest request per lingerMs; nothing lost, nothing held beyond linger + a round trip', async () => {
    const LINGER = 200;
    const { tokens } = await credentials(cloudDir.path, [GW]);
    const rec = recordRoute('/api/v1/ingest');
    const cloud = await startRecordedCloud(cloudDir.path, rec);
    closeCloud = cloud.close;
    const { url } = cloud;
    // The forwarder's linger alone: the group commit's (outbox.groupCommitMs, 25 ms by default for a
    // device sending one message at a time) would hold each PUBACK below, and the trickle would be
    // ~65 messages in 2 s instead of hundreds: ~5 a request, at the edge of the bound below.
    gw = await startTestGateway({ id: GW, cloud: { url, token: tokens[GW], lingerMs: LINGER }, outbox: { epochIdleMs: 60_000, groupCommitMs: 0 } });
    // A round trip as the gateway lives it: one forwarder step, from reading the outbox through
    // gzip, the request and the answer to the recorded ack (the cloud's own handling is only part
    // of it; on a loaded machine the disk and the thread pool are the rest).
    const steps: number[] = [];
    const fwd = gw.gateway.forwarder as unknown as { step: (flush: boolean) => Promise<unknown> };
    const step = fwd.step.bind(fwd);
    fwd.step = async (flush) => {
      const s = performance.now();
      try { return await step(flush); } finally { steps.push(performance.now() - s); }
    };
    const secret = await gw.addDevice('dev-1');
    client = await connectDevice(gw.mqttUrl, 'dev-1', secret);

    // One reading per message, each PUBACKed (committed [INV-1]) before the next: seq i+1 is message i.
    const acked: number[] = [];
    const t0 = performance.now();
    for (let i = 0; performance.now() - t0 < 2000; i++) {
      await publish(client, 'devices/dev-1/telemetry', JSON.stringify({ temp: i }), 1);
      acked.push(performance.now());
      await sleep(4);
    }
    const n = acked.length;
    await eventually(() => rec.requests.some((r) => Number(r.answer?.ackSeq) >= n), 10_000);
    const span = acked[n - 1] - acked[0];

    const withReadings = rec.requests.filter((r) => Number(r.answer?.stored ?? 0) + Number(r.answer?.duplicates ?? 0) > 0);
    expect(rec.requests.every((r) => r.status === 200)).toBe(true);
    // Nothing lost, nothing twice: every seq 1..n stored once.
    expect(withReadings.reduce((s, r) => s + Number(r.answer!.stored), 0)).toBe(n);
    expect(withReadings.reduce((s, r) => s + Number(r.answer!.duplicates ?? 0), 0)).toBe(0);
    // Sends of small batches are at least lingerMs apart: at most one per lingerMs of trickle, plus
    // the first and the tail (without the linger it was about one per commit: ~n).
    expect(withReadings.length).toBeLessThanOrEqual(Math.floor(span / LINGER) + 3);
    expect(n / withReadings.length).toBeGreaterThan(5);

    // No reading waited longer than the linger plus the request in flight and its own, measured
    // from its PUBACK to the cloud's answer that covers it (slack for a loaded machine's timers).
    const rtt = Math.max(...rec.requests.map((r) => r.end - r.start), ...steps);
    const covering = [...rec.requests].sort((a, b) => a.end - b.end);
    let worst = 0;
    for (let i = 0; i < n; i++) {
      const answer = covering.find((r) => Number(r.answer?.ackSeq) >= i + 1)!;
      worst = Math.max(worst, answer.end - acked[i]);
    }
    expect(worst).toBeLessThanOrEqual(LINGER + 2 * rtt + 250);
  });
});
