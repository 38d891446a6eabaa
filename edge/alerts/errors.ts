/** Failures of one request of alert transitions that are not an HTTP status; all worth a retry (the transitions stay in gateway.db). */
import { BraidError } from '../../shared/errors.js';

/** The request (answer body included) took longer than cloud.requestTimeoutMs. */
export class AlertSendTimeoutError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_ALERT_SEND_TIMEOUT', message, 504, options);
  }
  override canRetry(): boolean { return true; }
}

/** No HTTP answer at all: connection refused or reset, DNS failure... */
export class AlertSendUnreachableError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_ALERT_SEND_UNREACHABLE', message, 503, options);
  }
  override canRetry(): boolean { return true; }
}
