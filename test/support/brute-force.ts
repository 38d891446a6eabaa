/**
 * The brute-force oracle for the batch views [INV-3]: from raw readings (as master/ holds them,
 * with gateway, seq and epoch), keep those the watermark covers, deduplicate by identity keeping
 * the lowest (gateway, seq) [INV-2], then compute every view's rows by merging one-reading
 * summaries of shared/summary.ts (the reference algebra). No SQL, no incremental state: every row
 * is recomputed from its readings alone, so it can judge the batch job's SQL and its incremental
 * rule. Row keys are `key|metric|bucket` (key '' for the fleet), as test/support/master-fixture.ts
 * readViews() reads the views back.
 */
import { type Summary, EMPTY, merge, of } from '../../shared/summary.js';
import { bucketStart } from '../../shared/time.js';
import { VIEW_SPECS, type ViewScope } from '../../cloud/query/views/types.js';
import type { ViewName } from '../../cloud/batch/index.js';

/** One reading as master/ holds it (ts in epoch ms). */
export interface RawReading {
  device: string;
  metric: string;
  ts: number;
  value: number;
  gateway: string;
  seq: number;
  epoch: number;
}

/** What a view groups by besides metric and bucket. */
export type Scope = ViewScope;

/** The published views; their scopes and widths are the product's own (docs/cloud-storage.md "Views"). */
export type BruteViewName = ViewName;

const identity = (r: RawReading): string => `${r.device}\u0000${r.metric}\u0000${r.ts}`;

/** Lowest (gateway, seq) first: the reading the batch keeps among repeats of one identity. */
function wins(a: RawReading, b: RawReading): boolean {
  return a.gateway < b.gateway || (a.gateway === b.gateway && a.seq < b.seq);
}

/**
 * The readings a batch with watermark `e` covers (epoch <= e[gateway]; a gateway missing from `e`
 * has no covered epoch), one per identity: the lowest (gateway, seq). Without `e`, every reading.
 */
export function dedupCovered(readings: Iterable<RawReading>, e?: Readonly<Record<string, number>>): RawReading[] {
  const best = new Map<string, RawReading>();
  for (const r of readings) {
    if (e && !(r.epoch <= (e[r.gateway] ?? 0))) continue;
    const id = identity(r);
    const cur = best.get(id);
    if (!cur || wins(r, cur)) best.set(id, r);
  }
  return [...best.values()];
}

/** The key a reading falls under in a view of `scope`. */
function scopeKey(r: RawReading, scope: Scope): string {
  return scope === 'device' ? r.device : scope === 'gateway' ? r.gateway : '';
}

/**
 * Every row of one view over already deduplicated readings: per (scope key, metric, bucket of
 * `widthMs`), the merge of the summaries of its readings. first/last tie-break on device
 * (shared/summary.ts), so the order readings come in does not matter.
 */
export function bruteForceRows(readings: readonly RawReading[], scope: Scope, widthMs: number): Map<string, Summary> {
  const groups = new Map<string, RawReading[]>();
  for (const r of readings) {
    const k = `${scopeKey(r, scope)}|${r.metric}|${bucketStart(r.ts, widthMs)}`;
    const g = groups.get(k);
    if (g) g.push(r);
    else groups.set(k, [r]);
  }
  const rows = new Map<string, Summary>();
  for (const [k, rs] of groups) {
    let s: Summary = { ...EMPTY };
    for (const r of rs) s = merge(s, of(r.value, r.ts, r.device));
    rows.set(k, s);
  }
  return rows;
}

/** Every view's rows for the readings that watermark `e` covers, deduplicated [INV-2, INV-3]. */
export function bruteForceViews(readings: Iterable<RawReading>, e?: Readonly<Record<string, number>>): Record<BruteViewName, Map<string, Summary>> {
  const covered = dedupCovered(readings, e);
  const out = {} as Record<BruteViewName, Map<string, Summary>>;
  for (const [view, spec] of Object.entries(VIEW_SPECS) as Array<[BruteViewName, (typeof VIEW_SPECS)[ViewName]]>) {
    out[view] = bruteForceRows(covered, spec.scope, spec.widthMs);
  }
  return out;
}
