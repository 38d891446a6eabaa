/**
 * Master dataset files: the readings of one UTC day of one segment as an Arrow table, written as
 * zstd Parquet. Columns are built from typed arrays (strings as dictionaries), not
 * vectorFromArray over JS arrays: a million rows build in tens of ms instead of seconds.
 *
 * Parquet types (docs/cloud-storage.md): device, metric, gateway: BYTE_ARRAY UTF8 (dictionary
 * encoded; the embedded Arrow schema says dictionary<int32, utf8>); ts: INT64
 * TIMESTAMP(MILLIS, isAdjustedToUTC=true); value: DOUBLE; seq, epoch: INT64.
 */
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import * as arrow from 'apache-arrow';
import * as pq from 'parquet-wasm';
import { DAY_MS } from '../../shared/time.js';

const utf8 = new TextEncoder();

/** `YYYY-MM-DD` of a UTC day number (days since 1970-01-01). */
export function dayString(dayIndex: number): string {
  return new Date(dayIndex * DAY_MS).toISOString().slice(0, 10);
}

/** Strings as dictionary indices: each distinct string is stored once. */
class DictColumn {
  private readonly ids = new Map<string, number>();
  readonly values: string[] = [];
  idx: Int32Array;

  constructor(capacity: number) {
    this.idx = new Int32Array(capacity);
  }

  set(i: number, s: string): void {
    let id = this.ids.get(s);
    if (id === undefined) {
      id = this.values.length;
      this.values.push(s);
      this.ids.set(s, id);
    }
    this.idx[i] = id;
  }

  vector(length: number): arrow.Vector {
    const offsets = new Int32Array(this.values.length + 1);
    const encoded = this.values.map((v) => utf8.encode(v));
    for (let i = 0; i < encoded.length; i++) offsets[i + 1] = offsets[i] + encoded[i].length;
    const data = new Uint8Array(offsets[encoded.length]);
    for (let i = 0; i < encoded.length; i++) data.set(encoded[i], offsets[i]);
    const dictionary = arrow.makeVector(arrow.makeData({ type: new arrow.Utf8(), length: this.values.length, nullCount: 0, valueOffsets: offsets, data }));
    const type = new arrow.Dictionary(new arrow.Utf8(), new arrow.Int32());
    return arrow.makeVector(arrow.makeData({ type, length, nullCount: 0, data: this.idx.subarray(0, length), dictionary }));
  }
}

/** The readings of one day, column by column, growing by doubling. */
export class DayColumns {
  readonly day: number;
  length = 0;
  private capacity: number;
  device: DictColumn;
  metric: DictColumn;
  gateway: DictColumn;
  ts: BigInt64Array;
  value: Float64Array;
  seq: BigInt64Array;
  epoch: BigInt64Array;

  constructor(day: number, capacity = 1024) {
    this.day = day;
    this.capacity = capacity;
    this.device = new DictColumn(capacity);
    this.metric = new DictColumn(capacity);
    this.gateway = new DictColumn(capacity);
    this.ts = new BigInt64Array(capacity);
    this.value = new Float64Array(capacity);
    this.seq = new BigInt64Array(capacity);
    this.epoch = new BigInt64Array(capacity);
  }

  private grow(): void {
    const cap = this.capacity * 2;
    const g = <T extends Int32Array | BigInt64Array | Float64Array>(a: T, make: (n: number) => T): T => {
      const b = make(cap);
      b.set(a as never);
      return b;
    };
    this.device.idx = g(this.device.idx, (n) => new Int32Array(n));
    this.metric.idx = g(this.metric.idx, (n) => new Int32Array(n));
    this.gateway.idx = g(this.gateway.idx, (n) => new Int32Array(n));
    this.ts = g(this.ts, (n) => new BigInt64Array(n));
    this.value = g(this.value, (n) => new Float64Array(n));
    this.seq = g(this.seq, (n) => new BigInt64Array(n));
    this.epoch = g(this.epoch, (n) => new BigInt64Array(n));
    this.capacity = cap;
  }

  append(gateway: string, seq: number, epoch: number, device: string, metric: string, ts: number, value: number): void {
    if (this.length === this.capacity) this.grow();
    const i = this.length++;
    this.device.set(i, device);
    this.metric.set(i, metric);
    this.gateway.set(i, gateway);
    this.ts[i] = BigInt(ts);
    this.value[i] = value;
    this.seq[i] = BigInt(seq);
    this.epoch[i] = BigInt(epoch);
  }

  /** Keep only the rows whose `keep` flag is set (rare: lines of a failed commit, repeats). */
  compact(keep: Uint8Array): void {
    let j = 0;
    for (let i = 0; i < this.length; i++) {
      if (!keep[i]) continue;
      if (i !== j) {
        this.device.idx[j] = this.device.idx[i];
        this.metric.idx[j] = this.metric.idx[i];
        this.gateway.idx[j] = this.gateway.idx[i];
        this.ts[j] = this.ts[i];
        this.value[j] = this.value[i];
        this.seq[j] = this.seq[i];
        this.epoch[j] = this.epoch[i];
      }
      j++;
    }
    this.length = j;
  }

