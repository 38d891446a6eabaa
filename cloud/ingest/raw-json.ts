/**
 * Where an ingest body's `readings` array lies in its bytes, so that the request's readings can go
 * into its staging line as the gateway sent them instead of being serialized again (JSON.stringify
 * of 5000 tuples was the largest share of the ingest's main-thread time after GC). Only ever run on
 * a text JSON.parse has just accepted and validateIngestBody has checked: a walk over the top-level
 * members that skips strings and counts brackets, with no judgement of its own; anything it does
 * not expect (a key written with escapes, a repeated `readings`) gives null, and the caller
 * serializes as before.
 *
 * The array itself is not walked byte by byte (2 ms for 5000 readings): its rows are arrays of
 * scalars, so when no device or metric string holds a `]`, the array ends at the (rows + 1)-th `]`
 * after it opens, which Buffer.indexOf finds natively.
 */

import { isWs, skipWs } from '../../shared/json-bytes.js';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const CLOSE_BRACKET = 0x5d;
const READINGS_KEY = Buffer.from('"readings"', 'utf8');

/** The index after the string that opens at `i` (a quote), or -1. */
export function skipString(buf: Uint8Array, i: number): number {
  for (i++; i < buf.length; i++) {
    const b = buf[i];
    if (b === BACKSLASH) i++;
    else if (b === QUOTE) return i + 1;
  }
  return -1;
}

/** The index after the value that starts at `i`, or -1. */
export function skipValue(buf: Uint8Array, i: number): number {
  const first = buf[i];
  if (first === QUOTE) return skipString(buf, i);
  if (first === 0x5b || first === 0x7b) {
    let depth = 0;
    for (; i < buf.length; i++) {
      const b = buf[i];
      if (b === QUOTE) {
        i = skipString(buf, i);
        if (i < 0) return -1;
        i--;
      } else if (b === 0x5b || b === 0x7b) depth++;
      else if (b === CLOSE_BRACKET || b === 0x7d) {
        if (--depth === 0) return i + 1;
      }
    }
    return -1;
  }
  // A number, true, false or null: up to the next delimiter.
  for (; i < buf.length; i++) {
    const b = buf[i];
    if (b === 0x2c || b === 0x7d || b === CLOSE_BRACKET || isWs(b)) return i;
  }
  return i;
}

/**
 * Where the object key starting at `i` ends (past its closing quote), or -1 when `i` holds no key
 * or the key has an escape: an escaped key may spell any key, so it is not recognised.
 */
export function plainKeyEnd(buf: Buffer, i: number): number {
  if (buf[i] !== QUOTE) return -1;
  const end = skipString(buf, i);
  if (end < 0) return -1;
  const slash = buf.indexOf(BACKSLASH, i);
  return slash !== -1 && slash < end ? -1 : end;
}

/**
 * The bytes of the top-level `readings` array of the JSON object `buf`, as a view of it, or null.
 * `rows`: the array's length as parsed (validated: each an array of scalars); `noBracket`: no
 * string in it holds a `]` (then the array's end is found by counting brackets).
 */
export function readingsBytes(buf: Buffer, rows: number, noBracket: boolean): Buffer | null {
  let i = skipWs(buf, 0);
  if (buf[i] !== 0x7b) return null;
  i = skipWs(buf, i + 1);
  let found: Buffer | null = null;
  for (;;) {
    const ks = i;
    i = plainKeyEnd(buf, i);
    if (i < 0) return null;
    const isReadings = i - ks === READINGS_KEY.length && buf.compare(READINGS_KEY, 0, READINGS_KEY.length, ks, i) === 0;
    i = skipWs(buf, i);
    if (buf[i] !== 0x3a) return null;
    i = skipWs(buf, i + 1);
    const vs = i;
    if (isReadings) {
      // Twice: JSON.parse kept the last; not worth telling apart.
      if (found || buf[vs] !== 0x5b) return null;
      if (noBracket) {
        let j = vs;
        for (let k = 0; k <= rows && j !== -1; k++) j = buf.indexOf(CLOSE_BRACKET, j + 1);
        i = j === -1 ? -1 : j + 1;
      } else {
        i = skipValue(buf, vs);
      }
      if (i < 0) return null;
      found = buf.subarray(vs, i);
    } else {
      i = skipValue(buf, vs);
      if (i <= vs) return null;
    }
    i = skipWs(buf, i);
    if (buf[i] === 0x2c) {
      i = skipWs(buf, i + 1);
      continue;
    }
    return buf[i] === 0x7d ? found : null;
  }
}
