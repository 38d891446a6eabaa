/**
 * The seal's Parquet encoding alone: one segment's day (1M readings shaped as bench:cloud's paced
 * load: 50 gateways x 20 devices x 5 metrics, requests of 5000 readings of one gateway in arrival
 * order, values of two decimals) encoded under several writer settings, each its CPU (this thread:
 * what the Parquet worker pays per seal), the file's bytes per row, and what DuckDB pays to read
 * the file back (a bare scan of every column, and bench:cloud's bare device_1m aggregation), CPU of
 * the whole process (DuckDB's threads included). Medians of BENCH_REPEAT, variants interleaved.
 *
 *   node --import tsx bench/seal-encode.ts
 *   BENCH_ROWS=1000000 BENCH_REPEAT=5 BENCH_VARIANTS=before,seal node --import tsx bench/seal-encode.ts
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

async function main(): Promise<void> {
  const names = env.BENCH_VARIANTS ? env.BENCH_VARIANTS.split(',') : Object.keys(VARIANTS);
  const dir = mkdtempSync(join(tmpdir(), 'seal-encode-'));
  const cols = rows();
  const table = cols.table();
  const res = new Map<string, { enc: number[]; bytes: number; scan: number[]; agg: number[]; file: string }>();
  const { tableToIPC } = await import('apache-arrow');
  for (let r = 0; r < REPEAT; r++) {
    for (const name of names) {
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
