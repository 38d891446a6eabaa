/**
 * The speed pusher against a scripted real HTTP server (undici style): the wire format, refusals
 * that keep the cursor and back off, a 413 that halves the page, a malformed 2xx, the watermark
 * the cloud answers, and close() during a hanging push. The partials come from a real gateway
 * (no cloud url: its own pusher idles) fed by MQTT.js devices.
 */
import { gunzipSync } from 'node:zlib';
import { Registry } from 'prom-client';
import type { MqttClient } from 'mqtt';
import { CURSOR_KEY, type SpeedPushBody, SpeedPusher, type SpeedPushOptions, WATERMARK_KEY } from '../../edge/speedpush/index.js';
import { getMeta } from '../../edge/store/schema.js';
import { metricValue } from '../../shared/metrics.js';
import { nullLogger } from '../../shared/logger.js';
import { HttpScript, answer } from '../support/http-script.js';
import { type TestGateway, connectDevice, endClient, eventually, publish, startTestGateway, gatewayDbGet } from '../support/gateway.js';

let gw: TestGateway;
let server: HttpScript;
let client: MqttClient;
let pusher: SpeedPusher | null = null;
let registry: Registry;

const OK = (watermark = 0) => answer.status(200, { watermark, manifestVersion: watermark ? 3 : null, stored: 1 });

beforeEach(async () => {
  gw = await startTestGateway({ id: 'gw-http', outbox: { epochIdleMs: 100, epochMs: 300 } });
  client = await connectDevice(gw.mqttUrl, 'dev-1', await gw.addDevice('dev-1'));
  server = await HttpScript.start(OK());
  registry = new Registry();
});
afterEach(async () => {
  await pusher?.close();
  pusher = null;
  await endClient(client);
  await gw.close();
  await server.close();
});

/** `n` readings one minute apart ending now (n partials), committed before it resolves. */
async function readings(n: number, offset = 0): Promise<void> {
  const now = Date.now();
  for (let i = 0; i < n; i++) await publish(client, 'devices/dev-1/telemetry', JSON.stringify({ ts: now - (i + offset) * 60_000, temp: i }), 1);
}

function start(o: Partial<SpeedPushOptions> = {}): SpeedPusher {
  pusher = new SpeedPusher({
    reader: gw.gateway.outbox.reader, writes: gw.gateway.outbox.writes, logger: nullLogger(), registry, gatewayId: 'gw-http',
    applied: () => gw.gateway.outbox.applied(),
    health: () => gw.gateway.health(), connectedDevices: () => gw.gateway.broker.connectedDevices(),
  }, { url: server.url, token: 'bgt_test', pushIntervalMs: 40, retryInitialMs: 20, retryMaxMs: 60, jitter: 0, ...o });
  return pusher;
}

const body = (n: number) => JSON.parse(gunzipSync(server.requests[n].body).toString('utf8')) as SpeedPushBody;
const cursorMeta = () => getMeta(gw.gateway.outbox.reader, CURSOR_KEY);

test('the wire format of docs/serving.md: gzip JSON with the gateway token, partials as 13-tuples, health and connected devices', async () => {
  await readings(3);
  await start().start();
  await server.waitForRequests(1);
  const r = server.requests[0];
  expect(r).toMatchObject({ method: 'POST', url: '/api/v1/speed', headers: { 'content-encoding': 'gzip', 'content-type': 'application/json', authorization: 'Bearer bgt_test' } });
  const b = body(0);
  expect(b).toMatchObject({ v: 1, gateway: 'gw-http', sentAt: expect.any(Number), devices: [{ id: 'dev-1', connected: true }] });
  expect(b.health).toMatchObject({ gatewayId: 'gw-http', outbox: { pending: 3 }, speedPush: { watermark: 0 } });
  expect(b.partials).toHaveLength(3);
  for (const p of b.partials) {
    expect(p).toHaveLength(13);
    expect(p.slice(0, 2)).toEqual(['dev-1', 'temp']);
    expect(p[2] % 60_000).toBe(0);
  }
  // Nothing new: the next pushes carry no partial (a heartbeat with health and devices).
  await server.waitForRequests(3);
  expect(body(2).partials).toEqual([]);
});

