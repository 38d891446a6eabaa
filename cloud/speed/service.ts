/**
 * The speed store and registry inside the cloud: POST /api/v1/speed, GET /api/v1/gateways and
 * /api/v1/devices, and the prune that follows the live manifest. A plugin (routes) and a service
 * (the prune loop) of CloudServer; `published(manifest)` is the batch scheduler's hook.
 *
 * Pushes that arrive while a transaction runs share the next one (group commit): one fsync for
 * many gateways.
 */
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { ClosedError, LimitExceededError } from '../../shared/errors.js';
import { type Logger, nullLogger } from '../../shared/logger.js';
import { GatewayRules } from '../alerts/gateway-rules.js';
import type { Manifest } from '../batch/index.js';
import type { CloudConfig } from '../config.js';
import type { CloudContext, CloudService } from '../server.js';
import type { RegistryStore, SpeedPushResult, SpeedStore } from '../store/speed.js';
import { SpeedUnavailableError } from './errors.js';
import type { LiveViewSource } from './live-manifest.js';
import { type SpeedMetrics, createSpeedMetrics } from './metrics.js';
import { registerRegistryRoutes } from './registry.js';
import { type SpeedAnswer, registerSpeedRoute } from './route.js';
import { epochOf } from './store.js';
import type { SpeedPush } from './validate.js';

export interface SpeedOptions {
  /** A gateway whose last push is older than this is offline, its speed parts provisional, in ms (config `speed.staleAfterMs`). */
  staleAfterMs: number;
  /** Most partials in one push; more is 413 (config `speed.maxPartialsPerRequest`). */
  maxPartialsPerRequest: number;
  /** Most entries in a push's `devices`; more is 413. */
  maxDevicesPerRequest: number;
  /** Largest health document in a push, as JSON, in bytes; larger is 413. */
  maxHealthBytes: number;
  /** Pushes waiting for the store before new ones are refused with 429 (the gateway backs off). */
  maxQueuedPushes: number;
  /**
   * How long a manifest must have been live before the partials it covers are pruned, in ms: a
   * query that read the previous manifest (and its smaller E) still finds them meanwhile.
   */
  pruneGraceMs: number;
  /** How often the live manifest is looked at for a prune, in ms (a run in another process, `braid batch run`, has no hook). */
  manifestPollMs: number;
  /** Partials deleted per transaction when pruning. */
  pruneChunkRows: number;
}

export const DEFAULT_SPEED_OPTIONS: SpeedOptions = {
  staleAfterMs: 15_000, // 15 s
  maxPartialsPerRequest: 100_000,
  maxDevicesPerRequest: 100_000,
  maxHealthBytes: 256 * 1024, // 256 KiB
  maxQueuedPushes: 1_000,
  pruneGraceMs: 60_000, // 1 minute
  manifestPollMs: 1_000, // 1 s
  pruneChunkRows: 5_000,
};

/** The options from the cloud config (speed.*), then `overrides`. */
export function speedOptionsFrom(config: Pick<CloudConfig, 'speed'>, overrides: Partial<SpeedOptions> = {}): SpeedOptions {
  return { ...DEFAULT_SPEED_OPTIONS, staleAfterMs: config.speed.staleAfterMs, maxPartialsPerRequest: config.speed.maxPartialsPerRequest, ...overrides };
}

interface Pending { push: SpeedPush; resolve: (r: SpeedPushResult) => void; reject: (err: unknown) => void }

/** The store the service writes and reads: the cloud's (ctx.store.speed) unless given. */
export type SpeedStoreFactory = (ctx: CloudContext) => SpeedStore & RegistryStore;

export class SpeedService implements CloudService {
  private readonly overrides: Partial<SpeedOptions>;
  private readonly now: () => number;
  private readonly storeFactory: SpeedStoreFactory;
  private store: (SpeedStore & RegistryStore) | null = null;
  private o: SpeedOptions = DEFAULT_SPEED_OPTIONS;
  private ctx: CloudContext | null = null;
  private log: Logger = nullLogger();
  private metrics: SpeedMetrics | null = null;
  private live: LiveViewSource | null = null;
  private gatewayRules: GatewayRules | null = null;

  private queue: Pending[] = [];
  private scheduled = false;
  /** The group commit in progress (one at a time; pushes arriving meanwhile form the next group). */
  private flushing: Promise<void> = Promise.resolve();
  private closed = false;
  private timer: NodeJS.Timeout | null = null;
  private pruneChain: Promise<void> = Promise.resolve();
  /** Version of the manifest whose E was last pruned to. */
  private prunedVersion: number | null = null;

  constructor(overrides: Partial<SpeedOptions> = {}, now: () => number = Date.now, store: SpeedStoreFactory = (ctx) => ctx.store.speed) {
    this.overrides = overrides;
    this.now = now;
    this.storeFactory = store;
  }

