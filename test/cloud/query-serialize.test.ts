/**
 * The query's answer written as text straight from the merged buckets (cloud/query/route.ts
 * answerJson, merge.ts pointsJsonParts and bucketsCsvParts, joined) is the text the answer's objects gave before:
 * JSON.stringify's and the route schema's serializer's (fast-json-stringify, what fastify ran), and
 * toCsv's (a NaN value, which the schema serializer refused with a 500, is null as JSON.stringify
 * writes it). Random buckets of batch rows and speed partials, every agg, values that are not finite
 * (an overflowing sum), awkward names, degraded answers.
 */
import fastJson from 'fast-json-stringify';
import {
  answerJson, bucketsCsvParts, isoUtc, mergeBuckets, partialSummary, pointsJsonParts, QUERY_ANSWER_SCHEMA, toCsv, toPoints, bodyOf, type MergedAnswer, type MergedBucket, type SpeedPartial, type SummaryRow,
} from '../../cloud/query/index.js';
import { AGGS, derive, EMPTY, merge } from '../../shared/summary.js';
import { bucketStart, iso } from '../../shared/time.js';
import { mulberry32 } from '../support/random.js';

const DAY0 = Date.UTC(2026, 11, 1);

function randomCase(seed: number): { rows: SummaryRow[]; partials: SpeedPartial[] } {
  const r = mulberry32(seed);
  const value = () => {
    const x = r();
    if (x < 0.02) return 1.7e308; // sums of two overflow to Infinity
    if (x < 0.04) return -0;
    if (x < 0.1) return Math.round(r() * 100);
    return (r() - 0.5) * 10 ** Math.floor(r() * 30 - 10);
  };
  const rows: SummaryRow[] = [];
  // 1,000 minutes: the 1m answers run past the parts' size (PART_BUCKETS, 256).
  for (let m = 0; m < 1000; m++) {
    if (r() < 0.4) continue;
    const v = value();
    const count = 1 + Math.floor(r() * 5);
    rows.push({ bucket: DAY0 + m * 60_000, count, sum: v * count, min: v, max: v, m2: r() < 0.1 ? 0 : r() * 10, first: v, firstTs: DAY0 + m * 60_000 + 1, firstDevice: 'd"1\\é', last: v, lastTs: DAY0 + m * 60_000 + 2, lastDevice: 'd"1\\é' });
  }
  const partials: SpeedPartial[] = [];
  for (let m = 0; m < 300; m++) {
    if (r() < 0.7) continue;
    const v = value();
    partials.push({
      gateway: r() < 0.5 ? 'gw-1' : 'gw 2', device: 'd"1\\é', metric: 'temp', minute: DAY0 + m * 60_000, epoch: 1 + Math.floor(r() * 3),
      count: 1, sum: v, min: v, max: v, m2: 0, first: v, first_ts: DAY0 + m * 60_000 + 3, last: v, last_ts: DAY0 + m * 60_000 + 3,
    } as SpeedPartial);
  }
  return { rows, partials };
}

