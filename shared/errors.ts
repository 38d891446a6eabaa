/**
 * Typed errors with stable codes. Callers and tests match on `code`, never on the message.
 * Each error is declared once here with its code, a message and an HTTP status where one applies.
 */
export class BraidError extends Error {
  readonly code: string;
  readonly statusCode: number;
  /**
   * Machine-readable fields an HTTP answer carries beside `code` and `message` (e.g. the seq a
   * refusal is relative to), so a client acts on them without parsing the message. The route's
   * response schema must declare them, or the serializer drops them.
   */
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: string, message: string, statusCode = 500, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.statusCode = statusCode;
    this.details = options?.details;
  }

  /** Whether retrying the same operation later may succeed. */
  canRetry(): boolean {
    return this.statusCode >= 500 || this.statusCode === 429;
  }

  toJSON(): { code: string; message: string; statusCode: number } {
    return { code: this.code, message: this.message, statusCode: this.statusCode };
  }
}

function declare(code: string, statusCode: number, name: string) {
  const cls = class extends BraidError {
    constructor(message: string, options?: { cause?: unknown }) {
      super(code, message, statusCode, options);
    }
  };
  Object.defineProperty(cls, 'name', { value: name });
  return cls;
}

/**
 * A device payload that is not a reading we can store (bad JSON, bad SenML, non-finite value, too large...).
 * `reason` is a short stable slug (`json`, `too_large`, `non_finite`...) used as a metric label.
 */
export class PayloadInvalidError extends BraidError {
  readonly reason: string;
  constructor(reason: string, message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_PAYLOAD_INVALID', message, 400, options);
    this.reason = reason;
  }
}
/** A configuration key with a bad value; the message names the key. */
export const ConfigInvalidError = declare('BRAID_ERR_CONFIG_INVALID', 400, 'ConfigInvalidError');
/** A query or request parameter that cannot be used; the message names the parameter. */
export const BadRequestError = declare('BRAID_ERR_BAD_REQUEST', 400, 'BadRequestError');
/** Missing or wrong credentials. */
export const UnauthorizedError = declare('BRAID_ERR_UNAUTHORIZED', 401, 'UnauthorizedError');
/** Valid credentials that do not allow this action (MQTT ACL, API role). */
export const ForbiddenError = declare('BRAID_ERR_FORBIDDEN', 403, 'ForbiddenError');
/** A named thing (device, gateway, key) that does not exist. */
export const NotFoundError = declare('BRAID_ERR_NOT_FOUND', 404, 'NotFoundError');
/** A name that is already taken (device add of an existing device). */
export const ConflictError = declare('BRAID_ERR_CONFLICT', 409, 'ConflictError');
/** A query whose view the live manifest does not name yet (written by an earlier version); the next batch run publishes it. */
export const ViewNotPublishedError = declare('BRAID_ERR_VIEW_NOT_PUBLISHED', 409, 'ViewNotPublishedError');
/** A request body over its size limit. */
export const PayloadTooLargeError = declare('BRAID_ERR_PAYLOAD_TOO_LARGE', 413, 'PayloadTooLargeError');
/** A limit refused the work (rate limit, queue full); the work was counted as dropped. */
export const LimitExceededError = declare('BRAID_ERR_LIMIT_EXCEEDED', 429, 'LimitExceededError');
/** A data dir another process owns (shared/owner-lock.ts); the message names it (pid, since when). */
export const DataDirInUseError = declare('BRAID_ERR_DATA_DIR_IN_USE', 409, 'DataDirInUseError');
/** The component is closing or closed and takes no more work. */
export const ClosedError = declare('BRAID_ERR_CLOSED', 503, 'ClosedError');

/** An HTTP answer from a peer (the cloud); carries the retry decision like influxdb-client's HttpError. */
export class HttpError extends BraidError {
  readonly body: string;
  readonly retryAfterMs: number | undefined;

  constructor(statusCode: number, body: string, retryAfterMs?: number) {
    super('BRAID_ERR_HTTP', `HTTP ${statusCode}: ${body.slice(0, 200)}`, statusCode);
    this.body = body;
    this.retryAfterMs = retryAfterMs;
  }

  override canRetry(): boolean {
    // 4xx but 408/429 means the request itself is wrong: sending it again cannot help.
    return this.statusCode >= 500 || this.statusCode === 429 || this.statusCode === 408;
  }
}

/** Socket-level failures that are worth a retry (the peer may be restarting). */
const RETRIABLE_SOCKET_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH',
  'ENETUNREACH', 'ECONNABORTED', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CLOSED',
]);

export function isRetriable(err: unknown): boolean {
  if (err instanceof BraidError) return err.canRetry();
  const e = err as { code?: string; name?: string; cause?: unknown } | undefined;
  if (!e) return false;
  if (e.name === 'AbortError' || e.name === 'TimeoutError') return true;
  if (e.code && RETRIABLE_SOCKET_CODES.has(e.code)) return true;
  // fetch() wraps socket errors as TypeError('fetch failed', { cause })
  if (e.cause && e.cause !== err) return isRetriable(e.cause);
  return false;
}
