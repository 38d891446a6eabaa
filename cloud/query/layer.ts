/**
 * The serving layer's query part as the cloud runs it: a plugin that opens the view readers and
 * registers GET /api/v1/query, and a service that closes them. `server.use(layer.plugin)`,
 * `server.addService(layer)`.
 */
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge } from 'prom-client';
import { sinkKey } from '../batch/index.js';
import { INFLUX_SINK_NAME } from '../sinks/influx/index.js';
import { localDirs } from '../config.js';
import type { CloudContext, CloudService } from '../server.js';
import { ConfigInvalidError } from '../../shared/errors.js';
import { registerQueryRoute } from './route.js';
import { QueryService, type QueryHooks } from './service.js';
import { speedSourceOf, type SpeedSource } from './speed.js';
import {
  DEFAULT_INFLUX_VIEW_READER_TUNING, InfluxViewReader, ParquetViewReader, type ParquetViewReaderOptions, type ViewReader,
} from './views/index.js';

export interface QueryLayerOptions {
  /** The speed side; cloud/speed's store on cloud.db by default. */
  speed?: SpeedSource | ((ctx: CloudContext) => SpeedSource);
  hooks?: QueryHooks;
  /** Reader tuning (connections, cacheRows, memoryLimit, threads). */
  parquet?: Partial<Omit<ParquetViewReaderOptions, 'viewsDir'>>;
  influx?: Partial<typeof DEFAULT_INFLUX_VIEW_READER_TUNING>;
  /** Clock, epoch ms (provisional). */
  now?: () => number;
}

export class QueryLayer implements CloudService {
  private readers: ViewReader[] = [];
  private svc: QueryService | null = null;
  private closed = false;

  constructor(private readonly o: QueryLayerOptions = {}) {}

  /** The CloudPlugin: opens the readers, registers the route. */
  readonly plugin = async (app: FastifyInstance, ctx: CloudContext): Promise<void> => {
    const { config } = ctx;
    const viewsDir = join(ctx.dataDir, 'views');
    if (config.query.viewStore === 'influx' && !config.influx.url) {
      throw new ConfigInvalidError('query.viewStore: "influx" needs influx.url (the InfluxDB the batch views are written to)');
    }
    const compactions = (ctx.registry.getSingleMetric('braid_query_view_compactions_total') as Counter<'result'> | undefined) ?? new Counter({
      name: 'braid_query_view_compactions_total', registers: [ctx.registry], labelNames: ['result'] as const,
      help: 'Compacted copies of the hourly and daily views built for long ranges (result: built, failed; failed ones fall back to the day files)',
    });
    const series = (ctx.registry.getSingleMetric('braid_query_series_files_total') as Counter<'result'> | undefined) ?? new Counter({
      name: 'braid_query_series_files_total', registers: [ctx.registry], labelNames: ['result'] as const,
      help: 'Series files of device views (hot days, compacted copies) for device queries (result: built, failed, skipped over the byte budget; the view files answer without one)',
    });
    const seriesPending = (ctx.registry.getSingleMetric('braid_query_series_pending') as Gauge | undefined) ?? new Gauge({
      name: 'braid_query_series_pending', registers: [ctx.registry],
      help: 'Series files of the live manifest queued and not yet built',
    });
    const filesRead = (ctx.registry.getSingleMetric('braid_query_view_files_read_total') as Counter<'from'> | undefined) ?? new Counter({
      name: 'braid_query_view_files_read_total', registers: [ctx.registry], labelNames: ['from'] as const,
      help: 'View files the Parquet reader answered queries from, by where their rows came from (series: a series file, cache: rows kept from an earlier read, duckdb: read from the file)',
    });
    const compactDir = localDirs(config).compactedViews;
    const parquet = await ParquetViewReader.open({
      viewsDir,
      compactDir,
      seriesDir: join(compactDir, 'series'),
      onSeries: (e) => {
        series.inc({ result: e.result });
        seriesPending.set(e.pending);
        if (e.err) ctx.logger.warn({ err: e.err, view: e.view, version: e.version, file: e.file }, 'no series file for a view file; DuckDB reads it');
        else if (e.result === 'built') ctx.logger.info({ view: e.view, version: e.version, file: e.file, rows: e.rows, bytes: e.bytes, ms: Math.round(e.ms) }, 'series file ready for device queries');
      },
      onFilesRead: (n) => {
        if (n.series) filesRead.inc({ from: 'series' }, n.series);
        if (n.cache) filesRead.inc({ from: 'cache' }, n.cache);
        if (n.duckdb) filesRead.inc({ from: 'duckdb' }, n.duckdb);
      },
      onCompacted: (e) => {
        compactions.inc({ result: e.err ? 'failed' : 'built' });
        if (e.err) ctx.logger.warn({ err: e.err, view: e.view, version: e.version }, 'could not compact a view; its day files answer');
        else ctx.logger.info({ view: e.view, version: e.version, rows: e.rows, ms: Math.round(e.ms) }, 'view compacted for long ranges');
      },
      ...this.o.parquet,
    });
    this.readers.push(parquet);
    let views: ViewReader = parquet;
    if (config.query.viewStore === 'influx') {
      const i = config.influx;
      views = new InfluxViewReader({
        url: i.url!, database: i.database, username: i.username, password: i.password, token: i.token,
        ...DEFAULT_INFLUX_VIEW_READER_TUNING, ...this.o.influx,
        sinkState: () => ctx.store.batch.getMeta<{ version: number; pending: string[] }>(sinkKey(INFLUX_SINK_NAME)),
      });
      this.readers.push(views);
    }
    const speed = typeof this.o.speed === 'function' ? this.o.speed(ctx) : this.o.speed ?? speedSourceOf(ctx.store.speed);
    this.svc = new QueryService(
      { maxBuckets: config.query.maxBuckets, staleAfterMs: config.speed.staleAfterMs },
      { manifests: ctx.manifests, views, parquet, speed, logger: ctx.logger, registry: ctx.registry, now: this.o.now, hooks: this.o.hooks },
    );
    registerQueryRoute(app, { service: this.svc, requireRead: ctx.auth.requireRole('read') });
  };

  /** The query service, once the plugin has run. */
  get service(): QueryService {
    if (!this.svc) throw new Error('QueryLayer: the cloud has not started');
    return this.svc;
  }

  start(): void {}

  /** Close the readers; idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const r of this.readers.splice(0).reverse()) await r.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
