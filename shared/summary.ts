/**
 * The summary algebra (DESIGN.md "The algebra"): one definition used by every layer.
 *
 * A summary of a set of readings of one metric holds count, sum, min, max, m2 (the sum of squared
 * deviations from the mean) and the first and last readings by (ts, deviceId). `merge` is
 * associative and commutative with EMPTY as identity, so a bucket of any width is the merge of
 * its 1-minute buckets, in any order.
 */
export interface Summary {
  count: number;
  sum: number;
  min: number;
  max: number;
  /** Sum of squared deviations from the mean, merged with Chan et al.'s parallel formula. */
  m2: number;
  first: number;
  firstTs: number;
  /** Tie-break for first when two readings of different devices share `firstTs`. */
  firstDevice: string;
  last: number;
  lastTs: number;
  lastDevice: string;
}

export const EMPTY: Readonly<Summary> = Object.freeze({
  count: 0, sum: 0, min: Infinity, max: -Infinity, m2: 0,
  first: NaN, firstTs: Infinity, firstDevice: '', last: NaN, lastTs: -Infinity, lastDevice: '',
});

/**
 * A summary as a table row or a view file holds it: snake-case times, and no device (a row is one
 * device's, or carries first_device/last_device columns of its own).
 */
export interface SummaryColumns {
  count: number;
  sum: number;
  min: number;
  max: number;
  m2: number;
  first: number;
  first_ts: number;
  last: number;
  last_ts: number;
}

/** The summary of a stored row; `firstDevice`/`lastDevice` break ties on ts when merging across devices. */
export function fromColumns(r: SummaryColumns, firstDevice: string, lastDevice = firstDevice): Summary {
  return {
    count: r.count, sum: r.sum, min: r.min, max: r.max, m2: r.m2,
    first: r.first, firstTs: r.first_ts, firstDevice, last: r.last, lastTs: r.last_ts, lastDevice,
  };
}

/** The summary of one reading. */
export function of(value: number, ts: number, deviceId = ''): Summary {
  return {
    count: 1, sum: value, min: value, max: value, m2: 0,
    first: value, firstTs: ts, firstDevice: deviceId, last: value, lastTs: ts, lastDevice: deviceId,
  };
}

/** (ts, deviceId) order, the order that picks first and last. */
function before(tsA: number, devA: string, tsB: number, devB: string): boolean {
  return tsA < tsB || (tsA === tsB && devA < devB);
}

/** Merge two summaries. Pure: returns a new object. */
export function merge(a: Readonly<Summary>, b: Readonly<Summary>): Summary {
  if (b.count === 0) return { ...a };
  if (a.count === 0) return { ...b };
  const count = a.count + b.count;
  const delta = b.sum / b.count - a.sum / a.count;
  // Chan, Golub, LeVeque (1979): M2 = M2a + M2b + delta^2 * na * nb / n
  const m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count) / count;
  const aFirst = before(a.firstTs, a.firstDevice, b.firstTs, b.firstDevice);
  const aLast = before(b.lastTs, b.lastDevice, a.lastTs, a.lastDevice);
  return {
    count,
    sum: a.sum + b.sum,
    min: a.min < b.min ? a.min : b.min,
    max: a.max > b.max ? a.max : b.max,
    m2,
    first: aFirst ? a.first : b.first,
    firstTs: aFirst ? a.firstTs : b.firstTs,
    firstDevice: aFirst ? a.firstDevice : b.firstDevice,
    last: aLast ? a.last : b.last,
    lastTs: aLast ? a.lastTs : b.lastTs,
    lastDevice: aLast ? a.lastDevice : b.lastDevice,
  };
}

/** Merge any number of summaries (EMPTY for none). */
export function mergeAll(items: Iterable<Readonly<Summary>>): Summary {
  let acc: Summary = { ...EMPTY };
  for (const s of items) acc = merge(acc, s);
  return acc;
}

/** A summary with one more reading: merge(s, of(value, ts, deviceId)). */
export function add(s: Summary, value: number, ts: number, deviceId = ''): Summary {
  return merge(s, of(value, ts, deviceId));
}

export type Agg = 'avg' | 'min' | 'max' | 'sum' | 'count' | 'first' | 'last' | 'stddev';
export const AGGS: readonly Agg[] = ['avg', 'min', 'max', 'sum', 'count', 'first', 'last', 'stddev'];

/** Population standard deviation. */
export function stddev(s: Readonly<Summary>): number | null {
  if (s.count === 0) return null;
  return Math.sqrt(Math.max(0, s.m2) / s.count);
}

export function avg(s: Readonly<Summary>): number | null {
  return s.count === 0 ? null : s.sum / s.count;
}

/** The value of an aggregate over a summary; null for an empty one (count is 0). */
export function derive(s: Readonly<Summary>, agg: Agg): number | null {
  if (agg === 'count') return s.count;
  if (s.count === 0) return null;
  switch (agg) {
    case 'avg': return s.sum / s.count;
    case 'min': return s.min;
    case 'max': return s.max;
    case 'sum': return s.sum;
    case 'first': return s.first;
    case 'last': return s.last;
    case 'stddev': return stddev(s);
  }
}

/** The statistics a windows answer shows (DESIGN.md, gateway REST). */
export interface WindowStats {
  count: number;
  avg: number | null;
  min: number | null;
  max: number | null;
  stddev: number | null;
  first: number | null;
  last: number | null;
  lastTs: number | null;
}

export function toWindowStats(s: Readonly<Summary>): WindowStats {
  if (s.count === 0) {
    return { count: 0, avg: null, min: null, max: null, stddev: null, first: null, last: null, lastTs: null };
  }
  return {
    count: s.count, avg: s.sum / s.count, min: s.min, max: s.max, stddev: stddev(s),
    first: s.first, last: s.last, lastTs: s.lastTs,
  };
}
