/**
 * The forwarder against a scripted real HTTP server (undici style) and a real gateway.db:
 * docs/ingest-protocol.md, gateway side.
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { type AckInfo, Forwarder, type ForwarderOptions } from '../../edge/forwarder/index.js';
import { getMeta, outboxRowBytes } from '../../edge/store/schema.js';
import { type Logger, nullLogger } from '../../shared/logger.js';
import {
  type GatewayFixture, ack, decodeIngest, insertEpoch, insertGap, insertReadings, openGatewayFixture, outboxSeqs, range, until,
} from '../support/forwarder-fixtures.js';
import { HttpScript, type ScriptedRequest, answer } from '../support/http-script.js';

let fx: GatewayFixture;
let cloud: HttpScript;
let forwarders: Forwarder[] = [];

beforeEach(async () => {
  fx = await openGatewayFixture();
  cloud = await HttpScript.start(ack());
});

afterEach(async () => {
  // Reverse start order: forwarder, then server, then the database.
  for (const f of forwarders) await f.close();
  forwarders = [];
  await cloud.close();
  await fx.close();
});

interface Made { fwd: Forwarder; registry: Registry; acks: AckInfo[] }

function make(opts: Partial<ForwarderOptions> = {}, logger: Logger = nullLogger()): Made {
  const registry = new Registry();
  const acks: AckInfo[] = [];
  const fwd = new Forwarder(
    { reader: fx.reader, writes: fx.writes, logger, registry, gatewayId: 'gw-1', onAcked: (i) => acks.push(i) },
    { url: cloud.url, token: 'tok-1', retryInitialMs: 20, retryMaxMs: 400, requestTimeoutMs: 2000, idlePollMs: 50, ...opts },
  );
  forwarders.push(fwd);
  return { fwd, registry, acks };
}

const seqsOf = (r: ScriptedRequest) => decodeIngest(r).readings.map((x) => x[0]);
const pending = async () => (await outboxSeqs(fx)).length;

async function metric(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (!m) throw new Error(`no metric ${name}`);
  const v = (await m.get()).values.find((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l));
  return v?.value ?? 0;
}

/** The seqs in first-arrival order: what the cloud ends up with, however often a batch was resent. */
function firstArrivals(reqs: ScriptedRequest[]): number[] {
  const seen = new Set<number>();
  const out: number[] = [];
  for (const r of reqs) for (const s of seqsOf(r)) if (!seen.has(s)) { seen.add(s); out.push(s); }
  return out;
}

function capture(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({ write(chunk, _enc, cb) { lines.push(JSON.parse(String(chunk))); cb(); } });
  return { logger: pino({ level: 'warn' }, stream), lines };
}

