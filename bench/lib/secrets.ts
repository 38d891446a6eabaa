/**
 * Device secrets in the benchmarks, shaped as the gateway generates them (32 bytes, base64url) so a
 * gateway checks them as it checks generated secrets in the field (salted SHA-256). Each device's
 * is derived from a per-run key (HMAC-SHA256 of its id), so a client process given the key knows
 * every device's secret without a file of 10,000 of them.
 */
import { createHmac } from 'node:crypto';

export function deviceSecret(key: string, id: string): string {
  return createHmac('sha256', key).update(id).digest('base64url');
}
