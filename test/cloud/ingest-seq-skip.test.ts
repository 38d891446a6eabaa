/**
 * The seq-skip refusal (BRAID_ERR_INGEST_SEQ_SKIP) never refuses the real forwarder: a real
 * gateway whose outbox goes over its disk budget while the cloud is away (gap records), is
 * restarted with its backlog, and drops again, then drains into the real cloud. Every seq of the
 * gateway ends up stored or named by a gap record, no request was refused, and the vector
 * watermark reaches the gateway's last closed epoch.
 */
import { join } from 'node:path';
import { watermark } from '../../cloud/ingest/watermark.js';
import { normalize } from '../../cloud/ingest/ranges.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { type TestCloud, addGatewayToken, queryCloudDb, startTestCloud } from '../support/cloud.js';
import { queryGatewayDb } from '../support/child-gateway.js';
import { connectDevice, endClient, eventually, publish, startTestGateway } from '../support/gateway.js';
import { e2eScope } from '../support/scope.js';

const GW = 'gw-skip';
const DEVICES = ['dev-a', 'dev-b'];

let cloudDir: { path: string; remove: () => void };
let gwDir: { path: string; remove: () => void };
const e2e = e2eScope<TestCloud>();

async function cloudMetric(name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = e2e.cloud?.server.registry.getSingleMetric(name);
  if (!m) return 0;
  const { values } = await m.get();
  return values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((s, v) => s + v.value, 0);
}

test('a disk-budget drop while the cloud is away, a gateway restart and a second drop: the backlog drains with no seq-skip refusal, every seq accounted for', async () => {
  cloudDir = e2e.dir('braid-skip-cloud-');
  gwDir = e2e.dir('braid-skip-gw-');
  const token = await addGatewayToken(cloudDir.path, GW);
  const cloudOpts = { ingest: { sealMaxAgeMs: 300 } };
  e2e.cloud = await startTestCloud(cloudDir.path, cloudOpts);
  const port = e2e.cloud.port;
  const gatewayConfig = {
    id: GW,
    cloud: { url: e2e.cloud.url, token, retryInitialMs: 50, retryMaxMs: 200, batchMaxReadings: 40, lingerMs: 0 },
    outbox: { maxBytes: 16 * 1024, epochIdleMs: 100, epochMs: 500 },
    mqtt: { ratePerDevice: 100_000, rateBurst: 100_000 },
  };
  const startGateway = async () => {
    e2e.gw = await startTestGateway(gatewayConfig, gwDir.path);
    e2e.clients = [];
    for (const d of DEVICES) e2e.clients.push(await connectDevice(e2e.gw.mqttUrl, d, 'skip-secret'));
  };
  e2e.gw = await startTestGateway(gatewayConfig, gwDir.path);
  for (const d of DEVICES) await e2e.gw.addDevice(d, 'skip-secret');
  for (const d of DEVICES) e2e.clients.push(await connectDevice(e2e.gw.mqttUrl, d, 'skip-secret'));

  let n = 0;
  const send = async (messages: number) => {
    for (let i = 0; i < messages; i++) {
      n++;
      const k = n % DEVICES.length;
      await publish(e2e.clients[k], `devices/${DEVICES[k]}/telemetry`, JSON.stringify({ ts: Date.now() - 3_600_000 + n, temp: n / 10, hum: n % 50, co2: 400 + n }), 1);
    }
  };
  const drops = async () => (await queryGatewayDb<{ n: number }>(e2e.gw!.dir, 'SELECT COUNT(*) AS n FROM gaps'))[0].n;

  await send(60);
  await eventually(() => e2e.gw!.gateway.outbox.status().pending === 0, 15_000);

  // The cloud goes away; the outbox goes far over its budget and drops the oldest (gap records).
  await e2e.cloud.close();
  e2e.cloud = null;
  await send(400);
  await eventually(async () => (await drops()) >= 1, 10_000);

  // The gateway restarts with its backlog and gap records unsent, and drops again.
  for (const c of e2e.clients) await endClient(c);
  await e2e.gw.close();
  const before = await drops();
  await startGateway();
  await send(400);
  await eventually(async () => (await drops()) > before, 10_000);

  // Back on the same dir and port: the backlog drains, and the cloud refuses nothing.
  e2e.cloud = await startTestCloud(cloudDir.path, { ...cloudOpts, http: { port } });
  await send(30);
  await eventually(async () => {
    const [row] = await queryGatewayDb<{ unsent: number }>(e2e.gw!.dir, 'SELECT COUNT(*) AS unsent FROM gaps WHERE sent = 0');
    return e2e.gw!.gateway.outbox.status().pending === 0 && row.unsent === 0;
  }, 30_000);
  expect(await cloudMetric('braid_ingest_rejected_total')).toBe(0);
  expect(await cloudMetric('braid_ingest_seq_gaps_total')).toBe(0);

  // Every seq the gateway gave out is stored or named by a gap record (the cloud's, sent by the gateway).
  const lastSeq = e2e.gw.gateway.outbox.status().lastSeq;
  const stored = await queryCloudDb<{ from: number; to: number }>(cloudDir.path, 'SELECT from_seq AS "from", to_seq AS "to" FROM received WHERE gateway = ?', [GW]);
  const gaps = await queryCloudDb<{ from: number; to: number }>(cloudDir.path, 'SELECT from_seq AS "from", to_seq AS "to" FROM gaps WHERE gateway = ?', [GW]);
  expect(gaps.length).toBeGreaterThanOrEqual(2);
  expect(normalize([...stored, ...gaps])).toEqual([{ from: 1, to: lastSeq }]);
  expect(await queryCloudDb(cloudDir.path, 'SELECT * FROM seq_gaps')).toEqual([]);

  // Every epoch closes and is reported; once sealed, E reaches the last one.
  const lastClosed = await eventually(async () => {
    const [row] = await queryGatewayDb<{ open: number; last: number | null; unreported: number }>(e2e.gw!.dir,
      'SELECT SUM(closed_at IS NULL) AS open, MAX(epoch) AS last, SUM(reported = 0) AS unreported FROM epochs');
    return row.open === 0 && row.unreported === 0 ? row.last : null;
  }, 15_000);
  await eventually(async () => {
    const db = await openCloudDb(join(cloudDir.path, 'cloud.db'));
    try {
      const epochs = await db.all<{ gateway: string; epoch: number; firstSeq: number; lastSeq: number }>('SELECT gateway, epoch, first_seq AS firstSeq, last_seq AS lastSeq FROM epochs');
      const sealed = await db.all<{ gateway: string; from: number; to: number }>('SELECT gateway, from_seq AS "from", to_seq AS "to" FROM sealed');
      const g = await db.all<{ gateway: string; from: number; to: number }>('SELECT gateway, from_seq AS "from", to_seq AS "to" FROM gaps');
      return watermark(epochs, sealed, g)[GW] === lastClosed;
    } finally {
      await db.close();
    }
  }, 15_000);
}, 120_000);
