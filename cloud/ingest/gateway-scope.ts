/**
 * What every gateway-facing POST route (ingest, speed push) shares, in its own encapsulated fastify
 * scope: the body read by us (gzip, limits on both sizes), refusals counted by code, and request
 * outcome and time metrics.
 */
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Counter, Histogram } from 'prom-client';
import { errorReply } from '../../shared/http-errors.js';
import { type BodyLimits, readBody } from './body.js';

export interface GatewayRouteMetrics {
  rejected: Counter<'code'>;
  requests: Counter<'outcome'>;
  requestSeconds: Histogram;
}

/** How long a 413 waits for the rest of the refused body before it is sent anyway. */
const DRAIN_WAIT_MS = 10_000;

/** Resolves when `req`'s body has been read to its end, it closed, or `ms` passed. */
function drained(req: IncomingMessage, ms: number): Promise<void> {
  if (req.readableEnded || req.destroyed) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      req.off('end', done);
      req.off('close', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    req.on('end', done);
    req.on('close', done);
    req.resume();
  });
}

/** Set up `scope` for a gateway POST route; `what` names it in logs ("ingest request", "speed push"). */
export function prepareGatewayScope(scope: FastifyInstance, limits: BodyLimits, m: GatewayRouteMetrics, what: string): void {
  // The body is read by us, not by fastify's JSON parser: gzip, and limits on both sizes.
  scope.removeAllContentTypeParsers();
  scope.addContentTypeParser('*', (req: FastifyRequest, payload: IncomingMessage) =>
    readBody(payload, req.headers, { maxBodyBytes: limits.maxBodyBytes, maxInflatedBytes: limits.maxInflatedBytes }));

  scope.setErrorHandler(async (err, req, reply) => {
    const { status, body } = errorReply(err as Error);
    m.rejected.inc({ code: body.code });
    if (status >= 500) req.log.error({ err }, `${what} failed`);
    else req.log.debug({ code: body.code, message: body.message }, `${what} refused`);
    if (status === 429 || status === 503) void reply.header('retry-after', '1');
    if (status === 413) {
      // A refused body may still be arriving (readBody drops it). Answering and closing at once
      // would reset the connection under the sender: a proxy in front then reports 502, and the
      // gateway would not learn to send smaller batches. So the answer waits for the body's end
      // (bounded), then closes the connection.
      void reply.header('connection', 'close');
      await drained(req.raw, DRAIN_WAIT_MS);
    }
    return reply.status(status).send(body);
  });
  scope.addHook('onResponse', async (_req, reply) => {
    const s = reply.statusCode;
    m.requests.inc({ outcome: s < 300 ? 'ok' : s < 500 ? 'rejected' : 'failed' });
    m.requestSeconds.observe(reply.elapsedTime / 1000);
  });
}
