/**
 * The checks the hand-written body validators (cloud/ingest/validate.ts, cloud/speed/validate.ts)
 * are made of: each returns the value or throws a BadRequestError whose message names the field
 * (`readings[12][0]: seq must be a whole number >= 1, got 0`). `what`, when not '', names the value
 * in the message after the path.
 */
import { BadRequestError, PayloadTooLargeError } from '../../shared/errors.js';

/** Event times must fit a Parquet/Arrow ms timestamp and a 4-digit year: 1970-01-01 .. 9999-12-31. */
export const MAX_TS_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

export const bad = (path: string, msg: string) => new BadRequestError(`${path}: ${msg}`);

/** A value as an error message shows it: short, and never a whole object. */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return v.length > 40 ? `"${v.slice(0, 37)}..."` : JSON.stringify(v);
  return typeof v === 'object' ? 'an object' : String(v);
}

const subject = (what: string) => (what ? `${what} must` : 'must');

export function int(v: unknown, path: string, what: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw bad(path, `${subject(what)} be a whole number${max === Number.MAX_SAFE_INTEGER ? ` >= ${min}` : ` in ${min}..${max}`}, got ${describe(v)}`);
  }
  return v;
}

export function num(v: unknown, path: string, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(path, `${subject(what)} be a finite number, got ${describe(v)}`);
  return v;
}

export function str(v: unknown, path: string, what: string, maxLength: number): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > maxLength) {
    throw bad(path, `${subject(what)} be a string of 1-${maxLength} characters, got ${describe(v)}`);
  }
  return v;
}

/** An array of at most `max` entries; more is 413 when `tooLarge` (the sender should split it), else 400. */
export function array(v: unknown, path: string, max: number, tooLarge = false): unknown[] {
  if (!Array.isArray(v)) throw bad(path, `must be an array, got ${describe(v)}`);
  if (v.length > max) {
    const msg = `${path}: ${v.length} entries, over the limit of ${max}`;
    throw tooLarge ? new PayloadTooLargeError(msg) : new BadRequestError(msg);
  }
  return v;
}

export function object(v: unknown, path: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw bad(path, `must be a JSON object, got ${describe(v)}`);
  return v as Record<string, unknown>;
}
