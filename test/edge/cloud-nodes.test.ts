/**
 * The node list of a cloud given as several URLs (edge/cloudclient/nodes.ts, DESIGN.md "Cluster
 * mode"): which failures fail over and which do not, rounds and the backoff after one, stickiness,
 * the probe that goes back to the first node; then the forwarder against two scripted real
 * servers, and a real gateway whose speed push follows the forwarder off a node (one shared list).
 */
import { performance } from 'node:perf_hooks';
import { Registry } from 'prom-client';
import type { MqttClient } from 'mqtt';
import { CloudNodes, createCloudNodeMetrics, isNodeFailure } from '../../edge/cloudclient/index.js';
import { IngestResponseInvalidError, IngestTimeoutError, IngestUnreachableError } from '../../edge/forwarder/index.js';
import { SpeedPushTimeoutError, SpeedPushUnreachableError } from '../../edge/speedpush/index.js';
import { HttpError } from '../../shared/errors.js';
import { nullLogger } from '../../shared/logger.js';
import { metricValue } from '../../shared/metrics.js';
import { ack, insertReadings, range, seqsOf, until, useForwarderHarness } from '../support/forwarder-fixtures.js';
import { type TestGateway, connectDevice, endClient, publish, startTestGateway } from '../support/gateway.js';
import { HttpScript, type ScriptedRequest, type Step, answer } from '../support/http-script.js';

const A = 'http://node-a.invalid:8000';
const B = 'http://node-b.invalid:8000';
const C = 'http://node-c.invalid:8000';
const down = new IngestUnreachableError('ingest unreachable: ECONNREFUSED');
const http = (status: number) => new HttpError(status, JSON.stringify({ code: 'X', message: 'x' }));

let lists: CloudNodes[] = [];
afterEach(() => {
  for (const l of lists) l.close();
  lists = [];
});

function nodes(urls: string[], probeIntervalMs = 3_600_000, registry?: Registry): CloudNodes {
  const l = new CloudNodes(urls, { logger: nullLogger(), metrics: registry ? createCloudNodeMetrics(registry) : undefined }, { probeIntervalMs, probeTimeoutMs: 1000 });
  lists.push(l);
  return l;
}

describe('which failures fail over', () => {
  test('no answer, a timeout, a malformed 2xx, any 5xx and a 408 say the node is away or unwell', () => {
    const away = [
      down, new IngestTimeoutError('slow'), new IngestResponseInvalidError('garbage'), new SpeedPushUnreachableError('x'), new SpeedPushTimeoutError('x'),
      http(500), http(502), http(503), http(504), http(408), new HttpError(503, '', 1000),
    ];
    expect(away.map(isNodeFailure)).toEqual(away.map(() => true));
  });

  test('an answer about the request stays on the node: every node of one cloud would say the same', () => {
    const request = [400, 401, 403, 404, 409, 413, 429].map(http);
    expect(request.map(isNodeFailure)).toEqual(request.map(() => false));
    expect(isNodeFailure(new Error('a bug'))).toBe(false);
    expect(isNodeFailure(undefined)).toBe(false);
  });

  test('400, 401, 403, 409, 413, 429: the list stays where it is and the sender applies its own rules', () => {
    const l = nodes([A, B]);
    for (const s of [400, 401, 403, 409, 413, 429]) expect(l.failed(A, http(s), 'test')).toBe('request');
    expect(l.current).toBe(A);
    expect(l.status().failovers).toBe(0);
  });
});

