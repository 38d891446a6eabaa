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
  return noNul(v, path, what);
}

/**
 * [INV-5] PostgreSQL TEXT and JSONB refuse U+0000 (SQLite stores it): one such string in a request
 * would fail the whole group commit it shares with other requests, on every retry. No id, name or
 * health field carries one legitimately, so it is refused here, before anything is stored. So is a
 * lone surrogate (`"\ud800"` in JSON or a query string): UTF-8 cannot hold it, so every store would
 * keep a U+FFFD in its place, a different name from the one sent (and from its own other copies).
 */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const LONE_SURROGATES = new RegExp(LONE_SURROGATE.source, 'g');

export function noNul(v: string, path: string, what: string): string {
  if (v.includes('\u0000')) throw bad(path, `${subject(what)} not contain the NUL character (U+0000), got ${describe(v)}`);
  if (LONE_SURROGATE.test(v)) throw bad(path, `${subject(what)} be well-formed Unicode (a lone surrogate cannot be stored as UTF-8), got ${describe(v.replace(LONE_SURROGATES, '\ufffd'))}`);
  return v;
}

/** A JSON value's path step: `.key` for a plain key, `["..."]` (cut short) for any other. */
const step = (key: string) => (/^[A-Za-z_$][A-Za-z0-9_$]{0,39}$/.test(key) ? `.${key}` : `[${describe(key)}]`);

/**
 * Walk a free-form JSON value (a parsed document: objects, arrays, scalars) and refuse U+0000 in
 * any key or string, naming its path (`health.speedPush.lastError`). Iterative: a deeply nested
 * document cannot overflow the stack.
 */
export function jsonWithoutNul(v: unknown, path: string): void {
  const stack: Array<[unknown, string]> = [[v, path]];
  while (stack.length > 0) {
    const [x, p] = stack.pop()!;
    if (typeof x === 'string') {
      noNul(x, p, '');
    } else if (Array.isArray(x)) {
      for (let i = x.length - 1; i >= 0; i--) stack.push([x[i], `${p}[${i}]`]);
    } else if (x !== null && typeof x === 'object') {
      const keys = Object.keys(x);
      for (let i = keys.length - 1; i >= 0; i--) {
        const k = keys[i];
        if (k.includes('\u0000')) throw bad(p, `a key must not contain the NUL character (U+0000), got ${describe(k)}`);
        stack.push([(x as Record<string, unknown>)[k], `${p}${step(k)}`]);
      }
    }
  }
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
