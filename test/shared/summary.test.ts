/**
 * The summary algebra (DESIGN.md "The algebra"): merge is associative and commutative with EMPTY as
 * identity, and any way of splitting and merging a set of readings gives the summary a brute-force
 * pass over the whole set gives.
 */
import fc from 'fast-check';
import {
  AGGS, EMPTY, add, avg, derive, merge, mergeAll, of, stddev, toWindowStats, type Agg, type Summary,
} from '../../shared/summary.js';

interface Reading { value: number; ts: number; device: string }

const T0 = 1_732_406_400_000;

// A small ts range and few devices, so ties on ts (broken by device) are common. A reading's
// identity is (device, ts) for one metric: the algebra sees deduplicated readings only.
const readingArb: fc.Arbitrary<Reading> = fc.record({
  value: fc.oneof(
    // Magnitudes below 1e-100 become 0: their squares are subnormal, where no float computation
    // (the brute-force reference's included) keeps 1e-9 relative precision.
    fc.double({ min: -1e6, max: 1e6, noNaN: true }).map((v) => (Math.abs(v) < 1e-100 ? 0 : v)),
    fc.integer({ min: -5, max: 5 }), // repeated values: ties on min and max
  ),
  ts: fc.integer({ min: T0, max: T0 + 20 }),
  device: fc.constantFrom('', 'a', 'b', 'dev-1', 'dev-10', 'dev-2'),
});
const readingsArb = (minLength = 0, maxLength = 60) =>
  fc.uniqueArray(readingArb, { minLength, maxLength, selector: (r) => `${r.ts}|${r.device}` });

const summarize = (rs: readonly Reading[]): Summary => mergeAll(rs.map((r) => of(r.value, r.ts, r.device)));

/** Split `rs` into three consecutive parts at two generated cut points. */
const threeParts = readingsArb().chain((rs) =>
  fc.tuple(fc.nat(rs.length), fc.nat(rs.length)).map(([i, j]) => {
    const [lo, hi] = i <= j ? [i, j] : [j, i];
    return [rs.slice(0, lo), rs.slice(lo, hi), rs.slice(hi)] as const;
  }));

/** -0 and 0 are the same reading value; NaN stays NaN (EMPTY's first/last). */
const z = (x: number) => x + 0;

/** count, min, max and first/last (value, ts, device) must match exactly. */
function expectExactFields(actual: Summary, expected: Summary): void {
  expect(actual.count).toBe(expected.count);
  expect(z(actual.min)).toBe(z(expected.min));
  expect(z(actual.max)).toBe(z(expected.max));
  expect(z(actual.first)).toBe(z(expected.first));
  expect(actual.firstTs).toBe(expected.firstTs);
  expect(actual.firstDevice).toBe(expected.firstDevice);
  expect(z(actual.last)).toBe(z(expected.last));
  expect(actual.lastTs).toBe(expected.lastTs);
  expect(actual.lastDevice).toBe(expected.lastDevice);
}

/** Within 1e-9 relative; `scale` sets an absolute floor where the true value cancels to near 0. */
function expectClose(actual: number, expected: number, scale: number): void {
  const tol = 1e-9 * Math.max(Math.abs(actual), Math.abs(expected)) + 1e-12 * scale;
  if (!(Math.abs(actual - expected) <= tol)) {
    throw new Error(`expected ${actual} to be within ${tol} of ${expected}`);
  }
}

function expectSameSummary(actual: Summary, expected: Summary, rs: readonly Reading[]): void {
  expectExactFields(actual, expected);
  expectClose(actual.sum, expected.sum, rs.reduce((a, r) => a + Math.abs(r.value), 0));
  expectClose(actual.m2, expected.m2, rs.reduce((a, r) => a + r.value * r.value, 0));
}

/** The reference: two passes over the whole set, first and last by (ts, device). */
function bruteForce(rs: readonly Reading[]) {
  const n = rs.length;
  if (n === 0) return null;
  const mean = rs.reduce((a, r) => a + r.value, 0) / n;
  const m2 = rs.reduce((a, r) => a + (r.value - mean) ** 2, 0);
  const byTime = [...rs].sort((a, b) => a.ts - b.ts || (a.device < b.device ? -1 : a.device > b.device ? 1 : 0));
  const first = byTime[0];
  const last = byTime[n - 1];
  return {
    count: n,
    sum: rs.reduce((a, r) => a + r.value, 0),
    mean,
    m2,
    stddev: Math.sqrt(m2 / n),
    min: rs.reduce((a, r) => Math.min(a, r.value), Infinity),
    max: rs.reduce((a, r) => Math.max(a, r.value), -Infinity),
    first,
    last,
  };
}

