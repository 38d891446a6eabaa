/**
 * One ingest request: gzip the body, POST it (edge/cloudclient), and turn every outcome into
 * either an ack or an error that carries the retry decision (like influxdb-client's HttpError).
 */
import { type CloudRequest, cloudUrl, errorBodyCode, gzipJson, postGzip } from '../cloudclient/index.js';
import { IngestResponseInvalidError, IngestTimeoutError, IngestUnreachableError } from './errors.js';

export { errorBodyCode, gzipJson };

export const INGEST_PATH = '/api/v1/ingest';

/** Something the cloud stored but flags (BRAID_WARN_FUTURE_TS...): logged and counted by code. */
export interface IngestWarning { code: string; message: string; count?: number }

export interface IngestAck { ackSeq: number; stored?: number; duplicates?: number; warnings?: IngestWarning[] }

/** The well-formed entries of a 2xx's `warnings` (a malformed one is skipped: the ack stands). */
function parseWarnings(v: unknown): IngestWarning[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const out: IngestWarning[] = [];
  for (const w of v.slice(0, 100) as unknown[]) {
    const x = w as { code?: unknown; message?: unknown; count?: unknown } | null;
    if (!x || typeof x.code !== 'string' || x.code === '') continue;
    out.push({
      code: x.code.slice(0, 64),
      message: typeof x.message === 'string' ? x.message.slice(0, 1000) : '',
      count: typeof x.count === 'number' && Number.isFinite(x.count) ? x.count : undefined,
    });
  }
  return out.length > 0 ? out : undefined;
}

export type IngestRequest = CloudRequest;

export function ingestUrl(base: string): string {
  return cloudUrl(base, INGEST_PATH);
}

function parseAck(text: string): IngestAck {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new IngestResponseInvalidError(`ingest answered 2xx with a body that is not JSON: ${text.slice(0, 100)}`, { cause: err });
  }
  const ack = v as { ackSeq?: unknown; stored?: unknown; duplicates?: unknown; warnings?: unknown } | null;
  if (!ack || typeof ack !== 'object' || typeof ack.ackSeq !== 'number' || !Number.isSafeInteger(ack.ackSeq) || ack.ackSeq < 0) {
    throw new IngestResponseInvalidError(`ingest answered 2xx without an integer ackSeq: ${text.slice(0, 100)}`);
  }
  return {
    ackSeq: ack.ackSeq,
    stored: typeof ack.stored === 'number' ? ack.stored : undefined,
    duplicates: typeof ack.duplicates === 'number' ? ack.duplicates : undefined,
    warnings: parseWarnings(ack.warnings),
  };
}

/**
 * POST an already gzipped body. Resolves with the ack of a well-formed 2xx; rejects with HttpError
 * (any other status, `retryAfterMs` from Retry-After), IngestResponseInvalidError, IngestTimeoutError,
 * IngestUnreachableError, or the outer signal's reason when it aborted.
 */
export async function postIngest(req: IngestRequest, body: Buffer): Promise<IngestAck> {
  const text = await postGzip({ ...req, path: INGEST_PATH, what: 'ingest', TimeoutError: IngestTimeoutError, UnreachableError: IngestUnreachableError }, body);
  return parseAck(text);
}
