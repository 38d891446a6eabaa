/**
 * One ingest request: gzip the body, POST it, and turn every outcome into either an ack or an
 * error that carries the retry decision (like influxdb-client's HttpError).
 */
import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import { HttpError } from '../../shared/errors.js';
import { parseRetryAfterMs } from './backoff.js';
import { IngestResponseInvalidError, IngestTimeoutError, IngestUnreachableError } from './errors.js';

const gzip = promisify(gzipCb);

export const INGEST_PATH = '/api/v1/ingest';

export interface IngestAck { ackSeq: number; stored?: number; duplicates?: number }

export interface IngestRequest {
  /** Cloud base URL. */
  url: string;
  token: string | null;
  timeoutMs: number;
  /** Aborts the request from outside (close()); its reason is what the call rejects with. */
  signal?: AbortSignal;
  now?: () => number;
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

export function ingestUrl(base: string): string {
  return base.replace(/\/+$/, '') + INGEST_PATH;
}

export async function gzipJson(json: string): Promise<Buffer> {
  return gzip(Buffer.from(json, 'utf8'));
}

function parseAck(text: string): IngestAck {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new IngestResponseInvalidError(`ingest answered 2xx with a body that is not JSON: ${text.slice(0, 100)}`, { cause: err });
  }
  const ack = v as { ackSeq?: unknown; stored?: unknown; duplicates?: unknown } | null;
  if (!ack || typeof ack !== 'object' || typeof ack.ackSeq !== 'number' || !Number.isSafeInteger(ack.ackSeq) || ack.ackSeq < 0) {
    throw new IngestResponseInvalidError(`ingest answered 2xx without an integer ackSeq: ${text.slice(0, 100)}`);
  }
  return {
    ackSeq: ack.ackSeq,
    stored: typeof ack.stored === 'number' ? ack.stored : undefined,
    duplicates: typeof ack.duplicates === 'number' ? ack.duplicates : undefined,
  };
}

/**
 * POST an already gzipped body. Resolves with the ack of a well-formed 2xx; rejects with HttpError
 * (any other status, `retryAfterMs` from Retry-After), IngestResponseInvalidError, IngestTimeoutError,
 * IngestUnreachableError, or the outer signal's reason when it aborted.
 */
export async function postIngest(req: IngestRequest, body: Buffer): Promise<IngestAck> {
  const timeout = AbortSignal.timeout(req.timeoutMs);
  const signal = req.signal ? AbortSignal.any([timeout, req.signal]) : timeout;
  const headers: Record<string, string> = { 'content-type': 'application/json', 'content-encoding': 'gzip' };
  if (req.token) headers.authorization = `Bearer ${req.token}`;
  try {
    // A copy typed Uint8Array<ArrayBuffer>: Buffer's ArrayBufferLike is not a BodyInit to TypeScript.
    const bytes = new Uint8Array(body);
    const res = await fetch(ingestUrl(req.url), { method: 'POST', headers, body: bytes, signal });
    // The timeout covers the answer body too: a peer that stalls mid-body is as down as a silent one.
    const text = await res.text();
    if (res.status >= 200 && res.status < 300) return parseAck(text);
    throw new HttpError(res.status, text, parseRetryAfterMs(res.headers.get('retry-after'), (req.now ?? Date.now)()));
  } catch (err) {
    if (err instanceof HttpError || err instanceof IngestResponseInvalidError) throw err;
    if (req.signal?.aborted) throw req.signal.reason;
    if (timeout.aborted) throw new IngestTimeoutError(`ingest request took longer than ${req.timeoutMs} ms`, { cause: err });
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new IngestUnreachableError(`ingest unreachable: ${cause?.code ?? cause?.message ?? (err as Error).message}`, { cause: err });
  }
}
