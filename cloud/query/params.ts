/**
 * GET /api/v1/query's parameters (DESIGN.md, docs/serving.md) into a plan: scope, range rounded to
 * whole steps, the view to read. Pure; every refusal is a BadRequestError whose message starts with
 * the parameter it is about.
 */
import type { ViewName } from '../batch/index.js';
import { BadRequestError } from '../../shared/errors.js';
import { noNul } from '../api/json-checks.js';
import { AGGS, type Agg } from '../../shared/summary.js';
import { bucketCeil, bucketStart, parseDuration, parseTimestamp } from '../../shared/time.js';
import { scopeViews, VIEW_SPECS, type ViewKey, type ViewScope } from './views/types.js';

/** The query string as fastify hands it over (after the route's schema). */
export interface QueryParams {
  metric?: string;
  device?: string;
  gateway?: string;
  from?: string;
  to?: string;
  step?: string;
  agg?: string;
}

export type Scope = { device: string } | { gateway: string } | { fleet: true };

export interface QueryPlan {
  metric: string;
  scope: Scope;
  /** The step as asked ('5m'), and in ms. */
  step: string;
  stepMs: number;
  agg: Agg;
  /** `from` rounded down and `to` rounded up to the step: the buckets [fromMs, toMs). */
  fromMs: number;
  toMs: number;
  /** The coarsest view of the scope whose width divides the step. */
  view: ViewName;
  /** The key of the view's rows (none for the fleet). */
  key: ViewKey | undefined;
}

export const DEFAULT_STEP = '1h';
export const DEFAULT_AGG: Agg = 'avg';

function scopeName(scope: Scope): ViewScope {
  return 'device' in scope ? 'device' : 'gateway' in scope ? 'gateway' : 'fleet';
}

function timestamp(name: 'from' | 'to', text: string | undefined): number {
  if (text === undefined || text === '') throw new BadRequestError(`${name}: required (epoch ms or ISO 8601 with a zone)`);
  const t = parseTimestamp(text);
  if (t === undefined) throw new BadRequestError(`${name}: '${text}' is not epoch ms or an ISO 8601 date-time with a zone (2024-11-24T00:00:00Z)`);
  return t;
}

/** Validate the parameters and plan the query; `maxBuckets` is query.maxBuckets. */
export function planQuery(p: QueryParams, limits: { maxBuckets: number }): QueryPlan {
  const metric = p.metric;
  if (metric === undefined || metric === '') throw new BadRequestError('metric: required');
  if (p.device !== undefined && p.gateway !== undefined) {
    throw new BadRequestError('device, gateway: give one of them (or neither, for the fleet), not both');
  }
  if (p.device === '') throw new BadRequestError('device: empty');
  if (p.gateway === '') throw new BadRequestError('gateway: empty');
  for (const k of ['metric', 'device', 'gateway'] as const) if (p[k] !== undefined) noNul(p[k], k, '');
  const scope: Scope = p.device !== undefined ? { device: p.device } : p.gateway !== undefined ? { gateway: p.gateway } : { fleet: true };

  const agg = (p.agg ?? DEFAULT_AGG) as Agg;
  if (!AGGS.includes(agg)) throw new BadRequestError(`agg: '${p.agg}' is not one of ${AGGS.join(', ')}`);

  const step = (p.step ?? DEFAULT_STEP).trim();
  const stepMs = parseDuration(step, 'step');
  const views = scopeViews(scopeName(scope));
  const finest = views[0];
  const finestMs = VIEW_SPECS[finest].widthMs;
  if (stepMs % finestMs !== 0) {
    const smallest = finest.split('_')[1];
    throw new BadRequestError(`step: '${step}' is not a whole multiple of ${smallest}, the finest view of a ${scopeName(scope)} query (${finest}); the smallest step is ${smallest}`);
  }

  const from = timestamp('from', p.from);
  const to = timestamp('to', p.to);
  if (from >= to) throw new BadRequestError(`from: must be before to (from ${p.from} is not before to ${p.to})`);
  const fromMs = bucketStart(from, stepMs);
  const toMs = bucketCeil(to, stepMs);
  const buckets = (toMs - fromMs) / stepMs;
  if (buckets > limits.maxBuckets) {
    throw new BadRequestError(`step: [from, to) at step ${step} is ${buckets} buckets, more than query.maxBuckets (${limits.maxBuckets}); use a coarser step or a shorter range`);
  }

  let view = finest;
  for (const v of views) if (stepMs % VIEW_SPECS[v].widthMs === 0) view = v;
  const key: ViewKey | undefined = 'device' in scope ? { device: scope.device } : 'gateway' in scope ? { gateway: scope.gateway } : undefined;
  return { metric, scope, step, stepMs, agg, fromMs, toMs, view, key };
}
