/**
 * The DuckDB dialect: everything the batch needs that is not portable SQL (sql.ts is). Opening the
 * embedded engine with bounded memory, reading a list of master files, materializing a step,
 * writing a relation to a Parquet file, timestamp types. Porting the batch to Spark SQL or Trino
 * means rewriting this file only (docs/batch.md shows how).
 */
import { mkdir } from 'node:fs/promises';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { str, type BuildStep, type SqlDialect } from './sql.js';

export interface EngineOptions {
  /** DuckDB memory_limit, like '2GB'; past it operators spill to tempDir. */
  memoryLimit: string;
  /** Worker threads; 0 lets DuckDB pick (one per core). */
  threads: number;
  /** Spill directory (<dataDir>/tmp/duckdb). */
  tempDir: string;
}

/**
 * Rows per row group of a view file. DuckDB pays per row group a point read visits (statistics,
 * a scan task), more than it pays per row decoded: reading one device's day from a 14.4M-row
 * device_1m file took ~30 ms in row groups of 16,384, ~11-15 ms in 131,072, ~130 ms in 4,096
 * (bench:query data, 2026-11-26).
 */
export const VIEW_ROW_GROUP_ROWS = 131_072;

/**
 * The COPY options of every view file (and of the query's compacted copies of them): Parquet v1
 * encodings under zstd at its default level. Parquet's v2 encodings (DELTA_BINARY_PACKED,
 * BYTE_STREAM_SPLIT) under zstd level 1 were measured and not taken (2026-12-06): a day's dense
 * device_1m file was written a quarter faster (115 vs 151 ms) and 6% smaller, but the query
 * benchmark's year of sparse days and one dense day took 17% more disk (222.5 vs 189.5 MB at a
 * tenth of its scale, each view larger; 1,604 MB at full scale against 1,241 MB in an earlier run).
 */
export const VIEW_PARQUET_OPTIONS = `FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE ${VIEW_ROW_GROUP_ROWS}`;

/** Bounds on the master's own columns (scanMaster): ts in [fromMs, toMs) epoch ms, epoch in (epochAbove, epochAtMost]. */
export interface MasterRange {
  fromMs?: number;
  toMs?: number;
  epochAbove?: number;
  epochAtMost?: number;
}

/** An open DuckDB connection with the dialect's statements. */
export class DuckDialect implements SqlDialect {
  private constructor(private readonly instance: DuckDBInstance, readonly conn: DuckDBConnection, private readonly ownsInstance = true) {}

  static async open(opts: EngineOptions): Promise<DuckDialect> {
    await mkdir(opts.tempDir, { recursive: true });
    const config: Record<string, string> = {
      memory_limit: opts.memoryLimit,
      temp_directory: opts.tempDir,
      // Readings are summed in the order DuckDB likes; results must not depend on insertion order.
      preserve_insertion_order: 'false',
    };
    if (opts.threads > 0) config.threads = String(opts.threads);
    const instance = await DuckDBInstance.create(':memory:', config);
    const conn = await instance.connect();
    // Nothing below depends on the session zone (see scanMaster); UTC anyway, for any TIMESTAMPTZ
    // arithmetic a later change may add.
    await conn.run(`SET TimeZone = 'UTC'`);
    return new DuckDialect(instance, conn);
  }

  /**
   * Another connection to the same engine, for a second day built at once: its temp tables are its
   * own (DuckDB keeps them per connection), memory_limit and threads are the engine's. Its close()
   * closes only it.
   */
  async connect(): Promise<DuckDialect> {
    const conn = await this.instance.connect();
    await conn.run(`SET TimeZone = 'UTC'`);
    return new DuckDialect(this.instance, conn, false);
  }

  ident(name: string): string {
    return `"${name.replace(/"/g, '""')}"`;
  }

  minuteLane(ts: string): string {
    return `second(${ts})`;
  }

  laneBit(lane: string): string {
    // The shift count as UBIGINT like the mask: with an INTEGER count DuckDB took ~130 ms of CPU
    // a day (1.78M rows) for the masks, with UBIGINT ~40 ms (2026-12-06).
    return `(CAST(1 AS UBIGINT) << CAST(${lane} AS UBIGINT))`;
  }

