/**
 * A request's readings as columns: seq, epoch, ts and value as Float64Arrays, device and metric as
 * indexes into the request's own dictionaries. What planning, staging and the open segment's image
 * share instead of one `[seq, epoch, device, metric, ts, value]` array per reading: a 5000-reading
 * body was 5000 arrays and their boxed numbers, which were most of the ingest's garbage (GC was a
 * fifth of the main thread). fast-body.ts fills them straight from the body's bytes; a body it does
 * not take (anything but the documented compact shape) is parsed and validated as before and turned
 * into columns by fromTuples.
 */
import type { Range } from './ranges.js';

/** `[seq, epoch, device, metric, ts, value]`, as on the wire. */
export type ReadingTuple = [number, number, string, string, number, number];

export class ReadingColumns {
  constructor(
    readonly length: number,
    readonly seq: Float64Array,
    readonly epoch: Float64Array,
    readonly ts: Float64Array,
    readonly value: Float64Array,
    /** Index into `devices` per row. */
    readonly device: Uint32Array,
    /** Index into `metrics` per row. */
    readonly metric: Uint32Array,
    readonly devices: string[],
    readonly metrics: string[],
  ) {}

  static empty(): ReadingColumns {
    return allocate(0).finish(0, [], []);
  }

  /** The columns of validated tuples (the slow path's rows, tests). */
  static fromTuples(rows: readonly ReadingTuple[]): ReadingColumns {
    const n = rows.length;
    const b = allocate(n);
    const devices = new Map<string, number>();
    const metrics = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const r = rows[i];
      b.seq[i] = r[0];
      b.epoch[i] = r[1];
      let d = devices.get(r[2]);
      if (d === undefined) devices.set(r[2], d = devices.size);
      let m = metrics.get(r[3]);
      if (m === undefined) metrics.set(r[3], m = metrics.size);
      b.device[i] = d;
      b.metric[i] = m;
      b.ts[i] = r[4];
      b.value[i] = r[5];
    }
    return b.finish(n, [...devices.keys()], [...metrics.keys()]);
  }

  row(i: number): ReadingTuple {
    return [this.seq[i], this.epoch[i], this.devices[this.device[i]], this.metrics[this.metric[i]], this.ts[i], this.value[i]];
  }

  toTuples(): ReadingTuple[] {
    const out: ReadingTuple[] = new Array(this.length);
    for (let i = 0; i < this.length; i++) out[i] = this.row(i);
    return out;
  }

  /** Rows [from, to) as views of these columns (no copy), sharing the dictionaries. */
  slice(from: number, to = this.length): ReadingColumns {
    if (from === 0 && to >= this.length) return this;
    const a = Math.max(0, Math.min(from, this.length));
    const b = Math.max(a, Math.min(to, this.length));
    return new ReadingColumns(b - a, this.seq.subarray(a, b), this.epoch.subarray(a, b), this.ts.subarray(a, b), this.value.subarray(a, b),
      this.device.subarray(a, b), this.metric.subarray(a, b), this.devices, this.metrics);
  }

  /** The rows (ascending seq) whose seq lies in `want` (sorted, merged): this object when all of them. */
  select(want: Range[]): ReadingColumns {
    const n = this.length;
    if (n === 0) return this;
    if (want.length === 1 && want[0].from <= this.seq[0] && want[0].to >= this.seq[n - 1]) return this;
    const keep: number[] = [];
    let k = 0;
    for (let i = 0; i < n; i++) {
      const s = this.seq[i];
      while (k < want.length && want[k].to < s) k++;
      if (k === want.length) break;
      if (want[k].from <= s) keep.push(i);
    }
    const b = allocate(keep.length);
    for (let j = 0; j < keep.length; j++) {
      const i = keep[j];
      b.seq[j] = this.seq[i];
      b.epoch[j] = this.epoch[i];
      b.ts[j] = this.ts[i];
      b.value[j] = this.value[i];
      b.device[j] = this.device[i];
      b.metric[j] = this.metric[i];
    }
    return b.finish(keep.length, this.devices, this.metrics);
  }
}

/** Columns being filled: one ArrayBuffer for all six (one allocation per request). */
export interface ColumnsBuilder {
  capacity: number;
  seq: Float64Array;
  epoch: Float64Array;
  ts: Float64Array;
  value: Float64Array;
  device: Uint32Array;
  metric: Uint32Array;
  finish(n: number, devices: string[], metrics: string[]): ReadingColumns;
}

export function allocate(capacity: number): ColumnsBuilder {
  const buf = new ArrayBuffer(capacity * 40);
  const f = (k: number) => new Float64Array(buf, k * capacity * 8, capacity);
  const u = (k: number) => new Uint32Array(buf, 32 * capacity + k * capacity * 4, capacity);
  return {
    capacity, seq: f(0), epoch: f(1), ts: f(2), value: f(3), device: u(0), metric: u(1),
    finish(n, devices, metrics) {
      const c = this;
      return new ReadingColumns(n, c.seq.subarray(0, n), c.epoch.subarray(0, n), c.ts.subarray(0, n), c.value.subarray(0, n),
        c.device.subarray(0, n), c.metric.subarray(0, n), devices, metrics);
    },
  };
}

/** A builder of twice (or `atLeast`) the capacity holding the first `n` rows of `b`. */
export function grow(b: ColumnsBuilder, n: number, atLeast = 0): ColumnsBuilder {
  const c = allocate(Math.max(b.capacity * 2, atLeast, 16));
  c.seq.set(b.seq.subarray(0, n));
  c.epoch.set(b.epoch.subarray(0, n));
  c.ts.set(b.ts.subarray(0, n));
  c.value.set(b.value.subarray(0, n));
  c.device.set(b.device.subarray(0, n));
  c.metric.set(b.metric.subarray(0, n));
  return c;
}

/** Consecutive seqs of ascending rows as ranges. */
export function seqRangesOf(rows: ReadingColumns): Range[] {
  const out: Range[] = [];
  const seq = rows.seq;
  let last: Range | null = null;
  for (let i = 0; i < rows.length; i++) {
    const s = seq[i];
    if (last && s === last.to + 1) last.to = s;
    else out.push(last = { from: s, to: s });
  }
  return out;
}

/** The staging line's `r` (JSON of the rows as tuples), as JSON.stringify would write it. */
export function columnsJson(rows: ReadingColumns): string {
  const dj = rows.devices.map((d) => JSON.stringify(d));
  const mj = rows.metrics.map((m) => JSON.stringify(m));
  const parts: string[] = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    // String(n) is JSON.stringify(n) for every finite number (-0 included: both "0").
    parts[i] = `[${rows.seq[i]},${rows.epoch[i]},${dj[rows.device[i]]},${mj[rows.metric[i]]},${rows.ts[i]},${rows.value[i]}]`;
  }
  return `[${parts.join(',')}]`;
}
