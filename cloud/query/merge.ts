/**
 * A bucket's answer is batch(b) ⊕ speed(b) [DESIGN "vector watermark"]: the view rows inside the
 * bucket merged, the speed partials inside it merged, then the two merged, all with
 * shared/summary.ts. Pure.
 */
import { derive, EMPTY, fromColumns, merge, type Agg, type Summary } from '../../shared/summary.js';
import { bucketStart, DAY_MS, HOUR_MS, iso, MINUTE_MS } from '../../shared/time.js';
import type { SpeedPartial } from './speed.js';
import type { SummaryRow } from './views/types.js';

export interface MergedBucket {
  /** Bucket start, epoch ms. */
  start: number;
  batch: Summary;
  speed: Summary;
  /** The speed part holds a partial of a gateway not heard from within speed.staleAfterMs. */
  provisional: boolean;
}

/** One point of the answer (docs/serving.md). */
export interface Point {
  t: string;
  value: number | null;
  count: number;
  batch: number;
  speed: number;
  provisional: boolean;
}

/** A speed partial as a summary: its readings are one device's, so that device is first's and last's. */
export function partialSummary(p: SpeedPartial): Summary {
  return fromColumns(p, p.device);
}

/**
 * Merge view rows (whose width divides `stepMs`) and speed partials into buckets of `stepMs`,
 * sorted by start; buckets without a reading are left out. `stale(gateway)` says whether a
 * gateway's partials make a bucket provisional.
 */
export function mergeBuckets(stepMs: number, rows: readonly SummaryRow[], partials: readonly SpeedPartial[], stale: (gateway: string) => boolean): MergedBucket[] {
  // Rows come sorted by bucket (ViewReader.read): their buckets are built in order, with no map and
  // no sort; rows out of order take the general path.
  const out: MergedBucket[] = [];
  let last: MergedBucket | null = null;
  for (const r of rows) {
    if (r.count <= 0) continue;
    const start = bucketStart(r.bucket, stepMs);
    if (last !== null && start === last.start) {
      last.batch = merge(last.batch, r);
      continue;
    }
    if (last !== null && start < last.start) return mergeAnyOrder(stepMs, rows, partials, stale);
    // A bucket of one row is that row (rows are never mutated: merge returns a new summary).
    last = { start, batch: r, speed: EMPTY, provisional: false };
    out.push(last);
  }
  if (partials.length === 0) return out;
  const buckets = new Map<number, MergedBucket>();
  for (const b of out) buckets.set(b.start, b);
  let added = false;
  for (const p of partials) {
    if (p.count <= 0) continue;
    const start = bucketStart(p.minute, stepMs);
    let b = buckets.get(start);
    if (!b) {
      b = { start, batch: EMPTY, speed: EMPTY, provisional: false };
      buckets.set(start, b);
      out.push(b);
      added = true;
    }
    b.speed = merge(b.speed, partialSummary(p));
    if (!b.provisional && stale(p.gateway)) b.provisional = true;
  }
  return added ? out.sort((a, b) => a.start - b.start) : out;
}

/** mergeBuckets for rows in any order. */
function mergeAnyOrder(stepMs: number, rows: readonly SummaryRow[], partials: readonly SpeedPartial[], stale: (gateway: string) => boolean): MergedBucket[] {
  const buckets = new Map<number, MergedBucket>();
  const at = (start: number): MergedBucket => {
    let b = buckets.get(start);
    if (!b) {
      b = { start, batch: EMPTY, speed: EMPTY, provisional: false };
      buckets.set(start, b);
    }
    return b;
  };
  for (const r of rows) {
    if (r.count <= 0) continue;
    const b = at(bucketStart(r.bucket, stepMs));
    b.batch = b.batch.count === 0 ? r : merge(b.batch, r);
  }
  for (const p of partials) {
    if (p.count <= 0) continue;
    const b = at(bucketStart(p.minute, stepMs));
    b.speed = merge(b.speed, partialSummary(p));
    if (!b.provisional && stale(p.gateway)) b.provisional = true;
  }
  return [...buckets.values()].sort((a, b) => a.start - b.start);
}

/** batch ⊕ speed of a bucket; no new summary when one side is empty. */
function totalOf(b: MergedBucket): Readonly<Summary> {
  if (b.speed.count === 0) return b.batch;
  if (b.batch.count === 0) return b.speed;
  return merge(b.batch, b.speed);
}

/** The answer's points for `agg`. */
export function toPoints(buckets: readonly MergedBucket[], agg: Agg): Point[] {
  return buckets.map((b) => {
    const total = totalOf(b);
    return { t: isoUtc(b.start), value: derive(total, agg), count: total.count, batch: b.batch.count, speed: b.speed.count, provisional: b.provisional };
  });
}

const pad2 = (n: number) => (n < 10 ? `0${n}` : `${n}`);
const pad3 = (n: number) => (n < 10 ? `00${n}` : n < 100 ? `0${n}` : `${n}`);
/** Years 0000-9999: toISOString's four-digit form (others take iso()). */
const ISO_MAX_MS = 253_402_300_800_000;
let isoDay = NaN;
let isoDayPrefix = '';

