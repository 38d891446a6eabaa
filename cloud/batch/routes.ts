/**
 * GET /api/v1/batch (read key: a read key reads everything) and POST /api/v1/batch/run (admin key:
 * admin is for actions). The caller passes the API-key check as `auth(role)`, so these routes know
 * nothing of keys.
 */
import type { FastifyInstance, preHandlerHookHandler } from 'fastify';
import type { BatchScheduler } from './scheduler.js';

export interface BatchRouteDeps {
  scheduler: Pick<BatchScheduler, 'status' | 'runNow'>;
  /** Returns the preHandler that admits a key of `role` (401/403 otherwise). */
  auth: (role: 'read' | 'admin') => preHandlerHookHandler;
}

export function registerBatchRoutes(app: FastifyInstance, deps: BatchRouteDeps): void {
  app.get('/api/v1/batch', { preHandler: deps.auth('read') }, async () => deps.scheduler.status());

  app.post('/api/v1/batch/run', {
    preHandler: deps.auth('admin'),
    schema: {
      body: {
        anyOf: [
          { type: 'null' },
          { type: 'object', properties: { full: { type: 'boolean' } }, additionalProperties: false },
        ],
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