describe('rounds, stickiness', () => {
  test('a node failure moves to the next node at once; once every node failed, back off and start again at the first', () => {
    const l = nodes([A, B, C]);
    expect(l.failed(A, down, 'test')).toBe('next');
    expect(l.current).toBe(B);
    expect(l.failed(B, http(503), 'test')).toBe('next');
    expect(l.current).toBe(C);
    expect(l.failed(C, new IngestTimeoutError('slow'), 'test')).toBe('backoff');
    expect(l.current).toBe(A);
    // The next round, after the backoff, tries every node again.
    expect(l.failed(A, down, 'test')).toBe('next');
    expect(l.current).toBe(B);
  });

  test('sticks to a node that answers; a success ends the round, so a later failure fails over again at once', () => {
    const l = nodes([A, B]);
    expect(l.failed(A, down, 'test')).toBe('next');
    l.succeeded(B);
    l.succeeded(B);
    expect(l.current).toBe(B);
    expect(l.failed(B, down, 'test')).toBe('next');
    expect(l.current).toBe(A);
    l.succeeded(A);
    expect(l.failed(A, http(500), 'test')).toBe('next');
    expect(l.current).toBe(B);
    expect(l.status()).toMatchObject({ nodes: [A, B], current: B, currentIndex: 1, failovers: 3 });
  });

  test('a failure on a node the list already left (the other sender\'s request in flight): resend to the current node, no further move', () => {
    const l = nodes([A, B, C]);
    expect(l.failed(A, down, 'forwarder')).toBe('next');
    expect(l.failed(A, down, 'speed pusher')).toBe('next');
    expect(l.current).toBe(B);
    // B fails too: on to C, which no sender has tried in this round.
    expect(l.failed(B, down, 'forwarder')).toBe('next');
    expect(l.current).toBe(C);
    expect(l.failed(B, down, 'speed pusher')).toBe('next');
    expect(l.current).toBe(C);
    // A late success on a node the list left does not move it back (the probe does that).
    l.succeeded(A);
    expect(l.current).toBe(C);
    expect(l.failed(C, down, 'forwarder')).toBe('backoff');
    expect(l.current).toBe(A);
  });

  test('a late failure on a node the list left, when the current one failed too in this round: back off', () => {
    const l = nodes([A, B]);
    expect(l.failed(A, down, 'forwarder')).toBe('next');
    // The other sender already found B down too: the round is over, the list starts again at A.
    expect(l.failed(B, down, 'speed pusher')).toBe('backoff');
    expect(l.current).toBe(A);
    expect(l.failed(B, down, 'forwarder')).toBe('next'); // A is untried in the new round
    expect(l.failed(A, down, 'forwarder')).toBe('backoff');
  });

  test('one URL: a node failure backs off as before, nothing moves', () => {
    const l = nodes([A]);
    expect(l.failed(A, down, 'test')).toBe('backoff');
    expect(l.failed(A, http(401), 'test')).toBe('request');
    expect(l.status()).toMatchObject({ nodes: [A], current: A, failovers: 0 });
  });

  test('metrics: the current node\'s gauge, its position, and every move counted by from and to; URLs without their password', async () => {
    const registry = new Registry();
    const secretA = 'https://user:pw@node-a.invalid/';
    const l = nodes([secretA, B], 3_600_000, registry);
    const shownA = 'https://node-a.invalid/';
    expect(await metricValue(registry, 'braid_cloud_node_current', { url: shownA })).toBe(1);
    expect(await metricValue(registry, 'braid_cloud_node_current', { url: B })).toBe(0);
    expect(l.failed(secretA, down, 'test')).toBe('next');
    expect(await metricValue(registry, 'braid_cloud_node_current', { url: shownA })).toBe(0);
    expect(await metricValue(registry, 'braid_cloud_node_current', { url: B })).toBe(1);
    expect(await metricValue(registry, 'braid_cloud_node_index')).toBe(1);
    expect(await metricValue(registry, 'braid_cloud_failovers_total', { from: shownA, to: B })).toBe(1);
    expect(JSON.stringify(l.status())).not.toContain('pw');
    expect(await registry.metrics()).not.toContain('pw');
  });
});

describe('the probe of the first node', () => {
  let servers: HttpScript[] = [];
  afterEach(async () => {
    for (const s of servers) await s.close();
    servers = [];
  });

  test('while on another node, GET /healthz on the first every probeIntervalMs; back to it once it answers 2xx', async () => {
    const first = await HttpScript.start(answer.status(200, { status: 'ok' }));
    servers.push(first);
    first.script(answer.status(503, { code: 'BRAID_ERR_CLOSED', message: 'starting' }), answer.destroy());
    const l = nodes([first.url, B], 150);
    await new Promise((r) => setTimeout(r, 400));
    expect(first.requests).toHaveLength(0); // on the first node: nothing to probe

    const left = performance.now();
    expect(l.failed(first.url, down, 'test')).toBe('next');
    await until(() => l.current === first.url, 10_000, 'the return to the first node');
    const back = performance.now() - left;
    expect(first.requests.map((r) => [r.method, r.url])).toEqual([['GET', '/healthz'], ['GET', '/healthz'], ['GET', '/healthz']]);
    expect(first.requests[0].headers.authorization).toBeUndefined();
    // Three probes, probeIntervalMs apart: a 503, a dropped connection, then 200.
    expect(back).toBeGreaterThanOrEqual(3 * 150 - 5);
    expect(first.requests[1].at - first.requests[0].at).toBeGreaterThanOrEqual(145);
    expect(l.status()).toMatchObject({ currentIndex: 0, failovers: 2 });
    // Back on the first: no more probes.
    await new Promise((r) => setTimeout(r, 400));
    expect(first.requests).toHaveLength(3);
  });

  test('close() stops the probing', async () => {
    const first = await HttpScript.start(answer.status(503));
    servers.push(first);
    const l = nodes([first.url, B], 50);
    l.failed(first.url, down, 'test');
    await first.waitForRequests(2);
    l.close();
    const n = first.requests.length;
    await new Promise((r) => setTimeout(r, 200));
    expect(first.requests.length).toBeLessThanOrEqual(n + 1); // at most the one in flight
    expect(l.current).toBe(B);
  });
});

