/**
 * The Parquet views of a manifest, read by one long-lived embedded DuckDB (docs/cloud-storage.md,
 * Views). A read opens only the files whose UTC day (an hour for a minute view's hour file)
 * overlaps the range (pruning from the manifest's file names), pushes metric and key down to the Parquet scan (the files are sorted by
 * key, metric, bucket, so row-group statistics skip the other keys), and reads through prepared
 * statements on a small pool of connections, with DuckDB's Parquet metadata cache on.
 *
 * View files are immutable (a new version writes new paths), so the rows of one (file, key, metric)
 * never change: they are kept in an LRU bounded by `cacheRows`, and a dashboard that asks again
 * opens no file. That is why a whole day's rows of the key are read, not only the buckets asked
 * for: the cache entry then serves any range within that day.
 *
 * One file per day makes a long range cost a file per day (a device's year at 1d: 365 footers and
 * scans, ~0.2 ms each, for 365 rows). So for each manifest version the reader writes, in the
 * background, one compacted copy of every hourly and daily view (`compactDir/v<version>/<view>.parquet`,
 * all days, sorted by key, metric, bucket: row-group statistics skip the other keys). A read over
 * more than `compactAfterFiles` days uses it once it is there; until then, and if building it fails,
 * the day files answer (the same rows). The copies are derived data: deleting them is safe.
 *
 * Device queries read series files where there are some (./series.ts): with a `seriesDir`, for each
 * manifest version, after the compactions, the reader turns the device-view files (days, and
 * device_1m's hours) of the newest `seriesHotDays` days (`seriesDir/files/`, one per view file: a file that the next version
 * keeps keeps its series file) and the compacted copies of the device views (`seriesDir/v<version>/`)
 * into series files, newest day first, within `seriesMaxBytes`; those no kept version names go as
 * the copies do. A device's day at 1m or
 * year at 1d is then one positional read of its rows, not a DuckDB scan; a file without one (not
 * hot, over the budget, not built yet, refused) is read by DuckDB as before, with the same rows.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DuckDBInstance, DuckDBListValue, LIST, VARCHAR, type DuckDBConnection, type DuckDBPreparedStatement, type DuckDBType, type DuckDBValue } from '@duckdb/node-api';
import { VIEW_PARQUET_OPTIONS } from '../../batch/dialect.js';
import { viewFileSpan, type Manifest, type ViewName } from '../../batch/index.js';
import { IoTimes } from '../../../shared/io-times.js';
import { DAY_MS, HOUR_MS } from '../../../shared/time.js';
import { viewFiles } from '../manifest.js';
import { buildSeriesFile, parquetRows, SERIES_READ_INLINE_MS, SeriesFile, seriesBytes, SeriesIds } from './series.js';
import { VIEW_SPECS, keyOf, type SummaryRow, type ViewReader, type ViewReadRequest } from './types.js';

export interface ParquetViewReaderOptions {
  /** <dataDir>/views: the manifest's paths are relative to it. */
  viewsDir: string;
  /** DuckDB connections, i.e. view reads running at once; more wait. */
  connections: number;
  /** DuckDB memory_limit of the reader's instance. */
  memoryLimit: string;
  /** DuckDB threads; 0 lets DuckDB pick (one per core). */
  threads: number;
  /** Rows kept in the (file, key, metric) cache, about 200 bytes each; 0 turns it off. */
  cacheRows: number;
  /** Where the compacted copies of the hourly and daily views go; null: none (every read opens day files). */
  compactDir: string | null;
  /** A read over more day files than this uses the compacted copy once it is built. */
  compactAfterFiles: number;
  /** Told when a compacted copy is built (err null) or could not be (the day files keep answering). */
  onCompacted?: (e: { view: ViewName; version: number; ms: number; rows: number; err: Error | null }) => void;
  /** Where series files of device views go (node-local, derived data); null: none (DuckDB reads every file). Needs compactDir. */
  seriesDir: string | null;
  /** Device-view day files of this many newest days (of each manifest) get series files; 0: only the compacted copies. */
  seriesHotDays: number;
  /** Bytes all series files may take in compactDir (80 a row: 1.15 GB for a day of 14.4M device_1m rows); 0: none. */
  seriesMaxBytes: number;
  /**
   * Told when a series file is built (err null), refused or failed (err; the view file keeps
   * answering), or skipped (over seriesMaxBytes); `pending` builds are still queued after this one.
   */
  onSeries?: (e: { view: ViewName; version: number; file: string; ms: number; rows: number; bytes: number; result: 'built' | 'failed' | 'skipped'; err: Error | null; pending: number }) => void;
  /** Told after each read how many view files answered from a series file, from the cache, and through DuckDB. */
  onFilesRead?: (n: { series: number; cache: number; duckdb: number }) => void;
}

