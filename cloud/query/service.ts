/**
 * The merged query (docs/serving.md): read the live manifest once, read the batch rows of the chosen
 * view from the view store, read the speed partials of epochs above that manifest's E, merge per
 * bucket. Every answer carries the manifest version it used.
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import type { Manifest } from '../batch/index.js';
import { ViewNotPublishedError } from '../../shared/errors.js';
import { type Logger, nullLogger } from '../../shared/logger.js';
import { isStoreUnavailable } from '../store/pg/unavailable.js';
import type { ManifestSource } from './manifest.js';
import { mergeBuckets, toPoints, type MergedBucket, type Point } from './merge.js';
import { planQuery, type QueryParams, type QueryPlan, type Scope } from './params.js';
import type { SpeedPartial, SpeedSource } from './speed.js';
import type { SummaryRow, ViewReader } from './views/types.js';

export interface QueryOptions {
  /** query.maxBuckets: most buckets one answer may hold. */
  maxBuckets: number;
  /** speed.staleAfterMs: a gateway not heard from for longer makes its speed parts provisional, in ms. */
  staleAfterMs: number;
}

export interface QueryHooks {
  /**
   * Called after the batch rows are read and before the speed side is (each attempt): tests publish
   * a new manifest here to check that an answer keeps to one version.
   */
  afterBatchRead?: (manifest: Manifest | null) => Promise<void> | void;
}

export interface QueryDeps {
  manifests: ManifestSource;
  /** Where batch rows come from (query.viewStore). */
  views: ViewReader;
  /** The Parquet views: read instead when `views` does not hold the manifest's version, or fails. */
  parquet: ViewReader;
  speed: SpeedSource;
  logger?: Logger;
  registry?: Registry;
  /** Clock, epoch ms. */
  now?: () => number;
  hooks?: QueryHooks;
}

export interface QueryAnswer {
  metric: string;
  scope: Scope;
  step: string;
  agg: QueryPlan['agg'];
  manifest: { version: number; watermark: Record<string, number> };
  points: Point[];
  /** Set when part of the answer could not be read (the speed store out of reach): what is missing. */
  degraded?: string;
}

/** An answer before its points are derived: the merged buckets (the route writes JSON or CSV from them). */
export interface MergedAnswer extends Omit<QueryAnswer, 'points'> {
  buckets: MergedBucket[];
}

/** The `degraded` of an answer given without the speed side. */
export const DEGRADED_NO_SPEED = 'speed store unreachable: the answer holds only the batch views (readings up to the manifest\'s watermark); newer readings are missing until the store is back';

/** Reads of one query at most, when batch runs keep publishing under it. */
const MAX_ATTEMPTS = 3;

interface QueryMetrics {
  degraded: Counter;
  rejected: Counter<'code'>;
  fallbacks: Counter<'store' | 'reason'>;
  retries: Counter;
  seconds: Histogram<'view'>;
}

function metricsOn(registry: Registry | undefined): QueryMetrics | null {
  if (!registry) return null;
  const get = <T>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
  return {
    rejected: get('braid_query_rejected_total', () => new Counter({
      name: 'braid_query_rejected_total', registers: [registry], labelNames: ['code'] as const,
      help: 'Queries answered 4xx, by error code (BRAID_ERR_BAD_REQUEST, BRAID_ERR_VIEW_NOT_PUBLISHED, BRAID_ERR_UNAUTHORIZED...)',
    })),
    fallbacks: get('braid_query_view_fallbacks_total', () => new Counter({
      name: 'braid_query_view_fallbacks_total', registers: [registry], labelNames: ['store', 'reason'] as const,
      help: 'Batch reads answered from the Parquet views instead of the configured view store (reason: behind, error)',
    })),
    degraded: get('braid_query_degraded_total', () => new Counter({
      name: 'braid_query_degraded_total', registers: [registry],
      help: 'Queries answered from the batch views alone, flagged degraded, because the speed store was out of reach',
    })),
    retries: get('braid_query_retries_total', () => new Counter({
      name: 'braid_query_retries_total', registers: [registry],
      help: 'Queries read again because a batch run published a manifest while they ran',
    })),
    seconds: get('braid_query_seconds', () => new Histogram({
      name: 'braid_query_seconds', registers: [registry], labelNames: ['view'] as const,
      help: 'Time to answer a merged query, by the view read', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    })),
  };
}

export class QueryService {
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly metrics: QueryMetrics | null;

  constructor(readonly options: QueryOptions, private readonly deps: QueryDeps) {
    this.log = (deps.logger ?? nullLogger()).child({ component: 'query' });
    this.now = deps.now ?? Date.now;
    this.metrics = metricsOn(deps.registry);
  }

  /**
   * Count a refused query [INV-5: bad input is counted]: every 4xx of the route, schema refusals
   * and missing keys included; `code` is the answer's stable code.
   */
  refused(status: number, code: string): void {
    if (status >= 400 && status < 500) this.metrics?.rejected.inc({ code });
  }

  /** Validate (BadRequestError naming the parameter) and answer. */
  async query(params: QueryParams): Promise<QueryAnswer> {
    const { buckets, ...head } = await this.merged(params);
    return { ...head, points: toPoints(buckets, head.agg) };
  }

