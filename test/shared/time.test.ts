import fc from 'fast-check';
import { BraidError } from '../../shared/errors.js';
import {
  DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS, bucketCeil, bucketStart, iso, minuteOf, parseDuration, parseTimestamp,
} from '../../shared/time.js';

const UNITS: Array<[string, number]> = [['ms', 1], ['s', SECOND_MS], ['m', MINUTE_MS], ['h', HOUR_MS], ['d', DAY_MS], ['w', 7 * DAY_MS]];
const STEPS = [1, 7, 1000, MINUTE_MS, 5 * MINUTE_MS, 15 * MINUTE_MS, HOUR_MS, DAY_MS, 7 * DAY_MS];

describe('parseDuration', () => {
  it.each([
    ['250ms', 250], ['30s', 30_000], ['1m', 60_000], ['5m', 300_000], ['15m', 900_000],
    ['1h', 3_600_000], ['24h', 86_400_000], ['1d', 86_400_000], ['1w', 604_800_000], ['007m', 420_000],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it('ignores surrounding whitespace', () => {
    expect(parseDuration(' 5m\n')).toBe(300_000);
  });

  it('is n times the unit for any n and unit', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 1_000_000 }), fc.constantFrom(...UNITS), (n, [unit, ms]) => {
      expect(parseDuration(`${n}${unit}`)).toBe(n * ms);
    }));
  });

  it.each(['', ' ', 'm', '0s', '0ms', '-1m', '+1m', '1.5m', '1 m', '1M', '1H', '1y', '1e3s', '1min', '5', 'five minutes', '9007199254740993ms', '9007199254740991w'])(
    'rejects %j with BRAID_ERR_BAD_REQUEST',
    (text) => {
      expect(() => parseDuration(text)).toThrow(BraidError);
      try {
        parseDuration(text, 'step');
      } catch (err) {
        expect(err).toMatchObject({ code: 'BRAID_ERR_BAD_REQUEST', statusCode: 400, name: 'BadRequestError' });
        expect((err as Error).message).toMatch(/^step: /);
      }
      expect.assertions(3);
    },
  );

  it('returns a safe integer or throws, never an imprecise step', () => {
    fc.assert(fc.property(fc.bigInt({ min: 1n, max: 10n ** 20n }), fc.constantFrom(...UNITS), (n, [unit]) => {
      let ms: number | undefined;
      try { ms = parseDuration(`${n}${unit}`); } catch (err) { expect(err).toMatchObject({ code: 'BRAID_ERR_BAD_REQUEST' }); return; }
      expect(Number.isSafeInteger(ms)).toBe(true);
    }));
  });
});

describe('bucketStart', () => {
  it.each([
    [0, MINUTE_MS, 0],
    [59_999, MINUTE_MS, 0],
    [60_000, MINUTE_MS, 60_000],
    [1_732_406_461_234, MINUTE_MS, 1_732_406_460_000],
    [1_732_406_461_234, DAY_MS, 1_732_406_400_000],
    [-1, MINUTE_MS, -60_000],
    [-60_000, MINUTE_MS, -60_000],
    [-60_001, MINUTE_MS, -120_000],
    [-1, DAY_MS, -DAY_MS],
  ])('bucketStart(%d, %d) = %d', (ts, step, start) => {
    expect(bucketStart(ts, step)).toBe(start);
  });

  it('is the multiple of step at or below ts, for negative ts too', () => {
    fc.assert(fc.property(fc.integer({ min: -4e12, max: 4e12 }), fc.constantFrom(...STEPS), (ts, step) => {
      const b = bucketStart(ts, step);
      expect(Number.isSafeInteger(b)).toBe(true);
      expect(b % step === 0).toBe(true);
      expect(b).toBeLessThanOrEqual(ts);
      expect(ts).toBeLessThan(b + step);
    }));
  });

  it('nests: a minute bucket lies inside its hour and day buckets', () => {
    fc.assert(fc.property(fc.integer({ min: -4e12, max: 4e12 }), (ts) => {
      expect(bucketStart(minuteOf(ts), HOUR_MS)).toBe(bucketStart(ts, HOUR_MS));
      expect(bucketStart(bucketStart(ts, HOUR_MS), DAY_MS)).toBe(bucketStart(ts, DAY_MS));
    }));
  });
});

