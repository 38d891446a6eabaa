/**
 * The speed push end to end (docs/serving.md): MQTT.js devices -> a real gateway (outbox, speed
 * partials, forwarder, speed pusher) -> a real cloud (ingest, speed store, registry, batch). The
 * cloud's speed_partials equal the gateway's partials table, re-pushes change nothing, an outage
 * is caught up at once on reconnect, and after a batch run the cloud prunes behind the live
 * manifest while the gateway stops pushing what it covers.
 */
import { join } from 'node:path';
import { scrapedValue } from '../../shared/metrics.js';
import { Db } from '../../shared/sqlite.js';
import { type DeepPartial, connectDevice, endClient, eventually, publish, startTestGateway } from '../support/gateway.js';
import { e2eScope } from '../support/scope.js';
import { withoutNul } from '../../edge/speedpush/pusher.js';
import type { GatewayConfig } from '../../edge/config.js';
import { queryGatewayDb } from '../support/child-gateway.js';
import { type SpeedCloud, credentials, getJson, startSpeedCloud, storedPartials } from '../cloud/speed-fixtures.js';

const GW = 'gw-sp';
const DEVICES = ['dev-a', 'dev-b'];

let cloudDir: { path: string; remove: () => void };
let gwDir: { path: string; remove: () => void };
const e2e = e2eScope<SpeedCloud>();
let keys: { token: string; admin: string };

beforeEach(async () => {
  secrets.clear();
  cloudDir = e2e.dir('braid-sp-cloud-');
  gwDir = e2e.dir('braid-sp-gw-');
  const c = await credentials(cloudDir.path, [GW]);
  keys = { token: c.tokens[GW], admin: c.admin };
});

function gatewayOptions(url: string, speed: DeepPartial<GatewayConfig['speed']> = {}): DeepPartial<GatewayConfig> {
  return {
    id: GW,
    cloud: { url, token: keys.token, retryInitialMs: 50, retryMaxMs: 300 },
    outbox: { epochIdleMs: 150, epochMs: 1000 },
    speed: { pushIntervalMs: 100, ...speed },
  };
}

const secrets = new Map<string, string>();

/** Connect every device (registered on first use; the registry lives in the gateway's data dir). */
async function connectAll(): Promise<void> {
  for (const d of DEVICES) {
    if (!secrets.has(d)) secrets.set(d, await e2e.gw!.addDevice(d));
    e2e.clients.push(await connectDevice(e2e.gw!.mqttUrl, d, secrets.get(d)));
  }
}

/** `n` readings per device, spread over `minutes` minutes ending now, some of them an hour late. */
async function send(n: number, minutes = 5, salt = 0): Promise<void> {
  const now = Date.now();
  for (let i = 0; i < n; i++) {
    for (const [k, d] of DEVICES.entries()) {
      const late = i % 9 === 0 ? 3600_000 : 0;
      const ts = now - late - (i % minutes) * 60_000 - k - i * 3 - salt * 7;
      await publish(e2e.clients[k], `devices/${d}/telemetry`, JSON.stringify({ ts, temp: 20 + ((i * 7 + salt) % 50) / 10, hum: 40 + (i % 13) }), 1);
    }
  }
}

interface Row { device: string; metric: string; minute: number; epoch: number; count: number; sum: number; min: number; max: number; m2: number; first: number; first_ts: number; last: number; last_ts: number }

const COLS = 'device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts';
/** The gateway's partials, once every reading it acknowledged is in gateway.db (the commit log's groups go in within a second). */
async function gatewayPartials(minEpochExclusive = 0): Promise<Row[]> {
  await e2e.gw?.gateway.outbox.applied();
  return queryGatewayDb<Row>(gwDir.path, `SELECT ${COLS} FROM partials WHERE epoch > ? ORDER BY device, metric, minute, epoch`, [minEpochExclusive]);
}
const cloudPartials = async (): Promise<Row[]> => (await storedPartials(cloudDir.path, GW)).map(({ gateway: _g, ...r }) => r);

/** The cloud holds exactly the gateway's partials (of epochs above `e`). */
async function inSync(e = 0): Promise<boolean> {
  const [a, b] = await Promise.all([gatewayPartials(e), cloudPartials()]);
  return a.length > 0 && JSON.stringify(a) === JSON.stringify(b);
}

/** The push's position back to the start: cursor 0, no epoch done (page.ts Position). */
async function pushFromStart(): Promise<void> {
  const db = await Db.open(join(gwDir.path, 'gateway.db'));
  try {
    await db.run(`INSERT INTO meta (key, value) VALUES ('speed_push_cursor', '0'), ('speed_push_done_epoch', '0') ON CONFLICT(key) DO UPDATE SET value = excluded.value`);
  } finally {
    await db.close();
  }
}