describe('of', () => {
  it('summarizes one reading', () => {
    expect(of(21.5, T0, 'dev-1')).toEqual({
      count: 1, sum: 21.5, min: 21.5, max: 21.5, m2: 0,
      first: 21.5, firstTs: T0, firstDevice: 'dev-1', last: 21.5, lastTs: T0, lastDevice: 'dev-1',
    });
    expect(of(1, T0).firstDevice).toBe('');
  });
});

describe('merge', () => {
  it('is commutative (every field exactly, sum and m2 included)', () => {
    fc.assert(fc.property(threeParts, ([a, b]) => {
      const sa = summarize(a);
      const sb = summarize(b);
      const ab = merge(sa, sb);
      const ba = merge(sb, sa);
      expectExactFields(ab, ba);
      expect(ab.sum).toBe(ba.sum);
      expect(ab.m2).toBe(ba.m2);
    }), { numRuns: 300 });
  });

  it('is associative (exact fields exactly, sum and m2 within 1e-9)', () => {
    fc.assert(fc.property(threeParts, ([a, b, c]) => {
      const [sa, sb, sc] = [summarize(a), summarize(b), summarize(c)];
      expectSameSummary(merge(merge(sa, sb), sc), merge(sa, merge(sb, sc)), [...a, ...b, ...c]);
    }), { numRuns: 300 });
  });

  it('has EMPTY as identity on both sides', () => {
    fc.assert(fc.property(readingsArb(), (rs) => {
      const s = summarize(rs);
      expect(merge(s, EMPTY)).toEqual(s);
      expect(merge(EMPTY, s)).toEqual(s);
    }));
    expect(merge(EMPTY, EMPTY)).toEqual({ ...EMPTY });
  });

  it('is pure: inputs are left as they were, EMPTY stays frozen and empty', () => {
    fc.assert(fc.property(threeParts, ([a, b]) => {
      const sa = summarize(a);
      const sb = summarize(b);
      const [ca, cb] = [structuredClone(sa), structuredClone(sb)];
      const out = merge(sa, sb);
      expect(sa).toEqual(ca);
      expect(sb).toEqual(cb);
      expect(out).not.toBe(sa);
      expect(out).not.toBe(sb);
    }));
    const out = mergeAll([]);
    out.count = 99;
    expect(EMPTY.count).toBe(0);
    expect(Object.isFrozen(EMPTY)).toBe(true);
  });

  it('breaks a tie on ts by device id, whatever the merge order', () => {
    const x = of(1, T0, 'dev-b');
    const y = of(2, T0, 'dev-a');
    const w = of(3, T0 + 1, 'dev-a');
    for (const s of [merge(x, y), merge(y, x)]) {
      expect([s.first, s.firstDevice, s.last, s.lastDevice]).toEqual([2, 'dev-a', 1, 'dev-b']);
    }
    for (const s of [mergeAll([x, y, w]), mergeAll([w, y, x]), mergeAll([y, w, x])]) {
      expect([s.first, s.firstTs, s.firstDevice]).toEqual([2, T0, 'dev-a']);
      expect([s.last, s.lastTs, s.lastDevice]).toEqual([3, T0 + 1, 'dev-a']);
    }
  });

  it('keeps the Chan m2: two readings 1 and 3 have m2 2', () => {
    const s = merge(of(1, T0), of(3, T0 + 1));
    expect(s).toMatchObject({ count: 2, sum: 4, min: 1, max: 3, m2: 2 });
    expect(stddev(s)).toBe(1);
  });
});

describe('add', () => {
  it('is merge with of()', () => {
    fc.assert(fc.property(readingsArb(), readingArb, (rs, r) => {
      const s = summarize(rs);
      expect(add(s, r.value, r.ts, r.device)).toEqual(merge(s, of(r.value, r.ts, r.device)));
    }));
  });
});

