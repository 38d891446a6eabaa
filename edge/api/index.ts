/**
 * The gateway's local REST API (DESIGN.md, REST gateway): windows, health, Prometheus metrics.
 * fastify: route schemas validate input, errors answer `{ code, message }` with a stable code.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { errorReply } from '../../shared/http-errors.js';
import type { Logger } from '../../shared/logger.js';
import type { WindowsAnswer } from '../speed/index.js';

export interface GatewayApiDeps {
  logger: Logger;
  registry: Registry;
  windows: (device: string, metric: string) => Promise<WindowsAnswer>;
  health: () => Promise<Record<string, unknown>>;
}

export interface GatewayApiOptions {
  host: string;
  port: number;
}

const windowStats = {
  type: 'object',
  properties: {
    count: { type: 'integer' },
    avg: { type: ['number', 'null'] },
    min: { type: ['number', 'null'] },
    max: { type: ['number', 'null'] },
    stddev: { type: ['number', 'null'] },
    first: { type: ['number', 'null'] },
    last: { type: ['number', 'null'] },
    lastTs: { type: ['integer', 'null'] },
  },
} as const;

export function buildGatewayApi(deps: GatewayApiDeps): FastifyInstance {
  const app = Fastify({ loggerInstance: deps.logger.child({ component: 'api' }) as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }) });
  app.setErrorHandler((err, req, reply) => {
    const { status, body } = errorReply(err as Error);
    if (status >= 500) req.log.error({ err }, 'request failed');
    void reply.status(status).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ code: 'BRAID_ERR_NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` });
  });

  app.get('/api/v1/windows', {
    schema: {
      querystring: {
        type: 'object',
        required: ['device', 'metric'],
        properties: { device: { type: 'string', minLength: 1, maxLength: 64 }, metric: { type: 'string', minLength: 1, maxLength: 128 } },
        additionalProperties: false,
      },
      response: {
        200: {
          type: 'object',
          properties: {
            device: { type: 'string' },
            metric: { type: 'string' },
            windows: { type: 'object', properties: { '1m': windowStats, '5m': windowStats, '15m': windowStats, '1h': windowStats, '24h': windowStats } },
          },
        },
      },
    },
  }, async (req) => {
    const { device, metric } = req.query as { device: string; metric: string };
    return deps.windows(device, metric);
  });

  app.get('/api/v1/health', async () => deps.health());
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', deps.registry.contentType);
    return deps.registry.metrics();
  });
  return app;
}
