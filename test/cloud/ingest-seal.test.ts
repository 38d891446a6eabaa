/**
 * Sealing staging segments into master/ (docs/cloud-storage.md): DuckDB reads back exactly the
 * stored readings with their `day` partition, the catalog and `sealed` agree, staging is emptied,
 * segments rotate by size and by age, and no master file is ever modified [INV-4]. A process's own
 * segments are sealed from the columns its committer kept (nothing read back), with the same result
 * as from the file; the worker's Parquet (which it writes and fsyncs itself) equals this thread's.
 */
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { DuckDBInstance } from '@duckdb/node-api';
import * as arrow from 'apache-arrow';
import * as pq from 'parquet-wasm';
import { DayColumns, ParquetEncoder, encodeParquet } from '../../cloud/ingest/parquet.js';
import { createLogger } from '../../shared/logger.js';
import {
  type Reading, type TestCloud, addGatewayToken, hashTree, ingestBody, listFiles, makeReadings, postIngest,
  queryCloudDb, readMaster, startTestCloud,
} from '../support/cloud.js';
import { eventually, tempDir } from '../support/gateway.js';

let dir: { path: string; remove: () => void };
let cloud: TestCloud | null = null;

beforeEach(() => { dir = tempDir('braid-seal-'); });
afterEach(async () => {
  await cloud?.close();
  cloud = null;
  dir.remove();
});

const day = (ts: number) => new Date(ts).toISOString().slice(0, 10);
const stagingFiles = () => listFiles(join(dir.path, 'staging')).filter((f) => f.endsWith('.ndjson'));

function expectMaster(rows: Awaited<ReturnType<typeof readMaster>>, gateway: string, readings: Reading[]): void {
  const got = rows.filter((r) => r.gateway === gateway);
  expect(got.length).toBe(readings.length);
  expect(got).toEqual(readings.map(([seq, epoch, device, metric, ts, value]) => ({ gateway, seq, epoch, device, metric, ts, value, day: day(ts) })));
}

test('seal: Parquet readable by DuckDB with exactly the stored readings, catalogued, sealed ranges right, staging removed', async () => {
  const t1 = await addGatewayToken(dir.path, 'gw-1');
  const t2 = await addGatewayToken(dir.path, 'gw-2');
  cloud = await startTestCloud(dir.path);
  const r1 = makeReadings(1, 3000, { days: 3, devices: 7, epoch: (s) => 1 + Math.floor(s / 1000) });
  const r2 = makeReadings(1, 500, { days: 2 });
  for (let i = 0; i < r1.length; i += 1000) {
    expect((await postIngest(cloud.url, t1, ingestBody('gw-1', r1.slice(i, i + 1000)))).status).toBe(200);
  }
  expect((await postIngest(cloud.url, t2, ingestBody('gw-2', r2))).status).toBe(200);
  // A retry of already stored readings adds nothing to master.
  await postIngest(cloud.url, t1, ingestBody('gw-1', r1.slice(0, 1000)));
  expect(stagingFiles().length).toBe(1);

  await cloud.server.ingest.sealNow();
  const rows = await readMaster(dir.path);
  expect(rows.length).toBe(3500);
  expectMaster(rows, 'gw-1', r1);
  expectMaster(rows, 'gw-2', r2);

  // One file per day of the segment, in its day= partition, all in the catalog.
  const parquet = listFiles(join(dir.path, 'master')).map((f) => f.slice(dir.path.length + 1)).sort();
  expect(parquet.length).toBe(3);
  for (const p of parquet) expect(p).toMatch(/^master\/day=\d{4}-\d{2}-\d{2}\/part-\d+-\d+-[0-9a-f]+\.parquet$/);
  const files = await queryCloudDb<{ path: string; day: string; rows: number; bytes: number }>(dir.path, 'SELECT path, day, rows, bytes FROM files ORDER BY path');
  expect(files.map((f) => f.path)).toEqual(parquet);
  expect(files.reduce((s, f) => s + f.rows, 0)).toBe(3500);
  for (const f of files) expect(f.path).toContain(`day=${f.day}/`);
  const fg = await queryCloudDb<{ gateway: string; rows: number; min_seq: number; max_seq: number; min_epoch: number; max_epoch: number }>(
    dir.path, 'SELECT gateway, SUM(rows) AS rows, MIN(min_seq) AS min_seq, MAX(max_seq) AS max_seq, MIN(min_epoch) AS min_epoch, MAX(max_epoch) AS max_epoch FROM file_gateways GROUP BY gateway ORDER BY gateway');
  expect(fg).toEqual([
    { gateway: 'gw-1', rows: 3000, min_seq: 1, max_seq: 3000, min_epoch: 1, max_epoch: 4 },
    { gateway: 'gw-2', rows: 500, min_seq: 1, max_seq: 500, min_epoch: 1, max_epoch: 1 },
  ]);

  expect(await queryCloudDb(dir.path, 'SELECT gateway, from_seq, to_seq FROM sealed ORDER BY gateway')).toEqual([
    { gateway: 'gw-1', from_seq: 1, to_seq: 3000 }, { gateway: 'gw-2', from_seq: 1, to_seq: 500 },
  ]);
  expect(await queryCloudDb(dir.path, 'SELECT * FROM staged')).toEqual([]);
  expect(stagingFiles()).toEqual([]);
  expect(readdirSync(join(dir.path, 'tmp'))).toEqual([]);
  const m = cloud.server.registry;
  expect((await m.getSingleMetric('braid_master_files_total')!.get()).values[0].value).toBe(3);
  expect((await m.getSingleMetric('braid_master_sealed_readings_total')!.get()).values[0].value).toBe(3500);
  expect((await m.getSingleMetric('braid_staging_readings')!.get()).values[0].value).toBe(0);
});