describe('Forwarder', () => {
  test('sends every row in seq order, in batches of at most batchMaxReadings, as the protocol says', async () => {
    await insertReadings(fx, 1, 25);
    const { fwd, registry, acks } = make({ batchMaxReadings: 10 });
    await fwd.start();
    await until(async () => fwd.status().ackedSeq === 25 && (await pending()) === 0);

    expect(cloud.requests.map((r) => seqsOf(r).length)).toEqual([10, 10, 5]);
    expect(cloud.requests.flatMap(seqsOf)).toEqual(range(1, 25));
    const first = cloud.requests[0];
    expect(first).toMatchObject({ method: 'POST', url: '/api/v1/ingest' });
    expect(first.headers).toMatchObject({ authorization: 'Bearer tok-1', 'content-encoding': 'gzip', 'content-type': 'application/json' });
    const body = decodeIngest(first);
    expect(body).toMatchObject({ v: 1, gateway: 'gw-1', firstSeq: 1, lastSeq: 10, epochs: [], gaps: [] });
    expect(body.readings[0]).toEqual([1, 1, 'dev-1', 'temp', 1_732_406_400_001, 0.1]);
    expect(typeof body.sentAt).toBe('number');

    expect(acks).toEqual([
      { ackSeq: 10, rows: 10, bytes: 10 * outboxRowBytes('dev-1', 'temp') },
      { ackSeq: 20, rows: 10, bytes: 10 * outboxRowBytes('dev-1', 'temp') },
      { ackSeq: 25, rows: 5, bytes: 5 * outboxRowBytes('dev-1', 'temp') },
    ]);
    expect(await getMeta(fx.reader, 'acked_seq')).toBe('25');
    expect(fwd.status()).toMatchObject({ ackedSeq: 25, inflightUpToSeq: 25, consecutiveFailures: 0, sentReadings: 25, batchesSent: 3, lastError: null });
    expect(fwd.status().lastSuccessAt).toEqual(expect.any(Number));
    expect(await metric(registry, 'braid_forward_requests_total', { outcome: 'ok' })).toBe(3);
    expect(await metric(registry, 'braid_forward_readings_sent_total')).toBe(25);
    expect(await metric(registry, 'braid_forward_acked_seq')).toBe(25);
    expect(await metric(registry, 'braid_forward_bytes_sent_total')).toBe(cloud.requests.reduce((n, r) => n + r.body.length, 0));
  });

  test('[INV-1] rows survive a destroyed socket, a 500 and a timeout; deleted only after a 2xx', async () => {
    await insertReadings(fx, 1, 30);
    const seenWhileFailing: number[] = [];
    const look = async () => { seenWhileFailing.push(await pending()); };
    cloud.script(
      answer.checking(look, answer.destroy()),
      answer.checking(look, answer.status(500, { code: 'BRAID_ERR_INTERNAL', message: 'disk' })),
      answer.checking(look, answer.after(5000, ack())), // past requestTimeoutMs
    );
    const { fwd, registry } = make({ batchMaxReadings: 10, requestTimeoutMs: 150 });
    await fwd.start();
    await until(async () => (await pending()) === 0, 5000, 'outbox drained');

    expect(seenWhileFailing).toEqual([30, 30, 30]);
    expect(cloud.requests.slice(0, 4).map(seqsOf)).toEqual([range(1, 10), range(1, 10), range(1, 10), range(1, 10)]);
    expect(firstArrivals(cloud.requests)).toEqual(range(1, 30));
    for (const r of cloud.requests) expect(seqsOf(r)).toEqual([...seqsOf(r)].sort((a, b) => a - b));
    expect(await metric(registry, 'braid_forward_requests_total', { outcome: 'retry' })).toBe(3);
    expect(fwd.status()).toMatchObject({ ackedSeq: 30, consecutiveFailures: 0, lastError: { code: 'BRAID_ERR_INGEST_TIMEOUT' } });
  });

  test('backs off with delays that double from retryInitialMs', async () => {
    await insertReadings(fx, 1, 3);
    const failures: number[] = [];
    const note = () => { failures.push(fwd.status().consecutiveFailures); };
    cloud.script(...Array.from({ length: 5 }, () => answer.checking(note, answer.status(503, { code: 'BRAID_ERR_UNAVAILABLE' }))));
    const { fwd, registry } = make({ retryInitialMs: 20, retryMaxMs: 1000, jitter: 0 });
    await fwd.start();
    await until(async () => (await pending()) === 0);

    const at = cloud.requests.map((r) => r.at);
    const gaps = at.slice(1).map((t, i) => t - at[i]);
    expect(gaps).toHaveLength(5);
    // Timers never fire early, so the lower bounds are tight; upper bounds only as ratios.
    gaps.forEach((g, k) => expect(g).toBeGreaterThanOrEqual(20 * 2 ** k * 0.9));
    expect(gaps[4] / gaps[0]).toBeGreaterThan(3);
    expect(failures).toEqual([0, 1, 2, 3, 4]);
    expect(await metric(registry, 'braid_forward_consecutive_failures')).toBe(0);
  });

  test('honours Retry-After on a 429', async () => {
    await insertReadings(fx, 1, 3);
    cloud.script(answer.status(429, { code: 'BRAID_ERR_LIMIT_EXCEEDED', message: 'slow down' }, { 'retry-after': '1' }));
    const { fwd } = make({ retryInitialMs: 20, retryMaxMs: 5000 });
    await fwd.start();
    await until(async () => (await pending()) === 0);
    expect(cloud.requests).toHaveLength(2);
    expect(cloud.requests[1].at - cloud.requests[0].at).toBeGreaterThanOrEqual(950);
  });

  test('413 halves the batch at once, and successes grow it back gradually', async () => {
    await insertReadings(fx, 1, 60);
    cloud.script(answer.status(413, { code: 'BRAID_ERR_PAYLOAD_TOO_LARGE' }), answer.status(413, { code: 'BRAID_ERR_PAYLOAD_TOO_LARGE' }));
    const { fwd, registry } = make({ batchMaxReadings: 16, retryInitialMs: 1000 });
    await fwd.start();
    await until(async () => (await pending()) === 0);

    const sizes = cloud.requests.map((r) => seqsOf(r).length);
    expect(sizes.slice(0, 3)).toEqual([16, 8, 4]);
    expect(sizes[3]).toBeGreaterThan(4);
    expect(sizes[3]).toBeLessThan(8);
    expect(Math.max(...sizes.slice(3))).toBeLessThanOrEqual(16);
    expect(firstArrivals(cloud.requests)).toEqual(range(1, 60));
    // No backoff after a 413 (retryInitialMs is 1 s).
    expect(cloud.requests[2].at - cloud.requests[0].at).toBeLessThan(500);
    expect(await metric(registry, 'braid_forward_requests_total', { outcome: 'retry' })).toBe(2);
  });

  test('401 is counted as rejected, logged with its code, and retried with backoff; nothing is dropped', async () => {
    await insertReadings(fx, 1, 5);
    const during: Array<string | undefined> = [];
    cloud.script(
      answer.status(401, { code: 'BRAID_ERR_UNAUTHORIZED', message: 'bad token' }),
      answer.checking(() => { during.push(fwd.status().lastError?.code); }, answer.status(403, { code: 'BRAID_ERR_FORBIDDEN', message: 'other gateway' })),
      answer.checking(async () => { during.push(String(await pending())); }, ack()),
    );
    const { logger, lines } = capture();
    const { fwd, registry } = make({}, logger);
    await fwd.start();
    await until(async () => (await pending()) === 0);

    expect(during).toEqual(['BRAID_ERR_UNAUTHORIZED', '5']);
    expect(await metric(registry, 'braid_forward_requests_total', { outcome: 'rejected' })).toBe(2);
    expect(fwd.status().lastError).toMatchObject({ code: 'BRAID_ERR_FORBIDDEN', status: 403 });
    expect(lines.filter((l) => l.level === 50).map((l) => l.code)).toEqual(['BRAID_ERR_UNAUTHORIZED', 'BRAID_ERR_FORBIDDEN']);
    expect(JSON.stringify(lines)).not.toContain('tok-1');
    expect(firstArrivals(cloud.requests)).toEqual(range(1, 5));
  });

  test('a malformed 2xx acknowledges nothing: rows stay and the batch is resent', async () => {
    await insertReadings(fx, 1, 5);
    const seen: number[] = [];
    const look = async () => { seen.push(await pending()); };
    cloud.script(
      answer.checking(look, answer.status(200, '<html>proxy</html>')),
      answer.checking(look, answer.status(200, { stored: 5 })),
      answer.checking(look, answer.status(200, { ackSeq: '5' })),
      answer.checking(look, ack()),
    );
    const { fwd, registry } = make();
    await fwd.start();
    await until(async () => (await pending()) === 0);
    expect(seen).toEqual([5, 5, 5, 5]);
    expect(cloud.requests.map(seqsOf)).toEqual([range(1, 5), range(1, 5), range(1, 5), range(1, 5)]);
    expect(await metric(registry, 'braid_forward_requests_total', { outcome: 'retry' })).toBe(3);
    expect(fwd.status().lastError).toMatchObject({ code: 'BRAID_ERR_INGEST_RESPONSE_INVALID' });
  });

  test('[INV-2] an old or duplicate ackSeq is harmless; one past lastSeq deletes no more than was sent', async () => {
    await insertReadings(fx, 1, 20);
    const acked: number[] = [];
    const note = () => { acked.push(fwd.status().ackedSeq); };
    cloud.script(
      answer.checking(note, ack()),
      answer.checking(note, ack(() => 3)), // old: below what we acked
      answer.checking(note, ack(() => 999)),
    );
    const { fwd, acks } = make({ batchMaxReadings: 10 });
    await fwd.start();
    await until(async () => (await pending()) === 0);
    await insertReadings(fx, 21, 2);
    fwd.notify();
    await until(async () => (await pending()) === 0 && cloud.requests.length === 4);

    expect(acked).toEqual([0, 10, 10]);
    expect(cloud.requests.map(seqsOf)).toEqual([range(1, 10), range(11, 20), range(11, 20), [21, 22]]);
    expect(acks.map((a) => a.ackSeq)).toEqual([10, 20, 22]);
    expect(await getMeta(fx.reader, 'acked_seq')).toBe('22');
  });

  test('a partial ack deletes up to ackSeq and sends the rest at once', async () => {
    await insertReadings(fx, 1, 10);
    cloud.script(ack(() => 6));
    const { fwd, acks } = make({ retryInitialMs: 1000 });
    await fwd.start();
    await until(async () => (await pending()) === 0);
    expect(cloud.requests.map(seqsOf)).toEqual([range(1, 10), range(7, 10)]);
    expect(acks.map((a) => a.rows)).toEqual([6, 4]);
    expect(cloud.requests[1].at - cloud.requests[0].at).toBeLessThan(500);
  });

  test('sends closed epochs with the batch that covers them, and unsent gaps; marks both once acknowledged', async () => {
    // Readings 1..5 were dropped at the disk budget (gap); 6..25 remain; epoch 3 is still open.
    const gap1 = await insertGap(fx, 1, 5, ['dev-1', 'dev-2']);
    await insertReadings(fx, 6, 7, { epoch: 1 });
    await insertReadings(fx, 13, 8, { epoch: 2 });
    await insertReadings(fx, 21, 5, { epoch: 3 });
    await insertEpoch(fx, 1, 1, 12, true);
    await insertEpoch(fx, 2, 13, 20, true);
    await insertEpoch(fx, 3, 21, 25, false);
    const { fwd } = make({ batchMaxReadings: 10, idlePollMs: 60_000 });
    await fwd.start();
    await until(async () => (await pending()) === 0 && cloud.requests.length === 2);

    const [b1, b2] = cloud.requests.map(decodeIngest);
    expect(b1).toMatchObject({ firstSeq: 1, lastSeq: 15, epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 12 }] });
    expect(b1.gaps).toEqual([{ id: gap1, reason: 'disk_budget', fromSeq: 1, toSeq: 5, count: 5, minTs: 10, maxTs: 20, devices: ['dev-1', 'dev-2'] }]);
    expect(b2).toMatchObject({ firstSeq: 16, lastSeq: 25, epochs: [{ epoch: 2, firstSeq: 13, lastSeq: 20 }], gaps: [] });

    // Epoch 3 closes and readings 26..30 are dropped: a batch with no readings carries both.
    await fx.writes.run((db) => db.run('UPDATE epochs SET closed_at = 5000, last_seq = 30 WHERE epoch = 3'));
    const gap2 = await insertGap(fx, 26, 30, ['dev-3']);
    fwd.notify();
    await until(() => cloud.requests.length === 3 && fwd.status().ackedSeq === 30, 2000, 'the record-only batch');
    expect(decodeIngest(cloud.requests[2])).toMatchObject({
      firstSeq: 31, lastSeq: 30, readings: [], epochs: [{ epoch: 3, firstSeq: 21, lastSeq: 30 }], gaps: [{ id: gap2, devices: ['dev-3'] }],
    });
    expect(await fx.reader.all('SELECT epoch, reported FROM epochs ORDER BY epoch')).toEqual([
      { epoch: 1, reported: 1 }, { epoch: 2, reported: 1 }, { epoch: 3, reported: 1 }]);
    expect(await fx.reader.all('SELECT id, sent FROM gaps ORDER BY id')).toEqual([{ id: gap1, sent: 1 }, { id: gap2, sent: 1 }]);
    await new Promise((r) => setTimeout(r, 100));
    expect(cloud.requests).toHaveLength(3); // nothing left to send: no empty requests
  });

  test('a forwarder restarted on the same database resumes after acked_seq', async () => {
    await insertReadings(fx, 1, 10);
    const first = make();
    await first.fwd.start();
    await until(async () => (await pending()) === 0);
    expect(await first.fwd.close()).toEqual({ pending: 0 });

    await insertReadings(fx, 11, 5);
    const second = make();
    await second.fwd.start();
    expect(second.fwd.status().ackedSeq).toBe(10);
    await until(async () => (await pending()) === 0);
    expect(cloud.requests.map(seqsOf)).toEqual([range(1, 10), range(11, 15)]);
    expect(second.fwd.status().ackedSeq).toBe(15);
  });

  test('close() during a slow request aborts it after the grace, keeps its rows, and reports them', async () => {
    expect.assertions(6);
    await insertReadings(fx, 1, 10);
    cloud.script(answer.hang());
    const { fwd, registry } = make({ requestTimeoutMs: 10_000, closeGraceMs: 100 });
    await fwd.start();
    await cloud.waitForRequests(1);
    expect(fwd.status().inflightUpToSeq).toBe(10);

    const t0 = performance.now();
    const report = await fwd.close();
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(report).toEqual({ pending: 10 });
    expect(await fwd.close()).toBe(report); // idempotent
    expect(await metric(registry, 'braid_forward_requests_total', { outcome: 'retry' })).toBe(0);
    await expect(fwd.start()).rejects.toMatchObject({ code: 'BRAID_ERR_CLOSED' });
  });

  test('close() lets a request that answers within the grace apply its ack', async () => {
    await insertReadings(fx, 1, 10);
    cloud.script(answer.after(100, ack()));
    const { fwd } = make({ closeGraceMs: 2000 });
    await fwd.start();
    await cloud.waitForRequests(1);
    expect(await fwd.close()).toEqual({ pending: 0 });
    expect(await pending()).toBe(0);
  });

  test('the next forwarder resends what an aborted request carried', async () => {
    await insertReadings(fx, 1, 4);
    cloud.script(answer.hang());
    const first = make({ closeGraceMs: 0 });
    await first.fwd.start();
    await cloud.waitForRequests(1);
    await first.fwd.close();
    const second = make();
    await second.fwd.start();
    await until(async () => (await pending()) === 0);
    expect(cloud.requests.map(seqsOf)).toEqual([range(1, 4), range(1, 4)]);
  });

  test('with no url it sends nothing, keeps readings buffered, and still reports status', async () => {
    await insertReadings(fx, 1, 10);
    const { fwd } = make({ url: null });
    await fwd.start();
    fwd.notify();
    await new Promise((r) => setTimeout(r, 100));
    expect(cloud.requests).toHaveLength(0);
    expect(fwd.status()).toMatchObject({ ackedSeq: 0, inflightUpToSeq: 0, batchesSent: 0, lastSuccessAt: null });
    expect(await fwd.close()).toEqual({ pending: 10 });
  });

  test('notify() wakes an idle forwarder without waiting for the idle poll', async () => {
    const { fwd } = make({ idlePollMs: 60_000 });
    await fwd.start();
    await new Promise((r) => setTimeout(r, 50));
    await insertReadings(fx, 1, 3);
    const t0 = performance.now();
    fwd.notify();
    await cloud.waitForRequests(1, 2000);
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  test('Symbol.asyncDispose closes the forwarder', async () => {
    expect.assertions(2);
    const { fwd } = make();
    await fwd.start();
    await fwd[Symbol.asyncDispose]();
    expect(fwd.status().ackedSeq).toBe(0);
    await expect(fwd.start()).rejects.toMatchObject({ code: 'BRAID_ERR_CLOSED' });
  });

  test('bad options are refused with the key named', () => {
    expect(() => make({ batchMaxReadings: 0 })).toThrow(expect.objectContaining({ code: 'BRAID_ERR_CONFIG_INVALID', message: expect.stringContaining('batchMaxReadings') }));
    expect(() => make({ jitter: 2 })).toThrow(expect.objectContaining({ code: 'BRAID_ERR_CONFIG_INVALID' }));
  });
});
