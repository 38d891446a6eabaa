/**
 * Reading an ingest body off the socket within its limits: `maxBodyBytes` as sent (checked on
 * Content-Length before reading, and again while reading, for chunked bodies) and
 * `maxInflatedBytes` while gunzipping, so a gzip bomb costs at most that much memory [INV-6].
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { BadRequestError, ForbiddenError, PayloadTooLargeError } from '../../shared/errors.js';
import type { Principal } from '../store/credential-store.js';
import { UnsupportedEncodingError } from './errors.js';

export interface BodyLimits {
  /** Largest body as sent, in bytes. */
  maxBodyBytes: number;
  /** Largest body after gunzip, in bytes. */
  maxInflatedBytes: number;
}

/** `gzip` or `identity`; anything else is 415. */
export function bodyEncoding(headers: IncomingHttpHeaders): 'gzip' | 'identity' {
  const raw = String(headers['content-encoding'] ?? '').trim().toLowerCase();
  if (raw === '' || raw === 'identity') return 'identity';
  if (raw === 'gzip' || raw === 'x-gzip') return 'gzip';
  throw new UnsupportedEncodingError(`Content-Encoding "${raw.slice(0, 40)}" is not supported (use gzip or identity)`);
}

/**
 * Output chunk of the gunzip, in bytes, for a body of `contentLength` gzip bytes: room for 8x that
 * (JSON readings inflate ~6x), between 16 KiB and 1 MiB. zlib's default of 16 KiB cut a
 * 5000-reading body (42 KB in, 243 KB out) into 16 output chunks, each a trip to libuv's pool and
 * back, then copied into one: 0.8-1.1 ms of CPU a body against 0.3-0.37 ms in one chunk (2026-12-06,
 * session 8). The one chunk is the body, no copy. A gzip bomb still stops within one chunk of
 * maxInflatedBytes.
 */
export function gunzipChunkBytes(contentLength: number): number {
  if (!Number.isFinite(contentLength) || contentLength <= 0) return 64 * 1024;
  return Math.min(1024 * 1024, Math.max(16 * 1024, Math.ceil(contentLength * 8)));
}

/**
 * Read `stream` to the end, gunzipping when the headers say gzip. Rejects with
 * PayloadTooLargeError (413), UnsupportedEncodingError (415) or BadRequestError (bad gzip, a body
 * cut short). On a rejection the rest of the body is read and discarded, not left in the socket:
 * the client then sees the 413 rather than a reset connection.
 */
export function readBody(stream: Readable, headers: IncomingHttpHeaders, limits: BodyLimits): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    let encoding: 'gzip' | 'identity';
    try {
      encoding = bodyEncoding(headers);
    } catch (err) {
      stream.resume();
      return reject(err);
    }
    const declared = Number(headers['content-length']);
    if (Number.isFinite(declared) && declared > limits.maxBodyBytes) {
      stream.resume();
      return reject(new PayloadTooLargeError(`body is ${declared} bytes, over the limit of ${limits.maxBodyBytes} (ingest.maxBodyBytes)`));
    }

    const chunks: Buffer[] = [];
    let sent = 0;
    let inflated = 0;
    let settled = false;
    const gunzip = encoding === 'gzip' ? createGunzip({ chunkSize: gunzipChunkBytes(declared) }) : null;

    const cleanup = () => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onAbort);
      stream.off('aborted', onAbort);
      stream.off('close', onClose);
    };
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      cleanup();
      gunzip?.destroy();
      // Keep reading (and dropping) what the client still sends, so it can read our answer.
      stream.on('error', () => undefined);
      stream.resume();
      reject(err);
    };
    const finish = () => {
      if (settled) return;
      settled = true;
      cleanup();
      resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, inflated));
    };
    const take = (chunk: Buffer) => {
      inflated += chunk.length;
      if (inflated > limits.maxInflatedBytes) {
        return fail(new PayloadTooLargeError(`body inflates to more than ${limits.maxInflatedBytes} bytes (ingest.maxInflatedBytes)`));
      }
      chunks.push(chunk);
    };
    function onData(chunk: Buffer) {
      sent += chunk.length;
      if (sent > limits.maxBodyBytes) return fail(new PayloadTooLargeError(`body is over the limit of ${limits.maxBodyBytes} bytes (ingest.maxBodyBytes)`));
      if (!gunzip) return take(chunk);
      if (!gunzip.write(chunk)) {
        stream.pause();
        gunzip.once('drain', () => { if (!settled) stream.resume(); });
      }
    }
    function onEnd() {
      if (gunzip) gunzip.end();
      else finish();
    }
    function onAbort() {
      fail(new BadRequestError('body: the connection closed before the body was complete'));
    }
    function onClose() {
      // 'close' before 'end' on an IncomingMessage means the client went away mid-body.
      if (!(stream as { complete?: boolean }).complete && !stream.readableEnded) onAbort();
    }

    if (gunzip) {
      gunzip.on('data', take);
      gunzip.on('end', finish);
      gunzip.on('error', (err) => fail(new BadRequestError(`body: not valid gzip data (${err.message})`, { cause: err })));
    }
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', onAbort);
    stream.on('aborted', onAbort);
    stream.on('close', onClose);
  });
}

/** A gateway's request body (read by readBody) as JSON: 400 naming `body` when empty or not JSON; `expected` says what should be there. */
export function parseJsonBody(raw: Buffer | undefined, expected: string): unknown {
  if (!raw || raw.length === 0) throw new BadRequestError(`body: empty; expected ${expected} (JSON, optionally gzip)`);
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new BadRequestError(`body: not valid JSON (${(err as Error).message})`, { cause: err });
  }
}

/** A gateway writes only as itself: 403 unless the request's token is the gateway the body names. */
export function requireOwnGateway(p: Principal | undefined, gateway: string): void {
  if (p?.kind !== 'gateway' || p.gateway !== gateway) {
    throw new ForbiddenError(`gateway: the token belongs to gateway ${p?.kind === 'gateway' ? p.gateway : '?'}, the body says ${gateway}`);
  }
}
