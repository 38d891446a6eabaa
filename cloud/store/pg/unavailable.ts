/**
 * PostgreSQL out of reach (refused, reset, restarting, out of connections, no answer in time), told
 * apart from a wrong statement: the caller answers 503 with Retry-After and the client (a gateway)
 * resends or fails over to another node, rather than a 500 that names a socket error. The pool
 * drops broken connections and opens new ones when asked, so service resumes by itself.
 */
import { BraidError } from '../../../shared/errors.js';

export class StoreUnavailableError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_STORE_UNAVAILABLE', message, 503, options);
  }

  override canRetry(): boolean {
    return true;
  }
}

const SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE']);

/**
 * SQLSTATEs: class 08 (connection exception), 53300 too_many_connections, 57014 query_canceled
 * (statement_timeout), 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now
 * (starting up, or a standby being promoted).
 */
const SQLSTATE_RE = /^(08...|53300|57014|57P0[123])$/;

/** node-postgres and pg-pool raise these as plain Errors without a code. */
const MESSAGE_RE = /^(timeout exceeded when trying to connect|Connection terminated|Client has encountered a connection error|timeout expired)/;

/** Whether `err` says the database could not be reached or did not answer, rather than refusing a statement. */
export function isStoreUnavailable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; cause?: unknown } | undefined;
  if (!e || typeof e !== 'object') return false;
  if (e.code === 'BRAID_ERR_STORE_UNAVAILABLE') return true;
  if (typeof e.code === 'string' && (SOCKET_CODES.has(e.code) || SQLSTATE_RE.test(e.code))) return true;
  if (typeof e.message === 'string' && MESSAGE_RE.test(e.message)) return true;
  // an AggregateError (IPv4 and IPv6 both refused) or a wrapped cause
  const errors = (e as { errors?: unknown }).errors;
  if (Array.isArray(errors) && errors.length > 0 && errors.every(isStoreUnavailable)) return true;
  return e.cause !== undefined && e.cause !== err && isStoreUnavailable(e.cause);
}

/** `err` as a StoreUnavailableError when it is one (its cause kept), else itself. */
export function asStoreError(err: unknown, what: string): unknown {
  if (err instanceof StoreUnavailableError || !isStoreUnavailable(err)) return err;
  const detail = (err as { code?: string; message?: string }).code ?? (err as Error).message;
  return new StoreUnavailableError(`the PostgreSQL store is unavailable (${what}: ${detail}); retry`, { cause: err });
}