  /** query()'s answer with the merged buckets in place of the points (route.ts serializes them without a Point each). */
  async merged(params: QueryParams): Promise<MergedAnswer> {
    const plan = planQuery(params, { maxBuckets: this.options.maxBuckets });
    const end = this.metrics?.seconds.startTimer({ view: plan.view });
    for (let attempt = 1; ; attempt++) {
      // [docs/serving.md] the manifest is read once: batch rows and the speed side's E from one version.
      const manifest = await this.deps.manifests.current();
      if (manifest?.missing?.includes(plan.view)) throw notPublished(plan, manifest);
      const watermark = manifest?.watermark ?? {};
      const batch = this.readBatch(plan, manifest);
      const hook = this.deps.hooks?.afterBatchRead;
      const speed = (hook ? batch.then(() => hook(manifest)) : Promise.resolve()).then(() => this.readSpeed(plan, watermark));
      const [rows, { partials, stale, degraded }] = await Promise.all([batch, speed]);
      // A batch run that published meanwhile may have let the speed store prune partials of epochs
      // in (E, E'] before we read them, and a view store (InfluxDB) may have started on the next
      // version: with the manifest unchanged neither can have happened; otherwise ask again.
      const after = await this.deps.manifests.current();
      if ((after?.version ?? 0) !== (manifest?.version ?? 0)) {
        if (attempt < MAX_ATTEMPTS) {
          this.metrics?.retries.inc();
          continue;
        }
        this.log.warn({ attempts: attempt, version: manifest?.version, live: after?.version }, 'manifest kept changing under a query; answered from the last one read');
      }
      end?.();
      return {
        metric: plan.metric, scope: plan.scope, step: plan.step, agg: plan.agg,
        manifest: { version: manifest?.version ?? 0, watermark },
        buckets: mergeBuckets(plan.stepMs, rows, partials, stale),
        ...(degraded ? { degraded } : {}),
      };
    }
  }

  private async readBatch(plan: QueryPlan, manifest: Manifest | null): Promise<SummaryRow[]> {
    if (!manifest) return [];
    const req = { view: plan.view, key: plan.key, metric: plan.metric, fromMs: plan.fromMs, toMs: plan.toMs, manifest };
    const { views, parquet } = this.deps;
    if (views === parquet || !views.holds) return views.read(req);
    const fallback = (reason: string, err?: unknown) => {
      this.metrics?.fallbacks.inc({ store: views.name, reason });
      if (err) this.log.warn({ err, store: views.name, view: plan.view }, 'view store failed; answered from the Parquet views');
      return parquet.read(req);
    };
    try {
      // InfluxDB holds one version at a time, written after that version's manifest went live.
      if (await views.holds(manifest)) return await views.read(req);
    } catch (err) {
      return fallback('error', err);
    }
    return fallback('behind');
  }

  /**
   * The speed side. With the store out of reach (cluster mode, PostgreSQL down) the answer is the
   * batch side alone, flagged `degraded`: exact for the epochs the manifest covers, missing what
   * came after; never a guess, and never a 5xx for a dashboard that can show the older part.
   */
  private async readSpeed(plan: QueryPlan, watermark: Record<string, number>): Promise<{ partials: SpeedPartial[]; stale: (g: string) => boolean; degraded?: string }> {
    try {
      return await this.readSpeedParts(plan, watermark);
    } catch (err) {
      if (!isStoreUnavailable(err)) throw err;
      this.metrics?.degraded.inc();
      this.log.warn({ err: (err as Error).message }, 'the speed store is unreachable; answering from the batch views alone (degraded)');
      return { partials: [], stale: () => false, degraded: DEGRADED_NO_SPEED };
    }
  }

  private async readSpeedParts(plan: QueryPlan, watermark: Record<string, number>): Promise<{ partials: SpeedPartial[]; stale: (g: string) => boolean }> {
    const s = plan.scope;
    const partials = await this.deps.speed.readSpeedPartials({
      metric: plan.metric, fromMs: plan.fromMs, toMs: plan.toMs, watermark,
      ...('device' in s ? { device: s.device } : 'gateway' in s ? { gateway: s.gateway } : {}),
    });
    if (partials.length === 0) return { partials, stale: () => false };
    const contact = await this.deps.speed.gatewayLastContact();
    const now = this.now();
    const limit = this.options.staleAfterMs;
    return {
      partials,
      // A gateway never heard from (no contact recorded) is as stale as one long gone.
      stale: (g) => !Object.hasOwn(contact, g) || now - contact[g] > limit,
    };
  }
}

/**
 * The refusal of a query whose view a manifest of an earlier version does not name (gateway_1m,
 * fleet_1m before they existed): its empty file list would answer as if the batch held no reading.
 * The next batch run rebuilds every day with them (cloud/batch/job.ts); coarser steps answer meanwhile.
 */
function notPublished(plan: QueryPlan, manifest: Manifest): InstanceType<typeof ViewNotPublishedError> {
  return new ViewNotPublishedError(`step: '${plan.step}' needs the view ${plan.view}, which the live manifest (version ${manifest.version}) `
    + 'does not have: an earlier Braid version published it. The next batch run publishes it for every day (braid batch run, or '
    + 'POST /api/v1/batch/run); until then use a step that is a whole number of hours');
}
