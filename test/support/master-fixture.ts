/**
 * Master dataset fixtures for the batch tests: writes master Parquet files exactly as ingest does
 * (docs/cloud-storage.md: master/day=YYYY-MM-DD/part-<segment>.parquet, columns device, metric, ts
 * TimestampMillisecond UTC, value float64, gateway, seq int64, epoch int64, zstd) and the cloud.db
 * rows that go with them (files, file_gateways, sealed, epochs, gaps). Also reads the views back
 * and computes the expected views in TypeScript with shared/summary.ts (the reference).
 */
import { mkdir, writeFile, rename, readFile, readdir, rm, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join, relative } from 'node:path';
import { Int64, Float64, Table as ArrowTable, TimestampMillisecond, Utf8, tableToIPC, vectorFromArray } from 'apache-arrow';
import * as pq from 'parquet-wasm';
import { DuckDBInstance } from '@duckdb/node-api';
import type { Db } from '../../shared/sqlite.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { normalize } from '../../cloud/ingest/ranges.js';
import type { Summary } from '../../shared/summary.js';
import { bucketStart, DAY_MS } from '../../shared/time.js';
import { VIEW_SPECS } from '../../cloud/query/views/types.js';
import { type RawReading, bruteForceRows, dedupCovered } from './brute-force.js';

/** One reading as master/ holds it (ts in epoch ms): the brute-force reference's reading. */
export type FixtureReading = RawReading;

export const dayOf = (ts: number): string => new Date(bucketStart(ts, DAY_MS)).toISOString().slice(0, 10);

let segmentCounter = 0;

