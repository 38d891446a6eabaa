/**
 * Where a top-level member's value lies in the bytes of a JSON object text, so that a request's
 * `readings` can go into its staging line as the gateway sent them instead of being serialized
 * again (JSON.stringify of 5000 tuples was the largest share of the ingest's main-thread time after
 * GC). Only ever run on a text JSON.parse has just accepted: a byte scan that skips strings and
 * counts brackets, with no judgement of its own; anything it does not expect gives null, and the
 * caller serializes as before.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;

/** The index after the string that opens at `i` (a quote), or -1. */
function skipString(buf: Uint8Array, i: number): number {
  for (i++; i < buf.length; i++) {
    const b = buf[i];
    if (b === BACKSLASH) i++;
    else if (b === QUOTE) return i + 1;
  }
  return -1;
}

/** The index after the value that starts at `i`, or -1. */
function skipValue(buf: Uint8Array, i: number): number {
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
      else if (b === 0x5d || b === 0x7d) {
        if (--depth === 0) return i + 1;
      }
    }
    return -1;
  }
  // A number, true, false or null: up to the next delimiter.
  for (; i < buf.length; i++) {
    const b = buf[i];
    if (b === 0x2c || b === 0x7d || b === 0x5d || isWs(b)) return i;
  }
  return i;
}

function skipWs(buf: Uint8Array, i: number): number {
  while (i < buf.length && isWs(buf[i])) i++;
  return i;
}

/**
 * The bytes of the value of `key` in the JSON object `buf` (the last one when the key repeats, as
 * JSON.parse keeps), as a view of `buf`; null when there is none or the text is not what was expected.
 * A key written with escapes is not recognised (null: the caller's slow path).
 */
export function topLevelValue(buf: Buffer, key: string): Buffer | null {
  const want = Buffer.from(JSON.stringify(key), 'utf8');
  let i = skipWs(buf, 0);
  if (buf[i] !== 0x7b) return null;
  i = skipWs(buf, i + 1);
  if (buf[i] === 0x7d) return null;
  let found: [number, number] | null = null;
  for (;;) {
    if (buf[i] !== QUOTE) return null;
    const ks = i;
    i = skipString(buf, i);
    if (i < 0) return null;
    const isKey = i - ks === want.length && buf.compare(want, 0, want.length, ks, i) === 0;
    i = skipWs(buf, i);
    if (buf[i] !== 0x3a) return null;
    i = skipWs(buf, i + 1);
    const vs = i;
    i = skipValue(buf, i);
    if (i < 0 || i === vs) return null;
    if (isKey) found = [vs, i];
    i = skipWs(buf, i);
    if (buf[i] === 0x2c) {
      i = skipWs(buf, i + 1);
      continue;
    }
    if (buf[i] === 0x7d) break;
    return null;
  }
  return found ? buf.subarray(found[0], found[1]) : null;
}
