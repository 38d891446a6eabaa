/**
 * An ingest body straight from its bytes into columns (ReadingColumns), for the shape every
 * gateway sends (docs/ingest-protocol.md): rows `[seq,epoch,"device","metric",ts,value]` with
 * plain whole numbers for seq, epoch and ts, ASCII strings without escapes, any JSON number for the
 * value. JSON.parse of a 5000-reading body built 5000 arrays and 30,000 values for the GC to
 * collect; this walk builds none (a device or metric string once per request).
 *
 * It judges nothing on its own: the moment anything is not what it expects (an escape, a non-ASCII
 * byte, `1e3` for a seq, a repeated key, a check that fails, bad JSON) it gives up and the body is
 * parsed and validated as before (JSON.parse + validateIngestBody), which gives the same rows for
 * what both accept and the same error for everything else: one code path owns every message
 * [INV-5]. The other members (v, gateway, seqs, epochs, gaps, sentAt: small) go through JSON.parse
 * and validateIngestBody as they are. Fuzzed against the old path (test/cloud/ingest-fast-body.test.ts).
 */
import { MAX_TS_MS, str } from '../api/json-checks.js';
import { parseJsonBody } from './body.js';
import { type ColumnsBuilder, ReadingColumns, allocate, grow } from './columns.js';
import { readingsBytes, skipString, skipValue, skipWs } from './raw-json.js';
import { type IngestBatch, MAX_DEVICE_LENGTH, MAX_METRIC_LENGTH, type ValidateLimits, validateIngestBody } from './validate.js';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const OPEN = 0x5b;
const CLOSE = 0x5d;
const NL = 0x0a;
/** 10^k, exact as doubles for k <= 22. */
const POW10 = Array.from({ length: 23 }, (_, k) => 10 ** k);

/**
 * A body as the route needs it: validated, its readings as columns and, when the request's own
 * bytes can be its staging line (no newline in them), `readingsJson`. Throws what
 * validateIngestBody and parseJsonBody throw.
 */
export function parseIngestBody(raw: Buffer | undefined, limits: ValidateLimits): IngestBatch {
  if (raw && raw.length > 0) {
    const fast = parseFast(raw, limits);
    if (fast) return fast;
  }
  return parseSlow(raw, limits);
}

/** The old path: JSON.parse, validateIngestBody, and the readings' bytes found by readingsBytes. */
export function parseSlow(raw: Buffer | undefined, limits: ValidateLimits): IngestBatch {
  const doc = parseJsonBody(raw, 'an ingest batch');
  const batch = validateIngestBody(doc, limits);
  const json = batch.readings.length > 0 ? readingsBytes(raw!, batch.readings.length, batch.noBracket === true) : null;
  if (json && json.indexOf(NL) === -1) batch.readingsJson = json;
  return batch;
}

// The walk's position and what it saw, kept at module level (one body at a time, synchronously).
let pos = 0;
let sawNewline = false;

function ws(buf: Buffer): void {
  let i = pos;
  for (;;) {
    const b = buf[i];
    if (b === 0x20) { i++; continue; }
    if (b === NL || b === 0x0d || b === 0x09) { if (b === NL) sawNewline = true; i++; continue; }
    break;
  }
  pos = i;
}

/** A plain whole number of at most 15 digits (so a safe integer) at pos, or -1. */
function uint(buf: Buffer): number {
  let i = pos;
  let b = buf[i];
  if (!(b >= 0x30 && b <= 0x39)) return -1;
  let v = b - 0x30;
  i++;
  b = buf[i];
  if (v === 0 && b >= 0x30 && b <= 0x39) return -1; // a leading zero: not JSON
  const start = i - 1;
  while (b >= 0x30 && b <= 0x39) {
    v = v * 10 + (b - 0x30);
    b = buf[++i];
  }
  if (i - start > 15 || b === 0x2e || b === 0x65 || b === 0x45) return -1;
  pos = i;
  return v;
}