  bitOrAgg(mask: string): string {
    return `BIT_OR(${mask})`;
  }

  bitCount(mask: string): string {
    return `bit_count(${mask})`;
  }

  dedupKey(grank: string, seq: string): string {
    // One HUGEINT, grank in the high 64 bits: the order of (grank, seq) for any BIGINT seq, as
    // (grank2 - grank1) * 2^64 outweighs any difference of two seqs. MIN_BY over a row value builds
    // a sort key per row; over this the fallback's dedup took ~9% less CPU (2026-12-06).
    return `((CAST(${grank} AS HUGEINT) << 64) + ${seq})`;
  }

  /**
   * The master files as a relation (a parenthesized query) with ts a UTC TIMESTAMP (no zone). With
   * `only`, just the rows in those ranges (a superset of what the caller keeps): the bounds are
   * constants on the files' own columns, so the Parquet reader skips the files and row groups whose
   * statistics lie outside them (an incremental build reads the hours it recomputes, not the day).
   */
  scanMaster(files: string[], only: MasterRange = {}): string {
    const list = files.map(str).join(', ');
    const where: string[] = [];
    const tstz = (ms: number) => `TIMESTAMPTZ ${str(new Date(ms).toISOString().replace('T', ' ').replace('Z', '+00'))}`;
    if (only.fromMs !== undefined) where.push(`ts >= ${tstz(only.fromMs)}`);
    if (only.toMs !== undefined) where.push(`ts < ${tstz(only.toMs)}`);
    if (only.epochAbove !== undefined) where.push(`epoch > ${Math.trunc(only.epochAbove)}`);
    if (only.epochAtMost !== undefined) where.push(`epoch <= ${Math.trunc(only.epochAtMost)}`);
    // Master ts is TIMESTAMP(isAdjustedToUTC) = TIMESTAMPTZ in DuckDB. Its epoch microseconds made
    // into a zone-less TIMESTAMP give the UTC wall clock on any machine, and cost half of a CAST,
    // which goes through ICU's zone rules for every row.
    return `(SELECT device, metric, make_timestamp(epoch_us(ts)) AS ts, value, gateway, seq, epoch
  FROM read_parquet([${list}], hive_partitioning = false)${where.length ? `\n  WHERE ${where.join(' AND ')}` : ''})`;
  }

  /** The smallest and largest of a timestamp column of a table, epoch ms; null when it has no row. */
  async timestampRange(name: string, column: string): Promise<{ fromMs: number; toMs: number } | null> {
    const r = await this.conn.runAndReadAll(`SELECT epoch_ms(MIN(${column})) AS lo, epoch_ms(MAX(${column})) AS hi FROM ${this.ident(name)}`);
    const row = r.getRowObjects()[0];
    return row.lo === null || row.hi === null ? null : { fromMs: Number(row.lo), toMs: Number(row.hi) };
  }

  /** The output type of a timestamp column: TIMESTAMP(MILLIS) in Parquet, the wall clock UTC. */
  outTimestamp(col: string): string {
    return `CAST(${col} AS TIMESTAMP_MS)`;
  }

  /** Compute a step into a temp table (Spark: a cached temp view; Trino: a table in a memory catalog). */
  async materialize(name: string, sql: string): Promise<void> {
    await this.conn.run(`CREATE OR REPLACE TEMP TABLE ${this.ident(name)} AS ${sql}`);
  }

  /**
   * Compute steps in order into temp tables, in one call. A step with `inPlace` is built in its
   * table (sql.ts BuildStep): DELETE the rows that fail `keep`, INSERT the rest, and a temp view of
   * the step's columns over the table; copying ~240k kept rows of a day into a new table cost more
   * than all three.
   */
  async materializeAll(steps: readonly BuildStep[]): Promise<void> {
    const sql: string[] = [];
    for (const s of steps) {
      const p = s.inPlace;
      if (!p) {
        sql.push(`CREATE OR REPLACE TEMP TABLE ${this.ident(s.name)} AS ${s.sql};`);
        continue;
      }
      const cols = p.columns.map((c) => this.ident(c)).join(', ');
      sql.push(`DELETE FROM ${this.ident(p.table)} WHERE (${p.keep}) IS NOT TRUE;`,
        `INSERT INTO ${this.ident(p.table)} (${cols}) ${p.rest};`,
        `CREATE OR REPLACE TEMP VIEW ${this.ident(s.name)} AS SELECT ${cols} FROM ${this.ident(p.table)};`);
      this.views.add(s.name);
    }
    await this.conn.run(sql.join('\n'));
  }

