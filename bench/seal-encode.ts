/**
 * The seal's Parquet encoding alone: one segment's day (1M readings shaped as bench:cloud's paced
 * load: 50 gateways x 20 devices x 5 metrics, requests of 5000 readings of one gateway in arrival
 * order, values of two decimals) encoded under several writer settings, each its CPU (this thread:
 * what the Parquet worker pays per seal), the file's bytes per row, and what DuckDB pays to read
 * the file back (a bare scan of every column, and bench:cloud's bare device_1m aggregation), CPU of
 * the whole process (DuckDB's threads included). Medians of BENCH_REPEAT, variants interleaved.
 * The duckdb variants write with DuckDB's own writer instead (DUCK_VARIANTS): their encode CPU is
 * the process's over the table's filling and the COPY, the file's write included.
 *
 *   node --import tsx bench/seal-encode.ts
 *   BENCH_ROWS=1000000 BENCH_REPEAT=5 BENCH_VARIANTS=before,seal node --import tsx bench/seal-encode.ts
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import duckdb from '@duckdb/node-bindings';
import * as pq from 'parquet-wasm';
import { DuckDialect } from '../cloud/batch/dialect.js';
import { DELTA_COLUMNS, DayColumns, ROW_GROUP_ROWS, sealWriterProperties } from '../cloud/ingest/parquet.js';
import { mulberry32 } from '../test/support/random.js';
import { bareSql } from './lib/cloud-explain.js';

const env = process.env;
const ROWS = Number(env.BENCH_ROWS ?? 1_000_000);
const REPEAT = Number(env.BENCH_REPEAT ?? 5);
const GATEWAYS = 50;
const DEVICES = 20;
const METRICS = ['temp', 'hum', 'co2', 'pressure', 'battery'];
const BATCH = 5000;

type Props = () => pq.WriterProperties;
const base = () => new pq.WriterPropertiesBuilder().setCompression(pq.Compression.ZSTD).setMaxRowGroupSize(ROW_GROUP_ROWS);
/** The seal's settings on another base (cloud/ingest/parquet.ts DELTA_COLUMNS). */
const delta = (b: pq.WriterPropertiesBuilder) => DELTA_COLUMNS.reduce((x, c) => x.setColumnDictionaryEnabled(c, false).setColumnEncoding(c, pq.Encoding.DELTA_BINARY_PACKED), b);
const VARIANTS: Record<string, Props> = {
  /** Before 2026-12-06 session 8: zstd at the writer's default level, every column dictionary-tried, page statistics. */
  before: () => base().build(),
  /** What the seal writes (cloud/ingest/parquet.ts sealWriterProperties). */
  seal: () => sealWriterProperties(ROW_GROUP_ROWS),
  /** Only ts and seq delta (epoch left to its dictionary). */
  'delta-ts-seq': () => ['ts', 'seq'].reduce((b, c) => b.setColumnDictionaryEnabled(c, false).setColumnEncoding(c, pq.Encoding.DELTA_BINARY_PACKED), base()).build(),
  /** Every number without a dictionary, PLAIN. */
  'plain-numbers': () => ['ts', 'value', 'seq', 'epoch'].reduce((b, c) => b.setColumnDictionaryEnabled(c, false), base()).build(),
  'seal-value-plain': () => delta(base()).setColumnDictionaryEnabled('value', false).build(),
  'seal-value-bss': () => delta(base()).setColumnDictionaryEnabled('value', false).setColumnEncoding('value', pq.Encoding.BYTE_STREAM_SPLIT).build(),
  'seal-lz4': () => delta(base().setCompression(pq.Compression.LZ4_RAW)).build(),
  'seal-snappy': () => delta(base().setCompression(pq.Compression.SNAPPY)).build(),
  'seal-uncompressed': () => delta(base().setCompression(pq.Compression.UNCOMPRESSED)).build(),
  'seal-chunk-stats': () => delta(base().setStatisticsEnabled(pq.EnabledStatistics.Chunk)).build(),
  'seal-v2-pages': () => delta(base().setWriterVersion(pq.WriterVersion.V2)).build(),
  'seal-ids-plain': () => ['device', 'metric', 'gateway'].reduce((b, c) => b.setColumnDictionaryEnabled(c, false), delta(base())).build(),
  'seal-ids-delta': () => ['device', 'metric', 'gateway'].reduce((b, c) => b.setColumnDictionaryEnabled(c, false).setColumnEncoding(c, pq.Encoding.DELTA_BYTE_ARRAY), delta(base())).build(),
  'seal-gw-plain': () => delta(base()).setColumnDictionaryEnabled('gateway', false).build(),
  'seal-512k-groups': () => delta(base().setMaxRowGroupSize(524_288)).build(),
};