/** Any JSON number at pos, finite, exactly as JSON.parse reads it; NaN when not one. */
function number(buf: Buffer): number {
  const start = pos;
  let i = pos;
  let b = buf[i];
  const neg = b === 0x2d;
  if (neg) b = buf[++i];
  if (!(b >= 0x30 && b <= 0x39)) return NaN;
  let m = 0;
  let digits = 0;
  if (b === 0x30) {
    b = buf[++i];
    digits = 1;
    if (b >= 0x30 && b <= 0x39) return NaN;
  } else {
    while (b >= 0x30 && b <= 0x39) {
      m = m * 10 + (b - 0x30);
      digits++;
      b = buf[++i];
    }
  }
  let frac = 0;
  if (b === 0x2e) {
    b = buf[++i];
    if (!(b >= 0x30 && b <= 0x39)) return NaN;
    while (b >= 0x30 && b <= 0x39) {
      m = m * 10 + (b - 0x30);
      digits++;
      frac++;
      b = buf[++i];
    }
  }
  let exp = 0;
  if (b === 0x65 || b === 0x45) {
    b = buf[++i];
    let eneg = false;
    if (b === 0x2b || b === 0x2d) { eneg = b === 0x2d; b = buf[++i]; }
    if (!(b >= 0x30 && b <= 0x39)) return NaN;
    while (b >= 0x30 && b <= 0x39) {
      if (exp < 100_000) exp = exp * 10 + (b - 0x30);
      b = buf[++i];
    }
    if (eneg) exp = -exp;
  }
  pos = i;
  const k = exp - frac;
  let v: number;
  // Clinger's fast path: m and 10^|k| are exact doubles, so one division or product rounds once, correctly.
  if (digits <= 15 && k >= -22 && k <= 22) v = k < 0 ? m / POW10[-k] : m * POW10[k];
  else v = Number(buf.toString('latin1', neg ? start + 1 : start, i));
  return neg ? -v : v;
}

/** A string's dictionary (one per column per body): byte spans, found by a hash of their bytes. */
class Dict {
  readonly values: string[] = [];
  private readonly byHash = new Map<number, number>();
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  private lastStart = -1;
  private lastEnd = -1;
  private lastId = -1;

  constructor(private readonly what: string, private readonly max: number, private readonly col: number) {}

  /** The id of the string at pos (an opening quote), or -1 (not ASCII without escapes, or not a valid device/metric). */
  id(buf: Buffer, row: number): number {
    let i = pos;
    if (buf[i] !== QUOTE) return -1;
    const s = ++i;
    let h = 0;
    for (;;) {
      const b = buf[i];
      if (b === QUOTE) break;
      if (b === BACKSLASH || b < 0x20 || b >= 0x80 || b === undefined) return -1;
      h = (Math.imul(h, 31) + b) | 0;
      i++;
    }
    const e = i;
    pos = i + 1;
    // Rows repeat a device for each of its metrics: the last one first.
    if (e - s === this.lastEnd - this.lastStart && same(buf, s, this.lastStart, e - s)) return this.lastId;
    let id = this.byHash.get(h);
    if (id !== undefined) {
      if (this.ends[id] - this.starts[id] !== e - s || !same(buf, s, this.starts[id], e - s)) return -1; // a collision: the slow path
    } else {
      const v = buf.toString('latin1', s, e);
      try {
        str(v, `readings[${row}][${this.col}]`, this.what, this.max);
      } catch {
        return -1;
      }
      id = this.values.length;
      this.values.push(v);
      this.starts.push(s);
      this.ends.push(e);
      this.byHash.set(h, id);
    }
    this.lastStart = s;
    this.lastEnd = e;
    this.lastId = id;
    return id;
  }
}

function same(buf: Buffer, a: number, b: number, n: number): boolean {
  for (let k = 0; k < n; k++) if (buf[a + k] !== buf[b + k]) return false;
  return true;
}

