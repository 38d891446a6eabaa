/**
 * POST /api/v1/ingest (docs/ingest-protocol.md): gateway token first (a stranger's body is not
 * even read), then the body within its limits, full validation, the token's gateway must be the
 * body's, then the group commit; 200 `{ackSeq, stored, duplicates}` once durable [INV-1]. Every
 * refusal is counted by code in braid_ingest_rejected_total [INV-5].
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AUTH_ERRORS, errorResponses } from '../api/responses.js';
import { ERROR_SCHEMA } from '../query/route.js';
import { MAX_LISTED_SKIPS } from './errors.js';
import { requireOwnGateway } from './body.js';
import { parseIngestBody } from './fast-body.js';
import { prepareGatewayScope } from './gateway-scope.js';
import type { IngestService } from './service.js';

export const INGEST_PATH = '/api/v1/ingest';

/** The 409: `{code, message}`, and for a seq skip what the gateway needs to record a loss (IngestSeqSkipError). */
const SEQ_SKIP_SCHEMA = {
  description: 'BRAID_ERR_INGEST_SEQ_SKIP: the batch skips seqs the cloud has not stored, with no gap record for them; '
    + 'BRAID_ERR_INGEST_EPOCH_CONFLICT: an epoch record contradicts the stored one. The message names them; nothing was stored',
  type: 'object',
  required: ['code', 'message'],
  properties: {
    ...ERROR_SCHEMA.properties,
    heldSeq: { type: 'integer', description: 'BRAID_ERR_INGEST_SEQ_SKIP only: the highest seq of the gateway the cloud holds' },
    missing: {
      type: 'array',
      description: `BRAID_ERR_INGEST_SEQ_SKIP only: the skipped seqs, ascending, at most ${MAX_LISTED_SKIPS} ranges (the lowest). `
        + 'Those at or below the seq the cloud acknowledged to the gateway were lost by the cloud (a restore): the gateway records them as a cloud_lost gap record',
      items: { type: 'object', required: ['fromSeq', 'toSeq'], properties: { fromSeq: { type: 'integer' }, toSeq: { type: 'integer' } } },
    },
    missingCount: { type: 'integer', description: 'BRAID_ERR_INGEST_SEQ_SKIP only: how many seqs are skipped in all' },
  },
} as const;

/** Records per request (epochs, gaps); the gateway sends at most 10k of each. */
const MAX_RECORDS = 100_000;

export interface IngestRouteDeps {
  ingest: IngestService;
  /** The gateway-token hook (Authenticator.requireRole('gateway')). */
  requireGateway: (req: FastifyRequest, reply: FastifyReply) => Promise<void>;
}

/** Register the route in its own encapsulated scope (its body parser and error counting stay there). */
export async function registerIngestRoute(app: FastifyInstance, deps: IngestRouteDeps): Promise<void> {
  const { ingest } = deps;
  const o = ingest.options;
  const m = ingest.metrics;
  await app.register(async (scope) => {
    prepareGatewayScope(scope, o, m, 'ingest request');

    scope.post(INGEST_PATH, {
      onRequest: deps.requireGateway,
      schema: {
        summary: 'Store a batch of a gateway\'s outbox in the master dataset (gateway token)',
        description: 'The body (JSON, optionally gzip) is docs/ingest-protocol.md\'s: readings, closed epochs and gap records of one gateway. '
          + 'Answered 200 once durable; idempotent on (gateway, seq).',
        operationId: 'ingest',
        tags: ['gateway'],
        response: {
          200: {
            description: 'Durable: every seq <= ackSeq that the request carried is in the master dataset',
            type: 'object',
            properties: {
              ackSeq: { type: 'integer' }, stored: { type: 'integer' }, duplicates: { type: 'integer' },
              warnings: {
                type: 'array',
                description: 'Only when there is one. BRAID_WARN_FUTURE_TS: readings stamped more than ingest.maxFutureMs after the cloud\'s clock (stored and counted)',
                items: { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' }, count: { type: 'integer' } } },
              },
            },
          },
          ...errorResponses({
            400: 'BRAID_ERR_BAD_REQUEST: a malformed body; the message names the field and row',
            ...AUTH_ERRORS.gateway,
            413: 'BRAID_ERR_PAYLOAD_TOO_LARGE: the body, inflated body or readings are over a limit; send smaller batches',
            415: 'BRAID_ERR_UNSUPPORTED_ENCODING: a Content-Encoding other than gzip or identity',
            429: 'BRAID_ERR_LIMIT_EXCEEDED: the ingest queue is full; retry after Retry-After',
            503: 'BRAID_ERR_INGEST_UNAVAILABLE or BRAID_ERR_CLOSED: not stored; retry',
          }),
          409: SEQ_SKIP_SCHEMA,
        },
      },
    }, async (req, reply) => {
      // When the request arrived (fastify's clock starts at onRequest): the clock sample's receive time.
      const receivedAt = Date.now() - reply.elapsedTime;
      // Straight into columns, or JSON.parse + validation for anything but the usual shape; with
      // the readings' own bytes for the staging line when they hold no newline.
      const batch = parseIngestBody(req.body as Buffer | undefined, { maxReadings: o.maxReadingsPerRequest, maxRecords: MAX_RECORDS });
      requireOwnGateway(req.principal, batch.gateway);
      ingest.clocks.sample(batch.gateway, batch.sentAt, receivedAt);
      return ingest.submit(batch);
    });
  });
}