export const DEFAULT_PARQUET_VIEW_READER_OPTIONS: Omit<ParquetViewReaderOptions, 'viewsDir'> = {
  connections: 4,
  memoryLimit: '512MB',
  threads: 0,
  cacheRows: 1_000_000, // ~200 MB
  compactDir: null,
  compactAfterFiles: 31,
  seriesDir: null,
  seriesHotDays: 2,
  seriesMaxBytes: 4 * 1024 ** 3,
};

/** A compacted copy of one view of one manifest version. */
interface Compaction {
  path: string;
  ready: boolean;
}

const sqlString = (s: string) => `'${s.replaceAll("'", "''")}'`;

const SUMMARY_SELECT = `CAST(epoch_ms(bucket) AS DOUBLE) AS b, CAST("count" AS DOUBLE) AS n, "sum", "min", "max", m2,
  "first", CAST(epoch_ms(first_ts) AS DOUBLE) AS fts, "last", CAST(epoch_ms(last_ts) AS DOUBLE) AS lts`;

/**
 * The statement of a view kind. Gateway and fleet views read by name across files (union_by_name):
 * files written before first_device/last_device existed lack them and read as NULL.
 */
function statementSql(key: 'device' | 'gateway' | null): string {
  const devices = key === 'device' ? '' : ', first_device, last_device';
  const options = key === 'device' ? 'filename = true' : 'filename = true, union_by_name = true';
  return `SELECT filename, ${SUMMARY_SELECT}${devices}
FROM read_parquet($1, ${options})
WHERE metric = $2${key ? ` AND ${key} = $3` : ''}
ORDER BY filename, bucket`;
}

/** A connection with its prepared statements (a statement belongs to one connection). */
interface PooledConnection {
  conn: DuckDBConnection;
  statements: Map<string, DuckDBPreparedStatement>;
}

export class ParquetViewReader implements ViewReader {
  readonly name = 'parquet';
  private readonly idle: PooledConnection[] = [];
  private readonly waiting: Array<(c: PooledConnection) => void> = [];
  private readonly cache = new Map<string, SummaryRow[]>();
  private cachedRows = 0;
  private closed = false;
  private readonly compactions = new Map<string, Compaction>();
  /** Manifest versions whose compactions were scheduled (the newest last). */
  private readonly compactedVersions: number[] = [];
  private compacting: Promise<void> = Promise.resolve();
  /** Open series files by the view file (or compacted copy) they hold; their bytes count against seriesMaxBytes. */
  private readonly series = new Map<string, { file: SeriesFile; target: string }>();
  /** The series of every open series file, numbered once (their directories index by it). */
  private readonly seriesIds = new SeriesIds();
  /** Where the series files' reads go: the main thread while they are fast (SERIES_READ_INLINE_MS). */
  private readonly seriesTimes = new IoTimes(SERIES_READ_INLINE_MS);
  /** Sources queued or open, and the sources of each version scheduled. */
  private readonly seriesQueued = new Set<string>();
  private readonly seriesOf = new Map<number, string[]>();
  private seriesHeld = 0;
  private seriesPending = 0;

  private constructor(private readonly instance: DuckDBInstance, private readonly all: PooledConnection[], readonly options: ParquetViewReaderOptions) {
    this.idle.push(...all);
  }

