/**
 * One gzipped JSON POST from the gateway to the cloud (ingest, speed push): every outcome becomes
 * either the text of a 2xx answer or an error that carries the retry decision (like
 * influxdb-client's HttpError). The caller names the error classes, so each protocol keeps its
 * own stable codes (BRAID_ERR_INGEST_TIMEOUT, BRAID_ERR_SPEED_PUSH_TIMEOUT...).
 */
import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import { type BraidError, HttpError } from '../../shared/errors.js';
import { parseRetryAfterMs } from './backoff.js';

const gzip = promisify(gzipCb);

type ErrorClass = new (message: string, options?: { cause?: unknown }) => BraidError;

export interface CloudRequest {
  /** Cloud base URL. */
  url: string;
  token: string | null;
  /** Time the request may take, answer body included, in ms. */
  timeoutMs: number;
  /** Aborts the request from outside (close()); its reason is what the call rejects with. */
  signal?: AbortSignal;
  now?: () => number;
}

export interface CloudPost extends CloudRequest {
  /** Path below the base URL, e.g. /api/v1/speed. */
  path: string;
  /** What the request is, for messages ("ingest", "speed push"). */
  what: string;
  /** Thrown when timeoutMs passes. */
  TimeoutError: ErrorClass;
  /** Thrown when there is no HTTP answer at all; `cause` keeps the socket error. */
  UnreachableError: ErrorClass;
}

export async function gzipJson(json: string): Promise<Buffer> {
  return gzip(Buffer.from(json, 'utf8'));
}

/** The `code` of a Braid error body `{ code, message }`, if the peer sent one. */
export function errorBodyCode(body: string): string | undefined {
  try {
    const v = JSON.parse(body) as { code?: unknown };
    return typeof v?.code === 'string' ? v.code : undefined;
  } catch {
    return undefined;
  }
}

export function cloudUrl(base: string, path: string): string {
  return base.replace(/\/+$/, '') + path;
}

/**
 * POST an already gzipped body. Resolves with the text of a 2xx answer; rejects with HttpError
 * (any other status, `retryAfterMs` from Retry-After), `TimeoutError`, `UnreachableError`, or the
 * outer signal's reason when it aborted.
 */
export async function postGzip(req: CloudPost, body: Buffer): Promise<string> {
  const timeout = AbortSignal.timeout(req.timeoutMs);
  const signal = req.signal ? AbortSignal.any([timeout, req.signal]) : timeout;
  const headers: Record<string, string> = { 'content-type': 'application/json', 'content-encoding': 'gzip' };
  if (req.token) headers.authorization = `Bearer ${req.token}`;
  try {
    // A copy typed Uint8Array<ArrayBuffer>: Buffer's ArrayBufferLike is not a BodyInit to TypeScript.
    const bytes = new Uint8Array(body);
    const res = await fetch(cloudUrl(req.url, req.path), { method: 'POST', headers, body: bytes, signal });
    // The timeout covers the answer body too: a peer that stalls mid-body is as down as a silent one.
    const text = await res.text();
    if (res.status >= 200 && res.status < 300) return text;
    throw new HttpError(res.status, text, parseRetryAfterMs(res.headers.get('retry-after'), (req.now ?? Date.now)()));
  } catch (err) {
    if (err instanceof HttpError) throw err;
    if (req.signal?.aborted) throw req.signal.reason;
    if (timeout.aborted) throw new req.TimeoutError(`${req.what} request took longer than ${req.timeoutMs} ms`, { cause: err });
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new req.UnreachableError(`${req.what} unreachable: ${cause?.code ?? cause?.message ?? (err as Error).message}`, { cause: err });
  }
}