test('the Parquet types outside tools see', async () => {
  const t = await addGatewayToken(dir.path, 'gw-1');
  cloud = await startTestCloud(dir.path);
  await postIngest(cloud.url, t, ingestBody('gw-1', makeReadings(1, 10)));
  await cloud.server.ingest.sealNow();
  const db = await DuckDBInstance.create(':memory:');
  const c = await db.connect();
  const r = await c.runAndReadAll(`DESCRIBE SELECT * FROM read_parquet('${dir.path}/master/**/*.parquet', hive_partitioning = true)`);
  const types = Object.fromEntries(r.getRowObjects().map((x) => [x.column_name, x.column_type]));
  expect(types).toEqual({
    device: 'VARCHAR', metric: 'VARCHAR', ts: 'TIMESTAMP WITH TIME ZONE', value: 'DOUBLE',
    gateway: 'VARCHAR', seq: 'BIGINT', epoch: 'BIGINT', day: 'DATE',
  });
  // docs/cloud-storage.md: ids dictionary-encoded, ts, seq and epoch DELTA_BINARY_PACKED.
  const enc = await c.runAndReadAll(`SELECT path_in_schema AS col, encodings FROM parquet_metadata('${dir.path}/master/**/*.parquet')`);
  const encodings = Object.fromEntries(enc.getRowObjects().map((x) => [x.col, String(x.encodings)]));
  c.closeSync();
  db.closeSync();
  for (const col of ['device', 'metric', 'gateway']) expect(encodings[col]).toMatch(/DICTIONARY/);
  for (const col of ['ts', 'seq', 'epoch']) expect(encodings[col]).toMatch(/^(RLE, )?DELTA_BINARY_PACKED$/);
});

test('a segment holds at most sealMaxReadings; a big request spills into the next one', async () => {
  const t = await addGatewayToken(dir.path, 'gw-1');
  cloud = await startTestCloud(dir.path, { ingest: { sealMaxReadings: 400 } });
  const r = makeReadings(1, 1000);
  expect((await postIngest(cloud.url, t, ingestBody('gw-1', r))).body).toEqual({ ackSeq: 1000, stored: 1000, duplicates: 0 });
  await cloud.server.ingest.sealNow();
  const files = await queryCloudDb<{ path: string; rows: number }>(dir.path, 'SELECT path, rows FROM files ORDER BY path');
  // Segment ids created in the same ms sort by their random part: compare the multiset.
  expect(files.map((f) => f.rows).sort((a, b) => a - b)).toEqual([200, 400, 400]);
  expectMaster(await readMaster(dir.path), 'gw-1', r);
  expect(stagingFiles()).toEqual([]);
});

test('a segment is sealed once sealMaxAgeMs old, without a request or a close', async () => {
  const t = await addGatewayToken(dir.path, 'gw-1');
  cloud = await startTestCloud(dir.path, { ingest: { sealMaxAgeMs: 300 } });
  const r = makeReadings(1, 100, { days: 2 });
  await postIngest(cloud.url, t, ingestBody('gw-1', r));
  await eventually(async () => (await queryCloudDb(dir.path, 'SELECT * FROM sealed')).length === 1, 5000);
  await eventually(() => stagingFiles().length === 0, 5000);
  expectMaster(await readMaster(dir.path), 'gw-1', r);
});