  static async open(options: Partial<ParquetViewReaderOptions> & { viewsDir: string }): Promise<ParquetViewReader> {
    const o: ParquetViewReaderOptions = { ...DEFAULT_PARQUET_VIEW_READER_OPTIONS, ...options };
    const config: Record<string, string> = { memory_limit: o.memoryLimit };
    if (o.threads > 0) config.threads = String(o.threads);
    const instance = await DuckDBInstance.create(':memory:', config);
    const conns: PooledConnection[] = [];
    try {
      for (let i = 0; i < Math.max(1, o.connections); i++) {
        const conn = await instance.connect();
        conns.push({ conn, statements: new Map() });
      }
      const first = conns[0].conn;
      // Global settings: bucket columns are zone-less UTC wall-clock TIMESTAMPs, and epoch_ms()
      // needs no zone, but any TIMESTAMPTZ arithmetic a later change adds must be UTC too.
      await first.run(`SET GLOBAL TimeZone = 'UTC'`);
      // Footers and row-group statistics of hot files stay in memory between queries.
      await first.run('SET GLOBAL parquet_metadata_cache = true');
      // Sorting a view for its compacted copy may spill: next to the copies, not in the cwd.
      if (o.compactDir) {
        await mkdir(join(o.compactDir, 'tmp'), { recursive: true });
        await first.run(`SET GLOBAL temp_directory = ${sqlString(join(o.compactDir, 'tmp'))}`);
      }
      // Prepared now, so the first query does not pay for parsing and planning.
      for (const c of conns) {
        for (const key of ['device', 'gateway', null] as const) {
          const sql = statementSql(key);
          c.statements.set(sql, await c.conn.prepare(sql));
        }
      }
    } catch (err) {
      for (const c of conns) {
        for (const st of c.statements.values()) st.destroySync();
        c.conn.closeSync();
      }
      instance.closeSync();
      throw err;
    }
    return new ParquetViewReader(instance, conns, o);
  }

  async read(req: ViewReadRequest): Promise<SummaryRow[]> {
    if (this.closed) throw new Error('ParquetViewReader is closed');
    const key = keyOf(req);
    const days = viewFiles(req.manifest, req.view, req.fromMs, req.toMs);
    if (days.length === 0) return [];
    this.scheduleCompactions(req.manifest);
    let files: string[] | null = null;
    if (days.length > this.options.compactAfterFiles) {
      const c = this.compactions.get(compactionId(req.manifest.version, req.view));
      // One file for all days: its rows of the key and metric are one cache entry for every range.
      if (c?.ready) files = [c.path];
    }
    // The day files' absolute paths only when they are read (a year's are 365 joins).
    files ??= days.map((p) => join(this.options.viewsDir, p));
    const suffix = `\u0000${key?.value ?? ''}\u0000${req.metric}`;
    const perFile = new Map<string, SummaryRow[]>();
    const missing: string[] = [];
    const fromSeries: Array<Promise<void>> = [];
    let hits = 0;
    for (const f of files) {
      const s = key?.column === 'device' && this.series.size > 0 ? this.series.get(f)?.file : undefined;
      if (s) {
        // A series file closed under the read (its version removed) leaves the file to DuckDB.
        fromSeries.push(s.read(key!.value, req.metric, req.fromMs, req.toMs).then((rows) => { perFile.set(f, rows); }, () => { missing.push(f); }));
        continue;
      }
      const hit = this.cacheGet(f + suffix);
      if (hit) {
        perFile.set(f, hit);
        hits++;
      } else missing.push(f);
    }
    if (fromSeries.length) await Promise.all(fromSeries);
    this.options.onFilesRead?.({ series: files.length - hits - missing.length, cache: hits, duckdb: missing.length });
    if (missing.length > 0) {
      const loaded = await this.load(missing, key, req.metric);
      for (const f of missing) {
        const rows = loaded.get(f) ?? [];
        perFile.set(f, rows);
        this.cachePut(f + suffix, rows);
      }
    }
    const out: SummaryRow[] = [];
    // Files are in day order and each file's rows in bucket order: the answer is sorted.
    for (const f of files) {
      for (const r of perFile.get(f)!) if (r.bucket >= req.fromMs && r.bucket < req.toMs) out.push(r);
    }
    return out;
  }

