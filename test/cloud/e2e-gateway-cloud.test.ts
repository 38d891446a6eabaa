/**
 * End to end: MQTT.js devices -> a real gateway (outbox, forwarder) -> a real cloud (ingest,
 * staging, sealing) -> master/ read by DuckDB. Devices publish repeats and readings days late; the
 * cloud goes away for a while (closed, then restarted on the same dir and port). Everything the
 * devices published arrives in master exactly once [INV-1, INV-2, INV-3], the gateway's outbox
 * drains to 0, and the vector watermark E[g] over cloud.db reaches the gateway's last closed epoch.
 */
import { join } from 'node:path';
import { watermark } from '../../cloud/ingest/watermark.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { type TestCloud, addGatewayToken, readMaster, startTestCloud } from '../support/cloud.js';
import { queryGatewayDb } from '../support/child-gateway.js';
import { connectDevice, eventually, publish, startTestGateway } from '../support/gateway.js';
import { e2eScope } from '../support/scope.js';

const GW = 'gw-e2e';
const DEVICES = ['dev-a', 'dev-b', 'dev-c'];
const DAY = 86_400_000;

let cloudDir: { path: string; remove: () => void };
const e2e = e2eScope<TestCloud>();

/** E over cloud.db, as the batch job takes it. */
async function cloudWatermark(): Promise<Record<string, number>> {
  const db = await openCloudDb(join(cloudDir.path, 'cloud.db'));
  try {
    const epochs = await db.all<{ gateway: string; epoch: number; firstSeq: number; lastSeq: number }>('SELECT gateway, epoch, first_seq AS firstSeq, last_seq AS lastSeq FROM epochs');
    const sealed = await db.all<{ gateway: string; from: number; to: number }>('SELECT gateway, from_seq AS "from", to_seq AS "to" FROM sealed');
    const gaps = await db.all<{ gateway: string; from: number; to: number }>('SELECT gateway, from_seq AS "from", to_seq AS "to" FROM gaps');
    return watermark(epochs, sealed, gaps);
  } finally {
    await db.close();
  }
}

test('devices -> gateway -> cloud, with repeats, late readings and a cloud outage: master holds every reading exactly once and E catches up', async () => {
  cloudDir = e2e.dir('braid-e2e-cloud-');
  const token = await addGatewayToken(cloudDir.path, GW);
  const cloudOpts = { ingest: { sealMaxAgeMs: 400, groupCommitMs: 2 } };
  e2e.cloud = await startTestCloud(cloudDir.path, cloudOpts);
  const port = e2e.cloud.port;
  e2e.gw = await startTestGateway({
    id: GW,
    cloud: { url: e2e.cloud.url, token, retryInitialMs: 50, retryMaxMs: 250, batchMaxReadings: 300 },
    outbox: { epochIdleMs: 150, epochMs: 1000 },
  });
  for (const d of DEVICES) e2e.clients.push(await connectDevice(e2e.gw.mqttUrl, d, await e2e.gw.addDevice(d)));

  /** device|metric|ts -> value, what the devices meant (repeats collapse). */
  const published = new Map<string, number>();
  const now = Date.now();
  let n = 0;
  const send = async (round: number, count: number) => {
    for (let i = 0; i < count; i++) {
      for (const [k, d] of DEVICES.entries()) {
        n++;
        // Every 7th is days late (an offline device catching up); every 5th is sent twice.
        const ts = i % 7 === 0 ? now - (2 + (i % 3)) * DAY - n * 1000 : now - 60_000 + round * 1000 + i * 7 + k;
        const payload = { ts, temp: 20 + ((n * 13) % 100) / 10, hum: 40 + (n % 17) };
        published.set(`${d}|temp|${ts}`, payload.temp);
        published.set(`${d}|hum|${ts}`, payload.hum);
        await publish(e2e.clients[k], `devices/${d}/telemetry`, JSON.stringify(payload), 1);
        if (i % 5 === 0) await publish(e2e.clients[k], `devices/${d}/telemetry`, JSON.stringify(payload), 1);
      }
    }
  };

  await send(0, 150);
  await eventually(() => e2e.gw!.gateway.outbox.status().pending === 0, 15_000);

  // Outage: the cloud goes away; the gateway keeps taking readings into its outbox.
  await e2e.cloud.close();
  e2e.cloud = null;
  await send(1, 120);
  await new Promise((r) => setTimeout(r, 400));
  expect(e2e.gw.gateway.outbox.status().pending).toBeGreaterThan(0);
  expect(e2e.gw.gateway.forwarder.status().consecutiveFailures).toBeGreaterThan(0);

  // Back on the same dir and port: the backlog drains.
  e2e.cloud = await startTestCloud(cloudDir.path, { ...cloudOpts, http: { port } });
  await send(2, 60);
  await eventually(() => e2e.gw!.gateway.outbox.status().pending === 0, 20_000);

  // Every epoch closes (idle), is reported, and once its readings are sealed E reaches it.
  const lastClosed = await eventually(async () => {
    const rows = await queryGatewayDb<{ open: number; last: number | null; unreported: number }>(e2e.gw!.dir,
      'SELECT SUM(closed_at IS NULL) AS open, MAX(epoch) AS last, SUM(reported = 0) AS unreported FROM epochs');
    return rows[0].open === 0 && rows[0].unreported === 0 ? rows[0].last : null;
  }, 15_000);
  expect(lastClosed).toBeGreaterThan(1);
  await eventually(async () => (await cloudWatermark())[GW] === lastClosed, 15_000);

  const rows = await readMaster(cloudDir.path);
  const got = new Map<string, number>();
  for (const r of rows) {
    const k = `${r.device}|${r.metric}|${r.ts}`;
    expect(got.has(k)).toBe(false);
    got.set(k, r.value);
  }
  expect(got.size).toBe(published.size);
  expect(new Map([...got].sort())).toEqual(new Map([...published].sort()));
  // Seqs are contiguous and each stored once; late readings landed in their own (older) days.
  expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: rows.length }, (_, i) => i + 1));
  expect(new Set(rows.map((r) => r.day)).size).toBeGreaterThan(2);
  expect(Math.max(...rows.map((r) => r.epoch))).toBe(lastClosed);
  // About 1,600 QoS 1 publishes, each awaited, each behind a durable group commit: the wall time
  // follows the disk's fsync latency, 5 s on a quiet machine and 70 s with 8 copies of this test at
  // once; the waits above carry their own deadlines.
}, 180_000);
