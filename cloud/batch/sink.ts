/**
 * View sinks: where a run sends the views it rebuilt, besides the Parquet files (InfluxDB...).
 *
 * A sink is called after the new manifest is live, with the days it has not taken yet: the days
 * rebuilt since the version it last took, plus the days a previous call failed on (cloud.db meta
 * `batch.sink.<name>`); every live day the first time it is seen.
 * A sink that throws marks its step failed in the run's `sinks` JSON and gets the same days again at
 * the next run; the Parquet views are not affected. Writes must be idempotent per (view, key,
 * bucket): a day may be sent again, with the same or newer rows.
 */

/**
 * The view names, in build order (DESIGN.md, Files contract): every scope has minutes, hours and
 * days, so every scope answers any step that is a whole number of minutes. gateway_1m and fleet_1m
 * are newer than the others: a manifest written before them does not name them (Manifest.missing).
 */
export const VIEW_NAMES = ['device_1m', 'device_1h', 'device_1d', 'gateway_1m', 'gateway_1h', 'gateway_1d', 'fleet_1m', 'fleet_1h', 'fleet_1d'] as const;
export type ViewName = (typeof VIEW_NAMES)[number];

export interface ViewChanges {
  /** The live manifest version these files belong to. */
  version: number;
  /** Its watermark E, {gateway: epoch}. */
  watermark: Record<string, number>;
  /** UTC days (YYYY-MM-DD) to (re)write, sorted. */
  days: string[];
  /**
   * Per view, the absolute paths of the live Parquet files for those days (one per day that has
   * rows). Columns: `[device|gateway,] metric, bucket, count, sum, min, max, m2, first, first_ts,
   * last, last_ts`, timestamps as TIMESTAMP(MILLIS) holding UTC.
   */
  views: Record<ViewName, string[]>;
}

export interface ViewSink {
  /** Stable name: the key of its pending days and of its entry in the run's `sinks` JSON. */
  readonly name: string;
  /** Write the changed days; resolves with the points written, throws to be retried next run. */
  write(changes: ViewChanges): Promise<{ points: number }>;
  /** Flush and release connections; idempotent. */
  close?(): Promise<void>;
}

/** The outcome of one sink's step, as stored in batch_runs.sinks. */
export interface SinkOutcome {
  outcome: 'ok' | 'failed' | 'skipped';
  days: number;
  points: number;
  error?: string;
}