  /** The rows of key and metric in each of `files` (a file with none is absent). */
  private async load(files: string[], key: { column: 'device' | 'gateway'; value: string } | null, metric: string): Promise<Map<string, SummaryRow[]>> {
    const pooled = await this.acquire();
    try {
      const sql = statementSql(key?.column ?? null);
      let stmt = pooled.statements.get(sql);
      if (!stmt) {
        stmt = await pooled.conn.prepare(sql);
        pooled.statements.set(sql, stmt);
      }
      const values: DuckDBValue[] = [new DuckDBListValue(files), metric];
      const types: DuckDBType[] = [LIST(VARCHAR), VARCHAR];
      if (key) {
        values.push(key.value);
        types.push(VARCHAR);
      }
      stmt.bind(values, types);
      const result = await stmt.runAndReadAll();
      const out = new Map<string, SummaryRow[]>();
      const deviceOf = key?.column === 'device' ? key.value : null;
      for (const r of result.getRowsJS()) {
        const file = r[0] as string;
        const row: SummaryRow = {
          bucket: r[1] as number, count: r[2] as number, sum: r[3] as number, min: r[4] as number, max: r[5] as number,
          m2: r[6] as number, first: r[7] as number, firstTs: r[8] as number, last: r[9] as number, lastTs: r[10] as number,
          firstDevice: deviceOf ?? ((r[11] as string | null) ?? ''),
          lastDevice: deviceOf ?? ((r[12] as string | null) ?? ''),
        };
        const list = out.get(file);
        if (list) list.push(row);
        else out.set(file, [row]);
      }
      return out;
    } finally {
      this.release(pooled);
    }
  }

  private cacheGet(k: string): SummaryRow[] | undefined {
    const hit = this.cache.get(k);
    if (hit) {
      // LRU: a Map iterates in insertion order, so re-inserting marks it most recent.
      this.cache.delete(k);
      this.cache.set(k, hit);
    }
    return hit;
  }

  private cachePut(k: string, rows: SummaryRow[]): void {
    const limit = this.options.cacheRows;
    // An empty entry (the key has no row that day) still costs a map slot: count it as one row.
    const cost = rows.length + 1;
    if (cost > limit) return;
    const old = this.cache.get(k);
    if (old) {
      this.cache.delete(k);
      this.cachedRows -= old.length + 1;
    }
    this.cache.set(k, rows);
    this.cachedRows += cost;
    for (const [victim, v] of this.cache) {
      if (this.cachedRows <= limit) break;
      this.cache.delete(victim);
      this.cachedRows -= v.length + 1;
    }
  }

  /**
   * The first read of a manifest version queues its compactions (one at a time, on one pooled
   * connection) and removes the copies of versions before the previous one: a query that read the
   * previous manifest may still be reading its copies.
   */
  private scheduleCompactions(manifest: Manifest): void {
    const dir = this.options.compactDir;
    if (!dir || this.compactedVersions.includes(manifest.version)) return;
    if (this.compactedVersions.length && manifest.version < this.compactedVersions[this.compactedVersions.length - 1]) return;
    this.compactedVersions.push(manifest.version);
    for (const view of Object.keys(manifest.views) as ViewName[]) {
      const spec = VIEW_SPECS[view];
      const files = manifest.views[view] ?? [];
      if (!spec || spec.widthMs < HOUR_MS || files.length <= this.options.compactAfterFiles) continue;
      const c: Compaction = { path: join(dir, `v${manifest.version}`, `${view}.parquet`), ready: false };
      this.compactions.set(compactionId(manifest.version, view), c);
      c.ready = existsSync(c.path); // built by an earlier process: written by rename, so whole
      if (c.ready) continue;
      const paths = files.map((f) => join(this.options.viewsDir, f));
      this.compacting = this.compacting.then(() => this.compact(manifest.version, view, paths, c));
    }
    if (this.options.seriesDir) this.scheduleSeries(manifest, this.options.seriesDir);
    const keep = this.compactedVersions.slice(-2);
    this.compacting = this.compacting.then(() => this.removeCompactionsBut(keep));
  }