describe('mergeAll', () => {
  it('is EMPTY for no summaries', () => {
    expect(mergeAll([])).toEqual({ ...EMPTY });
  });

  it('over any partition, in any order and any merge tree, equals a brute-force pass', () => {
    const arb = readingsArb(0, 80).chain((rs) => fc.tuple(
      fc.constant(rs),
      fc.shuffledSubarray(rs, { minLength: rs.length, maxLength: rs.length }),
      fc.array(fc.nat(7), { minLength: rs.length, maxLength: rs.length }), // group of each reading
      fc.array(fc.nat(), { maxLength: 20 }), // which adjacent pair of groups to merge next
    ));
    fc.assert(fc.property(arb, ([rs, shuffled, groupOf, picks]) => {
      const groups: Reading[][] = Array.from({ length: 8 }, () => []);
      shuffled.forEach((r, i) => groups[groupOf[i]].push(r));
      let parts = groups.map(summarize);
      for (const p of picks) {
        if (parts.length < 2) break;
        const i = p % (parts.length - 1);
        parts = [...parts.slice(0, i), merge(parts[i], parts[i + 1]), ...parts.slice(i + 2)];
      }
      const s = mergeAll(parts);
      const ref = bruteForce(rs);
      if (ref === null) {
        expect(s).toEqual({ ...EMPTY });
        return;
      }
      const absSum = rs.reduce((a, r) => a + Math.abs(r.value), 0);
      const sumSq = rs.reduce((a, r) => a + r.value * r.value, 0);
      expect(s.count).toBe(ref.count);
      expect(z(s.min)).toBe(z(ref.min));
      expect(z(s.max)).toBe(z(ref.max));
      expect([z(s.first), s.firstTs, s.firstDevice]).toEqual([z(ref.first.value), ref.first.ts, ref.first.device]);
      expect([z(s.last), s.lastTs, s.lastDevice]).toEqual([z(ref.last.value), ref.last.ts, ref.last.device]);
      expectClose(s.sum, ref.sum, absSum);
      expectClose(avg(s)!, ref.mean, absSum / ref.count);
      expectClose(s.m2, ref.m2, sumSq);
      expectClose(stddev(s)!, ref.stddev, Math.sqrt(sumSq / ref.count));
    }), { numRuns: 300 });
  });

  it('keeps stddev accurate on a large offset with small noise (where sum of squares cancels)', () => {
    const OFFSET = 1e9;
    const arb = fc.tuple(
      fc.array(fc.double({ min: -1, max: 1, noNaN: true }), { minLength: 10, maxLength: 400 }),
      fc.integer({ min: 1, max: 16 }),
    );
    fc.assert(fc.property(arb, ([noise, parts]) => {
      const values = noise.map((d) => OFFSET + d);
      // The reference works on the deviations from the offset, exact by Sterbenz's lemma.
      const dev = values.map((v) => v - OFFSET);
      const mean = dev.reduce((a, b) => a + b, 0) / dev.length;
      const ref = Math.sqrt(dev.reduce((a, b) => a + (b - mean) ** 2, 0) / dev.length);
      fc.pre(ref > 0.1);
      const chunks = Array.from({ length: parts }, (_, k) => values.filter((_, i) => i % parts === k));
      const s = mergeAll(chunks.map((c) => mergeAll(c.map((v, i) => of(v, T0 + i)))));
      // `sum` rounds at ulp(n * 1e9), which bounds how close the merged means (and so m2) can get.
      expect(Math.abs(stddev(s)! - ref) / ref).toBeLessThan(1e-6);
    }), { numRuns: 200 });
  });

  it('beats sum-of-squares by orders of magnitude on that data', () => {
    // A fixed case: 1e9 + i/1000 for i in [-500, 500): the population stddev is known in closed form.
    const values = Array.from({ length: 1000 }, (_, i) => 1e9 + (i - 500) / 1000);
    const s = mergeAll(values.map((v, i) => of(v, T0 + i)));
    const dev = values.map((v) => v - 1e9);
    const m = dev.reduce((a, b) => a + b, 0) / dev.length;
    const ref = Math.sqrt(dev.reduce((a, b) => a + (b - m) ** 2, 0) / dev.length);
    expect(ref).toBeCloseTo(Math.sqrt((1000 ** 2 - 1) / 12) / 1000, 6);
    const naive = Math.sqrt(Math.max(0, values.reduce((a, v) => a + v * v, 0) / 1000 - (s.sum / 1000) ** 2));
    expect(Math.abs(stddev(s)! - ref) / ref).toBeLessThan(1e-6);
    expect(Math.abs(naive - ref) / ref).toBeGreaterThan(1e-2);
  });
});

