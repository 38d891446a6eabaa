/**
 * Series files: one device-view Parquet file's rows as plain float64, grouped by (device, metric),
 * with a directory of each series' row range. A device query then costs a Map lookup and one
 * positional read of its rows (1,440 rows of 80 bytes for a day at 1m, 365 for a year at 1d),
 * where DuckDB pays for the statistics of every row group and decodes one or two whole row groups
 * of 131,072 rows (docs/benchmarks.md, Query).
 *
 * A series file is derived data under the reader's node-local compactDir, built in the background
 * from its view file (immutable: the copy never goes stale) and never written under views/. Its
 * values are the view's own doubles (count, and the times as epoch ms, are integers far below
 * 2^53), so an answer from it is the answer from the Parquet file, bit for bit. The build refuses
 * (and the view file keeps answering) when the file is not what the layout promises: a series
 * split across the file, buckets out of order, or a NULL in a summary column.
 *
 * Layout (little-endian): a 32-byte header (magic `BRAIDSR1`, rows, directory offset and length as
 * float64), then the rows, ROW_DOUBLES float64 each (bucket, count, sum, min, max, m2, first,
 * first_ts, last, last_ts), then the directory as JSON: `[[device, metric, firstRow, rows], ...]`.
 * Written to a temp name, fsynced, renamed: a file that exists is whole.
 */
import { readSync } from 'node:fs';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import type { DuckDBConnection } from '@duckdb/node-api';
import { IoTimes } from '../../../shared/io-times.js';
import type { SummaryRow } from './types.js';

const MAGIC = 'BRAIDSR1';
const HEADER_BYTES = 32;
/** bucket, count, sum, min, max, m2, first, first_ts, last, last_ts. */
export const ROW_DOUBLES = 10;
const ROW_BYTES = ROW_DOUBLES * 8;
/**
 * A series' rows are read on the main thread while such reads take less than this on average (ms),
 * on the thread pool otherwise (IoTimes). The page cache answers a read of a day at 1m's hour file
 * (4.8 KB) in a few us, less than the two hops to the pool and back (24 of them a query); a cold
 * file (the disk) sends the reads to the pool after a few, where several go to the disk at once
 * (docs/benchmarks.md, Query, session 21).
 */
export const SERIES_READ_INLINE_MS = 0.2;
/** Rows gathered before a write while building. */
const WRITE_ROWS = 16_384;

const sqlString = (s: string) => `'${s.replaceAll("'", "''")}'`;
const seriesKey = (device: string, metric: string) => `${device}\u0000${metric}`;

/** Why a view file cannot become a series file (the view file keeps answering). */
export class SeriesLayoutError extends Error {
  override readonly name = 'SeriesLayoutError';
}

export interface SeriesBuildResult {
  rows: number;
  series: number;
  bytes: number;
}

/**
 * The rows a series file of `source` would hold, read from the Parquet footer alone (the build's
 * size is 80 bytes a row, plus its directory).
 */
export async function parquetRows(conn: DuckDBConnection, source: string): Promise<number> {
  const r = await conn.runAndReadAll(`SELECT COALESCE(SUM(num_rows), 0)::DOUBLE FROM parquet_file_metadata(${sqlString(source)})`);
  return Number(r.getRows()[0][0]);
}

/** Bytes a series file of `rows` rows takes, but its directory. */
export const seriesBytes = (rows: number) => HEADER_BYTES + rows * ROW_BYTES;

/**
 * Write the series file of the device view file `source` to `target` (through `target.tmp`, fsynced,
 * renamed). Throws SeriesLayoutError when the file's rows are not grouped by (device, metric) in
 * bucket order or hold a NULL; nothing is left at `target` then.
 */