  /**
   * Queue the series files of a manifest version: the device-view day files of the newest
   * seriesHotDays days (newest first; minutes, hours, days), then the compacted copies of the device
   * views (days, then hours). Each is opened if an earlier process built it, else built.
   */
  private scheduleSeries(manifest: Manifest, dir: string): void {
    if (this.options.seriesMaxBytes <= 0) return;
    const version = manifest.version;
    const jobs: Array<{ view: ViewName; source: string; target: string; copy?: Compaction }> = [];
    const deviceViews = (['device_1m', 'device_1h', 'device_1d'] as const).filter((v) => manifest.views[v]?.length);
    const days = new Set<number>();
    for (const v of deviceViews) for (const f of viewFiles(manifest, v, -Infinity, Infinity)) days.add(dayOf(f));
    const hot = [...days].filter(Number.isFinite).sort((a, b) => b - a).slice(0, this.options.seriesHotDays);
    for (const day of hot) {
      for (const v of deviceViews) {
        for (const rel of viewFiles(manifest, v, day, day + DAY_MS)) {
          jobs.push({ view: v, source: join(this.options.viewsDir, rel), target: join(dir, 'files', `${rel.replaceAll('/', '_')}.series`) });
        }
      }
    }
    for (const v of ['device_1d', 'device_1h'] as const) {
      const c = this.compactions.get(compactionId(version, v));
      if (c) jobs.push({ view: v, source: c.path, target: join(dir, `v${version}`, `${v}.series`), copy: c });
    }
    this.seriesOf.set(version, jobs.map((j) => j.source));
    const fresh = jobs.filter((j) => !this.seriesQueued.has(j.source));
    for (const j of fresh) this.seriesQueued.add(j.source);
    this.seriesPending += fresh.length;
    for (const job of fresh) this.compacting = this.compacting.then(() => this.seriesFor(version, job.view, job.source, job.target, job.copy));
  }

  /** Open or build the series file of `source` (a compacted `copy` only once it is built). */
  private async seriesFor(version: number, view: ViewName, source: string, target: string, copy?: Compaction): Promise<void> {
    const t0 = performance.now();
    let rows = 0;
    let bytes = 0;
    let result: 'built' | 'failed' | 'skipped' = 'built';
    let err: Error | null = null;
    try {
      if (this.closed) return;
      if (copy && !copy.ready) throw new Error(`the compacted copy ${source} was not built`);
      let file = existsSync(target) ? await SeriesFile.open(target, this.seriesIds, this.seriesTimes).catch(() => null) : null;
      if (!file) {
        const pooled = await this.acquire();
        try {
          rows = await parquetRows(pooled.conn, source);
          if (this.seriesHeld + seriesBytes(rows) > this.options.seriesMaxBytes) {
            result = 'skipped';
            return;
          }
          await mkdir(join(target, '..'), { recursive: true });
          await buildSeriesFile(pooled.conn, source, target);
        } finally {
          this.release(pooled);
        }
        file = await SeriesFile.open(target, this.seriesIds, this.seriesTimes);
      }
      rows = file.rows;
      bytes = file.bytes;
      if (this.closed || !this.compactedVersions.slice(-2).includes(version)) {
        await file.close();
        return;
      }
      // One an earlier process left (under another budget) counts like a new one.
      if (this.seriesHeld + file.bytes > this.options.seriesMaxBytes) {
        result = 'skipped';
        await file.close();
        await rm(target, { force: true });
        return;
      }
      this.series.set(source, { file, target });
      this.seriesHeld += file.bytes;
    } catch (e) {
      result = 'failed';
      err = e as Error;
    } finally {
      if (!this.series.has(source)) this.seriesQueued.delete(source);
      this.seriesPending--;
      this.options.onSeries?.({ view, version, file: source, ms: performance.now() - t0, rows, bytes, result, err, pending: this.seriesPending });
    }
  }

