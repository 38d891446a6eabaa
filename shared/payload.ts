/**
 * Device payload parsing (DESIGN.md, MQTT contract): a flat JSON object of numeric metrics with an
 * optional `ts`, or a SenML JSON array (RFC 8428). Pure: bytes in, readings out, or a
 * PayloadInvalidError whose `reason` names what is wrong.
 *
 * Reasons (stable slugs, used as a metric label): `too_large`, `empty`, `json`, `not_numeric`,
 * `nested`, `non_finite`, `bad_ts`, `bad_metric`, `too_many`, `senml`.
 */
import { isUtf8 } from 'node:buffer';
import { PayloadInvalidError } from './errors.js';
import { POW10, skipWs } from './json-bytes.js';
import { DAY_MS, parseTimestamp } from './time.js';

export interface ParsedReading {
  metric: string;
  value: number;
  /** Event time in epoch ms; undefined when the payload gave none (the gateway stamps its receive time). */
  ts: number | undefined;
}

export interface PayloadLimits {
  /** Largest payload accepted, in bytes. */
  maxPayloadBytes: number;
  /** Most readings one message may carry. */
  maxReadingsPerMessage: number;
}

export const DEFAULT_PAYLOAD_LIMITS: PayloadLimits = {
  maxPayloadBytes: 64 * 1024, // 64 KiB
  maxReadingsPerMessage: 1000,
};

/** Oldest event time accepted: 2000-01-01T00:00:00Z. Older is a device clock that was never set. */
const MIN_TS_MS = Date.UTC(2000, 0, 1);
/** How far ahead of the receiver's clock an event time may be. */
const MAX_FUTURE_SKEW_MS = DAY_MS;

const METRIC_RE = /^[A-Za-z0-9_.:\-]{1,128}$/;

/** RFC 8428 §4.5.3: SenML times below 2^28 s are relative to "now"; at or above, seconds since the epoch. */
const SENML_RELATIVE_LIMIT_S = 2 ** 28;
/** RFC 8428 §4.4: the version this parser understands (the default when `bver` is absent). */
const SENML_VERSION = 10;

/** Parse one telemetry payload. Throws PayloadInvalidError. `nowMs` resolves SenML relative times. */
export function parsePayload(payload: Buffer | string, nowMs: number, limits: PayloadLimits = DEFAULT_PAYLOAD_LIMITS): ParsedReading[] {
  if (typeof payload !== 'string') {
    const fast = parseFlatFast(payload, nowMs, limits);
    if (fast !== null) return fast;
  }
  return parseFull(payload, nowMs, limits);
}

/** parsePayload without the fast path: the reference the fast path is held equal to (test/edge/payload-fast.test.ts). */
export function parseFull(payload: Buffer | string, nowMs: number, limits: PayloadLimits = DEFAULT_PAYLOAD_LIMITS): ParsedReading[] {
  // Size first, on the raw bytes: a huge payload costs nothing but this comparison.
  const bytes = typeof payload === 'string' ? Buffer.byteLength(payload, 'utf8') : payload.length;
  if (bytes > limits.maxPayloadBytes) {
    throw new PayloadInvalidError('too_large', `payload is ${bytes} bytes, over the limit of ${limits.maxPayloadBytes}`);
  }
  let text: string;
  if (typeof payload === 'string') {
    text = payload;
  } else {
    if (!isUtf8(payload)) throw new PayloadInvalidError('json', 'payload is not valid UTF-8');
    text = payload.toString('utf8');
  }
  // RFC 8259 §8.1: a parser MAY ignore a byte order mark; JSON.parse does not.
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  if (text.trim() === '') throw new PayloadInvalidError('empty', 'payload is empty');

  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new PayloadInvalidError('json', `payload is not JSON: ${(err as Error).message}`, { cause: err });
  }

  if (Array.isArray(doc)) return parseSenml(doc, nowMs, limits);
  if (doc !== null && typeof doc === 'object') return parseFlat(doc as Record<string, unknown>, nowMs, limits);
  throw new PayloadInvalidError('json', `payload is ${describe(doc)}, expected a JSON object of metrics or a SenML array`);
}