test('[INV-4] master files are never modified: hashes of old files hold across more ingest, seals and a restart', async () => {
  const t = await addGatewayToken(dir.path, 'gw-1');
  cloud = await startTestCloud(dir.path, { ingest: { sealMaxReadings: 250 } });
  await postIngest(cloud.url, t, ingestBody('gw-1', makeReadings(1, 600, { days: 3 })));
  await cloud.server.ingest.sealNow();
  const before = hashTree(join(dir.path, 'master'));
  expect(before.size).toBeGreaterThan(3);

  // Same days again (late readings), repeats of sealed seqs, new seqs; seal; restart; seal.
  await postIngest(cloud.url, t, ingestBody('gw-1', makeReadings(1, 900, { days: 3 })));
  await cloud.server.ingest.sealNow();
  await cloud.close();
  cloud = await startTestCloud(dir.path, { ingest: { sealMaxReadings: 250 } });
  await postIngest(cloud.url, t, ingestBody('gw-1', makeReadings(901, 1000, { days: 3 })));
  await cloud.close();
  cloud = null;

  const after = hashTree(join(dir.path, 'master'));
  for (const [path, hash] of before) expect({ path, hash: after.get(path) }).toEqual({ path, hash });
  expect(after.size).toBeGreaterThan(before.size);
  const rows = await readMaster(dir.path);
  expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
});

test('[INV-1] a segment file that lacks staged seqs (still being written, or damaged) is not sealed: its readings stay in staging and are sealed once the file holds them', async () => {
  const t = await addGatewayToken(dir.path, 'gw-1');
  cloud = await startTestCloud(dir.path, { ingest: { sealMaxAgeMs: 600_000 } }, { ingest: { orphanScanMs: 200 } });
  const first = makeReadings(1, 50);
  const second = makeReadings(51, 100);
  expect((await postIngest(cloud.url, t, ingestBody('gw-1', first))).status).toBe(200);
  expect((await postIngest(cloud.url, t, ingestBody('gw-1', second))).status).toBe(200);
  // The segment as a sealer would find it before the second request's line was appended.
  const [file] = stagingFiles();
  const whole = readFileSync(file);
  const firstLine = whole.subarray(0, whole.indexOf(10) + 1);
  writeFileSync(file, firstLine);
  await cloud.server.ingest.sealNow();
  expect(await readMaster(dir.path)).toEqual([]);
  expect(stagingFiles()).toEqual([file]);
  expect(await queryCloudDb(dir.path, 'SELECT from_seq, to_seq FROM staged')).toEqual([{ from_seq: 1, to_seq: 100 }]);
  expect(await queryCloudDb(dir.path, 'SELECT * FROM sealed')).toEqual([]);
  const failures = (await cloud.server.registry.getSingleMetric('braid_master_seal_failures_total')!.get()).values[0].value;
  expect(failures).toBeGreaterThanOrEqual(1);
  // The whole file again (the append landed): the next scan seals all 100, once.
  writeFileSync(file, whole);
  await eventually(() => stagingFiles().length === 0, 10_000);
  const rows = await readMaster(dir.path);
  expectMaster(rows, 'gw-1', [...first, ...second]);
});

test("the Parquet worker builds the same file and per-gateway bounds as this thread, takes the columns' buffers without a copy, writes and fsyncs the file itself, and runs at its nice value", async () => {
  const fill = (c: DayColumns) => {
    for (let i = 0; i < 3000; i++) {
      const g = i % 3 === 0 ? 'gw-ä' : 'gw-2';
      c.append(g, 2 ** 45 + i, 7 + (i >> 10), `dev-${i % 17}`, i % 2 ? 'temp' : 'hum', i === 1 ? -1234567 : 1732406400000 + i * 7, i % 5 ? i / 3 : -1e-300);
    }
  };
  const mine = new DayColumns(20051, 64);
  const theirs = new DayColumns(20051, 64);
  fill(mine);
  fill(theirs);
  const encoder = new ParquetEncoder(() => { throw new Error('no worker'); }, 5);
  try {
    const here = { bytes: encodeParquet(mine.table()), gateways: mine.gatewayStats() };
    const ts = theirs.ts;
    // The worker writes and fsyncs the file itself (the seal's path); its bytes are read back here.
    const path = join(dir.path, 'day.parquet');
    const written = await encoder.writeColumns(theirs, path);
    const there = { bytes: readFileSync(path), gateways: written.gateways };
    expect(written.bytes).toBe(there.bytes.length);
    expect(ts.byteLength).toBe(0); // transferred
    expect(theirs.length).toBe(0);
    const rows = (b: Uint8Array) => arrow.tableFromIPC(pq.readParquet(b).intoIPCStream()).toArray().map((r) => r.toJSON());
    expect(there.gateways).toEqual(here.gateways);
    expect(there.gateways.map((x) => [x.gateway, x.rows, x.minSeq])).toEqual([['gw-ä', 1000, 2 ** 45], ['gw-2', 2000, 2 ** 45 + 1]]);
    expect(Buffer.from(there.bytes).equals(Buffer.from(here.bytes))).toBe(true); // the same writer settings
    const a = rows(there.bytes);
    expect(a).toEqual(rows(here.bytes));
    expect(a.length).toBe(3000);
    expect(a[2999]).toMatchObject({ gateway: 'gw-2', seq: BigInt(2 ** 45 + 2999), epoch: 9n, ts: 1732406400000 + 2999 * 7, value: 2999 / 3 });
    expect(a[1]).toMatchObject({ gateway: 'gw-2', seq: BigInt(2 ** 45 + 1), ts: -1234567 });
    // ingest.sealWorkerNice: the worker thread alone runs at nice 5 (field 19 of /proc/<pid>/task/<tid>/stat).
    const nices = readdirSync('/proc/self/task').map((t) => Number(readFileSync(`/proc/self/task/${t}/stat`, 'utf8').split(') ')[1].split(' ')[16]));
    expect(nices.filter((n) => n === 5)).toHaveLength(1);
  } finally {
    await encoder.close();
  }
});

