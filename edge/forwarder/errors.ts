/**
 * Failures of one ingest request that are not an HTTP status (those are shared HttpError). Each
 * carries a stable code; all of them are worth a retry, since the gateway never drops a reading
 * because of an ingest error (docs/ingest-protocol.md).
 */
import { BraidError } from '../../shared/errors.js';

/** The cloud answered 2xx with a body that is not `{ "ackSeq": <integer> }`: nothing is acknowledged. */
export class IngestResponseInvalidError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_INGEST_RESPONSE_INVALID', message, 502, options);
  }
  override canRetry(): boolean { return true; }
}

/** The request (answer body included) took longer than `requestTimeoutMs`. */
export class IngestTimeoutError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_INGEST_TIMEOUT', message, 504, options);
  }
  override canRetry(): boolean { return true; }
}

/** No HTTP answer at all: connection refused or reset, DNS failure... `cause` keeps the socket error. */
export class IngestUnreachableError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_INGEST_UNREACHABLE', message, 503, options);
  }
  override canRetry(): boolean { return true; }
}