function rows(): DayColumns {
  const c = new DayColumns(19_000, ROWS);
  const perGateway = Math.ceil(ROWS / GATEWAYS);
  const rand = mulberry32(42);
  const series = DEVICES * METRICS.length;
  const tsBase = Date.UTC(2026, 11, 6);
  let n = 0;
  for (let b = 0; n < ROWS; b++) {
    for (let g = 0; g < GATEWAYS && n < ROWS; g++) {
      for (let k = 0; k < BATCH && n < ROWS; k++, n++) {
        const i = b * BATCH + k;
        if (i >= perGateway) break;
        const s = i % series;
        const step = Math.floor(i / series);
        const device = `dev-${String(g * DEVICES + Math.floor(s / METRICS.length)).padStart(5, '0')}`;
        c.append(`gw-${g}`, i + 1, Math.floor(i / 25_000) + 1, device, METRICS[s % METRICS.length], tsBase + step * 10_000 + s, Math.round(rand() * 10000) / 100);
      }
    }
  }
  return c;
}

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

/**
 * DuckDB's own Parquet writer (the batch's engine), measured as the seal would run it: the day's
 * columns copied into a table by data chunks (device, metric, gateway as ENUMs of the dictionaries,
 * so their ids are copied, no string per row), then COPY ... (FORMAT parquet, zstd, v2 encodings),
 * one thread. Its options: what follows PARQUET_VERSION V2 in the COPY. DuckDB has no per-column
 * encoding: a number column keeps a dictionary while it fits DICTIONARY_SIZE_LIMIT, else it goes
 * DELTA_BINARY_PACKED (integers) or BYTE_STREAM_SPLIT (doubles); an ENUM is always a dictionary.
 */
const DUCK_VARIANTS: Record<string, string> = {
  duckdb: '',
  'duckdb-no-number-dict': ', DICTIONARY_SIZE_LIMIT 1',
};

async function duckWrite(conn: duckdb.Connection, c: DayColumns, path: string, options: string): Promise<void> {
  const q = (x: string) => `'${x.replace(/'/g, "''")}'`;
  const en = (values: string[]) => `ENUM(${values.map(q).join(', ')})`;
  await duckdb.query(conn, `CREATE OR REPLACE TEMP TABLE seal_rows (device ${en(c.device.values)}, metric ${en(c.metric.values)}, ts TIMESTAMPTZ, value DOUBLE, gateway ${en(c.gateway.values)}, seq BIGINT, epoch BIGINT)`);
  const app = duckdb.appender_create(conn, null, 'seal_rows');
  const types = [0, 1, 2, 3, 4, 5, 6].map((i) => duckdb.appender_column_type(app, i));
  const width = (t: duckdb.LogicalType) => ({ [duckdb.Type.UTINYINT]: 1, [duckdb.Type.USMALLINT]: 2 } as Record<number, number>)[duckdb.enum_internal_type(t)] ?? 4;
  const chunk = duckdb.create_data_chunk(types);
  const V = duckdb.vector_size();
  const i64 = new BigInt64Array(V);
  const h = new Int32Array(i64.buffer);
  const put = (k: number, a: ArrayBufferView, bytes: number) => duckdb.copy_data_to_vector(duckdb.data_chunk_get_vector(chunk, k), 0, a.buffer as ArrayBuffer, a.byteOffset, bytes);
  const ids = (k: number, idx: Int32Array, off: number, m: number) => {
    const w = width(types[k]);
    if (w === 4) return put(k, idx.subarray(off, off + m), m * 4);
    const a = w === 1 ? new Uint8Array(m) : new Uint16Array(m);
    for (let i = 0; i < m; i++) a[i] = idx[off + i];
    put(k, a, m * w);
  };
  const int64 = (k: number, f: Float64Array, off: number, m: number, scale: number) => {
    for (let i = 0; i < m; i++) {
      const x = f[off + i] * scale;
      const hi = Math.floor(x / 4294967296);
      h[2 * i] = (x - hi * 4294967296) | 0;
      h[2 * i + 1] = hi;
    }
    put(k, i64, m * 8);
  };
  for (let off = 0; off < c.length; off += V) {
    const m = Math.min(V, c.length - off);
    duckdb.data_chunk_reset(chunk);
    ids(0, c.device.idx, off, m);
    ids(1, c.metric.idx, off, m);
    int64(2, c.ts, off, m, 1000);
    put(3, c.value.subarray(off, off + m), m * 8);
    ids(4, c.gateway.idx, off, m);
    int64(5, c.seq, off, m, 1);
    int64(6, c.epoch, off, m, 1);
    duckdb.data_chunk_set_size(chunk, m);
    duckdb.append_data_chunk(app, chunk);
  }
  duckdb.appender_close_sync(app);
  await duckdb.query(conn, `COPY seal_rows TO ${q(path)} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE ${ROW_GROUP_ROWS}, PARQUET_VERSION V2${options})`);
  await duckdb.query(conn, 'DROP TABLE seal_rows');
}