describe('the query answer written from the merged buckets', () => {
  const schemaSerializer = fastJson(QUERY_ANSWER_SCHEMA as unknown as Parameters<typeof fastJson>[0]);

  it.each([1, 2, 3, 4, 5, 6])('equals JSON.stringify, the schema serializer and toCsv of the points (seed %i)', (seed) => {
    const { rows, partials } = randomCase(seed);
    for (const stepMs of [60_000, 300_000, 3_600_000]) {
      const buckets = mergeBuckets(stepMs, rows, partials, (g) => g === 'gw 2');
      expect(buckets.length).toBeGreaterThan(0);
      for (const agg of AGGS) {
        // Every point as the answer held it before: batch ⊕ speed merged whatever the sides.
        const reference = buckets.map((b: MergedBucket) => {
          const total = merge(b.batch, b.speed);
          return { t: iso(b.start), value: derive(total, agg), count: total.count, batch: b.batch.count, speed: b.speed.count, provisional: b.provisional };
        });
        const points = toPoints(buckets, agg);
        expect(points).toEqual(reference);
        expect(pointsJsonParts(buckets, agg).join('')).toBe(JSON.stringify(reference));
        expect(bucketsCsvParts(buckets, agg).join('')).toBe(toCsv(reference));
        for (const degraded of [undefined, 'speed store "unreachable"\n']) {
          const head = {
            metric: 'rel "hum"\\', scope: seed % 2 ? { device: 'd"1\\é' } : { fleet: true as const }, step: '1m', agg,
            manifest: { version: 7, watermark: { 'gw-1': 3, 'gw "2"': 9 } },
          };
          const merged: MergedAnswer = { ...head, buckets, ...(degraded ? { degraded } : {}) };
          const answer = { ...head, points: reference, ...(degraded ? { degraded } : {}) };
          const text = answerJson(merged).toString('utf8');
          expect(text).toBe(JSON.stringify(answer));
          // The schema serializer refused a NaN (an avg of sums overflowed both ways: the answer was a
          // 500); otherwise the text is the one it wrote.
          if (reference.some((p) => Number.isNaN(p.value))) expect(() => schemaSerializer(answer)).toThrow(/NaN/);
          else expect(text).toBe(schemaSerializer(answer));
        }
      }
    }
  });

  it('buckets are the ones a map of every row and partial gives, for rows in bucket order or not', () => {
    // The merge as it was: a map of buckets, rows then partials in their order, sorted at the end.
    const reference = (stepMs: number, rows: readonly SummaryRow[], partials: readonly SpeedPartial[], stale: (g: string) => boolean): MergedBucket[] => {
      const buckets = new Map<number, MergedBucket>();
      const at = (start: number) => buckets.get(start) ?? buckets.set(start, { start, batch: EMPTY, speed: EMPTY, provisional: false }).get(start)!;
      for (const r of rows) if (r.count > 0) { const b = at(bucketStart(r.bucket, stepMs)); b.batch = merge(b.batch, r); }
      for (const p of partials) if (p.count > 0) { const b = at(bucketStart(p.minute, stepMs)); b.speed = merge(b.speed, partialSummary(p)); b.provisional ||= stale(p.gateway); }
      return [...buckets.values()].sort((a, b) => a.start - b.start);
    };
    const plain = (bs: MergedBucket[]) => bs.map((b) => ({ start: b.start, provisional: b.provisional, batch: { ...b.batch, bucket: undefined }, speed: { ...b.speed } }));
    for (const seed of [1, 2, 3]) {
      const { rows, partials } = randomCase(seed);
      const shuffled = [...rows].sort(() => mulberry32(seed)() - 0.5).reverse();
      for (const stepMs of [60_000, 300_000, 86_400_000]) {
        for (const ps of [[], partials]) {
          const want = plain(reference(stepMs, rows, ps, (g) => g === 'gw 2'));
          expect(plain(mergeBuckets(stepMs, rows, ps, (g) => g === 'gw 2'))).toEqual(want);
          expect(plain(mergeBuckets(stepMs, shuffled, ps, (g) => g === 'gw 2')).map((b) => [b.start, b.batch.count, b.speed.count]))
            .toEqual(plain(reference(stepMs, shuffled, ps, (g) => g === 'gw 2')).map((b) => [b.start, b.batch.count, b.speed.count]));
        }
      }
    }
  });

  it('bucket times are toISOString\'s, for any epoch ms', () => {
    const r = mulberry32(9);
    const times = [0, 1, 999, 86_399_999, 86_400_000, -1, -86_400_000, 253_402_300_799_999, 253_402_300_800_000, 8.64e15, -8.64e15, 1.5, DAY0, DAY0 + 59_999];
    for (let i = 0; i < 20_000; i++) times.push(Math.floor((r() - 0.3) * 4e14), DAY0 + Math.floor(r() * 400) * 60_000);
    // Every day boundary around leap years, centuries and the 400-year rule (1900, 2000, 2100).
    for (const y of [1970, 1972, 1999, 2000, 2024, 2100, 2400, 9999]) {
      for (let d = -3; d < 400; d++) times.push(Date.UTC(y, 0, 1) + d * 86_400_000, Date.UTC(y, 1, 28) + d * 86_400_000 - 1);
    }
    for (let d = 0; d < 2_932_897; d += 97) times.push(d * 86_400_000);
    for (const t of times) expect(isoUtc(t)).toBe(iso(t));
  });

  it('a non-finite value is null, as JSON.stringify writes it', () => {
    const rows: SummaryRow[] = [0, 1].map((i) => ({
      bucket: DAY0 + i * 60_000, count: 1, sum: 1.7e308, min: 1.7e308, max: 1.7e308, m2: 0,
      first: 1.7e308, firstTs: DAY0 + i * 60_000, firstDevice: 'd', last: 1.7e308, lastTs: DAY0 + i * 60_000, lastDevice: 'd',
    }));
    const buckets = mergeBuckets(120_000, rows, [], () => false);
    expect(pointsJsonParts(buckets, 'sum').join('')).toBe(`[{"t":"${iso(DAY0)}","value":null,"count":2,"batch":2,"speed":0,"provisional":false}]`);
    expect(pointsJsonParts(buckets, 'max').join('')).toBe(`[{"t":"${iso(DAY0)}","value":1.7e+308,"count":2,"batch":2,"speed":0,"provisional":false}]`);
    expect(pointsJsonParts([], 'avg').join('')).toBe('[]');
  });

  it('answers of every size around the parts\' size are one JSON text and one CSV, each part far under the large-object size', () => {
    for (const n of [255, 256, 257, 512, 513, 1440]) {
      const rows: SummaryRow[] = Array.from({ length: n }, (_, i) => ({
        bucket: DAY0 + i * 60_000, count: 2, sum: i + 0.5, min: i, max: i + 0.5, m2: 0.125,
        first: i, firstTs: DAY0 + i * 60_000, firstDevice: 'd', last: i + 0.5, lastTs: DAY0 + i * 60_000 + 1, lastDevice: 'd',
      }));
      const buckets = mergeBuckets(60_000, rows, [], () => false);
      const reference = toPoints(buckets, 'avg');
      const parts = pointsJsonParts(buckets, 'avg');
      expect(parts.join('')).toBe(JSON.stringify(reference));
      expect(Math.max(...parts.map((p) => p.length))).toBeLessThan(64 * 1024);
      const csv = bucketsCsvParts(buckets, 'avg');
      expect(csv.join('')).toBe(toCsv(reference));
      expect(bodyOf('', csv, '').toString('utf8')).toBe(toCsv(reference));
      expect(bodyOf('é"', parts, 'é').toString('utf8')).toBe(`é"${JSON.stringify(reference)}é`);
      const merged: MergedAnswer = { metric: 'temp', scope: { device: 'd' }, step: '1m', agg: 'avg', manifest: { version: 1, watermark: {} }, buckets };
      expect(JSON.parse(answerJson(merged).toString('utf8')).points).toEqual(reference);
    }
  });
});