test('refusals (401, 400) and a malformed 2xx keep the cursor, back off and send the same partials again [INV-5]', async () => {
  await readings(4);
  server.script(
    answer.status(401, { code: 'BRAID_ERR_UNAUTHORIZED', message: 'no' }),
    answer.status(400, { code: 'BRAID_ERR_BAD_REQUEST', message: 'no' }),
    answer.status(200, 'not json'),
    answer.checking(async () => { expect(await cursorMeta()).toBeUndefined(); }, OK()),
  );
  const p = start();
  await p.start();
  await server.waitForRequests(4);
  await eventually(async () => (await cursorMeta()) !== undefined, 10_000);
  expect([0, 1, 2, 3].map((i) => body(i).partials)).toEqual(Array(4).fill(body(0).partials));
  expect(body(0).partials).toHaveLength(4);
  expect(await metricValue(registry, 'braid_speedpush_requests_total', { outcome: 'rejected' })).toBe(2);
  expect(await metricValue(registry, 'braid_speedpush_requests_total', { outcome: 'retry' })).toBe(1);
  expect(await metricValue(registry, 'braid_speedpush_requests_total', { outcome: 'ok' })).toBeGreaterThanOrEqual(1);
  // Backed off between attempts (20, 40, 60 ms with no jitter).
  expect(server.requests[3].at - server.requests[0].at).toBeGreaterThanOrEqual(100);
  expect(p.status().consecutiveFailures).toBe(0);
});

test('a 413 halves the page at once; the rest follows without waiting for the interval', async () => {
  await readings(20);
  server.script(answer.status(413, { code: 'BRAID_ERR_PAYLOAD_TOO_LARGE', message: 'big' }));
  await start({ pushIntervalMs: 5_000 }).start();
  await server.waitForRequests(3);
  expect(body(0).partials).toHaveLength(20);
  expect(body(1).partials).toHaveLength(10); // halved, and full: the next page goes at once
  expect(body(2).partials).toHaveLength(10);
  expect(new Set([...body(1).partials, ...body(2).partials].map((t) => t[2])).size).toBe(20);
});

test('the answered watermark is kept in meta, and partials of epochs at or below it are not pushed again', async () => {
  await readings(3);
  // Let epoch 1 close, then more readings go into epoch 2.
  await eventually(async () => (await gatewayDbGet<{ n: number }>(gw.gateway.outbox, 'SELECT COUNT(*) AS n FROM epochs WHERE closed_at IS NOT NULL'))!.n >= 1, 10_000);
  // The cloud answers 0 once, then 1 from then on (a cloud's watermark does not go back by itself;
  // the pusher follows it when it does, so a fallback of 0 would undo the 1 within one interval).
  server.script(OK(0)).otherwise(OK(1));
  const p = start();
  await p.start();
  await server.waitForRequests(2);
  await eventually(async () => (await getMeta(gw.gateway.outbox.reader, WATERMARK_KEY)) === '1', 10_000);
  expect(p.status()).toMatchObject({ watermark: 1, manifestVersion: 3 });
  await readings(2, 10);
  await eventually(() => server.requests.some((r, i) => i >= 2 && body(i).partials.length > 0), 10_000);
  for (let i = 2; i < server.requests.length; i++) for (const t of body(i).partials) expect(t[3]).toBeGreaterThan(1);
});

test('close() during a hanging push aborts it after closeGraceMs and keeps the cursor', async () => {
  await readings(2);
  server.script(answer.hang());
  const p = start({ closeGraceMs: 50 });
  await p.start();
  await server.waitForRequests(1);
  const t0 = Date.now();
  await p.close();
  expect(Date.now() - t0).toBeLessThan(2000);
  expect(await cursorMeta()).toBeUndefined();
  await p.close(); // idempotent
});