  private async compact(version: number, view: ViewName, files: string[], c: Compaction): Promise<void> {
    if (this.closed) return;
    const t0 = performance.now();
    const tmp = `${c.path}.tmp`;
    const key = VIEW_SPECS[view].scope === 'fleet' ? null : VIEW_SPECS[view].scope;
    let rows = 0;
    let err: Error | null = null;
    const pooled = await this.acquire();
    try {
      await mkdir(join(c.path, '..'), { recursive: true });
      const list = files.map(sqlString).join(', ');
      const order = `${key ? `${key}, ` : ''}metric, bucket`;
      const r = await pooled.conn.runAndReadAll(`COPY (SELECT * FROM read_parquet([${list}], union_by_name = true) ORDER BY ${order})
        TO ${sqlString(tmp)} (${VIEW_PARQUET_OPTIONS})`);
      rows = Number(r.getRows()[0]?.[0] ?? 0);
      await rename(tmp, c.path);
      c.ready = true;
    } catch (e) {
      err = e as Error;
      await rm(tmp, { force: true }).catch(() => undefined);
    } finally {
      this.release(pooled);
    }
    this.options.onCompacted?.({ view, version, ms: performance.now() - t0, rows, err });
  }

  private async removeCompactionsBut(versions: number[]): Promise<void> {
    const keep = new Set(versions.map((v) => `v${v}`));
    for (const dir of [this.options.compactDir!, this.options.seriesDir].filter((d) => d !== null)) {
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        if (/^v\d+$/.test(name) && !keep.has(name)) await rm(join(dir, name), { recursive: true, force: true });
      }
    }
    for (const id of [...this.compactions.keys()]) {
      if (!keep.has(id.split('/')[0])) this.compactions.delete(id);
    }
    for (const v of [...this.seriesOf.keys()]) if (!versions.includes(v)) this.seriesOf.delete(v);
    const named = new Set([...this.seriesOf.values()].flat());
    for (const [source, { file, target }] of [...this.series]) {
      if (named.has(source)) continue;
      this.series.delete(source);
      this.seriesQueued.delete(source);
      this.seriesHeld -= file.bytes;
      await file.close();
      await rm(target, { force: true });
    }
  }

  /** Queue the compactions of `manifest` (as its first read does); resolves when all have finished (built or failed). */
  compactFor(manifest: Manifest): Promise<void> {
    this.scheduleCompactions(manifest);
    return this.compacting;
  }

  /** Series files open, their bytes, and builds still queued (for tests and metrics). */
  get seriesSize(): { files: number; bytes: number; pending: number } {
    return { files: this.series.size, bytes: this.seriesHeld, pending: this.seriesPending };
  }

  /** Rows held in the cache (for tests and metrics). */
  get cacheSize(): { entries: number; rows: number } {
    return { entries: this.cache.size, rows: this.cachedRows };
  }

  private acquire(): Promise<PooledConnection> {
    const c = this.idle.pop();
    if (c) return Promise.resolve(c);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private release(c: PooledConnection): void {
    const next = this.waiting.shift();
    if (next) next(c);
    else this.idle.push(c);
  }

  /** Idempotent. A read still running when it is called fails; a compaction running finishes first. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.compacting.catch(() => undefined);
    this.cache.clear();
    for (const { file } of this.series.values()) await file.close();
    this.series.clear();
    for (const c of this.all) {
      for (const s of c.statements.values()) s.destroySync();
      c.conn.closeSync();
    }
    this.instance.closeSync();
  }
}

const compactionId = (version: number, view: ViewName) => `v${version}/${view}`;
/** UTC midnight of a view file's day (from its name), NaN for a name without one. */
function dayOf(path: string): number {
  const span = viewFileSpan(path);
  return span ? span.start - (span.start % DAY_MS) : NaN;
}