const gatewayMetrics = async () => (await fetch(`${e2e.gw!.httpUrl}/metrics`)).text();
const health = async () => (await (await fetch(`${e2e.gw!.httpUrl}/api/v1/health`)).json()) as Record<string, any>;

test('pushes arrive and equal the gateway\'s partials table; health and connected devices reach the registry', async () => {
  e2e.cloud = await startSpeedCloud(cloudDir.path);
  e2e.gw = await startTestGateway(gatewayOptions(e2e.cloud.url), gwDir.path);
  await connectAll();
  await send(60);
  await eventually(() => inSync(), 10_000);

  const h = await health();
  expect(h.speedPush).toEqual({ cloudUrl: e2e.cloud.url, lastSuccessAt: expect.any(String), watermark: 0, consecutiveFailures: 0 });
  const gws = (await getJson(e2e.cloud.url, '/api/v1/gateways', keys.admin)).body.gateways as Array<Record<string, any>>;
  expect(gws).toMatchObject([{ id: GW, online: true, health: { gatewayId: GW, devices: { connected: 2 } } }]);
  const devices = (await getJson(e2e.cloud.url, '/api/v1/devices', keys.admin)).body.devices;
  expect(devices).toMatchObject([
    { id: 'dev-a', gateway: GW, online: true, metrics: ['hum', 'temp'] },
    { id: 'dev-b', gateway: GW, online: true, metrics: ['hum', 'temp'] },
  ]);
  // A device that goes away is not online any more once the next push says so.
  await endClient(e2e.clients.pop()!);
  await eventually(async () => ((await getJson(e2e.cloud!.url, '/api/v1/devices', keys.admin)).body.devices as Array<{ online: boolean }>)[1].online === false, 5000);

  const text = await gatewayMetrics();
  expect(scrapedValue(text, 'braid_speedpush_requests_total', { outcome: 'ok' })).toBeGreaterThan(0);
  expect(scrapedValue(text, 'braid_speedpush_partials_sent_total')).toBeGreaterThanOrEqual((await gatewayPartials()).length);
  expect(scrapedValue(text, 'braid_speedpush_lag_seconds')).toBe(0);
}, 30_000);

test('a NUL in the gateway\'s own health document (a peer\'s error text) goes as U+FFFD: the cloud takes the push', async () => {
  e2e.cloud = await startSpeedCloud(cloudDir.path);
  e2e.gw = await startTestGateway(gatewayOptions(e2e.cloud.url), gwDir.path);
  const g = e2e.gw.gateway;
  const health = g.health.bind(g);
  g.health = async () => ({ ...(await health()), note: 'proxy said: bad\u0000gateway', list: ['\u0000'] });
  const before = g.speedPush.status().pushes;
  await eventually(() => g.speedPush.status().pushes >= before + 2, 10_000);
  expect(g.speedPush.status().consecutiveFailures).toBe(0);
  const gws = (await getJson(e2e.cloud.url, '/api/v1/gateways', keys.admin)).body.gateways as Array<Record<string, any>>;
  expect(gws[0].health).toMatchObject({ gatewayId: GW, note: 'proxy said: bad\ufffdgateway', list: ['\ufffd'] });
  expect(withoutNul({ a: 'x\u0000y', b: { c: ['\\u0000 stays as typed'] } })).toEqual({ a: 'x\ufffdy', b: { c: ['\\u0000 stays as typed'] } });
}, 30_000);

test('a push from the start again, in small pages, changes nothing in the cloud [idempotent]', async () => {
  e2e.cloud = await startSpeedCloud(cloudDir.path);
  e2e.gw = await startTestGateway(gatewayOptions(e2e.cloud.url, { pushMaxPartials: 7 }), gwDir.path);
  await connectAll();
  await send(40);
  await eventually(() => inSync(), 10_000);
  const before = await cloudPartials();
  await endClient(e2e.clients.pop()!);
  await endClient(e2e.clients.pop()!);
  await e2e.gw.close();

  await pushFromStart();
  e2e.gw = await startTestGateway(gatewayOptions(e2e.cloud.url, { pushMaxPartials: 7 }), gwDir.path);
  await eventually(async () => scrapedValue(await gatewayMetrics(), 'braid_speedpush_partials_sent_total') >= before.length, 10_000);
  expect(await cloudPartials()).toEqual(before);
  expect(await inSync()).toBe(true);
}, 30_000);