async function main(): Promise<void> {
  const names = env.BENCH_VARIANTS ? env.BENCH_VARIANTS.split(',') : [...Object.keys(VARIANTS), ...Object.keys(DUCK_VARIANTS)];
  const cfg = duckdb.create_config();
  duckdb.set_config(cfg, 'threads', '1');
  const duckConn = await duckdb.connect(await duckdb.open(':memory:', cfg));
  const dir = mkdtempSync(join(tmpdir(), 'seal-encode-'));
  const cols = rows();
  const table = cols.table();
  const res = new Map<string, { enc: number[]; bytes: number; scan: number[]; agg: number[]; file: string }>();
  const { tableToIPC } = await import('apache-arrow');
  for (let r = 0; r < REPEAT; r++) {
    for (const name of names) {
      if (name in DUCK_VARIANTS) {
        const file = join(dir, `${name}-${r}.parquet`);
        const t0 = cpuMs();
        await duckWrite(duckConn, cols, file, DUCK_VARIANTS[name]);
        const t = cpuMs() - t0;
        const e = res.get(name) ?? { enc: [], bytes: statSync(file).size, scan: [], agg: [], file };
        e.enc.push(t);
        res.set(name, e);
        continue;
      }
      const ipc = tableToIPC(table, 'stream');
      const t0 = cpuMs();
      const out = pq.writeParquet(pq.Table.fromIPCStream(ipc), VARIANTS[name]());
      const t = cpuMs() - t0;
      const e = res.get(name) ?? { enc: [], bytes: out.byteLength, scan: [], agg: [], file: join(dir, `${name}.parquet`) };
      e.enc.push(t);
      if (r === 0) writeFileSync(e.file, out);
      res.set(name, e);
    }
  }
  const engine = await DuckDialect.open({ memoryLimit: '1GB', threads: 0, tempDir: join(dir, 'duck') });
  try {
    for (let r = 0; r < REPEAT; r++) {
      for (const name of names) {
        const e = res.get(name)!;
        let t0 = cpuMs();
        await engine.conn.runAndReadAll(`SELECT COUNT(*), SUM(length(device)), SUM(length(metric)), SUM(length(gateway)), SUM(epoch_ms(ts)), SUM(value), SUM(seq), SUM(epoch) FROM read_parquet('${e.file}')`);
        e.scan.push(cpuMs() - t0);
        t0 = cpuMs();
        await engine.conn.runAndReadAll(`SELECT COUNT(*) FROM (${bareSql(engine, [e.file])})`);
        e.agg.push(cpuMs() - t0);
      }
    }
    // Every variant holds the same rows (the files' content, not only their counts).
    const sums = new Set<string>();
    for (const name of names) {
      const r = await engine.conn.runAndReadAll(`SELECT COUNT(*)::VARCHAR || ' ' || SUM(hash(device, metric, ts, value, gateway, seq, epoch))::VARCHAR AS h FROM read_parquet('${res.get(name)!.file}')`);
      sums.add(String(r.getRowObjects()[0].h));
    }
    if (sums.size !== 1) throw new Error(`variants differ: ${[...sums].join(' | ')}`);
  } finally {
    engine.close();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`${ROWS} rows, medians of ${REPEAT}; CPU in ms (encode: this thread; DuckDB: the process)`);
  console.log('variant'.padEnd(18), 'encode ms', 'us/row', 'B/row', 'scan ms', 'agg ms');
  for (const name of names) {
    const e = res.get(name)!;
    const enc = median(e.enc);
    console.log(name.padEnd(18), enc.toFixed(0).padStart(9), ((enc * 1000) / ROWS).toFixed(3).padStart(6), (e.bytes / ROWS).toFixed(2).padStart(5), median(e.scan).toFixed(0).padStart(7), median(e.agg).toFixed(0).padStart(6));
  }
}

await main();
