/**
 * A cloud restored from an older backup recovers by itself (docs/operations.md, Restore): a real
 * gateway forwards to a real cloud; a cold backup of the cloud's data dir is taken as the backup
 * procedure says (the cloud stopped, then cloud.db, staging/, master/); more readings are
 * acknowledged; the cloud is stopped, its data dir replaced by the backup, and started again. The
 * gateway's next batch is refused as skipping seqs (the restored cloud lost what it had
 * acknowledged after the backup), the gateway records that range as a cloud_lost gap record, and
 * from then on everything goes through: the new readings reach master/, the gap record covers
 * exactly the lost range, both sides counted it, GET /api/v1/gateways lists it, and a batch run's
 * watermark passes the hole up to the gateway's last closed epoch.
 */
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { batchOptionsFrom, readManifest, startBatchRun } from '../../cloud/batch/index.js';
import { normalize } from '../../cloud/ingest/ranges.js';
import { queryGatewayDb } from '../support/child-gateway.js';
import { queryCloudDb, readMaster, testCloudConfig } from '../support/cloud.js';
import { metricValue } from '../support/forwarder-fixtures.js';
import { type TestGateway, connectDevice, endClient, eventually, publish, startTestGateway, tempDir } from '../support/gateway.js';
import { type SpeedCloud, credentials, getJson, startSpeedCloud } from './speed-fixtures.js';

const GW = 'gw-restore';
const DEVICE = 'dev-r';

let cloudDir: { path: string; remove: () => void };
let backupDir: { path: string; remove: () => void };
let gwDir: { path: string; remove: () => void };
let cloud: SpeedCloud | null = null;
let gw: TestGateway | null = null;
let client: MqttClient | null = null;

afterEach(async () => {
  if (client) await endClient(client);
  client = null;
  await gw?.close();
  gw = null;
  await cloud?.close();
  cloud = null;
  for (const d of [cloudDir, backupDir, gwDir]) d?.remove();
});

/** The parts of a data dir a backup holds (docs/operations.md, "Backup and restore of the cloud"): cloud.db (+ -wal), staging/, master/, views/. */
function copyBackup(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  for (const name of ['cloud.db', 'cloud.db-wal', 'staging', 'master', 'views']) {
    if (existsSync(join(from, name))) cpSync(join(from, name), join(to, name), { recursive: true, preserveTimestamps: true });
  }
}

