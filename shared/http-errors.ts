/**
 * How every Braid HTTP server (gateway API, cloud API and ingest) answers an error: a stable
 * `{ code, message }` body and the status the error declares (fastify's own errors keep theirs).
 */
import type { FastifyError } from 'fastify';
import { BraidError } from './errors.js';

/** Turn fastify's and our errors into `{ code, message }` with the right status. */
export function errorReply(err: FastifyError | BraidError | Error): { status: number; body: { code: string; message: string } } {
  if (err instanceof BraidError) return { status: err.statusCode, body: { code: err.code, message: err.message } };
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
