/**
 * [INV-1] kill -9 of the cloud (`node bin/braid.js cloud` in a child process) while gateways
 * stream ingest requests and retry each one until it is answered 2xx: after restarts, every
 * acknowledged reading is in master/ exactly once [INV-2]. Small segments and a short seal age
 * put kills in the middle of seals as well as group commits. SIGTERM stops cleanly and seals.
 */
import { join } from 'node:path';
import {
  type ChildCloud, addGatewayToken, ingestBody, killAllChildClouds, listFiles, makeReadings, postIngest,
  queryCloudDb, readMaster, spawnCloud,
} from '../support/cloud.js';
import { tempDir } from '../support/gateway.js';

let dir: { path: string; remove: () => void };
beforeEach(() => { dir = tempDir('braid-crash-'); });
afterEach(async () => {
  await killAllChildClouds();
  dir.remove();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('[INV-1] kill -9 during a stream of ingest: every acknowledged reading is in master exactly once', async () => {
  const gateways = ['gw-1', 'gw-2', 'gw-3'];
  const tokens = new Map<string, string>();
  for (const g of gateways) tokens.set(g, await addGatewayToken(dir.path, g));
  const env = { BRAID_INGEST_SEAL_MAX_READINGS: '2500', BRAID_INGEST_SEAL_MAX_AGE_MS: '300' };
  let child: ChildCloud = await spawnCloud(dir.path, { env });
  const N = 12_000;
  const BATCH = 200;
  const acked = new Map(gateways.map((g) => [g, 0]));
  let failures = 0;

  const client = async (g: string) => {
    for (let from = 1; from <= N; from += BATCH) {
      const readings = makeReadings(from, Math.min(N, from + BATCH - 1), { days: 2, epoch: (s) => 1 + Math.floor(s / 1000) });
      const body = ingestBody(g, readings);
      for (;;) {
        try {
          const a = await postIngest(child.url, tokens.get(g)!, body);
          if (a.status === 200) {
            expect(a.body.ackSeq).toBe(body.lastSeq);
            acked.set(g, body.lastSeq);
            break;
          }
          failures++;
        } catch {
          failures++;
        }
        await sleep(20);
      }
    }
  };
  const progress = () => [...acked.values()].reduce((s, v) => s + v, 0) / (N * gateways.length);
  const killer = async () => {
    for (const at of [0.2, 0.45, 0.7]) {
      while (progress() < at) await sleep(5);
      await sleep(Math.random() * 40);
      await child.stop('SIGKILL');
      child = await spawnCloud(dir.path, { env });
    }
  };
  await Promise.all([...gateways.map(client), killer()]);
  expect(failures).toBeGreaterThan(0);

  const exit = await child.stop('SIGTERM');
  expect(exit).toEqual({ code: 0, signal: null });
  expect(listFiles(join(dir.path, 'staging')).filter((f) => f.endsWith('.ndjson'))).toEqual([]);

  const rows = await readMaster(dir.path);
  for (const g of gateways) {
    const got = rows.filter((r) => r.gateway === g);
    expect(got.length).toBe(N);
    expect(got.map((r) => r.seq)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    const want = makeReadings(1, N, { days: 2, epoch: (s) => 1 + Math.floor(s / 1000) });
    expect(got.map((r) => [r.seq, r.epoch, r.device, r.metric, r.ts, r.value])).toEqual(want);
  }
  expect(await queryCloudDb(dir.path, 'SELECT gateway, from_seq, to_seq FROM sealed ORDER BY gateway')).toEqual(
    gateways.map((g) => ({ gateway: g, from_seq: 1, to_seq: N })));
  expect(await queryCloudDb(dir.path, 'SELECT * FROM staged')).toEqual([]);
  const catalogued = await queryCloudDb<{ n: number }>(dir.path, 'SELECT SUM(rows) AS n FROM files');
  expect(catalogued[0].n).toBe(N * gateways.length);
}, 120_000);

test('SIGTERM commits what is queued, seals the open segment and exits 0; a restart finds nothing to recover', async () => {
  const token = await addGatewayToken(dir.path, 'gw-1');
  const child = await spawnCloud(dir.path);
  const r = makeReadings(1, 500);
  const a = await postIngest(child.url, token, ingestBody('gw-1', r));
  expect(a.status).toBe(200);
  expect(await child.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  expect(listFiles(join(dir.path, 'staging'))).toEqual([]);
  expect((await readMaster(dir.path)).map((x) => x.seq)).toEqual(r.map((x) => x[0]));
});