// ---------------------------------------------------------------------------------------------
// Flat JSON: {"ts": 1732406400000, "temp": 21.5, "hum": 40}

function parseFlat(obj: Record<string, unknown>, nowMs: number, limits: PayloadLimits): ParsedReading[] {
  const keys = Object.keys(obj);
  const metricKeys = keys.filter((k) => k !== 'ts');
  if (metricKeys.length > limits.maxReadingsPerMessage) {
    throw new PayloadInvalidError('too_many', `payload has ${metricKeys.length} metrics, over the limit of ${limits.maxReadingsPerMessage}`);
  }
  let ts: number | undefined;
  if (Object.prototype.hasOwnProperty.call(obj, 'ts')) {
    const raw = obj.ts;
    const parsed = parseTimestamp(raw);
    if (parsed === undefined) {
      throw new PayloadInvalidError('bad_ts', `ts: ${quote(raw)} is not epoch milliseconds or an ISO 8601 date-time with a zone`);
    }
    ts = checkRange(parsed, nowMs, 'ts');
  }
  const out: ParsedReading[] = [];
  for (const key of metricKeys) {
    const where = `metric ${quote(key)}`;
    checkMetricName(key, where);
    out.push({ metric: key, value: checkValue(obj[key], where), ts });
  }
  if (out.length === 0) throw new PayloadInvalidError('empty', 'payload has no metric (only a ts, or nothing)');
  return out;
}

// ---------------------------------------------------------------------------------------------
// The fast path: the usual flat payload read straight from its bytes

/** Most keys the fast path takes (its repeat check is quadratic); more go the full way. */
const FAST_MAX_KEYS = 32;
/** Key names seen, by a hash of their bytes: the same few names arrive in every message. */
const keyCache = new Map<number, string>();
const FAST_KEYS: string[] = [];
const FAST_VALUES: number[] = [];
const KEY_CACHE_MAX = 4096;

/**
 * The common payload, `{"ts":1732406400000,"temp":21.5,"hum":40}`, read from its bytes without a
 * string, JSON.parse or an object per message: ASCII only, keys of metric-name characters (no
 * escapes), values plain decimals of at most 15 digits (no exponent), each key once. It returns
 * exactly what the full parser returns for such a payload, or null for anything else (another
 * shape, a limit or check that fails, an error of any kind), which the full parser then answers:
 * so errors, their reasons and messages are the full parser's own.
 *
 * A number of at most 15 digits is an integer m < 2^53 over 10^k with k <= 15, both exact doubles,
 * and one IEEE division is correctly rounded: the double JSON.parse gives for the same text.
 */
