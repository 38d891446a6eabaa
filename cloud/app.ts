/**
 * The whole cloud process of `braid cloud`: the server (ingest, auth, metrics) plus the batch
 * layer (node-cron schedule, run history and run-now routes, view sinks).
 */
import type { Registry } from 'prom-client';
import type { Logger } from '../shared/logger.js';
import { BatchScheduler, batchOptionsFrom, registerBatchRoutes, type ViewSink } from './batch/index.js';
import type { CloudConfig } from './config.js';
import { CloudServer } from './server.js';
import { closeSinks, createSinks } from './sinks/index.js';

export interface CloudApp {
  server: CloudServer;
  /** Set once the server has started. */
  scheduler: () => BatchScheduler;
}

export function createCloud(config: CloudConfig, opts: { logger?: Logger; registry?: Registry } = {}): CloudApp {
  const server = new CloudServer(config, opts);
  let batch: { scheduler: BatchScheduler; sinks: ViewSink[] } | null = null;
  server.use((app, ctx) => {
    const sinks = createSinks(ctx.config, ctx.logger, ctx.registry);
    const scheduler = new BatchScheduler(batchOptionsFrom(ctx.config), { logger: ctx.logger.child({ component: 'batch' }), sinks, db: ctx.db.reader });
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
  return {
    server,
    scheduler: () => {
      if (!batch) throw new Error('the cloud has not started');
      return batch.scheduler;
    },
  };
}
