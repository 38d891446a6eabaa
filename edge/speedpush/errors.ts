/**
 * Failures of one speed push that are not an HTTP status (those are shared HttpError). All of them
 * are worth a retry: the partials stay in gateway.db and the cursor does not move.
 */
import { BraidError } from '../../shared/errors.js';

/** The cloud answered 2xx with a body that is not `{ "watermark": <integer>, ... }`. */
export class SpeedPushResponseInvalidError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_SPEED_PUSH_RESPONSE_INVALID', message, 502, options);
  }
  override canRetry(): boolean { return true; }
}

/** The push (answer body included) took longer than `requestTimeoutMs`. */
export class SpeedPushTimeoutError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_SPEED_PUSH_TIMEOUT', message, 504, options);
  }
  override canRetry(): boolean { return true; }
}

/** No HTTP answer at all: connection refused or reset, DNS failure... `cause` keeps the socket error. */
export class SpeedPushUnreachableError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_SPEED_PUSH_UNREACHABLE', message, 503, options);
  }
  override canRetry(): boolean { return true; }
}
