/**
 * Reading JSON straight from its bytes, for the parsers that skip JSON.parse on the usual shape
 * (shared/payload.ts at the gateway, cloud/ingest/fast-body.ts and raw-json.ts at the cloud).
 */

/** JSON's whitespace: space, line feed, carriage return, tab. */
export const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;

/** The index after the whitespace at `i`. */
export function skipWs(buf: Uint8Array, i: number): number {
  while (i < buf.length && isWs(buf[i])) i++;
  return i;
}

/**
 * 10^k for k <= 22, every one exact as a double (Clinger's fast path: an integer mantissa below
 * 2^53 divided or multiplied by one of them rounds once, correctly, as JSON.parse does).
 */
export const POW10: readonly number[] = Array.from({ length: 23 }, (_, k) => 10 ** k);