export async function buildSeriesFile(conn: DuckDBConnection, source: string, target: string): Promise<SeriesBuildResult> {
  const tmp = `${target}.tmp`;
  const fh = await open(tmp, 'w');
  let done = false;
  try {
    // In file order (a scan keeps it: preserve_insertion_order), and file_row_number proves it.
    const result = await conn.stream(`SELECT device, metric, file_row_number::DOUBLE,
        CAST(epoch_ms(bucket) AS DOUBLE), CAST("count" AS DOUBLE), "sum", "min", "max", m2,
        "first", CAST(epoch_ms(first_ts) AS DOUBLE), "last", CAST(epoch_ms(last_ts) AS DOUBLE)
      FROM read_parquet(${sqlString(source)}, file_row_number = true)`);
    const dir: Array<[string, string, number, number]> = [];
    const seen = new Set<string>();
    const buf = new Float64Array(WRITE_ROWS * ROW_DOUBLES);
    const bytes = new Uint8Array(buf.buffer);
    let inBuf = 0;
    let rows = 0;
    let offset = HEADER_BYTES;
    let device: string | null = null;
    let metric: string | null = null;
    let lastBucket = -Infinity;
    const flush = async () => {
      if (inBuf === 0) return;
      const n = inBuf * ROW_BYTES;
      await fh.write(bytes, 0, n, offset);
      offset += n;
      inBuf = 0;
    };
    for (;;) {
      const chunk = await result.fetchChunk();
      if (!chunk || chunk.rowCount === 0) break;
      const n = chunk.rowCount;
      const cols = Array.from({ length: 13 }, (_, i) => chunk.getColumnVector(i));
      for (let i = 0; i < n; i++) {
        if (cols[2].getItem(i) !== rows) throw new SeriesLayoutError(`${source}: rows not read in file order (row ${rows})`);
        const d = cols[0].getItem(i) as string | null;
        const m = cols[1].getItem(i) as string | null;
        if (d === null || m === null) throw new SeriesLayoutError(`${source}: NULL device or metric at row ${rows}`);
        if (d !== device || m !== metric) {
          const k = seriesKey(d, m);
          if (seen.has(k)) throw new SeriesLayoutError(`${source}: the rows of ${JSON.stringify(d)}/${JSON.stringify(m)} are not contiguous`);
          seen.add(k);
          if (dir.length) dir[dir.length - 1][3] = rows - dir[dir.length - 1][2];
          dir.push([d, m, rows, 0]);
          device = d;
          metric = m;
          lastBucket = -Infinity;
        }
        const base = inBuf * ROW_DOUBLES;
        for (let c = 0; c < ROW_DOUBLES; c++) {
          const v = cols[3 + c].getItem(i) as number | null;
          if (v === null) throw new SeriesLayoutError(`${source}: NULL in a summary column at row ${rows}`);
          buf[base + c] = v;
        }
        if (!(buf[base] > lastBucket)) throw new SeriesLayoutError(`${source}: buckets of ${JSON.stringify(d)}/${JSON.stringify(m)} out of order at row ${rows}`);
        lastBucket = buf[base];
        rows++;
        if (++inBuf === WRITE_ROWS) await flush();
      }
    }
    await flush();
    if (dir.length) dir[dir.length - 1][3] = rows - dir[dir.length - 1][2];
    const dirBytes = Buffer.from(JSON.stringify(dir), 'utf8');
    await fh.write(dirBytes, 0, dirBytes.length, offset);
    const header = Buffer.alloc(HEADER_BYTES);
    header.write(MAGIC, 0, 'latin1');
    header.writeDoubleLE(rows, 8);
    header.writeDoubleLE(offset, 16);
    header.writeDoubleLE(dirBytes.length, 24);
    await fh.write(header, 0, HEADER_BYTES, 0);
    await fh.sync();
    await fh.close();
    done = true;
    await rename(tmp, target);
    return { rows, series: dir.length, bytes: offset + dirBytes.length };
  } finally {
    if (!done) {
      await fh.close().catch(() => undefined);
      await rm(tmp, { force: true }).catch(() => undefined);
    }
  }
}

/**
 * The series (device, metric) of a reader's series files, numbered once: each file's directory is
 * then two typed arrays indexed by that number. A directory held as a Map per file (a key string,
 * an entry and an object per series) cost 31 files of 10,000 series 62 MB of the cloud's 80 MB heap,
 * 1.2M objects that every major GC marked: 45-98 ms pauses in the device queries' p99
 * (docs/benchmarks.md, Query, 2026-12-07). Numbers are never given back: a reader numbers every
 * series its files have held in the process's life (a retired device's keep theirs, ~100 bytes
 * each), where each file's Map held its own.
 */
export class SeriesIds {
  private readonly ids = new Map<string, number>();