describe('derive', () => {
  it('lists the aggregates of the query contract', () => {
    expect([...AGGS].sort()).toEqual(['avg', 'count', 'first', 'last', 'max', 'min', 'stddev', 'sum']);
  });

  it.each(AGGS)('%s of EMPTY is %s', (agg) => {
    expect(derive(EMPTY, agg)).toBe(agg === 'count' ? 0 : null);
  });

  it('derives every aggregate as a brute-force pass would', () => {
    fc.assert(fc.property(readingsArb(1), (rs) => {
      const s = summarize(rs);
      const ref = bruteForce(rs)!;
      const absSum = rs.reduce((a, r) => a + Math.abs(r.value), 0);
      const sumSq = rs.reduce((a, r) => a + r.value * r.value, 0);
      const want: Record<Agg, number> = {
        avg: ref.mean, min: ref.min, max: ref.max, sum: ref.sum, count: ref.count,
        first: ref.first.value, last: ref.last.value, stddev: ref.stddev,
      };
      for (const agg of AGGS) {
        const got = derive(s, agg);
        expect(got).not.toBeNull();
        if (agg === 'avg') expectClose(got!, want.avg, absSum / ref.count);
        else if (agg === 'sum') expectClose(got!, want.sum, absSum);
        else if (agg === 'stddev') expectClose(got!, want.stddev, Math.sqrt(sumSq / ref.count));
        else expect(z(got!)).toBe(z(want[agg]));
      }
      expect(derive(s, 'avg')).toBe(avg(s));
      expect(derive(s, 'stddev')).toBe(stddev(s));
    }));
  });

  it('stddev is the population one and never NaN', () => {
    const s = mergeAll([2, 4, 4, 4, 5, 5, 7, 9].map((v, i) => of(v, T0 + i)));
    expect(derive(s, 'stddev')).toBe(2);
    expect(derive(of(5, T0), 'stddev')).toBe(0);
    // A slightly negative m2 (rounding) reads as 0, not NaN.
    expect(stddev({ ...of(5, T0), count: 2, m2: -1e-18 })).toBe(0);
    expect(avg(EMPTY)).toBeNull();
    expect(stddev(EMPTY)).toBeNull();
  });
});

describe('toWindowStats', () => {
  it('is all null with count 0 for EMPTY', () => {
    expect(toWindowStats(EMPTY)).toEqual({
      count: 0, avg: null, min: null, max: null, stddev: null, first: null, last: null, lastTs: null,
    });
  });

  it('carries exactly the fields of the windows contract, derived from the summary', () => {
    fc.assert(fc.property(readingsArb(1), (rs) => {
      const s = summarize(rs);
      const w = toWindowStats(s);
      expect(Object.keys(w).sort()).toEqual(['avg', 'count', 'first', 'last', 'lastTs', 'max', 'min', 'stddev']);
      expect(w).toEqual({
        count: derive(s, 'count'), avg: derive(s, 'avg'), min: derive(s, 'min'), max: derive(s, 'max'),
        stddev: derive(s, 'stddev'), first: derive(s, 'first'), last: derive(s, 'last'), lastTs: s.lastTs,
      });
      expect(w.lastTs).toBe(bruteForce(rs)!.last.ts);
    }));
  });

  it('survives JSON (no NaN or Infinity leaks into an answer)', () => {
    const w = toWindowStats(mergeAll([of(1, T0, 'a'), of(3, T0 + 5, 'b')]));
    expect(JSON.parse(JSON.stringify(w))).toEqual({ count: 2, avg: 2, min: 1, max: 3, stddev: 1, first: 1, last: 3, lastTs: T0 + 5 });
    expect(JSON.stringify(toWindowStats(EMPTY))).not.toMatch(/NaN|Infinity/);
  });
});