describe('the forwarder on two nodes (scripted real servers)', () => {
  const h = useForwarderHarness();
  let b: HttpScript;
  beforeEach(async () => { b = await HttpScript.start(ack()); });
  afterEach(async () => { await b.close(); });

  test('[INV-1] a node that drops the connection: the same batch goes to the next node at once, no backoff, every reading acknowledged once it answers', async () => {
    h.cloud.script(answer.destroy());
    await insertReadings(h.fx, 1, 50);
    // A long backoff: only a failover without it can deliver within the test.
    const { fwd } = h.make({ url: `${h.cloud.url},${b.url}`, retryInitialMs: 30_000, retryMaxMs: 30_000, batchMaxReadings: 100, lingerMs: 0 });
    await fwd.start();
    await until(async () => (await h.pending()) === 0, 10_000, 'the outbox to drain through B');
    expect(h.cloud.requests.map(seqsOf)).toEqual([range(1, 50)]);
    expect(b.requests.map(seqsOf)).toEqual([range(1, 50)]);
    expect(b.requests[0].at - h.cloud.requests[0].at).toBeLessThan(1000);
    expect(fwd.status()).toMatchObject({ consecutiveFailures: 0, ackedSeq: 50, cloudUrl: b.url, lastError: { code: 'BRAID_ERR_INGEST_UNREACHABLE' } });
    // Sticks to B.
    await insertReadings(h.fx, 51, 10);
    fwd.notify();
    await until(async () => (await h.pending()) === 0, 10_000, 'the next batch');
    expect(h.cloud.requests).toHaveLength(1);
    expect(b.requests.map(seqsOf)[1]).toEqual(range(51, 60));
  });

  test('a refusal (401) does not fail over: the forwarder backs off on the same node', async () => {
    h.cloud.script(answer.status(401, { code: 'BRAID_ERR_UNAUTHORIZED', message: 'bad token' }));
    await insertReadings(h.fx, 1, 5);
    const { fwd } = h.make({ url: `${h.cloud.url},${b.url}`, retryInitialMs: 300, retryMaxMs: 300, jitter: 0, lingerMs: 0 });
    await fwd.start();
    await until(async () => (await h.pending()) === 0, 10_000, 'the retry on A');
    expect(b.requests).toHaveLength(0);
    expect(h.cloud.requests).toHaveLength(2);
    expect(h.cloud.requests[1].at - h.cloud.requests[0].at).toBeGreaterThanOrEqual(290);
  });

  test('both nodes down: one round (A, then B at once), then the backoff, then A again', async () => {
    h.cloud.script(answer.status(503, { code: 'BRAID_ERR_CLOSED', message: 'closing' }), answer.status(502, 'bad gateway'));
    b.script(answer.destroy());
    await insertReadings(h.fx, 1, 5);
    // "At once" is told from the backoff by a bound under it: with a 300 ms backoff that bound was
    // 250 ms, which a loaded run's pause between A's answer and B's request can pass.
    const BACKOFF_MS = 3_000;
    const AT_ONCE_MS = BACKOFF_MS - 50;
    const { fwd } = h.make({ url: `${h.cloud.url},${b.url}`, retryInitialMs: BACKOFF_MS, retryMaxMs: BACKOFF_MS, jitter: 0, lingerMs: 0 });
    await fwd.start();
    await until(async () => (await h.pending()) === 0, BACKOFF_MS + 10_000, 'the second round');
    // A (503) -> B at once (dropped) -> backoff -> A (502) -> B at once (200).
    expect([h.cloud.requests.length, b.requests.length]).toEqual([2, 2]);
    expect(b.requests[0].at - h.cloud.requests[0].at).toBeLessThan(AT_ONCE_MS);
    expect(h.cloud.requests[1].at - b.requests[0].at).toBeGreaterThanOrEqual(BACKOFF_MS - 10);
    expect(b.requests[1].at - h.cloud.requests[1].at).toBeLessThan(AT_ONCE_MS);
    expect(fwd.status()).toMatchObject({ consecutiveFailures: 0, cloudUrl: b.url });
  });
});

