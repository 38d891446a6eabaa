/**
 * Start-up recovery of staging segments left by dead ingest processes (docs/cloud-storage.md):
 * committed lines are sealed, lines of a failed commit are stored only if nobody holds their seqs
 * [INV-2], a torn last line is cut, a live process's segments are left alone, and a seal that
 * crashed half-way is finished without rewriting a master file [INV-4].
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { openCloudDb } from '../../cloud/store/schema.js';
import {
  type Reading, type TestCloud, addGatewayToken, hashTree, ingestBody, listFiles, makeReadings, postIngest,
  queryCloudDb, readMaster, startTestCloud,
} from '../support/cloud.js';
import { tempDir } from '../support/gateway.js';

let dir: { path: string; remove: () => void };
let cloud: TestCloud | null = null;

beforeEach(() => { dir = tempDir('braid-recover-'); });
afterEach(async () => {
  await cloud?.close();
  cloud = null;
  dir.remove();
});

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

const line = (g: string, rows: Reading[]) => `${JSON.stringify({ g, r: rows })}\n`;

/** A staging dir as a process with `pid` leaves it; returns the dir. */
function procDir(name: string, pid: number): string {
  const d = join(dir.path, 'staging', name);
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, 'owner.json'), JSON.stringify({ pid, host: hostname(), startTime: null, startedAt: 1 }));
  return d;
}

/** Write rows into cloud.db as a committed group commit would have. */
async function commit(sql: Array<[string, unknown[]]>): Promise<void> {
  const db = await openCloudDb(join(dir.path, 'cloud.db'));
  try {
    for (const [q, p] of sql) await db.run(q, p);
  } finally {
    await db.close();
  }
}

const stagingFiles = () => listFiles(join(dir.path, 'staging')).filter((f) => f.endsWith('.ndjson'));

test("a dead process's segments are adopted and sealed: committed lines kept, a failed commit's lines stored once, torn tail cut", async () => {
  await addGatewayToken(dir.path, 'gw-1');
  const pid = deadPid();
  const d = procDir(`1700000000000-${pid}-aaaaaa`, pid);
  const s1 = `1700000000001-${pid}-11111111`;
  const s2 = `1700000000002-${pid}-22222222`;
  // s1: 1..10 committed; 11..20 written by a commit that failed (nobody holds them);
  //     21..30 also of a failed commit, but committed again in s2; then a torn line (31..).
  writeFileSync(join(d, `${s1}.ndjson`), line('gw-1', makeReadings(1, 10)) + line('gw-1', makeReadings(11, 20))
    + line('gw-1', makeReadings(21, 30)) + line('gw-1', makeReadings(31, 40)).slice(0, 50));
  writeFileSync(join(d, `${s2}.ndjson`), line('gw-1', makeReadings(21, 30)));
  await commit([
    ['INSERT INTO received (gateway, from_seq, to_seq) VALUES (?, ?, ?), (?, ?, ?)', ['gw-1', 1, 10, 'gw-1', 21, 30]],
    ['INSERT INTO staged (segment, gateway, from_seq, to_seq) VALUES (?, ?, ?, ?), (?, ?, ?, ?)', [s1, 'gw-1', 1, 10, s2, 'gw-1', 21, 30]],
  ]);
  // A live process's dir (this one's pid) must be left alone.
  const alive = procDir(`1700000000003-${process.pid}-bbbbbb`, process.pid);
  writeFileSync(join(alive, `1700000000004-${process.pid}-33333333.ndjson`), line('gw-1', makeReadings(41, 45)));

  cloud = await startTestCloud(dir.path);
  await cloud.server.ingest.sealNow();

  const rows = await readMaster(dir.path);
  expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
  expect(rows.slice(10, 20).map((r) => [r.seq, r.device, r.metric, r.ts, r.value])).toEqual(makeReadings(11, 20).map(([s, , dv, m, ts, v]) => [s, dv, m, ts, v]));
  expect(await queryCloudDb(dir.path, 'SELECT from_seq, to_seq FROM received')).toEqual([{ from_seq: 1, to_seq: 30 }]);
  expect(await queryCloudDb(dir.path, 'SELECT from_seq, to_seq FROM sealed')).toEqual([{ from_seq: 1, to_seq: 30 }]);
  expect(await queryCloudDb(dir.path, 'SELECT segment FROM staged')).toEqual([]);
  expect(existsSync(d)).toBe(false);
  expect(stagingFiles().map((f) => f.slice(alive.length + 1))).toEqual([`1700000000004-${process.pid}-33333333.ndjson`]);
});

test('a seal that crashed after writing its file (before the catalog) or after the catalog (before deleting the segment) is finished once', async () => {
  const token = await addGatewayToken(dir.path, 'gw-1');
  cloud = await startTestCloud(dir.path);
  const r = makeReadings(1, 100, { days: 2 });
  await postIngest(cloud.url, token, ingestBody('gw-1', r));
  const seg = stagingFiles()[0];
  const segment = seg.split('/').pop()!.replace('.ndjson', '');
  const content = readFileSync(seg);
  await cloud.server.ingest.sealNow();
  await cloud.close();
  cloud = null;
  const master = hashTree(join(dir.path, 'master'));
  expect(master.size).toBe(2);

  // Crash after the files were linked in, before the catalog transaction: the catalog, `sealed`
  // and `staged` are as before it; the segment file is still there.
  const pid = deadPid();
  const d = procDir(`1700000000000-${pid}-cccccc`, pid);
  writeFileSync(join(d, `${segment}.ndjson`), content);
  await commit([
    ['DELETE FROM files', []], ['DELETE FROM file_gateways', []], ['DELETE FROM sealed', []],
    ['INSERT INTO staged (segment, gateway, from_seq, to_seq) VALUES (?, ?, ?, ?)', [segment, 'gw-1', 1, 100]],
  ]);
  cloud = await startTestCloud(dir.path);
  await cloud.server.ingest.sealNow();
  expect(hashTree(join(dir.path, 'master'))).toEqual(master);
  expect((await queryCloudDb<{ n: number }>(dir.path, 'SELECT COUNT(*) AS n FROM files'))[0].n).toBe(2);
  expect(await queryCloudDb(dir.path, 'SELECT from_seq, to_seq FROM sealed')).toEqual([{ from_seq: 1, to_seq: 100 }]);
  expect(stagingFiles()).toEqual([]);
  await cloud.close();
  cloud = null;

  // Crash after the catalog transaction, before the segment file was deleted.
  const d2 = procDir(`1700000000005-${pid}-dddddd`, pid);
  writeFileSync(join(d2, `${segment}.ndjson`), content);
  cloud = await startTestCloud(dir.path);
  await cloud.server.ingest.sealNow();
  expect(hashTree(join(dir.path, 'master'))).toEqual(master);
  expect(stagingFiles()).toEqual([]);
  const rows = await readMaster(dir.path);
  expect(rows.map((x) => x.seq)).toEqual(r.map((x) => x[0]));
});
