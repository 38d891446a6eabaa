/**
 * A bucket's answer is batch(b) ⊕ speed(b) [DESIGN "vector watermark"]: the view rows inside the
 * bucket merged, the speed partials inside it merged, then the two merged, all with
 * shared/summary.ts. Pure.
 */
import { derive, EMPTY, fromColumns, merge, type Agg, type Summary } from '../../shared/summary.js';
import { bucketStart, iso } from '../../shared/time.js';
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
    // A bucket of one row is that row (rows are never mutated: merge returns a new summary).
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
    return { t: iso(b.start), value: derive(total, agg), count: total.count, batch: b.batch.count, speed: b.speed.count, provisional: b.provisional };
  });
}

/** A number as JSON.stringify writes it (null for NaN and ±Infinity). */
const jsonNumber = (n: number | null): string => (n !== null && Number.isFinite(n) ? `${n}` : 'null');

/**
 * The points of the answer as JSON text, written from the merged buckets with no Point object per
 * bucket: the same text as JSON.stringify(toPoints(buckets, agg)) (test/cloud/query-serialize.test.ts).
 */
export function pointsJson(buckets: readonly MergedBucket[], agg: Agg): string {
  let out = '[';
  for (let i = 0; i < buckets.length; i++) {
    const b = buckets[i];
    const total = totalOf(b);
    out += `${i === 0 ? '' : ','}{"t":"${iso(b.start)}","value":${jsonNumber(derive(total, agg))},"count":${jsonNumber(total.count)},"batch":${jsonNumber(b.batch.count)},"speed":${jsonNumber(b.speed.count)},"provisional":${b.provisional}}`;
  }
  return `${out}]`;
}

/** `t,value,count,batch,speed,provisional` with a header line. */
export function toCsv(points: readonly Point[]): string {
  let out = 't,value,count,batch,speed,provisional\n';
  for (const p of points) out += `${p.t},${p.value ?? ''},${p.count},${p.batch},${p.speed},${p.provisional}\n`;
  return out;
}

/** The same CSV as toCsv(toPoints(buckets, agg)), without the points. */
export function bucketsCsv(buckets: readonly MergedBucket[], agg: Agg): string {
  let out = 't,value,count,batch,speed,provisional\n';
  for (const b of buckets) {
    const total = totalOf(b);
    out += `${iso(b.start)},${derive(total, agg) ?? ''},${total.count},${b.batch.count},${b.speed.count},${b.provisional}\n`;
  }
  return out;
}
