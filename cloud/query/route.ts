/**
 * GET /api/v1/query (read key): the merged answer as JSON, or as CSV for `Accept: text/csv`. The
 * key is checked on onRequest, so a stranger learns nothing about parameters (401 before 400).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errorReply } from '../../shared/http-errors.js';
import { AGGS } from '../../shared/summary.js';
import { bodyOf, bucketsCsvParts, pointsJsonParts } from './merge.js';
import type { QueryParams } from './params.js';
import type { MergedAnswer, QueryService } from './service.js';

export const QUERY_PATH = '/api/v1/query';

export interface QueryRouteDeps {
  service: QueryService;
  /** The read-key hook (Authenticator.requireRole('read')). */
  requireRead: (req: FastifyRequest, reply: FastifyReply) => Promise<void>;
}

/** `{code, message}`: every error answer of the cloud (shared/http-errors.ts). */
export const ERROR_SCHEMA = {
  type: 'object',
  required: ['code', 'message'],
  properties: { code: { type: 'string', description: 'Stable error code, e.g. BRAID_ERR_BAD_REQUEST' }, message: { type: 'string' } },
} as const;

const QUERYSTRING_SCHEMA = {
  type: 'object',
  required: ['metric', 'from', 'to'],
  properties: {
    metric: { type: 'string', minLength: 1, maxLength: 256, description: 'The metric, e.g. temp' },
    device: { type: 'string', minLength: 1, maxLength: 256, description: 'One device (not with gateway); neither is the fleet' },
    gateway: { type: 'string', minLength: 1, maxLength: 256, description: 'One gateway (not with device); neither is the fleet' },
    from: { type: 'string', description: 'Start, inclusive: epoch ms or ISO 8601 with a zone; rounded down to the step' },
    to: { type: 'string', description: 'End, exclusive: epoch ms or ISO 8601 with a zone; rounded up to the step' },
    step: {
      type: 'string', default: '1h', pattern: '^\\s*\\d+(ms|s|m|h|d|w)\\s*$',
      description: 'Bucket width (1m, 5m, 1h, 1d, ...): a whole number of minutes, for a device, a gateway or the fleet',
    },
    agg: { type: 'string', enum: [...AGGS], default: 'avg', description: 'stddev is the population one' },
  },
} as const;

const POINT_SCHEMA = {
  type: 'object',
  required: ['t', 'value', 'count', 'batch', 'speed', 'provisional'],
  properties: {
    t: { type: 'string', format: 'date-time', description: 'Bucket start, UTC' },
    value: { type: ['number', 'null'], description: 'The aggregate over the bucket' },
    count: { type: 'integer', description: 'Readings in the bucket' },
    batch: { type: 'integer', description: 'Readings from the batch views' },
    speed: { type: 'integer', description: 'Readings from the speed partials (epochs above E)' },
    provisional: { type: 'boolean', description: 'The speed part holds a partial of a gateway not heard from within speed.staleAfterMs' },
  },
} as const;

export const QUERY_ANSWER_SCHEMA = {
  type: 'object',
  required: ['metric', 'scope', 'step', 'agg', 'manifest', 'points'],
  properties: {
    metric: { type: 'string' },
    scope: {
      type: 'object', description: '{"device": D}, {"gateway": G} or {"fleet": true}',
      properties: { device: { type: 'string' }, gateway: { type: 'string' }, fleet: { type: 'boolean' } },
    },
    step: { type: 'string' },
    agg: { type: 'string', enum: [...AGGS] },
    manifest: {
      type: 'object', required: ['version', 'watermark'],
      description: 'The batch views used: version 0 and an empty watermark before the first batch run',
      properties: { version: { type: 'integer' }, watermark: { type: 'object', additionalProperties: { type: 'integer' } } },
    },
    points: { type: 'array', items: POINT_SCHEMA },
    degraded: {
      type: 'string',
      description: 'Present only when part of the answer could not be read: the speed store was out of reach (cluster mode, PostgreSQL down), '
        + 'so the points hold the batch views alone, exact up to the manifest\'s watermark, and newer readings are missing. CSV answers carry it in an X-Braid-Degraded header',
    },
  },
} as const;

