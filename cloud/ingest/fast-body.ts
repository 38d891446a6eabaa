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
import { POW10, skipWs } from '../../shared/json-bytes.js';
import { MAX_TS_MS, str } from '../api/json-checks.js';
import { parseJsonBody } from './body.js';
import { type ColumnsBuilder, ReadingColumns, allocate, grow } from './columns.js';
import { plainKeyEnd, readingsBytes, skipValue } from './raw-json.js';
import { type IngestBatch, MAX_DEVICE_LENGTH, MAX_METRIC_LENGTH, type ValidateLimits, validateIngestBody } from './validate.js';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const OPEN = 0x5b;
const CLOSE = 0x5d;
const NL = 0x0a;

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

// What the walk saw, kept at module level (one body at a time, synchronously): the last number
// read, and whether whitespace held a newline (then the readings' bytes cannot be a staging line).
let out = 0;
let sawNewline = false;

/** The index after the whitespace at i. */
function wsAt(buf: Buffer, i: number): number {
  for (;;) {
    const b = buf[i];
    if (b === 0x20 || b === 0x0d || b === 0x09) i++;
    else if (b === NL) { sawNewline = true; i++; } else return i;
  }
}

/** A plain whole number of at most 15 digits (so a safe integer) at i into `out`: the index after it, or -1. */
function uintAt(buf: Buffer, i: number): number {
  let b = buf[i];
  if (!(b >= 0x30 && b <= 0x39)) return -1;
  let v = b - 0x30;
  const start = i;
  b = buf[++i];
  if (v === 0 && b >= 0x30 && b <= 0x39) return -1; // a leading zero: not JSON
  while (b >= 0x30 && b <= 0x39) {
    v = v * 10 + (b - 0x30);
    b = buf[++i];
  }
  if (i - start > 15 || b === 0x2e || b === 0x65 || b === 0x45) return -1;
  out = v;
  return i;
}

/** Any JSON number at i into `out`, exactly as JSON.parse reads it: the index after it, or -1. */
function numberAt(buf: Buffer, i: number): number {
  const start = i;
  let b = buf[i];
  const neg = b === 0x2d;
  if (neg) b = buf[++i];
  if (!(b >= 0x30 && b <= 0x39)) return -1;
  let m = 0;
  let digits = 0;
  if (b === 0x30) {
    b = buf[++i];
    digits = 1;
    if (b >= 0x30 && b <= 0x39) return -1;
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
    if (!(b >= 0x30 && b <= 0x39)) return -1;
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
    if (!(b >= 0x30 && b <= 0x39)) return -1;
    while (b >= 0x30 && b <= 0x39) {
      if (exp < 100_000) exp = exp * 10 + (b - 0x30);
      b = buf[++i];
    }
    if (eneg) exp = -exp;
  }
  const k = exp - frac;
  let v: number;
  // Clinger's fast path: m and 10^|k| are exact doubles, so one division or product rounds once, correctly.
  if (digits <= 15 && k >= -22 && k <= 22) v = k < 0 ? m / POW10[-k] : m * POW10[k];
  else v = Number(buf.toString('latin1', neg ? start + 1 : start, i));
  out = neg ? -v : v;
  return i;
}

/**
 * A string column's dictionary (one per column per body): each distinct string's byte span, found
 * by a hash of its bytes in an open-addressed table, and checked byte for byte.
 */
class Dict {
  readonly values: string[] = [];
  private readonly starts: number[] = [];
  private readonly lens: number[] = [];
  private table = new Int32Array(64);
  private mask = 63;
  private lastStart = -1;
  private lastLen = -1;
  private lastId = -1;

  constructor(private readonly what: string, private readonly max: number, private readonly col: number) {}

  /** The string that opens at i (a quote): its id into `out` and the index after it, or -1 (not ASCII without escapes, or not a valid device/metric). */
  at(buf: Buffer, i: number, row: number): number {
    if (buf[i] !== QUOTE) return -1;
    const s = ++i;
    let h = 0;
    for (;;) {
      const b = buf[i];
      if (b === QUOTE) break;
      if (!(b >= 0x20 && b < 0x80) || b === BACKSLASH) return -1;
      h = (Math.imul(h, 31) + b) | 0;
      i++;
    }
    const len = i - s;
    // Rows repeat a device for each of its metrics: the last one first.
    if (len === this.lastLen && same(buf, s, this.lastStart, len)) {
      out = this.lastId;
      return i + 1;
    }
    let slot = (h ^ (h >>> 15)) & this.mask;
    let id: number;
    for (;;) {
      const e = this.table[slot];
      if (e === 0) {
        id = this.add(buf, s, len, row, slot);
        if (id < 0) return -1;
        break;
      }
      if (this.lens[e - 1] === len && same(buf, s, this.starts[e - 1], len)) {
        id = e - 1;
        break;
      }
      slot = (slot + 1) & this.mask;
    }
    this.lastStart = s;
    this.lastLen = len;
    this.lastId = id;
    out = id;
    return i + 1;
  }

  private add(buf: Buffer, s: number, len: number, row: number, slot: number): number {
    const v = buf.toString('latin1', s, s + len);
    try {
      str(v, `readings[${row}][${this.col}]`, this.what, this.max);
    } catch {
      return -1;
    }
    const id = this.values.length;
    this.values.push(v);
    this.starts.push(s);
    this.lens.push(len);
    this.table[slot] = id + 1;
    if (this.values.length * 2 > this.mask) this.rehash(buf);
    return id;
  }

