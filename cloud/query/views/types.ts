/**
 * Batch view readers: where the merged query gets the rows of a batch view (docs/serving.md). One
 * interface, two stores — the Parquet views of a manifest (always written) and InfluxDB (when the
 * batch job's InfluxDB sink holds them) — held equal by test/support/view-reader-conformance.ts.
 */
import type { Manifest, ViewName } from '../../batch/index.js';
import type { Summary } from '../../../shared/summary.js';
import { DAY_MS, HOUR_MS, MINUTE_MS } from '../../../shared/time.js';

/** The key of a device view's rows, or of a gateway view's; fleet views have none. */
export type ViewKey = { device: string } | { gateway: string };

export interface ViewReadRequest {
  view: ViewName;
  /** `{device}` for device_*, `{gateway}` for gateway_*, absent for fleet_*. */
  key?: ViewKey;
  metric: string;
  /** Buckets starting in [fromMs, toMs), epoch ms UTC. */
  fromMs: number;
  toMs: number;
  /** The manifest the query read (once): the Parquet reader reads its files. */
  manifest: Manifest;
}

/**
 * One bucket of a view: its start (epoch ms) and the summary of shared/summary.ts. `firstDevice` and
 * `lastDevice` are the device itself in device views, the view's first_device/last_device columns
 * in gateway and fleet views ('' in files written before those columns existed).
 */
export interface SummaryRow extends Summary {
  bucket: number;
}

export interface ViewReader {
  /** 'parquet' or 'influx': a label in logs and metrics. */
  readonly name: string;
  /** The rows of one key and metric of a view, in [fromMs, toMs), sorted by bucket. Callers must not mutate them. */
  read(req: ViewReadRequest): Promise<SummaryRow[]>;
  /**
   * Whether the store holds exactly the views of `manifest` now. Absent: always (the Parquet views
   * are the manifest's own files); InfluxDB holds them only once its sink has taken that version.
   */
  holds?(manifest: Manifest): Promise<boolean>;
  /** Release connections; idempotent. */
  close(): Promise<void>;
}

export type ViewScope = 'device' | 'gateway' | 'fleet';

/** Every published view: its scope and bucket width. */
export const VIEW_SPECS: Readonly<Record<ViewName, { scope: ViewScope; widthMs: number }>> = {
  device_1m: { scope: 'device', widthMs: MINUTE_MS },
  device_1h: { scope: 'device', widthMs: HOUR_MS },
  device_1d: { scope: 'device', widthMs: DAY_MS },
  gateway_1m: { scope: 'gateway', widthMs: MINUTE_MS },
  gateway_1h: { scope: 'gateway', widthMs: HOUR_MS },
  gateway_1d: { scope: 'gateway', widthMs: DAY_MS },
  fleet_1m: { scope: 'fleet', widthMs: MINUTE_MS },
  fleet_1h: { scope: 'fleet', widthMs: HOUR_MS },
  fleet_1d: { scope: 'fleet', widthMs: DAY_MS },
};

/** The views of a scope, finest first. */
export function scopeViews(scope: ViewScope): ViewName[] {
  return (Object.keys(VIEW_SPECS) as ViewName[])
    .filter((v) => VIEW_SPECS[v].scope === scope)
    .sort((a, b) => VIEW_SPECS[a].widthMs - VIEW_SPECS[b].widthMs);
}

/** The key column of a view ('device', 'gateway') or null for the fleet, checked against the request's key. */
export function keyOf(req: Pick<ViewReadRequest, 'view' | 'key'>): { column: 'device' | 'gateway'; value: string } | null {
  const scope = VIEW_SPECS[req.view]?.scope;
  if (!scope) throw new TypeError(`unknown view ${req.view}`);
  const key = req.key as Partial<Record<'device' | 'gateway', string>> | undefined;
  if (scope === 'fleet') {
    if (key) throw new TypeError(`${req.view} has no key; got ${JSON.stringify(key)}`);
    return null;
  }
  const value = key?.[scope];
  if (typeof value !== 'string') throw new TypeError(`${req.view} needs key {${scope}}; got ${JSON.stringify(key)}`);
  return { column: scope, value };
}