test('own segments are sealed from memory (nothing read back), with the same master rows as from the file', async () => {
  const readings = makeReadings(1, 3000, { days: 3, devices: 7 });
  const run = async (sealFromMemory: boolean) => {
    const out: string[] = [];
    const logger = createLogger({ level: 'info' }, new Writable({ write(chunk, _enc, cb) { out.push(String(chunk)); cb(); } }));
    const data = join(dir.path, String(sealFromMemory));
    mkdirSync(data);
    const t = await addGatewayToken(data, 'gw-1');
    cloud = await startTestCloud(data, { ingest: { sealFromMemory, sealMaxReadings: 1000 } }, { logger });
    for (let i = 0; i < 3000; i += 500) expect((await postIngest(cloud.url, t, ingestBody('gw-1', readings.slice(i, i + 500)))).status).toBe(200);
    await cloud.server.ingest.sealNow();
    await cloud.close();
    cloud = null;
    expect(listFiles(join(data, 'staging')).filter((f) => f.endsWith('.ndjson'))).toEqual([]);
    const seals = out.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'segment sealed');
    return { seals, rows: await readMaster(data) };
  };
  const memory = await run(true);
  expect(memory.seals.map((x) => [x.from, x.rows])).toEqual([['memory', 1000], ['memory', 1000], ['memory', 1000]]);
  expectMaster(memory.rows, 'gw-1', readings);
  const file = await run(false);
  expect(file.seals.map((x) => [x.from, x.rows])).toEqual([['file', 1000], ['file', 1000], ['file', 1000]]);
  expect(file.rows).toEqual(memory.rows);
});

test('a staging line takes the request\'s own bytes of its readings (whitespace, escapes, key order as sent), a body with newlines is written anew, a duplicate row is never staged; sealed from the file, every row as sent', async () => {
  const readings = makeReadings(1, 40, { days: 2, devices: 3 });
  readings[2][2] = 'dev-"q]\\ é';
  const t = await addGatewayToken(dir.path, 'gw-1');
  cloud = await startTestCloud(dir.path, { ingest: { sealFromMemory: false } });
  const seg = () => readFileSync(stagingFiles()[0], 'utf8');
  // Keys in another order, tabs and spaces, readings[2]'s device with a quote, a bracket, a backslash.
  const spaced = JSON.stringify({ readings: readings.slice(0, 10), v: 1, gateway: 'gw-1', firstSeq: 1, lastSeq: 10 }, null, '\t').replace(/\n/g, ' ');
  expect((await postIngest(cloud.url, t, null, { raw: Buffer.from(spaced), gzip: false })).status).toBe(200);
  const line1 = seg().split('\n')[0];
  expect(line1).toBe(`{"g":"gw-1","r":${spaced.slice(spaced.indexOf('['), spaced.lastIndexOf(']', spaced.indexOf('"v"')) + 1)}}`);
  // Newlines in the body: the line is serialized (a staging line never holds one).
  const pretty = JSON.stringify(ingestBody('gw-1', readings.slice(10, 20)), null, 2);
  expect((await postIngest(cloud.url, t, null, { raw: Buffer.from(pretty), gzip: false })).status).toBe(200);
  expect(seg().split('\n')[1]).toBe(JSON.stringify({ g: 'gw-1', r: readings.slice(10, 20) }));
  // Partly duplicate: only the new rows are staged, serialized.
  expect((await postIngest(cloud.url, t, ingestBody('gw-1', readings.slice(15, 40)))).body).toMatchObject({ stored: 20, duplicates: 5 });
  expect(seg().split('\n')[2]).toBe(JSON.stringify({ g: 'gw-1', r: readings.slice(20, 40) }));
  await cloud.server.ingest.sealNow();
  expect(stagingFiles()).toEqual([]);
  expectMaster(await readMaster(dir.path), 'gw-1', readings);
});