/**
 * Whether the client asked for CSV: `text/csv` named with a q above 0 and above that of
 * application/json (wildcards alone never pick CSV).
 */
export function wantsCsv(accept: string | undefined): boolean {
  if (!accept) return false;
  let csv = -1;
  let json = -1;
  for (const part of accept.split(',')) {
    const [type, ...params] = part.trim().toLowerCase().split(';');
    const qParam = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    const q = qParam ? Number(qParam.slice(2)) : 1;
    if (type.trim() === 'text/csv') csv = Math.max(csv, Number.isFinite(q) ? q : 0);
    if (type.trim() === 'application/json') json = Math.max(json, Number.isFinite(q) ? q : 0);
  }
  return csv > 0 && csv > json;
}

/**
 * The JSON of an answer, written straight from its merged buckets: the text JSON.stringify gives
 * for query()'s answer (keys in QUERY_ANSWER_SCHEMA's order), without a Point object per bucket and
 * without a second walk by the schema's serializer; as UTF-8, built from parts that each stay out
 * of V8's large-object space (merge.ts PART_BUCKETS).
 */
export function answerJson(a: MergedAnswer): Buffer {
  const head = `{"metric":${JSON.stringify(a.metric)},"scope":${JSON.stringify(a.scope)},"step":${JSON.stringify(a.step)},"agg":${JSON.stringify(a.agg)},`
    + `"manifest":${JSON.stringify({ version: a.manifest.version, watermark: a.manifest.watermark })},"points":`;
  return bodyOf(head, pointsJsonParts(a.buckets, a.agg), `${a.degraded === undefined ? '' : `,"degraded":${JSON.stringify(a.degraded)}`}}`);
}

export function registerQueryRoute(app: FastifyInstance, deps: QueryRouteDeps): void {
  app.get(QUERY_PATH, {
    onRequest: deps.requireRead,
    // Before the error handler answers: the status and code it will answer with (schema refusals too).
    onError: async (_req, _reply, err) => {
      const { status, body } = errorReply(err);
      deps.service.refused(status, body.code);
    },
    schema: {
      summary: 'The merged answer: batch views ⊕ speed partials, per bucket',
      operationId: 'query',
      description: 'Buckets start at multiples of step since the Unix epoch (UTC); buckets with no reading are left out. '
        + 'Accept: text/csv gives t,value,count,batch,speed,provisional rows with a header.',
      tags: ['query'],
      querystring: QUERYSTRING_SCHEMA,
      response: {
        200: {
          description: 'The answer (JSON, or CSV for Accept: text/csv)',
          content: {
            'application/json': { schema: QUERY_ANSWER_SCHEMA },
            'text/csv': { schema: { type: 'string', description: 't,value,count,batch,speed,provisional, with a header' } },
          },
        },
        400: { description: 'BRAID_ERR_BAD_REQUEST: the message names the parameter', ...ERROR_SCHEMA },
        401: { description: 'No or unknown key', ...ERROR_SCHEMA },
        403: { description: 'Not a read or admin key', ...ERROR_SCHEMA },
        409: {
          description: 'BRAID_ERR_VIEW_NOT_PUBLISHED: the step needs a view (gateway_1m, fleet_1m) that the live manifest, '
            + 'written by an earlier version, lacks; the next batch run publishes it',
          ...ERROR_SCHEMA,
        },
      },
    },
  }, async (req, reply) => {
    const answer = await deps.service.merged(req.query as QueryParams);
    if (answer.degraded) void reply.header('x-braid-degraded', 'speed-store-unreachable');
    if (wantsCsv(req.headers.accept)) {
      void reply.header('content-type', 'text/csv; charset=utf-8');
      return bodyOf('', bucketsCsvParts(answer.buckets, answer.agg), '');
    }
    // A buffer with a JSON content type is sent as it is: the schema's serializer does not run again.
    void reply.header('content-type', 'application/json; charset=utf-8');
    return answerJson(answer);
  });
}