describe('a gateway on two nodes: one list for both senders', () => {
  let a: HttpScript;
  let b: HttpScript;
  let gw: TestGateway | null = null;
  let client: MqttClient | null = null;
  afterEach(async () => {
    if (client) await endClient(client);
    client = null;
    await gw?.close();
    gw = null;
    await a.close();
    await b.close();
  });

  /** Ingest and speed push answered as the cloud does; anything else (the probe's /healthz) 200 while `healthy()`, else 503. */
  const cloudLike = (ingest: Step, healthy: () => boolean = () => true): Step => (req: ScriptedRequest, res) => {
    if (req.url === '/api/v1/ingest') return ingest(req, res);
    if (req.url === '/api/v1/speed') return answer.status(200, { watermark: 0, manifestVersion: null, stored: 0 })(req, res);
    return healthy() ? answer.status(200, { status: 'ok' })(req, res) : answer.status(503, { code: 'BRAID_ERR_CLOSED', message: 'x' })(req, res);
  };

  test('the forwarder leaves a node whose ingest drops connections; the speed push, which that node answers, follows at once; the probe brings both back', async () => {
    let ingestOnA: Step = answer.destroy();
    let aHealthy = false;
    a = await HttpScript.start(cloudLike((req, res) => ingestOnA(req, res), () => aHealthy));
    b = await HttpScript.start(cloudLike(ack()));
    gw = await startTestGateway({
      id: 'gw-nodes',
      cloud: { url: `${a.url},${b.url}`, token: 'bgt_test', lingerMs: 0, retryInitialMs: 30_000, retryMaxMs: 30_000, probeIntervalMs: 800 },
      speed: { pushIntervalMs: 50 },
      // No epoch closes during the test: every ingest request carries a reading.
      outbox: { epochIdleMs: 60_000, epochMs: 60_000 },
    });
    client = await connectDevice(gw.mqttUrl, 'dev-1', await gw.addDevice('dev-1'));
    const pushesTo = (s: HttpScript) => s.requests.filter((r) => r.url === '/api/v1/speed');
    const ingestsTo = (s: HttpScript) => s.requests.filter((r) => r.url === '/api/v1/ingest');
    await until(() => pushesTo(a).length >= 2, 10_000, 'speed pushes to A');

    await publish(client, 'devices/dev-1/telemetry', JSON.stringify({ temp: 1 }), 1);
    await until(() => gw!.gateway.outbox.status().pending === 0, 10_000, 'the reading acknowledged by B');
    const failedAt = ingestsTo(a)[0].at;
    expect(ingestsTo(b)).toHaveLength(1);
    // The speed push went on to B with the forwarder: A answered it, yet got none after the ingest failure.
    await until(() => pushesTo(b).length >= 3, 10_000, 'speed pushes to B');
    // (A push already on its way when the list moved may land just after: 100 ms of slack, 2 intervals.)
    expect(pushesTo(a).filter((r) => r.at > failedAt + 100)).toEqual([]);
    const health = await (await fetch(`${gw.httpUrl}/api/v1/health`)).json() as Record<string, Record<string, unknown>>;
    expect(health.cloud).toMatchObject({ nodes: [a.url, b.url], current: b.url, currentIndex: 1, failovers: 1 });
    expect(health.forwarder.cloudUrl).toBe(b.url);
    expect(health.speedPush.cloudUrl).toBe(b.url);
    const metrics = await (await fetch(`${gw.httpUrl}/metrics`)).text();
    expect(metrics).toContain(`braid_cloud_node_current{url="${b.url}"} 1`);
    expect(metrics).toContain(`braid_cloud_failovers_total{from="${a.url}",to="${b.url}"} 1`);

    // A recovers: the next probe (GET /healthz) takes both senders back to it.
    ingestOnA = ack();
    aHealthy = true;
    await until(() => gw!.gateway.cloudNodes!.current === a.url, 10_000, 'the return to A');
    expect(a.requests.some((r) => r.method === 'GET' && r.url === '/healthz')).toBe(true);
    await publish(client, 'devices/dev-1/telemetry', JSON.stringify({ temp: 2 }), 1);
    await until(() => gw!.gateway.outbox.status().pending === 0 && ingestsTo(a).length === 2, 10_000, 'the next reading through A');
    const backAt = ingestsTo(a)[1].at;
    await until(() => pushesTo(a).some((r) => r.at > backAt), 10_000, 'a speed push to A');
    expect(ingestsTo(b)).toHaveLength(1);
  }, 60_000);
});
