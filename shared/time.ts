/** Time and bucket math: pure functions over epoch milliseconds, UTC. */
import { BadRequestError } from './errors.js';

export const SECOND_MS = 1_000;
export const MINUTE_MS = 60_000;
export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;

const UNIT_MS: Record<string, number> = { ms: 1, s: SECOND_MS, m: MINUTE_MS, h: HOUR_MS, d: DAY_MS, w: 7 * DAY_MS };

/**
 * Parse a duration like `1m`, `5m`, `1h`, `1d`, `30s`, `250ms` into milliseconds.
 * Throws BadRequestError naming `what` for anything else.
 */
export function parseDuration(text: string, what = 'duration'): number {
  const m = /^(\d+)(ms|s|m|h|d|w)$/.exec(String(text).trim());
  if (!m) throw new BadRequestError(`${what}: '${text}' is not a duration like 30s, 1m, 5m, 1h, 1d`);
  const n = Number(m[1]);
  const ms = n * UNIT_MS[m[2]];
  // The product too: a step past 2^53 ms is not a whole number of ms any more, and bucket math drifts.
  if (n <= 0 || !Number.isSafeInteger(ms)) throw new BadRequestError(`${what}: '${text}' must be a positive whole number of units`);
  return ms;
}

/** Start of the bucket of width `stepMs` that holds `ts`: buckets start at multiples of step since the Unix epoch. */
export function bucketStart(ts: number, stepMs: number): number {
  // `+ 0` turns -0 into 0, so a bucket key is one value whether it came from -0 or 0.
  return Math.floor(ts / stepMs) * stepMs + 0;
}

/** The 1-minute bucket of `ts`. */
export function minuteOf(ts: number): number {
  return bucketStart(ts, MINUTE_MS);
}

/** Round `ts` up to a multiple of `stepMs` (unchanged when it already is one). */
export function bucketCeil(ts: number, stepMs: number): number {
  // Math.ceil(-1 / step) is -0; `+ 0` makes the result 0, not -0.
  return Math.ceil(ts / stepMs) * stepMs + 0;
}

// ISO 8601 date-time with a zone (Z or ±hh:mm), or a bare date (taken as UTC midnight).
const ISO_RE = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2}))?$/i;

/**
 * Parse a timestamp given as epoch milliseconds (number or digit string) or ISO 8601.
 * Returns undefined when it is neither, or is outside the range a Date can hold; a date-time
 * without a zone is refused rather than guessed.
 */
export function parseTimestamp(input: unknown): number | undefined {
  if (typeof input === 'number') return epochMs(input);
  if (typeof input !== 'string') return undefined;
  const s = input.trim();
  if (/^-?\d+(\.\d+)?$/.test(s)) return epochMs(Number(s));
  if (!ISO_RE.test(s)) return undefined;
  // Date.parse rolls a day the month lacks into the next month (2024-02-30 is March 1): refuse it.
  const year = Number(s.slice(0, 4));
  const month = Number(s.slice(5, 7));
  const day = Number(s.slice(8, 10));
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  const t = Date.parse(s.length === 10 ? `${s}T00:00:00Z` : s);
  return Number.isFinite(t) ? t : undefined;
}

/** ECMAScript's time range (±8.64e15 ms): past it `new Date(t)` is invalid and `iso(t)` throws a RangeError. */
const MAX_TIME_MS = 8.64e15;

function epochMs(n: number): number | undefined {
  if (!Number.isFinite(n) || Math.abs(n) > MAX_TIME_MS) return undefined;
  return Math.round(n) + 0; // + 0: -0 (from "-0" or -0.4) is 0
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/** ISO 8601 UTC with milliseconds. */
export function iso(ts: number): string {
  return new Date(ts).toISOString();
}