describe('bucketCeil', () => {
  it.each([
    [0, MINUTE_MS, 0],
    [1, MINUTE_MS, 60_000],
    [60_000, MINUTE_MS, 60_000],
    [60_001, MINUTE_MS, 120_000],
    [-1, MINUTE_MS, 0],
    [-59_999, MINUTE_MS, 0],
    [-60_000, MINUTE_MS, -60_000],
    [-60_001, MINUTE_MS, -60_000],
  ])('bucketCeil(%d, %d) = %d', (ts, step, ceil) => {
    expect(bucketCeil(ts, step)).toBe(ceil);
  });

  it('is the multiple of step at or above ts, unchanged on a boundary', () => {
    fc.assert(fc.property(fc.integer({ min: -4e12, max: 4e12 }), fc.constantFrom(...STEPS), (ts, step) => {
      const c = bucketCeil(ts, step);
      expect(c % step === 0).toBe(true);
      expect(c).toBeGreaterThanOrEqual(ts);
      expect(c - step).toBeLessThan(ts);
      const b = bucketStart(ts, step);
      expect(c).toBe(b === ts ? b : b + step);
    }));
  });
});

describe('minuteOf', () => {
  it('is the 1-minute bucket', () => {
    expect(minuteOf(1_732_406_461_234)).toBe(1_732_406_460_000);
    expect(minuteOf(-1)).toBe(-60_000);
    fc.assert(fc.property(fc.integer({ min: -4e12, max: 4e12 }), (ts) => {
      expect(minuteOf(ts)).toBe(bucketStart(ts, MINUTE_MS));
    }));
  });
});