/** The readings array at pos as columns, pos after it; null when the slow path must judge it. */
function readingsColumns(buf: Buffer, max: number): ReadingColumns | null {
  const arrayStart = pos;
  pos++;
  ws(buf);
  const devices = new Dict('device', MAX_DEVICE_LENGTH, 2);
  const metrics = new Dict('metric', MAX_METRIC_LENGTH, 3);
  if (buf[pos] === CLOSE) {
    pos++;
    return ReadingColumns.empty();
  }
  let b: ColumnsBuilder = allocate(Math.min(max, 1024));
  let n = 0;
  let prev = 0;
  for (;;) {
    if (n === b.capacity) {
      if (n >= max) return null; // over the limit: the slow path's 413
      // From the bytes per row so far, what is left of the body will hold about this many more.
      const perRow = (pos - arrayStart) / n;
      b = grow(b, n, Math.min(max, Math.ceil(n + ((buf.length - pos) / perRow) * 1.05) + 16));
    }
    if (buf[pos] !== OPEN) return null;
    pos++;
    ws(buf);
    const seq = uint(buf);
    if (seq < 1 || seq <= prev) return null;
    ws(buf);
    if (buf[pos] !== COMMA) return null;
    pos++;
    ws(buf);
    const epoch = uint(buf);
    if (epoch < 1) return null;
    ws(buf);
    if (buf[pos] !== COMMA) return null;
    pos++;
    ws(buf);
    const d = devices.id(buf, n);
    if (d < 0) return null;
    ws(buf);
    if (buf[pos] !== COMMA) return null;
    pos++;
    ws(buf);
    const m = metrics.id(buf, n);
    if (m < 0) return null;
    ws(buf);
    if (buf[pos] !== COMMA) return null;
    pos++;
    ws(buf);
    const ts = uint(buf);
    if (ts < 0 || ts > MAX_TS_MS) return null;
    ws(buf);
    if (buf[pos] !== COMMA) return null;
    pos++;
    ws(buf);
    const value = number(buf);
    if (!Number.isFinite(value)) return null;
    ws(buf);
    if (buf[pos] !== CLOSE) return null;
    pos++;
    b.seq[n] = seq;
    b.epoch[n] = epoch;
    b.device[n] = d;
    b.metric[n] = m;
    b.ts[n] = ts;
    b.value[n] = value;
    n++;
    prev = seq;
    ws(buf);
    const c = buf[pos];
    if (c === CLOSE) {
      pos++;
      return b.finish(n, devices.values, metrics.values);
    }
    if (c !== COMMA) return null;
    pos++;
    ws(buf);
  }
}

const OPEN_BRACE = Buffer.from('{');
const CLOSE_BRACE = Buffer.from('}');
const SEP = Buffer.from(',');

/** The fast path: the batch, or null for the slow path to judge. */
export function parseFast(buf: Buffer, limits: ValidateLimits): IngestBatch | null {
  sawNewline = false;
  let i = skipWs(buf, 0);
  if (buf[i] !== 0x7b) return null;
  i = skipWs(buf, i + 1);
  const rest: Buffer[] = [OPEN_BRACE];
  const keys = new Set<string>();
  let cols: ReadingColumns | null = null;
  let json: Buffer | null = null;
  for (;;) {
    if (buf[i] !== QUOTE) return null;
    const ks = i;
    i = skipString(buf, i);
    if (i < 0) return null;
    const slash = buf.indexOf(BACKSLASH, ks);
    if (slash !== -1 && slash < i) return null; // a key spelled with escapes
    const key = buf.toString('utf8', ks + 1, i - 1);
    if (keys.has(key)) return null; // JSON.parse keeps the last one: not worth telling apart
    keys.add(key);
    i = skipWs(buf, i);
    if (buf[i] !== 0x3a) return null;
    i = skipWs(buf, i + 1);
    const vs = i;
    if (key === 'readings') {
      if (buf[vs] !== OPEN) return null;
      pos = vs;
      sawNewline = false;
      cols = readingsColumns(buf, limits.maxReadings);
      if (!cols) return null;
      i = pos;
      json = sawNewline ? null : buf.subarray(vs, i);
    } else {
      i = skipValue(buf, vs);
      if (i <= vs) return null;
      if (rest.length > 1) rest.push(SEP);
      rest.push(buf.subarray(ks, i));
    }
    i = skipWs(buf, i);
    if (buf[i] === COMMA) {
      i = skipWs(buf, i + 1);
      continue;
    }
    if (buf[i] !== 0x7d) return null;
    break;
  }
  if (!cols || skipWs(buf, i + 1) !== buf.length) return null;
  rest.push(CLOSE_BRACE);
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.concat(rest).toString('utf8'));
    const batch = validateIngestBody(doc, limits, cols);
    if (json && cols.length > 0) batch.readingsJson = json;
    return batch;
  } catch {
    return null;
  }
}
