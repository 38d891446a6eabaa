/**
 * Cluster mode, the gateway side (DESIGN.md "Cluster mode", issue 10): two real `braid cloud`
 * processes on one data dir are the nodes A and B of one cloud; a real `braid gateway --cloud-url
 * A,B` takes readings from an MQTT.js device publishing QoS 1 all along. A is killed with SIGKILL:
 * forwarding and the speed push go on through B within seconds (the time is printed), health and
 * metrics name B, and B's merged query shows the readings. A comes back on its port: the probe
 * takes the gateway back to it. In the end every acknowledged reading is in master/ exactly once
 * [INV-1, INV-2], with each (gateway, seq) once. Then the narrow case the kill may or may not hit:
 * node A stores a batch and dies before its answer leaves; node B gets the same batch and answers
 * it as duplicates.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { MqttClient } from 'mqtt';
import { addApiKey } from '../../cloud/store/credentials.js';
import { metricValue } from '../../shared/metrics.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { type ChildCloud, type TestCloud, addGatewayToken, killAllChildClouds, listFiles, queryCloudDb, readMaster, spawnCloud, startTestCloud } from '../support/cloud.js';
import { type ChildGateway, addDevices, killAllChildGateways, spawnGateway } from '../support/child-gateway.js';
import { type TestGateway, connectDevice, endClient, eventually, publish, startTestGateway, tempDir } from '../support/gateway.js';
import { HttpScript } from '../support/http-script.js';

const GW = 'gw-failover';
const DEVICES = ['dev-1', 'dev-2', 'dev-3'];
const SECRET = 'device-secret-failover-1';
// Seal fast, no cron: a test-sized cloud. Both nodes take the same environment, as a cluster's units do.
const CLOUD_ENV = { BRAID_INGEST_SEAL_MAX_AGE_MS: '500', BRAID_BATCH_CRON: 'null' };

let dirs: Array<{ path: string; remove: () => void }> = [];
let clients: MqttClient[] = [];
let closers: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const c of clients) await endClient(c);
  clients = [];
  for (const close of closers.reverse()) await close();
  closers = [];
  await killAllChildGateways();
  await killAllChildClouds();
  for (const d of dirs) d.remove();
  dirs = [];
});

interface Health {
  cloud: { nodes: string[]; current: string; currentIndex: number; failovers: number };
  forwarder: { cloudUrl: string; ackedSeq?: number; consecutiveFailures: number };
  speedPush: { cloudUrl: string };
  outbox: { pending: number; ackedSeq: number; lastSeq: number };
}

async function health(gw: ChildGateway): Promise<Health> {
  return (await fetch(`${gw.httpUrl}/api/v1/health`)).json() as Promise<Health>;
}

async function metrics(gw: ChildGateway): Promise<string> {
  return (await fetch(`${gw.httpUrl}/metrics`)).text();
}

/** The merged query's count of the fleet's `metric` readings over the last hour, on one node. */
async function mergedCount(node: string, key: string, metric: string): Promise<{ count: number; speed: number }> {
  const to = Date.now() + 60_000;
  const res = await fetch(`${node}/api/v1/query?metric=${metric}&from=${to - 3_600_000}&to=${to}&step=1h&agg=count`, {
    headers: { authorization: `Bearer ${key}` },
  });
  if (res.status !== 200) throw new Error(`query on ${node}: ${res.status} ${await res.text()}`);
  const body = await res.json() as { points: Array<{ count: number; speed: number }> };
  return body.points.reduce((a, p) => ({ count: a.count + p.count, speed: a.speed + p.speed }), { count: 0, speed: 0 });
}