/**
 * `YYYY-MM-DDT` of a day since 1970-01-01 (0 <= day < 2,932,897), without a Date: the proleptic
 * Gregorian calendar as toISOString counts it (H. Hinnant's civil_from_days).
 */
function civilDate(day: number): string {
  const z = day + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  const y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  return `${String(y).padStart(4, '0')}-${pad2(m)}-${pad2(d)}T`;
}

/**
 * iso(ms), with the `YYYY-MM-DDT` of the last day asked kept: an answer's buckets run through few
 * days, and a Date and its toISOString per bucket were the largest cost of writing a day at 1m.
 */
export function isoUtc(ms: number): string {
  if (!(ms >= 0 && ms < ISO_MAX_MS) || !Number.isInteger(ms)) return iso(ms);
  const day = Math.floor(ms / DAY_MS);
  if (day !== isoDay) {
    isoDay = day;
    isoDayPrefix = civilDate(day);
  }
  let t = ms - day * DAY_MS;
  const h = Math.floor(t / HOUR_MS);
  t -= h * HOUR_MS;
  const m = Math.floor(t / MINUTE_MS);
  t -= m * MINUTE_MS;
  const sec = Math.floor(t / 1000);
  return `${isoDayPrefix}${pad2(h)}:${pad2(m)}:${pad2(sec)}.${pad3(t - sec * 1000)}Z`;
}

/** A number as JSON.stringify writes it (null for NaN and ±Infinity). */
const jsonNumber = (n: number | null): string => (n !== null && Number.isFinite(n) ? `${n}` : 'null');

/**
 * Buckets in one part of pointsJsonParts and bucketsCsvParts: about 110 bytes each, so a part's
 * text stays far under V8's large-object size (128 KiB). A day at 1m as one string (160 KB) went to
 * the large-object space, which is old generation, twice (the points, then the answer around
 * them) every query: a mark-compact every ~120 ms under a device-query load, its marking steps in
 * the queries' p99 (docs/benchmarks.md, Query, 2026-12-07).
 */
const PART_BUCKETS = 256;

/**
 * The points of the answer as JSON text, in parts (their concatenation is the array), written from
 * the merged buckets with no Point object per bucket: the same text as
 * JSON.stringify(toPoints(buckets, agg)) (test/cloud/query-serialize.test.ts).
 */
export function pointsJsonParts(buckets: readonly MergedBucket[], agg: Agg): string[] {
  const parts: string[] = [];
  let out = '[';
  for (let i = 0; i < buckets.length; i++) {
    const b = buckets[i];
    const total = totalOf(b);
    out += `${i === 0 ? '' : ','}{"t":"${isoUtc(b.start)}","value":${jsonNumber(derive(total, agg))},"count":${jsonNumber(total.count)},"batch":${jsonNumber(b.batch.count)},"speed":${jsonNumber(b.speed.count)},"provisional":${b.provisional}}`;
    if ((i + 1) % PART_BUCKETS === 0) {
      parts.push(out);
      out = '';
    }
  }
  parts.push(`${out}]`);
  return parts;
}

/**
 * An answer's body in one buffer, its memory outside V8's heap: `head` and `tail` as UTF-8 (names
 * may be any text), `ascii` between them, parts of pointsJsonParts or bucketsCsvParts, which hold
 * ASCII only (times, numbers, booleans) and are copied byte for byte (latin1: 0.27 against 0.42 ms
 * for a day at 1m as UTF-8 here).
 */
export function bodyOf(head: string, ascii: readonly string[], tail: string): Buffer {
  let n = Buffer.byteLength(head, 'utf8') + Buffer.byteLength(tail, 'utf8');
  for (const p of ascii) n += p.length;
  const buf = Buffer.allocUnsafeSlow(n);
  let at = buf.write(head, 0, 'utf8');
  for (const p of ascii) at += buf.write(p, at, 'latin1');
  buf.write(tail, at, 'utf8');
  return buf;
}

/** `t,value,count,batch,speed,provisional` with a header line. */
export function toCsv(points: readonly Point[]): string {
  let out = 't,value,count,batch,speed,provisional\n';
  for (const p of points) out += `${p.t},${p.value ?? ''},${p.count},${p.batch},${p.speed},${p.provisional}\n`;
  return out;
}

/** The same CSV as toCsv(toPoints(buckets, agg)), without the points, in parts (PART_BUCKETS). */
export function bucketsCsvParts(buckets: readonly MergedBucket[], agg: Agg): string[] {
  const parts: string[] = [];
  let out = 't,value,count,batch,speed,provisional\n';
  for (let i = 0; i < buckets.length; i++) {
    const b = buckets[i];
    const total = totalOf(b);
    out += `${isoUtc(b.start)},${derive(total, agg) ?? ''},${total.count},${b.batch.count},${b.speed.count},${b.provisional}\n`;
    if ((i + 1) % PART_BUCKETS === 0) {
      parts.push(out);
      out = '';
    }
  }
  parts.push(out);
  return parts;
}
