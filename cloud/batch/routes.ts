/**
 * GET /api/v1/batch (read key: a read key reads everything) and POST /api/v1/batch/run (admin key:
 * admin is for actions). The caller passes the API-key check as `auth(role)`, so these routes know
 * nothing of keys.
 */
import type { FastifyInstance, preHandlerHookHandler } from 'fastify';
import { AUTH_ERRORS, errorResponses } from '../api/responses.js';
import type { BatchScheduler } from './scheduler.js';

export interface BatchRouteDeps {
  scheduler: Pick<BatchScheduler, 'status' | 'runNow'>;
  /** Returns the preHandler that admits a key of `role` (401/403 otherwise). */
  auth: (role: 'read' | 'admin') => preHandlerHookHandler;
}

export function registerBatchRoutes(app: FastifyInstance, deps: BatchRouteDeps): void {
  app.get('/api/v1/batch', {
    preHandler: deps.auth('read'),
    schema: {
      summary: 'Batch runs: the live manifest, the run in progress, the history (read key)',
      operationId: 'getBatchStatus',
      tags: ['batch'],
      response: {
        200: { description: 'The batch layer\'s status', type: 'object', additionalProperties: true },
        ...errorResponses(AUTH_ERRORS.read),
      },
    },
  }, async () => deps.scheduler.status());

  app.post('/api/v1/batch/run', {
    preHandler: deps.auth('admin'),
    schema: {
      summary: 'Start a batch run now (admin key)',
      operationId: 'runBatch',
      tags: ['batch'],
      body: {
        anyOf: [
          { type: 'null' },
          { type: 'object', properties: { full: { type: 'boolean' } }, additionalProperties: false },
        ],
      },
      response: {
        202: {
          description: 'Started; follow it at GET /api/v1/batch',
          type: 'object',
          properties: { id: { type: 'integer' }, kind: { type: 'string' }, trigger: { type: 'string' }, startedAt: { type: 'string' }, status: { type: 'string' } },
        },
        ...errorResponses({
          400: 'BRAID_ERR_BAD_REQUEST: a body other than {} or {"full": true|false}',
          ...AUTH_ERRORS.admin,
          409: 'BRAID_ERR_BATCH_RUNNING: a run is in progress (in this or another process)',
        }),
      },
    },
  }, async (req, reply) => {
    const body = (req.body ?? {}) as { full?: boolean };
    // Rejects with BatchRunningError: statusCode 409, code BRAID_ERR_BATCH_RUNNING.
    const run = await deps.scheduler.runNow('api', { full: body.full === true });
    reply.code(202);
    return { id: run.id, kind: run.kind, trigger: run.trigger, startedAt: new Date(run.startedAt).toISOString(), status: '/api/v1/batch' };
  });
}