test('a cloud outage: the gateway keeps its cursor and backs off; on reconnect it pushes what changed while away, at once', async () => {
  e2e.cloud = await startSpeedCloud(cloudDir.path);
  const port = e2e.cloud.port;
  // A long interval and small pages: only the "at once" path catches up in time. The pages after
  // the first (about ten of 5) must all go within one interval, each a real push to a real cloud:
  // 1.5 s left ~150 ms a page, which a loaded run can pass; 5 s and pages of 10 leave ~1 s.
  const INTERVAL_MS = 5_000;
  const PAGE = 10;
  e2e.gw = await startTestGateway(gatewayOptions(e2e.cloud.url, { pushIntervalMs: INTERVAL_MS, pushMaxPartials: PAGE }), gwDir.path);
  await connectAll();
  await send(30);
  await eventually(() => inSync(), 15_000);
  // The cloud may hold the last page before the gateway has read its answer (which moves the
  // cursor): one more answered push after that settles it.
  const answered = e2e.gw.gateway.speedPush.status().pushes;
  await eventually(() => e2e.gw!.gateway.speedPush.status().pushes > answered, 10_000);
  const cursor = e2e.gw.gateway.speedPush.status().cursor;

  await e2e.cloud.close();
  e2e.cloud = null;
  await send(40, 8, 1); // grows existing partials and adds new ones
  await eventually(() => e2e.gw!.gateway.speedPush.status().consecutiveFailures >= 2, 10_000);
  expect(e2e.gw.gateway.speedPush.status().cursor).toBe(cursor);
  expect(scrapedValue(await gatewayMetrics(), 'braid_speedpush_lag_seconds')).toBeGreaterThan(0);
  expect((await health()).speedPush.consecutiveFailures).toBeGreaterThan(0);
  const changed = (await gatewayPartials()).length;

  e2e.cloud = await startSpeedCloud(cloudDir.path, { http: { port } });
  await eventually(() => e2e.gw!.gateway.speedPush.status().consecutiveFailures === 0, 10_000, 5);
  const reconnectedAt = Date.now();
  await eventually(() => inSync(), 10_000, 10);
  // More than `changed / PAGE` pages went in less than one pushIntervalMs.
  expect(Date.now() - reconnectedAt).toBeLessThan(INTERVAL_MS);
  expect(changed).toBeGreaterThan(10);
  expect(scrapedValue(await gatewayMetrics(), 'braid_speedpush_requests_total', { outcome: 'retry' })).toBeGreaterThan(0);
}, 90_000); // two waits of a 5 s push interval, an outage and a catch-up on a real cloud

test('after a batch run publishes E: the cloud prunes epochs <= E once live, the gateway learns E and stops pushing epochs <= E', async () => {
  e2e.cloud = await startSpeedCloud(cloudDir.path, { ingest: { sealMaxAgeMs: 400 } }, { pruneGraceMs: 0, manifestPollMs: 50 });
  e2e.gw = await startTestGateway(gatewayOptions(e2e.cloud.url), gwDir.path);
  await connectAll();
  await send(40);
  await eventually(() => inSync(), 10_000);

  // Every epoch closes (idle) and is reported; its readings reach master/; then a batch run.
  const lastClosed = await eventually(async () => {
    const rows = await queryGatewayDb<{ open: number; last: number | null; unreported: number }>(gwDir.path,
      'SELECT SUM(closed_at IS NULL) AS open, MAX(epoch) AS last, SUM(reported = 0) AS unreported FROM epochs');
    return rows[0].open === 0 && rows[0].unreported === 0 && e2e.gw!.gateway.outbox.status().pending === 0 ? rows[0].last : null;
  }, 15_000);
  await e2e.cloud.app.server.ingest.sealNow();
  const result = await (await e2e.cloud.app.scheduler().runNow('api')).done;
  const E = result.watermark[GW];
  expect(E).toBe(lastClosed);

  await eventually(async () => (await health()).speedPush.watermark === E, 5000);
  await eventually(async () => (await cloudPartials()).every((r) => r.epoch > E), 5000);
  expect(await cloudPartials()).toEqual([]); // every epoch was covered
  // The gateway keeps them for its own windows.
  expect((await gatewayPartials()).length).toBeGreaterThan(0);

  // From the start again: it pushes nothing of epochs <= E, and what comes next still arrives.
  for (const c of e2e.clients.splice(0)) await endClient(c);
  await e2e.gw.close();
  await pushFromStart();
  e2e.gw = await startTestGateway(gatewayOptions(e2e.cloud.url), gwDir.path);
  await eventually(() => e2e.gw!.gateway.speedPush.status().pushes >= 3, 5000);
  expect(e2e.gw.gateway.speedPush.status().partialsSent).toBe(0);
  await connectAll();
  await send(10, 2, 3);
  await eventually(() => inSync(E), 10_000);
  expect((await cloudPartials()).every((r) => r.epoch > E)).toBe(true);
  const cloudMetrics = await (await fetch(`${e2e.cloud.url}/metrics`, { headers: { authorization: `Bearer ${keys.admin}` } })).text();
  expect(scrapedValue(cloudMetrics, 'braid_speed_partials_stale_total')).toBe(0);
  expect(scrapedValue(cloudMetrics, 'braid_speed_partials_pruned_total')).toBeGreaterThan(0);
}, 60_000);