export function parseFlatFast(buf: Buffer, nowMs: number, limits: PayloadLimits): ParsedReading[] | null {
  const end = buf.length;
  if (end > limits.maxPayloadBytes) return null;
  let i = skipWs(buf, 0);
  if (i >= end || buf[i] !== 0x7b /* { */) return null;
  i++;
  // Scratch arrays, reused by every call (the parser is synchronous): no two arrays per message.
  const keys = FAST_KEYS;
  const values = FAST_VALUES;
  keys.length = 0;
  values.length = 0;
  let tsAt = -1;
  for (;;) {
    i = skipWs(buf, i);
    if (i >= end || buf[i] !== 0x22 /* " */) return null;
    const k0 = ++i;
    let h = 0x811c9dc5;
    let allDigits = true;
    for (; i < end; i++) {
      const c = buf[i];
      if (c === 0x22) break;
      if (!isMetricByte(c)) return null;
      if (c < 0x30 || c > 0x39) allDigits = false;
      h = Math.imul(h ^ c, 0x01000193);
    }
    const kLen = i - k0;
    // An array-index key sorts first in a parsed object (the full parser's order); "__proto__" is refused there.
    if (i >= end || kLen === 0 || kLen > 128 || allDigits) return null;
    const key = keyOf(buf, k0, i, h);
    if (key === '__proto__') return null;
    i = skipWs(buf, i + 1);
    if (i >= end || buf[i] !== 0x3a /* : */) return null;
    i = skipWs(buf, i + 1);
    // A JSON number without exponent: -?(0|[1-9][0-9]*)(\.[0-9]+)?
    let neg = false;
    if (buf[i] === 0x2d /* - */) { neg = true; i++; }
    if (i >= end) return null;
    let m = 0;
    let digits = 0;
    let frac = 0;
    let c = buf[i];
    if (c === 0x30) {
      i++;
      digits = 1;
    } else if (c > 0x30 && c <= 0x39) {
      while (i < end && (c = buf[i]) >= 0x30 && c <= 0x39) { m = m * 10 + (c - 0x30); digits++; i++; }
    } else {
      return null;
    }
    if (i < end && buf[i] === 0x2e /* . */) {
      i++;
      const f0 = i;
      while (i < end && (c = buf[i]) >= 0x30 && c <= 0x39) { m = m * 10 + (c - 0x30); digits++; i++; }
      frac = i - f0;
      if (frac === 0) return null;
    }
    if (digits > 15 || (i < end && (buf[i] === 0x65 || buf[i] === 0x45))) return null; // e, E: the full way
    const abs = frac === 0 ? m : m / POW10[frac];
    const value = neg ? -abs : abs;
    for (let j = 0; j < keys.length; j++) if (keys[j] === key) return null;
    if (key === 'ts') tsAt = keys.length;
    keys.push(key);
    values.push(value);
    if (keys.length > FAST_MAX_KEYS) return null;
    i = skipWs(buf, i);
    if (i >= end) return null;
    if (buf[i] === 0x2c /* , */) { i++; continue; }
    if (buf[i] !== 0x7d /* } */) return null;
    i = skipWs(buf, i + 1);
    if (i !== end) return null;
    break;
  }
  const metrics = tsAt >= 0 ? keys.length - 1 : keys.length;
  if (metrics === 0 || metrics > limits.maxReadingsPerMessage) return null;
  let ts: number | undefined;
  if (tsAt >= 0) {
    ts = parseTimestamp(values[tsAt]);
    if (ts === undefined || ts < MIN_TS_MS || ts > nowMs + MAX_FUTURE_SKEW_MS) return null;
  }
  const out: ParsedReading[] = new Array(metrics);
  for (let j = 0, o = 0; j < keys.length; j++) {
    if (j === tsAt) continue;
    out[o++] = { metric: keys[j], value: values[j], ts };
  }
  return out;
}

/** A byte of METRIC_RE's class: A-Z a-z 0-9 _ . : - */
function isMetricByte(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x3a) || c === 0x5f || c === 0x2e || c === 0x2d;
}

/** The key's string, from the cache when its bytes match one seen before. */
function keyOf(buf: Buffer, from: number, to: number, hash: number): string {
  const hit = keyCache.get(hash);
  if (hit !== undefined && hit.length === to - from) {
    let same = true;
    for (let j = 0; j < hit.length; j++) if (hit.charCodeAt(j) !== buf[from + j]) { same = false; break; }
    if (same) return hit;
  }
  const key = buf.toString('latin1', from, to);
  if (keyCache.size >= KEY_CACHE_MAX) keyCache.clear();
  keyCache.set(hash, key);
  return key;
}

// ---------------------------------------------------------------------------------------------
// SenML JSON (RFC 8428): [{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.320067464e9,"n":"voltage","u":"V","v":120.1}, ...]

interface SenmlBase {
  bn: string;
  bt: number;
  bv: number;
  bs: number;
}