describe('parseTimestamp', () => {
  const T = 1_732_406_400_000; // 2024-11-24T00:00:00.000Z

  it.each<[unknown, number]>([
    [T, T],
    [T + 0.4, T],
    [T + 0.5, T + 1],
    [0, 0],
    [-5000, -5000],
  ])('takes the number %p as epoch ms', (input, ts) => {
    expect(parseTimestamp(input)).toBe(ts);
  });

  it.each<[string, number]>([
    ['1732406400000', T],
    [' 1732406400000 ', T],
    ['-5000', -5000],
    ['1732406400000.6', T + 1],
  ])('takes the digit string %j as epoch ms', (input, ts) => {
    expect(parseTimestamp(input)).toBe(ts);
  });

  it.each<[string, number]>([
    ['2024-11-24T00:00:00Z', T],
    ['2024-11-24T00:00:00.000Z', T],
    ['2024-11-24T00:00:00.123Z', T + 123],
    ['2024-11-24T00:00:00.1Z', T + 100],
    ['2024-11-24T00:00Z', T],
    ['2024-11-24 00:00:00Z', T],
    ['2024-11-24t00:00:00z', T],
    ['2024-11-24T01:00:00+01:00', T],
    ['2024-11-24T01:00:00+0100', T],
    ['2024-11-23T18:30:00-05:30', T],
    ['2024-11-24T00:00:00+00:00', T],
    ['2024-11-24', T],
    ['2024-02-29', Date.UTC(2024, 1, 29)],
    ['2000-02-29T12:00:00Z', Date.UTC(2000, 1, 29, 12)],
    ['1970-01-01T00:00:00Z', 0],
  ])('takes the ISO 8601 %j', (input, ts) => {
    expect(parseTimestamp(input)).toBe(ts);
  });

  it.each<[string, unknown]>([
    ['a zone-less date-time', '2024-11-24T00:00:00'],
    ['a zone-less date-time without seconds', '2024-11-24T00:00'],
    ['a zone-less date-time with ms', '2024-11-24T00:00:00.000'],
    ['garbage', 'garbage'],
    ['an empty string', ''],
    ['a blank string', '   '],
    ['a human date', 'Nov 24 2024'],
    ['a day-first date', '24/11/2024'],
    ['an RFC 2822 date', 'Sun, 24 Nov 2024 00:00:00 GMT'],
    ['scientific notation', '1.7e12'],
    ['a month 13', '2024-13-01'],
    ['a day the month lacks (Feb 30)', '2024-02-30'],
    ['a day the month lacks (Apr 31)', '2024-04-31T00:00:00Z'],
    ['Feb 29 of a common year', '2023-02-29'],
    ['Feb 29 of a century year', '1900-02-29'],
    ['day 00', '2024-11-00'],
    ['hour 25', '2024-11-24T25:00:00Z'],
    ['minute 60', '2024-11-24T10:60:00Z'],
    ['an hour-only offset', '2024-11-24T00:00:00+01'],
    ['NaN', NaN],
    ['Infinity', Infinity],
    ['null', null],
    ['undefined', undefined],
    ['a boolean', true],
    ['an object', { ts: T }],
    ['an array', [T]],
  ])('refuses %s', (_what, input) => {
    expect(parseTimestamp(input)).toBeUndefined();
  });

  it('keeps to the range a Date can hold (±8.64e15 ms), so iso() of the result never throws', () => {
    expect(parseTimestamp(8.64e15)).toBe(8.64e15);
    expect(parseTimestamp(-8.64e15)).toBe(-8.64e15);
    expect(parseTimestamp('8640000000000000')).toBe(8.64e15);
    expect(parseTimestamp(8.64e15 + 1)).toBeUndefined();
    expect(parseTimestamp(1e20)).toBeUndefined();
    expect(parseTimestamp('99999999999999999999')).toBeUndefined();
    expect(parseTimestamp('-8640000000000001')).toBeUndefined();
    fc.assert(fc.property(fc.oneof(fc.double(), fc.double().map(String), fc.bigInt().map(String)), (input) => {
      const t = parseTimestamp(input);
      if (t !== undefined) expect(() => iso(t)).not.toThrow();
    }));
  });

  it('never answers -0', () => {
    expect(Object.is(parseTimestamp('-0'), 0)).toBe(true);
    expect(Object.is(parseTimestamp(-0.4), 0)).toBe(true);
  });

  it('round-trips any instant through toISOString and iso()', () => {
    fc.assert(fc.property(fc.integer({ min: Date.UTC(1970, 0, 1), max: Date.UTC(2200, 0, 1) }), (t) => {
      expect(parseTimestamp(new Date(t).toISOString())).toBe(t);
      expect(parseTimestamp(iso(t))).toBe(t);
      expect(parseTimestamp(String(t))).toBe(t);
    }));
  });

  it('applies offsets: local time minus the offset is UTC', () => {
    const pad = (n: number) => String(n).padStart(2, '0');
    fc.assert(fc.property(
      fc.integer({ min: Date.UTC(2000, 0, 2), max: Date.UTC(2100, 0, 1) }).map((t) => t - (t % 1000)),
      fc.integer({ min: -14 * 60, max: 14 * 60 }),
      (t, offsetMin) => {
        const local = new Date(t + offsetMin * MINUTE_MS).toISOString().slice(0, 19);
        const sign = offsetMin < 0 ? '-' : '+';
        const abs = Math.abs(offsetMin);
        expect(parseTimestamp(`${local}${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`)).toBe(t);
      },
    ));
  });

  it('accepts exactly the calendar days that exist', () => {
    fc.assert(fc.property(fc.integer({ min: 1970, max: 2400 }), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 31 }), (y, m, d) => {
      const text = `${y}-${String(m).padStart(2, '0')}-${String(d).padStart(2, '0')}`;
      const real = new Date(Date.UTC(y, m - 1, d));
      const exists = real.getUTCMonth() === m - 1 && real.getUTCDate() === d;
      expect(parseTimestamp(text)).toBe(exists ? real.getTime() : undefined);
    }));
  });
});

describe('iso', () => {
  it('formats UTC with milliseconds', () => {
    expect(iso(0)).toBe('1970-01-01T00:00:00.000Z');
    expect(iso(1_732_406_400_123)).toBe('2024-11-24T00:00:00.123Z');
  });
});