  /** Write each query to its Parquet file (as copyToParquet), then drop the tables (and views), in one call. */
  async writeAndDrop(writes: ReadonlyArray<{ select: string; file: string }>, drop: readonly string[]): Promise<void> {
    await this.conn.run([...writes.map((w) => `${this.copySql(w.select, w.file)};`), ...drop.map((t) => `${this.dropSql(t)};`)].join('\n'));
  }

  /** Steps materializeAll made views (dropped as views). */
  private readonly views = new Set<string>();

  private dropSql(name: string): string {
    const view = this.views.delete(name);
    return `DROP ${view ? 'VIEW' : 'TABLE'} IF EXISTS ${this.ident(name)}`;
  }

  /**
   * Copy temp tables into tables of the engine's database that every connection of it sees (temp
   * tables are their connection's own), named `<prefix>_<name>`; returns those names, quoted.
   */
  async share(names: readonly string[], prefix: string): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    const sql: string[] = [];
    for (const n of names) {
      out[n] = `main.${this.ident(`${prefix}_${n}`)}`;
      sql.push(`CREATE OR REPLACE TABLE ${out[n]} AS SELECT * FROM temp.${this.ident(n)};`);
    }
    await this.conn.run(sql.join('\n'));
    return out;
  }

  /** Drop tables share() made (their quoted names). */
  async dropShared(names: readonly string[]): Promise<void> {
    if (names.length) await this.conn.run(names.map((n) => `DROP TABLE IF EXISTS ${n};`).join('\n'));
  }

  /** Parquet files as a relation (view files of the live version). */
  readParquet(files: string | readonly string[]): string {
    return typeof files === 'string' ? `read_parquet(${str(files)})` : `read_parquet([${files.map(str).join(', ')}])`;
  }

  /** The UTC hours (0-23) of the `bucket` column of a query's rows, ascending. */
  async hoursOf(select: string): Promise<number[]> {
    const r = await this.conn.runAndReadAll(`SELECT DISTINCT CAST(hour(bucket) AS INTEGER) AS h FROM (${select}) v ORDER BY h`);
    return r.getRowObjects().map((x) => Number(x.h));
  }

  /** The column names of a Parquet file. */
  async parquetColumns(file: string): Promise<string[]> {
    const r = await this.conn.runAndReadAll(`DESCRIBE SELECT * FROM ${this.readParquet(file)}`);
    return r.getRowObjects().map((x) => String(x.column_name));
  }

  async drop(name: string): Promise<void> {
    await this.conn.run(this.dropSql(name));
  }

  /** SUM of a column of a table (0 when it has no row). */
  async sum(name: string, column: string): Promise<number> {
    const r = await this.conn.runAndReadAll(`SELECT COALESCE(SUM(${column}), 0) AS n FROM ${this.ident(name)}`);
    return Number(r.getRowObjects()[0].n);
  }

  async count(name: string): Promise<number> {
    const r = await this.conn.runAndReadAll(`SELECT COUNT(*) AS n FROM ${this.ident(name)}`);
    return Number(r.getRowObjects()[0].n);
  }

  /**
   * Write a query's rows to one Parquet file (VIEW_PARQUET_OPTIONS; the caller fsyncs and renames it). Row groups of
   * VIEW_ROW_GROUP_ROWS: rows are sorted by key, so a query for one device reads the one or two row
   * groups whose statistics hold it.
   */
  async copyToParquet(select: string, file: string): Promise<void> {
    await this.conn.run(this.copySql(select, file));
  }

  private copySql(select: string, file: string): string {
    return `COPY (${select}) TO ${str(file)} (${VIEW_PARQUET_OPTIONS})`;
  }

  /** Stop the running statement (close of the scheduler). */
  interrupt(): void {
    this.conn.interrupt();
  }

  close(): void {
    this.conn.closeSync();
    if (this.ownsInstance) this.instance.closeSync();
  }
}
