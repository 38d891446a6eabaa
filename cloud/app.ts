/**
 * The whole cloud process of `braid cloud`: the server (ingest, auth, metrics) plus the batch
 * layer (node-cron schedule, run history and run-now routes, view sinks) and the speed store with
 * the registry (speed push, gateways, devices; pruned behind each published manifest), the merged
 * query and the OpenAPI document of every route.
 */
import type { Registry } from 'prom-client';
import type { Logger } from '../shared/logger.js';
import { registerAlerts } from './alerts/index.js';
import { BatchScheduler, batchOptionsFrom, registerBatchRoutes, type ViewSink } from './batch/index.js';
import type { CloudConfig } from './config.js';
import { consolePlugin } from './console/index.js';
import { QueryLayer, registerOpenApi, type QueryLayerOptions } from './query/index.js';
import { CloudServer } from './server.js';
import { closeSinks, createSinks } from './sinks/index.js';
import { SpeedService, type SpeedOptions } from './speed/index.js';

export interface CloudApp {
  server: CloudServer;
  /** Set once the server has started. */
  scheduler: () => BatchScheduler;
  speed: SpeedService;
  /** GET /api/v1/query; its service once the server has started. */
  query: QueryLayer;
}

/** The API version the OpenAPI document states (package.json's). */
export const API_VERSION = '0.1.0';

export function createCloud(config: CloudConfig, opts: { logger?: Logger; registry?: Registry; speed?: Partial<SpeedOptions>; query?: QueryLayerOptions } = {}): CloudApp {
  const server = new CloudServer(config, opts);
  // Before any route: @fastify/swagger builds the document from the routes it sees added.
  server.useFirst((app) => registerOpenApi(app, { version: API_VERSION }));
  const query = new QueryLayer(opts.query);
  server.use(query.plugin);
  server.addService(query);
  const speed = new SpeedService(opts.speed);
  server.use(speed.plugin);
  server.use(consolePlugin);
  let batch: { scheduler: BatchScheduler; sinks: ViewSink[] } | null = null;
  server.use((app, ctx) => {
    const sinks = createSinks(ctx.config, ctx.logger, ctx.registry);
    const scheduler = new BatchScheduler(batchOptionsFrom(ctx.config), {
      logger: ctx.logger.child({ component: 'batch' }), sinks, store: { batch: ctx.store.batch, views: ctx.store.views }, onPublished: (m) => speed.published(m), registry: ctx.registry,
    });
    batch = { scheduler, sinks };
    registerBatchRoutes(app, { scheduler, auth: (role) => ctx.auth.requireRole(role) });
  });
  server.addService(() => ({
    start: () => batch!.scheduler.start(),
    close: async () => {
      await batch!.scheduler.close();
      await closeSinks(batch!.sinks, server.logger);
    },
  }));
  // Closed before the batch service (reverse order): a run finishing meanwhile finds it closed and is ignored.
  server.addService(speed);
  registerAlerts(server, query); // closed first: a round in progress finishes before the query and the store close
  return {
    server,
    speed,
    query,
    scheduler: () => {
      if (!batch) throw new Error('the cloud has not started');
      return batch.scheduler;
    },
  };
}
