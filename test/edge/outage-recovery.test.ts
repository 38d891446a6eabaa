/**
 * Issue 9, "a new reading visible within 5 s of the cloud's return": MQTT.js devices -> a real
 * gateway -> a real cloud (createCloud: ingest, speed store, merged query). The cloud goes away long
 * enough for the forwarder's backoff to pass 5 s, while devices fill the outbox and the speed
 * partials; it comes back on the same port and data dir, a device publishes one new reading, and
 * GET /api/v1/query shows it within 5 s while the forwarder is still catching up on the backlog.
 * Then everything arrives: the backlog's readings in the merged query, the outbox drained.
 */
import { type SpeedCloud, credentials, getJson, startSpeedCloud } from '../cloud/speed-fixtures.js';
import { connectDevice, eventually, publish, startTestGateway } from '../support/gateway.js';
import { e2eScope } from '../support/scope.js';

const GW = 'gw-outage';
const DEVICES = Array.from({ length: 8 }, (_, i) => `dev-${i}`);
const METRICS = Array.from({ length: 25 }, (_, i) => `m${i}`);
/** Messages per device during the outage: 8 x 400 x 25 = 80,000 readings to catch up on. */
const BACKLOG_MESSAGES = 400;

let cloudDir: { path: string; remove: () => void };
const e2e = e2eScope<SpeedCloud>();

test('after an outage that grew the ingest backoff past 5 s, a new reading shows in the merged query within 5 s of the return, while the backlog still drains', async () => {
  cloudDir = e2e.dir('braid-outage-cloud-');
  const keys = await credentials(cloudDir.path, [GW]);
  e2e.cloud = await startSpeedCloud(cloudDir.path);
  const port = e2e.cloud.port;
  e2e.gw = await startTestGateway({
    id: GW,
    // Retries double from 1 s with no low cap (the ingest backoff; the speed push's until it had
    // speed.retryMaxMs): 5 failures in, the next waits 12.8-16 s.
    cloud: { url: e2e.cloud.url, token: keys.tokens[GW], retryInitialMs: 1_000, retryMaxMs: 60_000, batchMaxReadings: 250 },
    // Pages far smaller than the outage's partials: the push after the return has a backlog.
    speed: { pushMaxPartials: 100 },
  });
  for (const d of DEVICES) e2e.clients.push(await connectDevice(e2e.gw.mqttUrl, d, await e2e.gw.addDevice(d)));
  const probe = e2e.clients[0];

  const query = async (metric: string, device?: string) => {
    const now = Date.now();
    const scope = device ? `&device=${device}` : '';
    const a = await getJson(e2e.cloud!.url, `/api/v1/query?metric=${metric}${scope}&from=${now - 3600_000}&to=${now + 3600_000}&step=1h&agg=count`, keys.read);
    expect(a.status).toBe(200);
    return (a.body.points as Array<{ count: number }>).reduce((s, p) => s + p.count, 0);
  };

  // Before: a reading reaches the merged query.
  await publish(probe, 'devices/dev-0/telemetry', JSON.stringify({ fresh: 1 }), 1);
  await eventually(async () => (await query('fresh', 'dev-0')) === 1, 10_000);

  // The outage: devices keep publishing; both senders fail.
  await e2e.cloud.close();
  e2e.cloud = null;
  const outageAt = Date.now();
  for (let i = 0; i < BACKLOG_MESSAGES; i++) {
    await Promise.all(e2e.clients.map((c, k) => publish(c, `devices/${DEVICES[k]}/telemetry`,
      JSON.stringify(Object.fromEntries([['ts', Date.now() - i], ...METRICS.map((m, j) => [m, i + j])])), 1)));
  }
  const backlog = DEVICES.length * BACKLOG_MESSAGES;
  await eventually(() => e2e.gw!.gateway.forwarder.status().consecutiveFailures >= 5 && e2e.gw!.gateway.speedPush.status().consecutiveFailures >= 5, 40_000, 50);
  const f = e2e.gw.gateway.forwarder.status();
  expect(f.lastError?.code).toBe('BRAID_ERR_INGEST_UNREACHABLE');
  expect(e2e.gw.gateway.outbox.status().pending).toBeGreaterThanOrEqual(backlog * METRICS.length);

  // The return, on the same port and data dir; a device publishes one new reading at once.
  e2e.cloud = await startSpeedCloud(cloudDir.path, { http: { port } });
  const returnedAt = Date.now();
  await publish(probe, 'devices/dev-0/telemetry', JSON.stringify({ fresh: 2 }), 1);
  let pendingWhenVisible = -1;
  await eventually(async () => {
    if ((await query('fresh', 'dev-0')) !== 2) return false;
    pendingWhenVisible = e2e.gw!.gateway.outbox.status().pending;
    return true;
  }, 15_000, 50);
  const visibleMs = Date.now() - returnedAt;
  // eslint-disable-next-line no-console
  console.log(`outage ${((returnedAt - outageAt) / 1000).toFixed(1)} s, ${f.consecutiveFailures} ingest failures; new reading visible ${visibleMs} ms after the return, ${pendingWhenVisible} readings still in the outbox`);
  expect(visibleMs).toBeLessThan(5_000);
  expect(pendingWhenVisible).toBeGreaterThan(0);
  // The push's success ended the ingest backoff (12.8-16 s): the catch-up began at once too.
  await eventually(() => e2e.gw!.gateway.forwarder.status().lastSuccessAt !== null, 5_000, 50);
  expect(e2e.gw.gateway.forwarder.status().lastSuccessAt! - returnedAt).toBeLessThan(5_000);

  // Then everything: the outbox drains, and the merged query holds every reading of the outage.
  await eventually(() => e2e.gw!.gateway.outbox.status().pending === 0, 60_000, 100);
  await eventually(async () => (await query('m0')) === backlog && (await query(METRICS[METRICS.length - 1])) === backlog, 15_000, 100);
}, 180_000);