test('[INV-1] [INV-2] a gateway fails over from a killed cloud node to the other, and back once it returns; every acknowledged reading stored once', async () => {
  const cloudDir = tempDir('braid-failover-cloud-');
  const gwDir = tempDir('braid-failover-gw-');
  dirs.push(cloudDir, gwDir);
  const token = await addGatewayToken(cloudDir.path, GW);
  const db = await openCloudDb(join(cloudDir.path, 'cloud.db'));
  const key = await addApiKey(db, 'test', 'read').finally(() => db.close());
  await addDevices(gwDir.path, DEVICES.map((d) => [d, SECRET]));

  let a: ChildCloud = await spawnCloud(cloudDir.path, { env: CLOUD_ENV });
  const b = await spawnCloud(cloudDir.path, { env: CLOUD_ENV });
  const portA = Number(new URL(a.url).port);
  const gw = await spawnGateway({
    dataDir: gwDir.path, id: GW,
    args: ['--cloud-url', `${a.url},${b.url}`],
    env: {
      BRAID_CLOUD_TOKEN: token, BRAID_CLOUD_PROBE_INTERVAL_MS: '1000', BRAID_OUTBOX_EPOCH_IDLE_MS: '300', BRAID_SPEED_PUSH_INTERVAL_MS: '200',
      // No linger: an ingest request is in flight most of the time, so the kill likely cuts one off.
      BRAID_CLOUD_LINGER_MS: '0', BRAID_MQTT_RATE_PER_DEVICE: '10000', BRAID_MQTT_RATE_BURST: '10000',
    },
  });
  for (const d of DEVICES) clients.push(await connectDevice(gw.mqttUrl, d, SECRET));

  // Each device publishes QoS 1 as fast as the PUBACKs come, each reading with its own ts;
  // `acked` holds the identities the gateway acknowledged.
  const acked: string[] = [];
  let publishing = true;
  let failed = 0;
  const t0 = Date.now() - 30_000;
  let i = 0;
  const publisher = Promise.all(clients.map(async (c, k) => {
    while (publishing) {
      const ts = t0 + i++;
      try {
        await publish(c, `devices/${DEVICES[k]}/telemetry`, JSON.stringify({ ts, temp: i % 50 }), 1);
        acked.push(`${DEVICES[k]}|${ts}`);
      } catch {
        failed++;
      }
    }
  }));

  try {
    // Steady state on A.
    await eventually(async () => {
      const h = await health(gw);
      return h.forwarder.cloudUrl === a.url && h.outbox.ackedSeq > 500 && h.speedPush.cloudUrl === a.url;
    }, 15_000, 50);
    const before = await health(gw);
    expect(before.cloud).toMatchObject({ nodes: [a.url, b.url], current: a.url, currentIndex: 0, failovers: 0 });

    // kill -9 node A, mid-stream.
    const ackedAtKill = (await health(gw)).outbox.ackedSeq;
    const killedAt = performance.now();
    await a.stop('SIGKILL');
    const onB = (await eventually(async () => {
      const h = await health(gw);
      return h.forwarder.cloudUrl === b.url && h.outbox.ackedSeq > ackedAtKill + 20 ? h : undefined;
    }, 10_000, 20)) as Health;
    const failoverMs = performance.now() - killedAt;
    // eslint-disable-next-line no-console
    console.log(`failover: forwarding acknowledged by node B ${Math.round(failoverMs)} ms after node A was killed (ackedSeq ${ackedAtKill} -> ${onB.outbox.ackedSeq})`);
    expect(failoverMs).toBeLessThan(5_000);
    expect(onB.cloud).toMatchObject({ current: b.url, currentIndex: 1 });
    expect(onB.cloud.failovers).toBeGreaterThanOrEqual(1);
    const m = await metrics(gw);
    expect(m).toContain(`braid_cloud_node_current{url="${b.url}"} 1`);
    expect(m).toContain(`braid_cloud_node_current{url="${a.url}"} 0`);
    expect(m).toMatch(/^braid_cloud_node_index 1$/m);
    expect(m).toContain(`braid_cloud_failovers_total{from="${a.url}",to="${b.url}"}`);

    // The speed push moved too: B's merged query counts every reading so far, those since the kill included.
    await eventually(async () => (await health(gw)).speedPush.cloudUrl === b.url, 5_000, 50);
    const ackedSoFar = acked.length;
    await eventually(async () => (await mergedCount(b.url, key, 'temp')).count >= ackedSoFar, 10_000, 100);
    expect((await health(gw)).forwarder.consecutiveFailures).toBe(0);

    // Node A comes back on its port: the probe (every 1 s) takes both senders back to it.
    a = await spawnCloud(cloudDir.path, { env: CLOUD_ENV, port: portA });
    const backAt = performance.now();
    const ackedAtReturn = (await health(gw)).outbox.ackedSeq;
    await eventually(async () => {
      const h = await health(gw);
      return h.cloud.current === a.url && h.forwarder.cloudUrl === a.url && h.speedPush.cloudUrl === a.url && h.outbox.ackedSeq > ackedAtReturn + 20;
    }, 10_000, 50);
    // eslint-disable-next-line no-console
    console.log(`failback: the gateway forwards to node A again ${Math.round(performance.now() - backAt)} ms after it was ready (probe every 1000 ms)`);
    expect(await metrics(gw)).toContain(`braid_cloud_failovers_total{from="${b.url}",to="${a.url}"} 1`);
  } finally {
    publishing = false;
    await publisher;
  }

  // Every reading acknowledged to the device reaches the cloud, and the merged query on either node counts each once.
  await eventually(async () => (await health(gw)).outbox.pending === 0, 15_000, 50);
  const last = await health(gw);
  expect(last.outbox.ackedSeq).toBe(last.outbox.lastSeq);
  await eventually(async () => (await mergedCount(a.url, key, 'temp')).count === acked.length, 10_000, 100);
  expect((await mergedCount(b.url, key, 'temp')).count).toBe(acked.length);

  const retries = Number(/^braid_forward_requests_total\{outcome="retry"\} (\d+)/m.exec(await metrics(gw))?.[1] ?? 0);
  const bMetrics = await (await fetch(`${b.url}/metrics`, { headers: { authorization: `Bearer ${key}` } })).text();
  const duplicatesOnB = Number(/^braid_ingest_duplicates_total(?:\{[^}]*\})? (\d+)/m.exec(bMetrics)?.[1] ?? 0);
  // Stop everything (SIGTERM seals what staging holds; A's first life left its own, adopted by A's second).
  expect(await gw.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  expect(await Promise.all([a.stop('SIGTERM'), b.stop('SIGTERM')])).toEqual([{ code: 0, signal: null }, { code: 0, signal: null }]);
  const rows = (await readMaster(cloudDir.path)).filter((r) => r.gateway === GW);
  // Each (gateway, seq) once, seqs contiguous from 1: nothing lost, nothing stored twice though
  // batches were resent to B that A may have stored before it died.
  expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: last.outbox.lastSeq }, (_, k) => k + 1));
  expect(rows.map((r) => `${r.device}|${r.ts}`).sort()).toEqual([...acked].sort());
  expect(await queryCloudDb(cloudDir.path, 'SELECT * FROM staged')).toEqual([]);
  expect(listFiles(join(cloudDir.path, 'staging')).filter((f) => f.endsWith('.ndjson'))).toEqual([]);
  // eslint-disable-next-line no-console
  console.log(`failover run: ${acked.length} readings acknowledged to the devices (${failed} publishes failed), ${rows.length} in master/; `
    + `ingest requests failed over: ${retries}, readings node B answered as already stored: ${duplicatesOnB}`);
}, 60_000);