  /** The CloudPlugin: routes. Call as `server.use(speed.plugin)`. */
  readonly plugin = async (app: FastifyInstance, ctx: CloudContext): Promise<void> => {
    this.ctx = ctx;
    const store = this.storeFactory(ctx);
    this.store = store;
    this.o = speedOptionsFrom(ctx.config, this.overrides);
    this.log = ctx.logger.child({ component: 'speed' });
    const live = ctx.liveViews;
    this.live = live;
    this.gatewayRules = new GatewayRules(() => ctx.store.alerts, 1_000, this.now);
    this.metrics = createSpeedMetrics(ctx.registry, {
      views: async () => {
        const v = await live.get();
        return v ? { version: v.version, createdAt: v.createdAt } : null;
      },
      lastContact: () => store.registeredLastContact(),
      now: this.now,
    });
    const ing = ctx.config.ingest;
    await registerSpeedRoute(app, {
      metrics: this.metrics,
      limits: {
        maxPartials: this.o.maxPartialsPerRequest, maxDevices: this.o.maxDevicesPerRequest, maxHealthBytes: this.o.maxHealthBytes,
        maxBodyBytes: ing.maxBodyBytes, maxInflatedBytes: ing.maxInflatedBytes,
      },
      requireGateway: ctx.auth.requireRole('gateway'),
      submit: (push) => this.submit(push),
      clocks: ctx.ingest.clocks,
    });
    registerRegistryRoutes(app, {
      registry: store, live: this.live, staleAfterMs: this.o.staleAfterMs, read: ctx.auth.requireRole('read'), now: this.now,
      rejected: this.metrics.registryRejected,
    });
  };

  /** Prune behind the live manifest now (start-up), then every manifestPollMs. */
  start(): void {
    if (!this.ctx) throw new Error('SpeedService.start() before its plugin was registered');
    if (this.closed) throw new ClosedError('speed service is closed');
    const loop = async () => {
      await this.prune();
      if (!this.closed) this.timer = setTimeout(loop, this.o.manifestPollMs);
    };
    void loop();
  }

  /** The batch scheduler published `manifest`: prune now if the grace allows, else the poll will. */
  published(manifest: Manifest): void {
    if (this.closed || !this.ctx) return;
    this.log.debug({ version: manifest.version }, 'manifest published');
    void this.prune();
  }

  /**
   * Prune the partials the live manifest covers, if it has been live for pruneGraceMs and was not
   * pruned to yet. Resolves with how many were deleted. Runs one at a time; never rejects.
   */
  prune(): Promise<number> {
    const run = this.pruneChain.then(() => this.pruneOnce());
    this.pruneChain = run.then(() => undefined);
    return run;
  }

  private async pruneOnce(): Promise<number> {
    if (this.closed) return 0;
    try {
      const view = await this.live!.get();
      if (!view || view.version === this.prunedVersion) return 0;
      if (this.now() - view.liveSince < this.o.pruneGraceMs) return 0;
      // Cluster mode: another node may still serve an older manifest (it hears of a publication
      // within a second, and reports what it serves with its lease). Its queries read partials of
      // epochs above the older E, so prune only once every live node serves this version or a later one.
      const behind = await this.nodesBehind(view.version);
      if (behind.length > 0) {
        this.log.debug({ version: view.version, behind }, 'speed prune waits for every node to serve the manifest');
        return 0;
      }
      // [INV-3] only a live manifest's E: its views hold every reading of the epochs removed here.
      const deleted = await this.store!.prune(view.watermark, this.o.pruneChunkRows);
      this.prunedVersion = view.version;
      this.metrics!.pruned.inc(deleted);
      if (deleted) this.log.info({ version: view.version, deleted }, 'speed partials pruned behind the live views');
      return deleted;
    } catch (err) {
      this.log.error({ err }, 'speed prune failed; retrying at the next poll');
      return 0;
    }
  }

  /** Live nodes (cluster mode) that serve a manifest older than `version`, or none yet; [] on SQLite. */
  private async nodesBehind(version: number): Promise<string[]> {
    const nodes = this.ctx?.store.nodes;
    if (!nodes) return [];
    return (await nodes.live()).filter((n) => n.servedVersion === null || n.servedVersion < version).map((n) => n.node);
  }

  /** Stop the prune loop and wait for a prune in progress; pushes still queued are stored first. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.pruneChain;
    await this.flushing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Store a validated push (group commit) and answer with E[g] of the live manifest. */
  async submit(push: SpeedPush): Promise<SpeedAnswer> {
    if (this.queue.length >= this.o.maxQueuedPushes) {
      throw new LimitExceededError(`${this.queue.length} speed pushes wait for the store, at the limit of ${this.o.maxQueuedPushes}`);
    }
    const result = await new Promise<SpeedPushResult>((resolve, reject) => {
      this.queue.push({ push, resolve, reject });
      if (!this.scheduled) this.flush();
    });
    this.metrics!.stored.inc(result.stored);
    if (result.stale) this.metrics!.stale.inc(result.stale);
    // Read after the commit: the gateway may drop what this E covers, and these rows are stored.
    const view = await this.live!.get();
    const answer: SpeedAnswer = { watermark: view ? epochOf(view.watermark, push.gateway) : 0, manifestVersion: view?.version ?? null, stored: result.stored };
    if (push.alertRules !== undefined) {
      try {
        answer.alertRules = await this.gatewayRules!.answer(push.alertRules);
      } catch (err) {
        // The push is stored: answer it without rules (the gateway keeps its own and asks again next push).
        this.log.warn({ err }, 'could not read the alert rules for a speed push answer');
      }
    }
    return answer;
  }

  private flush(): void {
    this.scheduled = true;
    const ctx = this.ctx!;
    const store = this.store!;
    this.flushing = this.flushing.then(async () => {
      this.scheduled = false;
      const batch = this.queue.splice(0);
      if (batch.length === 0) return;
      const now = this.now();
      try {
        const entries = batch.map((p) => ({ push: p.push, clockOffsetMs: ctx.ingest.clocks.offset(p.push.gateway, now) }));
        const results = await store.storePushes(entries, now);
        batch.forEach((p, i) => p.resolve(results[i]));
      } catch (err) {
        this.log.error({ err, pushes: batch.length }, 'speed store transaction failed');
        const e = new SpeedUnavailableError('the speed store could not commit the push; send it again', { cause: err });
        for (const p of batch) p.reject(e);
      }
    });
  }
}