function parseSenml(records: unknown[], nowMs: number, limits: PayloadLimits): ParsedReading[] {
  if (records.length === 0) throw new PayloadInvalidError('empty', 'SenML pack has no record');
  // Every accepted record yields exactly one reading (§4.2: each has a value or a sum), so the
  // record count is the reading count.
  if (records.length > limits.maxReadingsPerMessage) {
    throw new PayloadInvalidError('too_many', `SenML pack has ${records.length} records, over the limit of ${limits.maxReadingsPerMessage}`);
  }
  // §4.1: base fields apply to their record and every later one until replaced.
  const base: SenmlBase = { bn: '', bt: 0, bv: 0, bs: 0 };
  const out: ParsedReading[] = [];
  for (let i = 0; i < records.length; i++) {
    const rec = records[i];
    if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) {
      throw new PayloadInvalidError('senml', `record ${i}: is ${describe(rec)}, expected a SenML record object`);
    }
    out.push(resolveRecord(rec as Record<string, unknown>, i, base, nowMs));
  }
  return out;
}

function resolveRecord(rec: Record<string, unknown>, i: number, base: SenmlBase, nowMs: number): ParsedReading {
  for (const key of Object.keys(rec)) {
    // §4.4, §12.3.1: a label ending in '_' must be understood, and this parser knows none.
    if (key.endsWith('_')) {
      throw new PayloadInvalidError('senml', `record ${i}: field ${quote(key)} is a must-understand extension this parser does not know`);
    }
  }
  const has = (k: string) => Object.prototype.hasOwnProperty.call(rec, k);

  if (has('bver')) {
    const bver = rec.bver;
    if (typeof bver !== 'number' || !Number.isInteger(bver) || bver < 1) {
      throw new PayloadInvalidError('senml', `record ${i}: bver ${quote(bver)} is not a positive integer`);
    }
    // §4.4: a receiver MUST NOT use a pack of a version newer than it understands.
    if (bver > SENML_VERSION) {
      throw new PayloadInvalidError('senml', `record ${i}: bver ${bver} is newer than the supported SenML version ${SENML_VERSION}`);
    }
  }
  if (has('bn')) base.bn = stringField(rec, 'bn', i);
  if (has('bt')) base.bt = timeField(rec, 'bt', i);
  if (has('bv')) base.bv = numberField(rec, 'bv', i);
  if (has('bs')) base.bs = numberField(rec, 'bs', i);
  if (has('bu')) stringField(rec, 'bu', i);
  if (has('u')) stringField(rec, 'u', i);
  if (has('ut')) numberField(rec, 'ut', i);
  const n = has('n') ? stringField(rec, 'n', i) : '';
  const t = has('t') ? timeField(rec, 't', i) : 0;

  // §4.5.1: the name is bn + n. Braid keys readings by (device, metric) and the device comes from
  // the MQTT topic, so a bn that ends in a separator (':' '/' '.') is the device prefix, as in
  // "urn:dev:ow:10e2073a01080063:", and is stripped; any other bn is part of the metric name.
  const resolved = base.bn + n;
  if (resolved === '') throw new PayloadInvalidError('senml', `record ${i}: has no name (neither bn nor n)`);
  const metric = base.bn !== '' && /[:/.]$/.test(base.bn) ? n : resolved;
  if (metric === '') {
    throw new PayloadInvalidError('senml', `record ${i}: name is only the base name ${quote(base.bn)}, no metric (n is missing)`);
  }
  const where = `record ${i} (metric ${quote(metric)})`;
  checkMetricName(metric, where);

  // §4.2: exactly one value field, unless a sum is present, in which case none is allowed.
  const valueFields = ['v', 'vs', 'vb', 'vd'].filter(has);
  if (valueFields.length > 1) {
    throw new PayloadInvalidError('senml', `${where}: has several value fields (${valueFields.join(', ')}), expected exactly one`);
  }
  let value: number;
  if (has('vb')) {
    throw new PayloadInvalidError('not_numeric', `${where}: vb is a boolean value, expected a finite number in v`);
  } else if (has('vs') || has('vd')) {
    const f = has('vs') ? 'vs' : 'vd';
    throw new PayloadInvalidError('not_numeric', `${where}: ${f} is a ${f === 'vs' ? 'string' : 'data'} value, expected a finite number in v`);
  } else if (has('v')) {
    value = finiteSum(base.bv, checkValue(rec.v, where), where);
  } else if (has('s')) {
    value = finiteSum(base.bs, checkValue(rec.s, `${where} sum`), where);
  } else {
    throw new PayloadInvalidError('senml', `${where}: has no value (v) and no sum (s)`);
  }

  // §4.5.3: missing bt or t counts as 0; the sum is seconds, relative to now below 2^28.
  const timeS = base.bt + t;
  let ts: number | undefined;
  if (timeS === 0) {
    ts = undefined; // "roughly now": the gateway stamps its receive time
  } else if (timeS < SENML_RELATIVE_LIMIT_S) {
    ts = checkRange(Math.round(nowMs + timeS * 1000), nowMs, `${where} time`);
  } else {
    ts = checkRange(Math.round(timeS * 1000), nowMs, `${where} time`);
  }
  return { metric, value, ts };
}