  private rehash(buf: Buffer): void {
    this.table = new Int32Array(this.table.length * 2);
    this.mask = this.table.length - 1;
    for (let id = 0; id < this.values.length; id++) {
      let h = 0;
      for (let k = 0; k < this.lens[id]; k++) h = (Math.imul(h, 31) + buf[this.starts[id] + k]) | 0;
      let slot = (h ^ (h >>> 15)) & this.mask;
      while (this.table[slot] !== 0) slot = (slot + 1) & this.mask;
      this.table[slot] = id + 1;
    }
  }
}

function same(buf: Buffer, a: number, b: number, n: number): boolean {
  for (let k = 0; k < n; k++) if (buf[a + k] !== buf[b + k]) return false;
  return true;
}

/**
 * The readings array that opens at `start` as columns, `end` set to the index after it; null when
 * the slow path must judge it. `expect`: how many rows the body's firstSeq..lastSeq allows when
 * they came before it (the forwarder writes them first): the columns are made that large at once.
 */
function readingsColumns(buf: Buffer, start: number, max: number, expect: number): ReadingColumns | null {
  let i = start + 1;
  if (buf[i] <= 0x20) i = wsAt(buf, i);
  const devices = new Dict('device', MAX_DEVICE_LENGTH, 2);
  const metrics = new Dict('metric', MAX_METRIC_LENGTH, 3);
  if (buf[i] === CLOSE) {
    end = i + 1;
    return ReadingColumns.empty();
  }
  // A row takes at least 18 bytes (`[1,1,"a","b",0,0],`): no more rows than the bytes left hold.
  const room = Math.ceil((buf.length - start) / 18) + 1;
  let b: ColumnsBuilder = allocate(expect > 0 && expect <= max ? Math.min(expect, room) : Math.min(max, 1024, room));
  let n = 0;
  let prev = 0;
  for (;;) {
    if (n === b.capacity) {
      if (n >= max) return null; // over the limit: the slow path's 413
      // From the bytes per row so far, what is left of the body will hold about this many more.
      const perRow = (i - start) / n;
      b = grow(b, n, Math.min(max, Math.ceil(n + ((buf.length - i) / perRow) * 1.05) + 16));
    }
    if (buf[i] !== OPEN) return null;
    i++;
    if (buf[i] <= 0x20) i = wsAt(buf, i);
    if ((i = uintAt(buf, i)) < 0) return null;
    const seq = out;
    if (seq < 1 || seq <= prev) return null;
    if (buf[i] <= 0x20) i = wsAt(buf, i);
    if (buf[i] !== COMMA) return null;
    i++;
    if (buf[i] <= 0x20) i = wsAt(buf, i);
    if ((i = uintAt(buf, i)) < 0) return null;
    const epoch = out;
    if (epoch < 1) return null;
    if (buf[i] <= 0x20) i = wsAt(buf, i);
    if (buf[i] !== COMMA) return null;
    i++;
    if (buf[i] <= 0x20) i = wsAt(buf, i);
    if ((i = devices.at(buf, i, n)) < 0) return null;
    const d = out;
    if (buf[i] <= 0x20) i = wsAt(buf, i);
    if (buf[i] !== COMMA) return null;
    i++;
    if (buf[i] <= 0x20) i = wsAt(buf, i);
    if ((i = metrics.at(buf, i, n)) < 0) return null;
    const m = out;
    if (buf[i] <= 0x20) i = wsAt(buf, i);
    if (buf[i] !== COMMA) return null;
    i++;
    if (buf[i] <= 0x20) i = wsAt(buf, i);
    if ((i = uintAt(buf, i)) < 0) return null;
    const ts = out;
    if (ts > MAX_TS_MS) return null;
    if (buf[i] <= 0x20) i = wsAt(buf, i);
    if (buf[i] !== COMMA) return null;
    i++;
    if (buf[i] <= 0x20) i = wsAt(buf, i);
    if ((i = numberAt(buf, i)) < 0) return null;
    const value = out;
    if (!Number.isFinite(value)) return null;
    if (buf[i] <= 0x20) i = wsAt(buf, i);
    if (buf[i] !== CLOSE) return null;
    i++;
    b.seq[n] = seq;
    b.epoch[n] = epoch;
    b.device[n] = d;
    b.metric[n] = m;
    b.ts[n] = ts;
    b.value[n] = value;
    n++;
    prev = seq;
    if (buf[i] <= 0x20) i = wsAt(buf, i);
    const c = buf[i];
    if (c === CLOSE) {
      end = i + 1;
      return b.finish(n, devices.values, metrics.values);
    }
    if (c !== COMMA) return null;
    i++;
    if (buf[i] <= 0x20) i = wsAt(buf, i);
  }
}
let end = 0;

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
  let firstSeq = 0;
  let lastSeq = -1;
  for (;;) {
    const ks = i;
    i = plainKeyEnd(buf, i); // -1: not a key, or one spelled with escapes
    if (i < 0) return null;
    const key = buf.toString('utf8', ks + 1, i - 1);
    if (keys.has(key)) return null; // JSON.parse keeps the last one: not worth telling apart
    keys.add(key);
    i = skipWs(buf, i);
    if (buf[i] !== 0x3a) return null;
    i = skipWs(buf, i + 1);
    const vs = i;
    if (key === 'readings') {
      if (buf[vs] !== OPEN) return null;
      sawNewline = false;
      cols = readingsColumns(buf, vs, limits.maxReadings, firstSeq > 0 && lastSeq >= firstSeq ? lastSeq - firstSeq + 1 : 0);
      if (!cols) return null;
      i = end;
      json = sawNewline ? null : buf.subarray(vs, i);
    } else {
      i = skipValue(buf, vs);
      if (i <= vs) return null;
      // A hint only (the columns' first size): validation judges these members.
      if (key === 'firstSeq' && uintAt(buf, vs) === i) firstSeq = out;
      else if (key === 'lastSeq' && uintAt(buf, vs) === i) lastSeq = out;
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