test('a cloud restored from an older backup: the gateway records the lost seqs as a cloud_lost gap record and ingest, master/ and the watermark move on', async () => {
  cloudDir = tempDir('braid-restore-cloud-');
  backupDir = tempDir('braid-restore-backup-');
  gwDir = tempDir('braid-restore-gw-');
  const { tokens, read } = await credentials(cloudDir.path, [GW]);
  const cloudOpts = { ingest: { sealMaxAgeMs: 300 } };
  cloud = await startSpeedCloud(cloudDir.path, cloudOpts);
  const port = cloud.port;
  gw = await startTestGateway({
    id: GW,
    cloud: { url: cloud.url, token: tokens[GW], retryInitialMs: 50, retryMaxMs: 200, lingerMs: 0 },
    outbox: { epochIdleMs: 100, epochMs: 500 },
    mqtt: { ratePerDevice: 100_000, rateBurst: 100_000 },
  }, gwDir.path);
  await gw.addDevice(DEVICE, 'restore-secret');
  client = await connectDevice(gw.mqttUrl, DEVICE, 'restore-secret');

  let n = 0;
  const send = async (messages: number) => {
    for (let i = 0; i < messages; i++) {
      n++;
      await publish(client!, `devices/${DEVICE}/telemetry`, JSON.stringify({ ts: Date.now() - 3_600_000 + n, temp: n / 10 }), 1);
    }
  };
  /** Everything acknowledged, every epoch closed and reported; the last closed epoch. */
  const settled = () => eventually(async () => {
    const [row] = await queryGatewayDb<{ open: number; last: number | null; unreported: number }>(gw!.dir,
      'SELECT SUM(closed_at IS NULL) AS open, MAX(epoch) AS last, SUM(reported = 0) AS unreported FROM epochs');
    const [gaps] = await queryGatewayDb<{ unsent: number }>(gw!.dir, 'SELECT COUNT(*) AS unsent FROM gaps WHERE sent = 0');
    return gw!.gateway.outbox.status().pending === 0 && row.open === 0 && row.unreported === 0 && gaps.unsent === 0 ? row.last : null;
  }, 20_000);

  // 1. Readings 1..B acknowledged, then a cold backup (the cloud stopped: staging sealed into master/).
  await send(30);
  await settled();
  const backedUp = gw.gateway.outbox.status().lastSeq;
  await cloud.close();
  cloud = null;
  copyBackup(cloudDir.path, backupDir.path);
  expect(readdirSync(join(backupDir.path, 'master')).length).toBeGreaterThan(0);

  // 2. More readings B+1..A acknowledged by the cloud after the backup: the gateway deletes them.
  cloud = await startSpeedCloud(cloudDir.path, { ...cloudOpts, http: { port } });
  await send(40);
  await settled();
  const acked = gw.gateway.outbox.status().lastSeq;
  expect(gw.gateway.forwarder.status().ackedSeq).toBe(acked);
  expect(acked).toBeGreaterThan(backedUp);

  // 3. The restore: stop the cloud, replace its data dir by the backup, start it on the same port.
  await cloud.close();
  cloud = null;
  rmSync(cloudDir.path, { recursive: true, force: true });
  copyBackup(backupDir.path, cloudDir.path);
  cloud = await startSpeedCloud(cloudDir.path, { ...cloudOpts, http: { port } });
  expect(await queryCloudDb(cloudDir.path, 'SELECT MAX(to_seq) AS seq FROM received WHERE gateway = ?', [GW])).toEqual([{ seq: backedUp }]);

  // 4. New readings: the gateway recovers by itself.
  await send(20);
  const lastClosed = await settled();
  const lastSeq = gw.gateway.outbox.status().lastSeq;
  expect(lastSeq).toBe(acked + 20);

  // The gap record covers exactly the lost range, with an unknown event-time range.
  expect(await queryCloudDb(cloudDir.path, 'SELECT reason, from_seq, to_seq, count, min_ts, max_ts, devices FROM gaps WHERE gateway = ?', [GW]))
    .toEqual([{ reason: 'cloud_lost', from_seq: backedUp + 1, to_seq: acked, count: acked - backedUp, min_ts: -1, max_ts: -1, devices: '[]' }]);
  const received = await queryCloudDb<{ from: number; to: number }>(cloudDir.path, 'SELECT from_seq AS "from", to_seq AS "to" FROM received WHERE gateway = ? ORDER BY from_seq', [GW]);
  expect(received).toEqual([{ from: 1, to: backedUp }, { from: acked + 1, to: lastSeq }]);
  expect(normalize([...received, { from: backedUp + 1, to: acked }])).toEqual([{ from: 1, to: lastSeq }]);

  // Counted on both sides; refused once, then taken.
  const lost = acked - backedUp;
  expect(await metricValue(gw.gateway.registry, 'braid_forward_cloud_lost_readings_total')).toBe(lost);
  const reg = cloud.app.server.registry;
  expect(await metricValue(reg, 'braid_ingest_cloud_lost_readings_total')).toBe(lost);
  expect(await metricValue(reg, 'braid_ingest_rejected_total', { code: 'BRAID_ERR_INGEST_SEQ_SKIP' })).toBe(1);

  // Listed for the operator, apart from disk drops.
  const doc = await getJson(cloud.url, '/api/v1/gateways', read);
  const g = (doc.body.gateways as Array<Record<string, unknown>>).find((x) => x.id === GW)!;
  expect(g.gaps).toEqual([{ fromSeq: backedUp + 1, toSeq: acked, count: lost, reason: 'cloud_lost', minTs: null, maxTs: null, devices: [] }]);
  expect(g.cloudLost).toBe(lost);
  expect(g.dropped).toMatchObject({ diskBudget: 0 });

  // The new readings are in master/ (the old ones from the backup too; the lost ones are not).
  await cloud.app.server.ingest.sealNow();
  const seqs = (await readMaster(cloudDir.path)).filter((r) => r.gateway === GW).map((r) => r.seq).sort((a, b) => a - b);
  expect(seqs).toEqual([...Array.from({ length: backedUp }, (_, i) => i + 1), ...Array.from({ length: 20 }, (_, i) => acked + 1 + i)]);

  // A batch run's watermark passes the hole: E is the gateway's last closed epoch.
  const batchOptions = { ...batchOptionsFrom(testCloudConfig(cloudDir.path)), memoryLimit: '512MB', threads: 2 };
  await (await startBatchRun(batchOptions, { trigger: 'cli' })).done;
  const manifest = await readManifest(join(cloudDir.path, 'views'));
  expect(manifest?.watermark[GW]).toBe(lastClosed);
}, 120_000);