test('[INV-2] node A stores a batch and dies before answering: node B acknowledges the same batch as duplicates, master holds it once', async () => {
  const cloudDir = tempDir('braid-failover-dup-');
  dirs.push(cloudDir);
  const token = await addGatewayToken(cloudDir.path, GW);
  const opts = { ingest: { sealMaxAgeMs: 200 } };
  const a: TestCloud = await startTestCloud(cloudDir.path, opts);
  closers.push(() => a.close());
  const b: TestCloud = await startTestCloud(cloudDir.path, opts);
  closers.push(() => b.close());
  // Node A as the gateway reaches it: every request goes through to the real node, but an ingest's
  // answer never comes back (the node "died" after its commit); the speed push and /healthz pass.
  let lost = 0;
  const nodeA = await HttpScript.start(async (req, res) => {
    const headers: Record<string, string> = {};
    for (const h of ['content-type', 'content-encoding', 'authorization']) if (req.headers[h]) headers[h] = String(req.headers[h]);
    const r = await fetch(`${a.url}${req.url}`, { method: req.method, headers, body: req.method === 'POST' ? new Uint8Array(req.body) : undefined });
    const text = await r.text();
    if (req.url === '/api/v1/ingest' && r.status === 200) {
      lost += (JSON.parse(text) as { stored: number }).stored;
      res.socket?.destroy();
      return;
    }
    res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'application/json' });
    res.end(text);
  });
  closers.push(() => nodeA.close());
  const gw: TestGateway = await startTestGateway({
    id: GW,
    cloud: { url: `${nodeA.url},${b.url}`, token, lingerMs: 0, probeIntervalMs: 3_600_000, retryInitialMs: 30_000, retryMaxMs: 30_000 },
  });
  closers.push(() => gw.close());
  const client = await connectDevice(gw.mqttUrl, DEVICES[0], await gw.addDevice(DEVICES[0]));
  clients.push(client);

  const t0 = Date.now() - 10_000;
  for (let k = 0; k < 200; k++) await publish(client, `devices/${DEVICES[0]}/telemetry`, JSON.stringify({ ts: t0 + k, temp: k }), 1);
  await eventually(() => gw.gateway.outbox.status().pending === 0, 10_000, 20);

  // A stored the first batch and its answer was lost; B got the same seqs and took them as duplicates.
  expect(lost).toBeGreaterThan(0);
  expect(await metricValue(b.server.registry, 'braid_ingest_duplicates_total')).toBe(lost);
  expect(gw.gateway.forwarder.status()).toMatchObject({ ackedSeq: 200, consecutiveFailures: 0, cloudUrl: b.url });
  expect(gw.gateway.cloudNodes!.status()).toMatchObject({ current: b.url, failovers: 1 });

  await Promise.all([a.server.ingest.sealNow(), b.server.ingest.sealNow()]);
  const rows = (await readMaster(cloudDir.path)).filter((r) => r.gateway === GW);
  expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 200 }, (_, k) => k + 1));
  expect(rows.map((r) => r.ts)).toEqual(Array.from({ length: 200 }, (_, k) => t0 + k));
}, 30_000);