  /** Per gateway: seq and epoch bounds and row count, for the catalog's file_gateways. */
  gatewayStats(): Array<{ gateway: string; minSeq: number; maxSeq: number; minEpoch: number; maxEpoch: number; rows: number }> {
    const n = this.gateway.values.length;
    const s = Array.from({ length: n }, () => ({ minSeq: Infinity, maxSeq: -Infinity, minEpoch: Infinity, maxEpoch: -Infinity, rows: 0 }));
    for (let i = 0; i < this.length; i++) {
      const x = s[this.gateway.idx[i]];
      const seq = Number(this.seq[i]);
      const epoch = Number(this.epoch[i]);
      if (seq < x.minSeq) x.minSeq = seq;
      if (seq > x.maxSeq) x.maxSeq = seq;
      if (epoch < x.minEpoch) x.minEpoch = epoch;
      if (epoch > x.maxEpoch) x.maxEpoch = epoch;
      x.rows++;
    }
    return s.map((x, i) => ({ gateway: this.gateway.values[i], ...x })).filter((x) => x.rows > 0);
  }

  table(): arrow.Table {
    const n = this.length;
    const int64 = (a: BigInt64Array, type: arrow.DataType = new arrow.Int64()) =>
      arrow.makeVector(arrow.makeData({ type, length: n, nullCount: 0, data: a.subarray(0, n) } as never));
    return new arrow.Table({
      device: this.device.vector(n),
      metric: this.metric.vector(n),
      ts: int64(this.ts, new arrow.TimestampMillisecond('UTC')),
      value: arrow.makeVector(this.value.subarray(0, n)),
      gateway: this.gateway.vector(n),
      seq: int64(this.seq),
      epoch: int64(this.epoch),
    });
  }
}

/**
 * Rows per Parquet row group: readers (DuckDB, Spark) parallelise and skip by row group, so a
 * million-row day file is several of them rather than one. 128 Ki rows is near DuckDB's own 122,880.
 */
export const ROW_GROUP_ROWS = 131_072;

/** zstd Parquet from an Arrow IPC stream. Synchronous WebAssembly: about 0.5 s per million rows here. */
export function encodeParquetIpc(ipc: Uint8Array): Uint8Array {
  const props = new pq.WriterPropertiesBuilder().setCompression(pq.Compression.ZSTD).setMaxRowGroupSize(ROW_GROUP_ROWS).build();
  return pq.writeParquet(pq.Table.fromIPCStream(ipc), props);
}

/** Encode a table as zstd Parquet on this thread. */
export function encodeParquet(table: arrow.Table): Uint8Array {
  return encodeParquetIpc(arrow.tableToIPC(table, 'stream'));
}

/**
 * The worker's whole program: IPC stream in, Parquet out. Plain JS evaluated as a worker (no
 * TypeScript loader needed there, under tsx or jest alike); parquet-wasm's path comes in workerData.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const pq = import(workerData.parquetWasm);
parentPort.on('message', async ({ id, ipc }) => {
  try {
    const m = await pq;
    const props = new m.WriterPropertiesBuilder().setCompression(m.Compression.ZSTD).setMaxRowGroupSize(workerData.rowGroupRows).build();
    const out = m.writeParquet(m.Table.fromIPCStream(ipc), props);
    parentPort.postMessage({ id, out }, [out.buffer]);
  } catch (err) {
    parentPort.postMessage({ id, error: String(err && err.stack || err) });
  }
});
`;

/**
 * Parquet encoding off the event loop: a million rows take about half a second of synchronous
 * WebAssembly, which on the main thread would stall every ingest request for that long. One
 * worker, started on first use, unref'd; if it cannot run, encoding falls back to this thread.
 */
export class ParquetEncoder {
  private worker: Worker | null = null;
  private readonly pending = new Map<number, { resolve: (b: Uint8Array) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private inline = false;
  private closed = false;
  private readonly onFallback: (err: unknown) => void;

  constructor(onFallback: (err: unknown) => void = () => undefined) {
    this.onFallback = onFallback;
  }

  async encode(table: arrow.Table): Promise<Uint8Array> {
    const ipc = arrow.tableToIPC(table, 'stream');
    const w = this.inline || this.closed ? null : this.start();
    if (!w) return encodeParquetIpc(ipc);
    return new Promise<Uint8Array>((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      w.postMessage({ id, ipc }, [ipc.buffer as ArrayBuffer]);
    });
  }

  private start(): Worker | null {
    if (this.worker) return this.worker;
    try {
      const parquetWasm = pathToFileURL(createRequire(import.meta.url).resolve('parquet-wasm')).href;
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { parquetWasm, rowGroupRows: ROW_GROUP_ROWS } });
      w.unref();
      w.on('message', (m: { id: number; out?: Uint8Array; error?: string }) => {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (m.out) p.resolve(new Uint8Array(m.out.buffer, m.out.byteOffset, m.out.byteLength));
        else p.reject(new Error(`parquet worker: ${m.error}`));
      });
      const fail = (err: Error) => {
        if (this.worker !== w) return;
        this.worker = null;
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
      };
      w.on('error', fail);
      w.on('exit', (code) => fail(new Error(`parquet worker exited (${code})`)));
      this.worker = w;
      return w;
    } catch (err) {
      this.inline = true;
      this.onFallback(err);
      return null;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
  }
}