  /** The number of (device, metric), given one if it has none. */
  idOf(device: string, metric: string): number {
    const key = seriesKey(device, metric);
    let id = this.ids.get(key);
    if (id === undefined) {
      id = this.ids.size;
      this.ids.set(key, id);
    }
    return id;
  }

  /** The number of (device, metric), if it has one. */
  find(device: string, metric: string): number | undefined {
    return this.ids.get(seriesKey(device, metric));
  }

  /** Series numbered so far. */
  get size(): number {
    return this.ids.size;
  }
}

/** An open series file: its directory in memory (by SeriesIds number), its rows read on demand. */
export class SeriesFile {
  private closed = false;
  private reading = 0;
  private closing: (() => void) | null = null;

  /** `first[id]`, `count[id]`: the row range of series `id` (count 0, or an id past the arrays: none in the file). */
  private constructor(private readonly fh: FileHandle, private readonly ids: SeriesIds, private readonly times: IoTimes, private readonly first: Float64Array, private readonly count: Float64Array, readonly rows: number, readonly bytes: number) {}

  /**
   * Open a series file written by buildSeriesFile, its series numbered in `ids`; throws on anything
   * else. `times`: where its reads go, shared by the files of one disk.
   */
  static async open(path: string, ids: SeriesIds, times = new IoTimes(SERIES_READ_INLINE_MS)): Promise<SeriesFile> {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const header = Buffer.alloc(HEADER_BYTES);
      await fh.read(header, 0, HEADER_BYTES, 0);
      const rows = header.readDoubleLE(8);
      const dirOffset = header.readDoubleLE(16);
      const dirLength = header.readDoubleLE(24);
      if (header.toString('latin1', 0, 8) !== MAGIC || dirOffset !== seriesBytes(rows) || dirOffset + dirLength !== size) {
        throw new Error(`${path}: not a series file`);
      }
      const raw = Buffer.alloc(dirLength);
      await fh.read(raw, 0, dirLength, dirOffset);
      const dir = JSON.parse(raw.toString('utf8')) as Array<[string, string, number, number]>;
      const at = dir.map(([d, m]) => ids.idOf(d, m));
      const first = new Float64Array(ids.size);
      const count = new Float64Array(ids.size);
      for (let i = 0; i < dir.length; i++) {
        first[at[i]] = dir[i][2];
        count[at[i]] = dir[i][3];
      }
      return new SeriesFile(fh, ids, times, first, count, rows, size);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** The rows of (device, metric) with buckets in [fromMs, toMs), in bucket order. */
  async read(device: string, metric: string, fromMs: number, toMs: number): Promise<SummaryRow[]> {
    if (this.closed) throw new Error('series file closed');
    const id = this.ids.find(device, metric);
    if (id === undefined || id >= this.count.length || this.count[id] === 0) return [];
    const n = this.count[id];
    const vals = new Float64Array(n * ROW_DOUBLES);
    this.reading++;
    try {
      const want = n * ROW_BYTES;
      const inline = this.times.inline();
      const started = performance.now();
      let got = 0;
      while (got < want) {
        const into = new Uint8Array(vals.buffer, got, want - got);
        const at = HEADER_BYTES + this.first[id] * ROW_BYTES + got;
        const bytesRead = inline ? readSync(this.fh.fd, into, 0, into.length, at) : (await this.fh.read(into, 0, into.length, at)).bytesRead;
        if (bytesRead === 0) throw new Error('series file truncated');
        got += bytesRead;
      }
      this.times.record(performance.now() - started);
    } finally {
      if (--this.reading === 0 && this.closing) this.closing();
    }
    const out: SummaryRow[] = [];
    for (let b = 0; b < vals.length; b += ROW_DOUBLES) {
      const bucket = vals[b];
      if (bucket < fromMs) continue;
      if (bucket >= toMs) break;
      out.push({
        bucket, count: vals[b + 1], sum: vals[b + 2], min: vals[b + 3], max: vals[b + 4], m2: vals[b + 5],
        first: vals[b + 6], firstTs: vals[b + 7], firstDevice: device, last: vals[b + 8], lastTs: vals[b + 9], lastDevice: device,
      });
    }
    return out;
  }

  /** Close once the reads in flight have finished; idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.reading > 0) await new Promise<void>((resolve) => { this.closing = resolve; });
    await this.fh.close();
  }
}