function stringField(rec: Record<string, unknown>, key: string, i: number): string {
  const v = rec[key];
  if (typeof v !== 'string') throw new PayloadInvalidError('senml', `record ${i}: ${key} is ${describe(v)}, expected a string`);
  return v;
}

function numberField(rec: Record<string, unknown>, key: string, i: number): number {
  const v = rec[key];
  if (typeof v !== 'number') throw new PayloadInvalidError('senml', `record ${i}: ${key} is ${describe(v)}, expected a number`);
  if (!Number.isFinite(v)) throw new PayloadInvalidError('non_finite', `record ${i}: ${key} is not finite (out of range for a double)`);
  return v;
}

function timeField(rec: Record<string, unknown>, key: string, i: number): number {
  const v = rec[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new PayloadInvalidError('bad_ts', `record ${i}: ${key} is ${describe(v)}, expected a finite number of seconds`);
  }
  return v;
}

function finiteSum(baseValue: number, value: number, where: string): number {
  const sum = baseValue + value;
  if (!Number.isFinite(sum)) throw new PayloadInvalidError('non_finite', `${where}: base value plus value is not finite`);
  return sum;
}

// ---------------------------------------------------------------------------------------------
// Shared checks

function checkMetricName(name: string, where: string): void {
  // "__proto__" passes the character rule but turns into prototype pollution in any plain-object map.
  if (!METRIC_RE.test(name) || name === '__proto__') {
    throw new PayloadInvalidError('bad_metric', `${where}: name must be 1 to 128 characters of A-Z a-z 0-9 _ . : -`);
  }
}

function checkValue(value: unknown, where: string): number {
  if (typeof value === 'number') {
    // JSON has no Infinity or NaN, but a literal like 1e400 parses to Infinity.
    if (!Number.isFinite(value)) throw new PayloadInvalidError('non_finite', `${where}: value is out of range for a double, expected a finite number`);
    return value;
  }
  if (value !== null && typeof value === 'object') {
    throw new PayloadInvalidError('nested', `${where}: value is ${describe(value)}, expected a finite number (payloads are flat)`);
  }
  throw new PayloadInvalidError('not_numeric', `${where}: value is ${describe(value)}, expected a finite number`);
}

function checkRange(ts: number, nowMs: number, where: string): number {
  if (ts < MIN_TS_MS) {
    throw new PayloadInvalidError('bad_ts', `${where}: ${ts} is before 2000-01-01 (an unset clock, or seconds where milliseconds were expected?)`);
  }
  if (ts > nowMs + MAX_FUTURE_SKEW_MS) {
    throw new PayloadInvalidError('bad_ts', `${where}: ${ts} is more than 1 day in the future (clock skew)`);
  }
  return ts;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'missing';
  if (Array.isArray(v)) return 'an array';
  switch (typeof v) {
    case 'string': return 'a string';
    case 'boolean': return 'a boolean';
    case 'number': return 'a number';
    case 'object': return 'an object';
    default: return typeof v;
  }
}

/** A value for an error message: JSON, cut short, so a hostile key cannot flood a log line. */
function quote(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
