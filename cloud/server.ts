/**
 * The cloud process: the store (cloud.db, or PostgreSQL in cluster mode: cloud/store/cloud-store.ts),
 * ingest (staging + sealing), the HTTP server (ingest, health, metrics, and whatever route plugins
 * are given), and long-running services (batch cron, speed store...). Every service is built from
 * the one CloudStore, so a node on PostgreSQL and the embedded cloud run the same code. Start
 * order: store, live manifest, ingest, routes, services, listen. Close order is the reverse: stop
 * listening (in-flight requests finish), services, ingest (commits what is queued, seals the open
 * segment), store.
 */
import { mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { errorReply } from '../shared/http-errors.js';
import { type Logger, nullLogger } from '../shared/logger.js';
import type { Db, WriteQueue } from '../shared/sqlite.js';
import { Authenticator } from './api/auth.js';
import { AUTH_ERRORS, errorResponses } from './api/responses.js';
import { registerWhoamiRoute } from './api/whoami.js';
import type { CloudConfig } from './config.js';
import { type IngestOptions, IngestService, registerIngestRoute } from './ingest/index.js';
import { FileManifestSource, type ManifestSource, PointerManifestSource } from './query/manifest.js';
import { LiveManifest, type LiveViewSource } from './speed/live-manifest.js';
import { type CloudStore, openCloudStore, redactStoreUrl } from './store/cloud-store.js';
import { StoreHealth } from './store/health.js';

/** What a route plugin or a service gets to work with. */
export interface CloudContext {
  config: CloudConfig;
  logger: Logger;
  registry: Registry;
  dataDir: string;
  /** The cloud's transactional state: every service reads and writes through it. */
  store: CloudStore;
  /**
   * cloud.db's connections, SQLite store only (tests and tools that read it directly): `writes`
   * serialises writes on one connection (transactions), `reader` is for reads. Throws on PostgreSQL.
   */
  readonly db: { writes: WriteQueue; reader: Db };
  /** The live manifest a query reads (once per query). */
  manifests: ManifestSource;
  /** The live manifest as the speed store needs it (E, version, since when it is live). */
  liveViews: LiveViewSource;
  /** Whether the store answers (braid_store_up, GET /healthz). */
  storeHealth: StoreHealth;
  auth: Authenticator;
  ingest: IngestService;
}

/** Registers routes on the cloud's fastify instance (use ctx.auth.requireRole for auth). */
export type CloudPlugin = (app: FastifyInstance, ctx: CloudContext) => void | Promise<void>;

/** A long-running part: started after ingest and the routes, closed before ingest. */
export interface CloudService {
  start(): Promise<void> | void;
  close(): Promise<void>;
}

export interface CloudServerOptions {
  /** Root logger; none means silent. */
  logger?: Logger;
  /** Metrics registry; a new one by default. */
  registry?: Registry;
  plugins?: CloudPlugin[];
  /** Services, or factories that build one from the context once the database is open. */
  services?: Array<CloudService | ((ctx: CloudContext) => CloudService)>;
  /** Overrides of the ingest options the config does not carry (maxQueuedReadings, orphanScanMs). */
  ingest?: Partial<IngestOptions>;
}

export interface CloudAddress {
  port: number;
  /** Base URL a client on this machine can use (loopback for a wildcard bind). */
  url: string;
}

export class CloudServer {
  readonly config: CloudConfig;
  readonly logger: Logger;
  private readonly log: Logger;
  readonly registry: Registry;
  private readonly opts: CloudServerOptions;
  private readonly plugins: CloudPlugin[];
  /** Plugins that must see every route (onRoute hooks: the OpenAPI document), run before any route. */
  private readonly firstPlugins: CloudPlugin[] = [];
  private readonly serviceSpecs: Array<CloudService | ((ctx: CloudContext) => CloudService)>;
  private services: CloudService[] = [];
  private store: CloudStore | null = null;
  private pointer: PointerManifestSource | null = null;
  private health: StoreHealth | null = null;
  private app: FastifyInstance | null = null;
  private context: CloudContext | null = null;
  private started: Promise<CloudAddress> | null = null;
  /** start()'s own work, without its clean-up on failure (close() waits for this one). */
  private attempt: Promise<CloudAddress> | null = null;
  private closing: Promise<void> | null = null;
  address: CloudAddress | null = null;

  constructor(config: CloudConfig, options: CloudServerOptions = {}) {
    this.config = config;
    this.opts = options;
    this.logger = options.logger ?? nullLogger();
    this.log = this.logger.child({ component: 'server' });
    this.registry = options.registry ?? new Registry();
    if (!options.registry) collectDefaultMetrics({ register: this.registry });
    this.plugins = [...(options.plugins ?? [])];
    this.serviceSpecs = [...(options.services ?? [])];
  }

  /** Add a route plugin (before start). */
  use(plugin: CloudPlugin): this {
    if (this.started) throw new Error('CloudServer.use() after start()');
    this.plugins.push(plugin);
    return this;
  }

  /**
   * Add a plugin that runs before any route is added (before start): one whose onRoute hook must
   * see every route, as @fastify/swagger's does to build the OpenAPI document.
   */
  useFirst(plugin: CloudPlugin): this {
    if (this.started) throw new Error('CloudServer.useFirst() after start()');
    this.firstPlugins.push(plugin);
    return this;
  }

  /** Add a service (before start). */
  addService(service: CloudService | ((ctx: CloudContext) => CloudService)): this {
    if (this.started) throw new Error('CloudServer.addService() after start()');
    this.serviceSpecs.push(service);
    return this;
  }

  /** Everything a plugin or service gets; available once start() has resolved. */
  get ctx(): CloudContext {
    if (!this.context) throw new Error('CloudServer not started');
    return this.context;
  }

  get ingest(): IngestService {
    return this.ctx.ingest;
  }

  start(): Promise<CloudAddress> {
    if (this.closing) return Promise.reject(new Error('CloudServer is closed'));
    if (!this.started) {
      const attempt = this.doStart();
      this.started = attempt;
      this.started = attempt.catch(async (err) => {
        await this.close().catch(() => undefined);
        throw err;
      });
      this.attempt = attempt;
    }
    return this.started;
  }

  private async doStart(): Promise<CloudAddress> {
    const c = this.config;
    // 0750: master/ and views/ are for the operator's group too (DuckDB, Spark); cloud.db is 0600 and staging/ 0700.
    mkdirSync(c.dataDir, { recursive: true, mode: 0o750 });
    const store = await openCloudStore(c.store.url, c.dataDir, {
      logger: this.logger.child({ component: 'store' }), poolMax: c.store.poolMax, statementTimeoutMs: c.store.statementTimeoutMs,
    });
    this.store = store;
    const viewsDir = join(c.dataDir, 'views');
    let manifests: ManifestSource;
    let liveViews: LiveViewSource;
    if (store.kind === 'postgres') {
      // Cluster mode: the pointer in the store is the truth; manifest.json is for outside readers.
      const pointer = new PointerManifestSource(store.views, this.logger.child({ component: 'manifest' }));
      this.pointer = pointer;
      await pointer.start();
      manifests = pointer;
      liveViews = pointer;
    } else {
      manifests = new FileManifestSource(viewsDir);
      liveViews = new LiveManifest(viewsDir, this.logger.child({ component: 'speed' }));
    }
    this.health = new StoreHealth(store, this.registry, this.logger.child({ component: 'store' }));
    this.health.start();
    // Cluster mode: the staging dir is owned by a lease in the store, which also carries the
    // manifest version this node serves (the speed prune waits for every node).
    const ingest = new IngestService({
      dataDir: c.dataDir, store: store.ingest, logger: this.logger, registry: this.registry,
      nodes: store.nodes, leaseMs: c.store.leaseMs, servedVersion: () => this.pointer?.servedVersion ?? null,
    }, { ...c.ingest, ...this.opts.ingest });
    const auth = new Authenticator(store.credentials);
    const sqlite = store.sqlite;
    this.context = {
      config: c, logger: this.logger, registry: this.registry, dataDir: c.dataDir, store, manifests, liveViews, storeHealth: this.health, auth, ingest,
      get db() {
        if (!sqlite) throw new Error('cloud.db is not open: this cloud runs on the PostgreSQL store (use ctx.store)');
        return sqlite;
      },
    };
    await ingest.start();

    const app = Fastify({
      loggerInstance: this.logger.child({ component: 'http' }) as FastifyBaseLogger,
      logController: new LogController({ disableRequestLogging: true }),
      // A gateway's request carries up to maxBodyBytes; give slow links time, not forever.
      requestTimeout: 120_000,
    });
    this.app = app;
    app.setErrorHandler((err, req, reply) => {
      const { status, body } = errorReply(err as Error);
      if (status >= 500) req.log.error({ err }, 'request failed');
      if (status === 429 || status === 503) void reply.header('retry-after', '1');
      void reply.status(status).send(body);
    });
    app.setNotFoundHandler((req, reply) => {
      void reply.status(404).send({ code: 'BRAID_ERR_NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` });
    });
    for (const plugin of this.firstPlugins) await plugin(app, this.context);
    app.get('/healthz', {
      schema: {
        summary: 'Liveness: ok while the process serves (no auth)', operationId: 'getHealthz', tags: ['meta'],
        response: { 200: {
          description: 'The process serves requests. `store` says whether its store answered the last probe: while it is unreachable ingest answers 503 and queries are flagged `degraded`; the process stays up and resumes by itself',
          type: 'object', properties: { status: { type: 'string', enum: ['ok'] }, store: { type: 'string', enum: ['up', 'unreachable'] } },
        } },
      },
    }, async () => ({ status: 'ok', store: this.health!.up ? 'up' : 'unreachable' }));
    // Counters name gateways and devices: a read key, like the rest of the API (Prometheus sends it
    // with `authorization: {credentials: ...}` in its scrape config).
    app.get('/metrics', {
      preHandler: auth.requireRole('read'),
      schema: {
        summary: 'Prometheus metrics of this cloud process (read key)', operationId: 'getMetrics', tags: ['meta'],
        response: {
          200: { description: 'Prometheus text exposition format', content: { 'text/plain': { schema: { type: 'string' } } } },
          ...errorResponses(AUTH_ERRORS.read),
        },
      },
    }, async (_req, reply) => {
      void reply.header('content-type', this.registry.contentType);
      return this.registry.metrics();
    });
    registerWhoamiRoute(app, { authenticate: auth.authenticate() });
    await registerIngestRoute(app, { ingest, requireGateway: auth.requireRole('gateway') });
    for (const plugin of this.plugins) await plugin(app, this.context);

    for (const spec of this.serviceSpecs) {
      const s = typeof spec === 'function' ? spec(this.context) : spec;
      this.services.push(s);
      await s.start();
    }

    await app.listen({ host: c.http.host, port: c.http.port });
    const port = (app.server.address() as AddressInfo).port;
    const host = c.http.host === '0.0.0.0' || c.http.host === '::' ? '127.0.0.1' : c.http.host;
    this.address = { port, url: `http://${host.includes(':') ? `[${host}]` : host}:${port}` };
    this.log.info({ ...this.address, dataDir: c.dataDir, store: store.kind === 'postgres' ? redactStoreUrl(c.store.url) : 'sqlite', node: ingest.nodeId }, 'cloud started');
    return this.address;
  }

  /** Stop serving, close services, commit and seal what ingest holds, close cloud.db. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    // Let start() finish (or fail) first: closing half-built parts under it would race.
    if (this.attempt) await this.attempt.catch(() => undefined);
    const step = async (name: string, fn: () => Promise<unknown> | undefined) => {
      try { await fn(); } catch (err) { this.log.error({ err }, `closing ${name} failed`); }
    };
    // A stop must not wait for clients' keep-alive connections: node's server.close() closes the
    // idle ones once, but one busy at that moment (a gateway's ingest request) stays open after its
    // answer until keepAliveTimeout (72 s in fastify) unless its client sends again, so a stopped
    // node hung that long (found by test/cloud/cluster-faults.test.ts's rolling restart). Close
    // connections as they go idle while stopping; in-flight requests still get their answer.
    const idle = setInterval(() => this.app?.server.closeIdleConnections(), 100);
    idle.unref();
    await step('http', () => this.app?.close());
    clearInterval(idle);
    for (const s of [...this.services].reverse()) await step('service', () => s.close());
    await step('ingest', () => this.context?.ingest.close());
    await step('store', async () => {
      this.health?.stop();
      this.pointer?.stop();
      await this.store?.close();
    });
    this.log.info('cloud stopped');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