function groupBy<T>(items: T[], key: (t: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const t of items) {
    const k = key(t);
    const list = m.get(k);
    if (list) list.push(t);
    else m.set(k, [t]);
  }
  return new Map([...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Writes master files and their catalog rows into a cloud data dir, like ingest's seal. */
export class MasterFixture {
  private constructor(readonly dataDir: string, readonly db: Db) {}

  static async open(dataDir: string): Promise<MasterFixture> {
    await mkdir(dataDir, { recursive: true });
    return new MasterFixture(dataDir, await openCloudDb(join(dataDir, 'cloud.db')));
  }

  /**
   * Seal `readings` as one segment: one Parquet file per UTC day, catalogued in files and
   * file_gateways, their seqs added to `sealed`, all in one transaction. Returns the relative paths.
   */
  async seal(readings: FixtureReading[], segment = `${Date.now()}-${process.pid}-${++segmentCounter}`): Promise<string[]> {
    const byDay = groupBy(readings, (r) => dayOf(r.ts));
    const paths: string[] = [];
    const catalog: Array<{ path: string; day: string; rows: FixtureReading[]; bytes: number }> = [];
    for (const [day, rows] of byDay) {
      const rel = `master/day=${day}/part-${segment}.parquet`;
      const bytes = writeParquet(rows);
      const tmp = join(this.dataDir, 'tmp', `part-${segment}-${day}.parquet`);
      await mkdir(join(this.dataDir, 'tmp'), { recursive: true });
      await writeFile(tmp, bytes);
      await mkdir(join(this.dataDir, `master/day=${day}`), { recursive: true });
      await rename(tmp, join(this.dataDir, rel));
      paths.push(rel);
      catalog.push({ path: rel, day, rows, bytes: bytes.length });
    }
    await this.db.exec('BEGIN IMMEDIATE');
    try {
      for (const f of catalog) {
        await this.db.run('INSERT INTO files (path, day, rows, bytes, created_at) VALUES (?, ?, ?, ?, ?)', [f.path, f.day, f.rows.length, f.bytes, Date.now()]);
        for (const [gw, rs] of groupBy(f.rows, (r) => r.gateway)) {
          const span = (k: 'seq' | 'epoch') => rs.reduce((m, r) => [Math.min(m[0], r[k]), Math.max(m[1], r[k])], [Infinity, -Infinity]);
          const [minSeq, maxSeq] = span('seq');
          const [minEpoch, maxEpoch] = span('epoch');
          await this.db.run(`INSERT INTO file_gateways (path, gateway, min_seq, max_seq, min_epoch, max_epoch, rows) VALUES (?, ?, ?, ?, ?, ?, ?)`,
            [f.path, gw, minSeq, maxSeq, minEpoch, maxEpoch, rs.length]);
        }
      }
      for (const [gw, rs] of groupBy(readings, (r) => r.gateway)) {
        const old = await this.db.all<{ from: number; to: number }>('SELECT from_seq AS "from", to_seq AS "to" FROM sealed WHERE gateway = ?', [gw]);
        const merged = normalize([...old, ...rs.map((r) => ({ from: r.seq, to: r.seq }))]);
        await this.db.run('DELETE FROM sealed WHERE gateway = ?', [gw]);
        for (const r of merged) await this.db.run('INSERT INTO sealed (gateway, from_seq, to_seq) VALUES (?, ?, ?)', [gw, r.from, r.to]);
      }
      await this.db.exec('COMMIT');
    } catch (err) {
      await this.db.exec('ROLLBACK');
      throw err;
    }
    return paths;
  }

  /** Report closed epochs of a gateway (what ingest stores from the gateway's epoch records). */
  async epochs(gateway: string, spans: Array<{ epoch: number; firstSeq: number; lastSeq: number }>): Promise<void> {
    for (const s of spans) {
      await this.db.run('INSERT OR REPLACE INTO epochs (gateway, epoch, first_seq, last_seq) VALUES (?, ?, ?, ?)', [gateway, s.epoch, s.firstSeq, s.lastSeq]);
    }
  }

  /** A gap record: seqs the gateway dropped at its disk budget. */
  async gap(gateway: string, id: number, fromSeq: number, toSeq: number): Promise<void> {
    await this.db.run(`INSERT INTO gaps (gateway, id, reason, from_seq, to_seq, count, min_ts, max_ts, devices, received_at)
      VALUES (?, ?, 'disk_budget', ?, ?, ?, 0, 0, '[]', ?)`, [gateway, id, fromSeq, toSeq, toSeq - fromSeq + 1, Date.now()]);
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

/** Readings as a zstd Parquet file, the master schema. */
export function writeParquet(rows: FixtureReading[]): Uint8Array {
  const table = new ArrowTable({
    device: vectorFromArray(rows.map((r) => r.device), new Utf8()),
    metric: vectorFromArray(rows.map((r) => r.metric), new Utf8()),
    ts: vectorFromArray(rows.map((r) => r.ts), new TimestampMillisecond('UTC')),
    value: vectorFromArray(rows.map((r) => r.value), new Float64()),
    gateway: vectorFromArray(rows.map((r) => r.gateway), new Utf8()),
    seq: vectorFromArray(rows.map((r) => BigInt(r.seq)), new Int64()),
    epoch: vectorFromArray(rows.map((r) => BigInt(r.epoch)), new Int64()),
  });
  const props = new pq.WriterPropertiesBuilder().setCompression(pq.Compression.ZSTD).build();
  return pq.writeParquet(pq.Table.fromIPCStream(tableToIPC(table, 'stream')), props);
}

/** One view row as read back, timestamps in epoch ms. */
export interface ViewRowMs {
  key: string;
  metric: string;
  bucket: number;
  summary: Summary;
}

/** The product's views and each one's key column (null: the fleet). */
const VIEW_KEYS = Object.fromEntries(Object.entries(VIEW_SPECS).map(([v, spec]) => [v, spec.scope === 'fleet' ? null : spec.scope])) as Record<string, 'device' | 'gateway' | null>;
export const VIEWS = Object.keys(VIEW_KEYS);

/** Every row of every view the live manifest names, keyed `key|metric|bucket`. */
export async function readViews(dataDir: string): Promise<Record<string, Map<string, ViewRowMs>>> {
  const manifest = JSON.parse(await readFile(join(dataDir, 'views', 'manifest.json'), 'utf8')) as { views: Record<string, string[]> };
  const inst = await DuckDBInstance.create(':memory:');
  const conn = await inst.connect();
  const out: Record<string, Map<string, ViewRowMs>> = {};
  try {
    for (const view of VIEWS) {
      const key = VIEW_KEYS[view];
      const map = new Map<string, ViewRowMs>();
      out[view] = map;
      const files = manifest.views[view] ?? [];
      if (files.length === 0) continue;
      const list = files.map((f) => `'${join(dataDir, 'views', f)}'`).join(', ');
      // Rows of a device view are one device's; gateway and fleet rows name first/last's device.
      const devices = key === 'device' ? 'device AS first_device, device AS last_device' : 'first_device, last_device';
      const r = await conn.runAndReadAll(`SELECT ${key ?? "''"} AS k, metric, epoch_ms(bucket) AS bucket, count, sum, min, max, m2,
        first, epoch_ms(first_ts) AS first_ts, last, epoch_ms(last_ts) AS last_ts, ${devices} FROM read_parquet([${list}])`);
      for (const row of r.getRowObjectsJS()) {
        const s: Summary = {
          count: Number(row.count), sum: Number(row.sum), min: Number(row.min), max: Number(row.max), m2: Number(row.m2),
          first: Number(row.first), firstTs: Number(row.first_ts), firstDevice: String(row.first_device),
          last: Number(row.last), lastTs: Number(row.last_ts), lastDevice: String(row.last_device),
        };
        const k = `${row.k}|${row.metric}|${Number(row.bucket)}`;
        if (map.has(k)) throw new Error(`${view}: two rows for ${k}`);
        map.set(k, { key: String(row.k), metric: String(row.metric), bucket: Number(row.bucket), summary: s });
      }
    }
  } finally {
    conn.closeSync();
    inst.closeSync();
  }
  return out;
}

/** The readings the views must cover: epoch <= E[gateway], one per identity, lowest (gateway, seq). */
export const coveredReadings = (all: FixtureReading[], e: Record<string, number>): FixtureReading[] => dedupCovered(all, e);

/** The expected views, computed with shared/summary.ts from covered readings (test/support/brute-force.ts). */
export function expectedViews(readings: FixtureReading[]): Record<string, Map<string, Summary>> {
  return Object.fromEntries(Object.entries(VIEW_SPECS).map(([view, spec]) => [view, bruteForceRows(readings, spec.scope, spec.widthMs)]));
}

/** SHA-256 of every file under master/, by relative path: master files are never modified [INV-4]. */
export async function hashMaster(dataDir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else out[relative(dataDir, p)] = createHash('sha256').update(await readFile(p)).digest('hex') + `:${(await stat(p)).mtimeMs}`;
    }
  };
  await walk(join(dataDir, 'master'));
  return out;
}

/** A seeded PRNG (mulberry32), so a failing random case can be replayed from its seed. */
export { mulberry32 as rng } from './random.js';

/** A gateway as the cloud sees it: contiguous seqs, epochs closed when told. */
export class GatewaySim {
  private seq = 0;
  private epoch = 1;
  private epochFirst = 1;
  /** Closed epochs not yet reported. */
  readonly closed: Array<{ epoch: number; firstSeq: number; lastSeq: number }> = [];

  constructor(readonly id: string) {}

  reading(device: string, metric: string, ts: number, value: number): FixtureReading {
    return { device, metric, ts, value, gateway: this.id, seq: ++this.seq, epoch: this.epoch };
  }

  /** Close the open epoch (if it holds any seq); returns its span. */
  closeEpoch(): { epoch: number; firstSeq: number; lastSeq: number } | null {
    if (this.seq < this.epochFirst) return null;
    const span = { epoch: this.epoch, firstSeq: this.epochFirst, lastSeq: this.seq };
    this.closed.push(span);
    this.epoch++;
    this.epochFirst = this.seq + 1;
    return span;
  }

  /** Hand the closed epochs to the fixture (as ingest stores the gateway's reports). */
  async report(fx: MasterFixture): Promise<void> {
    await fx.epochs(this.id, this.closed.splice(0));
  }

  get currentEpoch(): number {
    return this.epoch;
  }
}

/** Compare two summaries: count, min, max, first/last (value, ts, device) exact; sum and m2 within `rel` relative. */
export function summaryDiff(got: Summary, want: Summary, rel = 1e-9): string | null {
  const close = (a: number, b: number) => Math.abs(a - b) <= rel * Math.max(1, Math.abs(a), Math.abs(b));
  const bad: string[] = [];
  if (got.count !== want.count) bad.push(`count ${got.count} != ${want.count}`);
  if (!close(got.sum, want.sum)) bad.push(`sum ${got.sum} != ${want.sum}`);
  if (got.min !== want.min) bad.push(`min ${got.min} != ${want.min}`);
  if (got.max !== want.max) bad.push(`max ${got.max} != ${want.max}`);
  if (!close(got.m2, want.m2)) bad.push(`m2 ${got.m2} != ${want.m2}`);
  if (got.first !== want.first || got.firstTs !== want.firstTs) bad.push(`first ${got.first}@${got.firstTs} != ${want.first}@${want.firstTs}`);
  if (got.last !== want.last || got.lastTs !== want.lastTs) bad.push(`last ${got.last}@${got.lastTs} != ${want.last}@${want.lastTs}`);
  if (got.firstDevice !== want.firstDevice) bad.push(`first_device ${got.firstDevice} != ${want.firstDevice}`);
  if (got.lastDevice !== want.lastDevice) bad.push(`last_device ${got.lastDevice} != ${want.lastDevice}`);
  return bad.length ? bad.join(', ') : null;
}

/** Every difference between the views read back and the expected ones (empty when equal). */
export function viewDiffs(got: Record<string, Map<string, ViewRowMs>>, want: Record<string, Map<string, Summary>>, rel = 1e-9): string[] {
  const out: string[] = [];
  for (const view of VIEWS) {
    const g = got[view];
    const w = want[view];
    for (const [k, s] of w) {
      const row = g.get(k);
      if (!row) out.push(`${view} ${k}: missing`);
      else {
        const d = summaryDiff(row.summary, s, rel);
        if (d) out.push(`${view} ${k}: ${d}`);
      }
    }
    for (const k of g.keys()) if (!w.has(k)) out.push(`${view} ${k}: unexpected row`);
  }
  return out;
}

/** The same comparison between two reads of the views (incremental vs full, before vs after). */
export function sameViews(a: Record<string, Map<string, ViewRowMs>>, b: Record<string, Map<string, ViewRowMs>>, rel = 1e-12): string[] {
  const want: Record<string, Map<string, Summary>> = {};
  for (const v of VIEWS) want[v] = new Map([...b[v]].map(([k, r]) => [k, r.summary]));
  return viewDiffs(a, want, rel);
}

/**
 * Master files and their catalog as ingest's seal leaves them (in a cloud.db): two gateways, 300
 * readings over two days from `day0`, three epochs each; then the catalog copied into a migrated
 * PostgreSQL store through `query` and cloud.db removed, so a batch run can only read PostgreSQL.
 */
export async function masterOnPostgres(dir: string, query: (sql: string, params: unknown[]) => Promise<unknown>): Promise<{ all: FixtureReading[]; day0: number }> {
  const fx = await MasterFixture.open(dir);
  const gws = ['gw-a', 'gw-b'].map((id) => new GatewaySim(id));
  const all: FixtureReading[] = [];
  const day0 = Date.UTC(2024, 10, 23);
  for (let i = 0; i < 300; i++) {
    const g = gws[i % 2];
    all.push(g.reading(`d${i % 4}`, i % 3 ? 'temp' : 'hum', day0 + (i * 397_000) % (2 * 86_400_000), (i * 7) % 50 + 0.5));
    if (i % 100 === 99) for (const x of gws) x.closeEpoch();
  }
  await fx.seal(all);
  for (const g of gws) await g.report(fx);
  for (const t of ['epochs', 'sealed', 'gaps', 'files', 'file_gateways']) {
    for (const row of await fx.db.all<Record<string, unknown>>(`SELECT * FROM ${t}`)) {
      const cols = Object.keys(row);
      await query(`INSERT INTO ${t} (${cols.join(', ')}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(', ')})`, cols.map((c) => row[c]));
    }
  }
  await fx.close();
  for (const f of ['cloud.db', 'cloud.db-wal', 'cloud.db-shm']) await rm(join(dir, f), { force: true });
  return { all, day0 };
}
