/**
 * How every Braid HTTP server (gateway API, cloud API and ingest) answers an error: a stable
 * `{ code, message }` body (plus the error's machine-readable `details`, if any) and the status the
 * error declares (fastify's own errors keep theirs).
 */
import type { FastifyError } from 'fastify';
import { BraidError } from './errors.js';

/** An error answer: `code` and `message`, plus the error's `details` when it has any. */
export interface ErrorBody { code: string; message: string; [field: string]: unknown }

/** Turn fastify's and our errors into `{ code, message }` (and the error's details) with the right status. */
export function errorReply(err: FastifyError | BraidError | Error): { status: number; body: ErrorBody } {
  if (err instanceof BraidError) return { status: err.statusCode, body: { ...err.details, code: err.code, message: err.message } };
  const fe = err as FastifyError;
  if (fe.validation) {
    const v = fe.validation[0];
    const where = (fe.validationContext ?? 'request');
    const param = v?.instancePath ? v.instancePath.replace(/^\//, '') : (v?.params as { missingProperty?: string })?.missingProperty;
    return { status: 400, body: { code: 'BRAID_ERR_BAD_REQUEST', message: `${where} parameter "${param ?? '?'}": ${v?.message ?? fe.message}` } };
  }
  const status = fe.statusCode && fe.statusCode >= 400 ? fe.statusCode : 500;
  return { status, body: { code: fe.code ?? 'BRAID_ERR_INTERNAL', message: status >= 500 ? 'internal error' : fe.message } };
}
