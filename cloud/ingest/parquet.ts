/**
 * Master dataset files: the readings of one UTC day of one segment as an Arrow table, written as
 * zstd Parquet. Columns are built from typed arrays (strings as dictionaries), not
 * vectorFromArray over JS arrays: a million rows build in tens of ms instead of seconds. `ts`, `seq`
 * and `epoch` are held as doubles while appending (exact below 2^53, no BigInt per value on the
 * thread that appends) and become INT64 where the table is built: in the worker, for a seal.
 *
 * Parquet types (docs/cloud-storage.md): device, metric, gateway: BYTE_ARRAY UTF8 (dictionary
 * encoded; the embedded Arrow schema says dictionary<int32, utf8>); ts: INT64
 * TIMESTAMP(MILLIS, isAdjustedToUTC=true); value: DOUBLE; seq, epoch: INT64.
 */
import { open } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import * as arrow from 'apache-arrow';
import * as pq from 'parquet-wasm';
import { DAY_MS } from '../../shared/time.js';

const utf8 = new TextEncoder();

/**
 * Typed arrays of `n` entries whose memory is not zeroed (Buffer.allocUnsafeSlow: its own
 * ArrayBuffer, transferable): a column is only ever read below its length, and a large one
 * reserved up front costs nothing until rows reach its pages, where zeroing it would touch every
 * page at once.
 */
const int32s = (n: number) => new Int32Array(Buffer.allocUnsafeSlow(n * 4).buffer, 0, n);
const float64s = (n: number) => new Float64Array(Buffer.allocUnsafeSlow(n * 8).buffer, 0, n);

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
    this.idx = int32s(capacity);
  }

  /** The last string set and its id: rows repeat a gateway, and a device for each of its metrics. */
  private lastValue: string | null = null;
  private lastId = 0;

  /** The id of `s`, added when new. */
  id(s: string): number {
    let id = this.ids.get(s);
    if (id === undefined) {
      id = this.values.length;
      this.values.push(s);
      this.ids.set(s, id);
    }
    return id;
  }

  set(i: number, s: string): void {
    if (s === this.lastValue) {
      this.idx[i] = this.lastId;
      return;
    }
    let id = this.ids.get(s);
    if (id === undefined) {
      id = this.values.length;
      this.values.push(s);
      this.ids.set(s, id);
    }
    this.lastValue = s;
    this.lastId = id;
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

/**
 * The readings of one day, column by column, growing by doubling. A caller that knows how many rows
 * the day can reach at most (a staging segment's image: what is left of ingest.sealMaxReadings)
 * gives that as the capacity, so the columns never grow: growing copies every row so far at once
 * (near a million rows, tens of ms in the middle of a group commit).
 */
export class DayColumns {
  readonly day: number;
  length = 0;
  private capacity: number;
  device: DictColumn;
  metric: DictColumn;
  gateway: DictColumn;
  ts: Float64Array;
  value: Float64Array;
  seq: Float64Array;
  epoch: Float64Array;

  constructor(day: number, capacity = 1024) {
    this.day = day;
    this.capacity = capacity;
    this.device = new DictColumn(capacity);
    this.metric = new DictColumn(capacity);
    this.gateway = new DictColumn(capacity);
    this.ts = float64s(capacity);
    this.value = float64s(capacity);
    this.seq = float64s(capacity);
    this.epoch = float64s(capacity);
  }

  private grow(): void {
    const cap = Math.max(1024, this.capacity * 2);
    const g = <T extends Int32Array | Float64Array>(a: T, make: (n: number) => T): T => {
      const b = make(cap);
      b.set(a as never);
      return b;
    };
    this.device.idx = g(this.device.idx, int32s);
    this.metric.idx = g(this.metric.idx, int32s);
    this.gateway.idx = g(this.gateway.idx, int32s);
    this.ts = g(this.ts, float64s);
    this.value = g(this.value, float64s);
    this.seq = g(this.seq, float64s);
    this.epoch = g(this.epoch, float64s);
    this.capacity = cap;
  }

  append(gateway: string, seq: number, epoch: number, device: string, metric: string, ts: number, value: number): void {
    if (this.length === this.capacity) this.grow();
    const i = this.length++;
    this.device.set(i, device);
    this.metric.set(i, metric);
    this.gateway.set(i, gateway);
    this.ts[i] = ts;
    this.value[i] = value;
    this.seq[i] = seq;
    this.epoch[i] = epoch;
  }

  /** Room for `n` more rows (grown once, by doubling past it). */
  reserve(n: number): void {
    while (this.length + n > this.capacity) this.grow();
  }

  /** One row by dictionary ids (device.id(...), metric.id(...), gateway.id(...)); reserve() first. */
  appendIds(gateway: number, seq: number, epoch: number, device: number, metric: number, ts: number, value: number): void {
    const i = this.length++;
    this.device.idx[i] = device;
    this.metric.idx[i] = metric;
    this.gateway.idx[i] = gateway;
    this.ts[i] = ts;
    this.value[i] = value;
    this.seq[i] = seq;
    this.epoch[i] = epoch;
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
      const seq = this.seq[i];
      const epoch = this.epoch[i];
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
    const int64 = (a: Float64Array, type: arrow.DataType = new arrow.Int64()) =>
      arrow.makeVector(arrow.makeData({ type, length: n, nullCount: 0, data: toBigInt64(a, n) } as never));
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

  /**
   * The columns as a message for the Parquet worker, and the buffers to transfer with it (moved, not
   * copied: this object is empty afterwards and must not be used again).
   */
  detach(): { message: ColumnsMessage; transfer: ArrayBuffer[] } {
    const n = this.length;
    const dict = (d: DictColumn) => ({ values: d.values, idx: d.idx });
    const message: ColumnsMessage = {
      n, device: dict(this.device), metric: dict(this.metric), gateway: dict(this.gateway),
      ts: this.ts, value: this.value, seq: this.seq, epoch: this.epoch,
    };
    const transfer = [this.device.idx, this.metric.idx, this.gateway.idx, this.ts, this.value, this.seq, this.epoch].map((a) => a.buffer as ArrayBuffer);
    this.length = 0;
    this.capacity = 0;
    return { message, transfer };
  }
}

/** A day's columns as posted to the Parquet worker (typed arrays whose first `n` entries count). */
export interface ColumnsMessage {
  n: number;
  device: { values: string[]; idx: Int32Array };
  metric: { values: string[]; idx: Int32Array };
  gateway: { values: string[]; idx: Int32Array };
  ts: Float64Array;
  value: Float64Array;
  seq: Float64Array;
  epoch: Float64Array;
}

/** Per gateway bounds of one file's rows (the catalog's file_gateways). */
export type GatewayStats = ReturnType<DayColumns['gatewayStats']>;

/**
 * Whole doubles (|x| < 2^53) as INT64, written as two 32-bit halves (two's complement, little
 * endian as Arrow's buffers are): no BigInt allocated per value. The worker has a copy of this.
 */
function toBigInt64(a: Float64Array, n: number): BigInt64Array {
  const b = new BigInt64Array(n);
  const h = new Int32Array(b.buffer);
  for (let i = 0; i < n; i++) {
    const x = a[i];
    const hi = Math.floor(x / 4294967296);
    h[2 * i] = (x - hi * 4294967296) | 0;
    h[2 * i + 1] = hi;
  }
  return b;
}

/**
 * Rows per Parquet row group: readers (DuckDB, Spark) parallelise and skip by row group, so a
 * million-row day file is several of them rather than one. 128 Ki rows is near DuckDB's own 122,880.
 */
export const ROW_GROUP_ROWS = 131_072;

/**
 * Integer columns written DELTA_BINARY_PACKED with no dictionary: seq counts up by one per gateway,
 * ts and epoch creep up within a request, so their deltas pack into a few bits, where a dictionary
 * (the writer's default for every column) hashes every value, then gives up on a million distinct
 * ts or seq once its page passes 1 MB. bench/seal-encode.ts, a 1M-reading day shaped as the paced
 * load (2026-12-06): 0.32 vs 0.39 us of CPU a row to encode, 2.16 vs 3.14 B a row, DuckDB's bare
 * scan and device_1m aggregation of the file no slower. DuckDB, Trino, Spark 3.3+ and pyarrow read
 * it (a Parquet 2 encoding in ordinary v1 data pages).
 */
export const DELTA_COLUMNS = ['ts', 'seq', 'epoch'];

/**
 * The writer settings of every master file: zstd (parquet-wasm 0.8 takes no level: the Rust writer's
 * default, a fast one: the same file UNCOMPRESSED took only 8% less CPU, and 2.6x the bytes), row
 * groups of `rowGroupRows`, DELTA_COLUMNS. The worker builds the
 * same from its workerData (WORKER_SOURCE's writerProperties).
 */
export function sealWriterProperties(rowGroupRows = ROW_GROUP_ROWS): pq.WriterProperties {
  let b = new pq.WriterPropertiesBuilder().setCompression(pq.Compression.ZSTD).setMaxRowGroupSize(rowGroupRows);
  for (const c of DELTA_COLUMNS) b = b.setColumnDictionaryEnabled(c, false).setColumnEncoding(c, pq.Encoding.DELTA_BINARY_PACKED);
  return b.build();
}

/** zstd Parquet from an Arrow IPC stream. Synchronous WebAssembly: about 0.3-0.4 s per million rows here. */
export function encodeParquetIpc(ipc: Uint8Array): Uint8Array {
  const props = sealWriterProperties();
  return pq.writeParquet(pq.Table.fromIPCStream(ipc), props);
}

/** Encode a table as zstd Parquet on this thread. */
export function encodeParquet(table: arrow.Table): Uint8Array {
  return encodeParquetIpc(arrow.tableToIPC(table, 'stream'));
}

/**
 * The worker's whole program: an IPC stream in, Parquet out (encode); or a day's columns and a path
 * in (writeColumns: the Arrow table, the per-gateway bounds, the encoding, the file's write and its
 * fsync all here, so a seal's file costs the main thread a postMessage and no copy of its bytes),
 * the file's size and bounds out. Plain JS evaluated as a worker (no TypeScript loader
 * needed there, under tsx or jest alike); parquet-wasm's and apache-arrow's paths come in
 * workerData. It builds the same table as DayColumns.table() and the same bounds as
 * DayColumns.gatewayStats() (test/cloud/ingest-seal.test.ts holds them equal).
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
if (workerData.nice) {
  try {
    // Linux: this thread's own id, whose nice value setpriority changes alone.
    const tid = Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop());
    if (tid > 0) require('node:os').setPriority(tid, workerData.nice);
  } catch { /* elsewhere, or not allowed: the default priority */ }
}
const fs = require('node:fs');
let pqLoaded = null;
const pq = () => (pqLoaded = pqLoaded || import(workerData.parquetWasm));
let A = null;
const utf8 = new TextEncoder();
function dict(col, n) {
  const enc = col.values.map((v) => utf8.encode(v));
  const offsets = new Int32Array(enc.length + 1);
  for (let i = 0; i < enc.length; i++) offsets[i + 1] = offsets[i] + enc[i].length;
  const data = new Uint8Array(offsets[enc.length]);
  for (let i = 0; i < enc.length; i++) data.set(enc[i], offsets[i]);
  const dictionary = A.makeVector(A.makeData({ type: new A.Utf8(), length: enc.length, nullCount: 0, valueOffsets: offsets, data }));
  const type = new A.Dictionary(new A.Utf8(), new A.Int32());
  return A.makeVector(A.makeData({ type, length: n, nullCount: 0, data: col.idx.subarray(0, n), dictionary }));
}
function int64(f, n, type) {
  const b = new BigInt64Array(n);
  const h = new Int32Array(b.buffer);
  for (let i = 0; i < n; i++) {
    const x = f[i];
    const hi = Math.floor(x / 4294967296);
    h[2 * i] = (x - hi * 4294967296) | 0;
    h[2 * i + 1] = hi;
  }
  return A.makeVector(A.makeData({ type: type || new A.Int64(), length: n, nullCount: 0, data: b }));
}
function stats(c) {
  const s = c.gateway.values.map(() => ({ minSeq: Infinity, maxSeq: -Infinity, minEpoch: Infinity, maxEpoch: -Infinity, rows: 0 }));
  for (let i = 0; i < c.n; i++) {
    const x = s[c.gateway.idx[i]];
    const seq = c.seq[i];
    const epoch = c.epoch[i];
    if (seq < x.minSeq) x.minSeq = seq;
    if (seq > x.maxSeq) x.maxSeq = seq;
    if (epoch < x.minEpoch) x.minEpoch = epoch;
    if (epoch > x.maxEpoch) x.maxEpoch = epoch;
    x.rows++;
  }
  return s.map((x, i) => Object.assign({ gateway: c.gateway.values[i] }, x)).filter((x) => x.rows > 0);
}
function ipcOf(c) {
  A = A || require(workerData.arrow);
  const n = c.n;
  const table = new A.Table({
    device: dict(c.device, n),
    metric: dict(c.metric, n),
    ts: int64(c.ts, n, new A.TimestampMillisecond('UTC')),
    value: A.makeVector(c.value.subarray(0, n)),
    gateway: dict(c.gateway, n),
    seq: int64(c.seq, n),
    epoch: int64(c.epoch, n),
  });
  return A.tableToIPC(table, 'stream');
}
// sealWriterProperties, from workerData.
function writerProperties(m) {
  let b = new m.WriterPropertiesBuilder().setCompression(m.Compression.ZSTD).setMaxRowGroupSize(workerData.rowGroupRows);
  for (const c of workerData.deltaColumns) b = b.setColumnDictionaryEnabled(c, false).setColumnEncoding(c, m.Encoding.DELTA_BINARY_PACKED);
  return b.build();
}
// fsync a file written here; its size.
function syncFile(path) {
  const fd = fs.openSync(path, 'r+');
  try {
    fs.fsyncSync(fd);
    return fs.fstatSync(fd).size;
  } finally {
    fs.closeSync(fd);
  }
}
parentPort.on('message', async ({ id, ipc, columns, path }) => {
  try {
    if (path) {
      // A seal's day: written to \`path\` and fsynced here (its bytes never go to the main
      // thread); the caller links it into master/.
      const m = await pq();
      const gateways = stats(columns);
      fs.writeFileSync(path, m.writeParquet(m.Table.fromIPCStream(ipcOf(columns)), writerProperties(m)));
      parentPort.postMessage({ id, bytes: syncFile(path), gateways });
      return;
    }
    const m = await pq();
    const out = m.writeParquet(m.Table.fromIPCStream(ipc), writerProperties(m));
    parentPort.postMessage({ id, out }, [out.buffer]);
  } catch (err) {
    parentPort.postMessage({ id, error: String(err && err.stack || err) });
  }
});
`;

/** A day's Parquet file as written (and fsynced) at the path given: its size and the per-gateway bounds of its rows. */
export interface WrittenDay { bytes: number; gateways: GatewayStats }

type Reply = { id: number; out?: Uint8Array; bytes?: number; gateways?: GatewayStats; error?: string };

/**
 * Parquet encoding off the event loop: a million rows take about half a second of synchronous
 * WebAssembly, which on the main thread would stall every ingest request for that long. One
 * worker, started on first use, unref'd; if it cannot run, encoding falls back to this thread.
 */
export class ParquetEncoder {
  private worker: Worker | null = null;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private inline = false;
  private closed = false;
  private readonly onFallback: (err: unknown) => void;
  private readonly nice: number;

  /** `nice`: the worker thread's nice value (Linux; 0 leaves it as the process's). */
  constructor(onFallback: (err: unknown) => void = () => undefined, nice = 0) {
    this.onFallback = onFallback;
    this.nice = nice;
  }

  /**
   * Write a day's columns as Parquet at `path` and fsync it, all in the worker (table, bounds,
   * encoding, the file's write and fsync): the columns' buffers are transferred, not copied, so `c`
   * is empty afterwards, and the file's bytes never come back to this thread. On this thread if
   * there is no worker. A failure may leave a partial file at `path`.
   */
  async writeColumns(c: DayColumns, path: string): Promise<WrittenDay> {
    const w = this.inline || this.closed ? null : this.start();
    if (!w) {
      const gateways = c.gatewayStats();
      const bytes = encodeParquet(c.table());
      const fh = await open(path, 'w');
      try {
        await fh.writeFile(bytes);
        await fh.sync();
      } finally {
        await fh.close();
      }
      return { bytes: bytes.length, gateways };
    }
    const { message, transfer } = c.detach();
    const r = await this.post(w, { columns: message, path }, transfer);
    return { bytes: r.bytes!, gateways: r.gateways! };
  }

  async encode(table: arrow.Table): Promise<Uint8Array> {
    const ipc = arrow.tableToIPC(table, 'stream');
    const w = this.inline || this.closed ? null : this.start();
    if (!w) return encodeParquetIpc(ipc);
    const r = await this.post(w, { ipc }, [ipc.buffer as ArrayBuffer]);
    return r.out!;
  }

  private post(w: Worker, body: object, transfer: ArrayBuffer[]): Promise<Reply> {
    return new Promise<Reply>((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      w.postMessage({ id, ...body }, transfer);
    });
  }

  private start(): Worker | null {
    if (this.worker) return this.worker;
    try {
      const req = createRequire(import.meta.url);
      const parquetWasm = pathToFileURL(req.resolve('parquet-wasm')).href;
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { parquetWasm, arrow: req.resolve('apache-arrow'), rowGroupRows: ROW_GROUP_ROWS, deltaColumns: DELTA_COLUMNS, nice: this.nice } });
      w.unref();
      w.on('message', (m: Reply) => {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (m.error !== undefined) p.reject(new Error(`parquet worker: ${m.error}`));
        else p.resolve(m.out ? { ...m, out: new Uint8Array(m.out.buffer, m.out.byteOffset, m.out.byteLength) } : m);
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
