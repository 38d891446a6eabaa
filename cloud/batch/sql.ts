/**
 * The batch SQL, portable part: standard SQL (subqueries, GROUP BY, unordered SUM/AVG OVER, date_trunc,
 * row values like (ts, device)) plus MIN_BY/MAX_BY, which DuckDB (alias of arg_min/arg_max), Spark
 * SQL (3.0+) and Trino all have, ordering by a row value field by field. So the same statements run
 * on the three engines. Everything engine-specific (reading Parquet, writing it, temp tables,
 * timestamp types, pragmas) is in dialect.ts. docs/batch.md shows the whole script.
 *
 * No step sorts the readings: first/last and the dedup are MIN_BY/MAX_BY in a GROUP BY, and the
 * only windows are unordered SUM/AVG, which DuckDB runs as a hash aggregation joined back (with
 * ROW_NUMBER windows, which sorted every reading three times, `--full` took ~1.25x as long;
 * docs/benchmarks.md). Every view row is the summary of shared/summary.ts [DESIGN "The algebra"]:
 * - a 1-minute bucket from the readings, m2 two-pass: Σ(v - mean)² with mean = AVG over the bucket;
 * - a coarser bucket merges the finer rows (Chan's formula for a group): n = Σn_i, mean = Σsum_i/n,
 *   m2 = Σ(m2_i + n_i * (mean_i - mean)^2), equal to pairwise Chan up to rounding;
 * - first/last = the reading with the smallest/largest (ts, device), picked with MIN_BY/MAX_BY;
 * - views whose rows mix devices (gateway_*, fleet_*) also carry first_device/last_device, the
 *   device of that reading, so the query merges their first/last with speed partials (or rows of
 *   other views) in the (ts, device) order of the algebra exactly (docs/serving.md).
 */
import type { ViewName } from './sink.js';

/** What the portable SQL needs from an engine: identifier quoting. */
export interface SqlQuoting {
  /** A quoted identifier ("count" in standard SQL, `count` on Spark without ANSI quoting). */
  ident(name: string): string;
}

/** A standard SQL string literal. */
export function str(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/** The summary columns of every view, in file order after the key columns. */
export const SUMMARY_COLUMNS = ['count', 'sum', 'min', 'max', 'm2', 'first', 'first_ts', 'last', 'last_ts'] as const;
/** The device columns of the views whose rows mix devices (gateway_*, fleet_*), after SUMMARY_COLUMNS. */
export const DEVICE_COLUMNS = ['first_device', 'last_device'] as const;
/** The timestamp columns of a view (the dialect gives them the ms type on output). */
export const TIMESTAMP_COLUMNS = ['bucket', 'first_ts', 'last_ts'] as const;

/**
 * The deduplicated readings of one scan that the views cover [INV-2, vector watermark]: rows with
 * epoch <= E[gateway] (a gateway missing from E has no covered epoch), then one row per identity
 * (device, metric, ts), the one with the lowest (gateway, seq). `scan` is a relation with columns
 * device, metric, ts (timestamp, UTC), value, gateway, seq, epoch. Null when E is empty.
 *
 * One hash aggregation per identity: the kept row's value is MIN_BY(value, (gateway, seq)), and its
 * gateway, the lowest of the identity's, is MIN(gateway). (A ROW_NUMBER window ordered by
 * (gateway, seq) gave the same rows sorting every reading: ~1.2x the time.)
 */
export function readingsSql(scan: string, watermark: Record<string, number>): string | null {
  const entries = Object.entries(watermark).filter(([, e]) => e > 0);
  if (entries.length === 0) return null;
  const values = entries.map(([g, e]) => `(${str(g)}, ${Math.trunc(e)})`).join(', ');
  return `SELECT r.device, r.metric, r.ts,
  MIN_BY(r.value, (r.gateway, r.seq)) AS value,
  MIN(r.gateway) AS gateway
FROM ${scan} r
JOIN (VALUES ${values}) AS wm (gateway, e) ON r.gateway = wm.gateway AND r.epoch <= wm.e
GROUP BY r.device, r.metric, r.ts`;
}

/**
 * 1-minute summaries of `source` (the readings) per key column ('device' or 'gateway'), metric,
 * minute; a gateway's rows mix devices, so they also name the device of first and last. Readings of
 * one device never tie on ts (ts is part of their identity), so device rows order by ts alone.
 *
 * m2 is two-pass, Σ(v - mean)² with the bucket's mean from an unordered AVG window, which DuckDB
 * runs as a hash aggregation joined back (no sort). Not VAR_POP(value) * COUNT(*), one pass
 * cheaper: its Welford update rounds the running mean, an error of about eps * |mean| / stddev
 * relative, so on large values with a small spread in a minute (energy counters, uptimes: 1e9 ± 500)
 * it was up to 2.7e-9 off shared/summary.ts, past the 1e-9 the views promise; two-pass stayed
 * within 1e-9 on the same data (2026-11-26, 20,000 such buckets).
 */
export function minuteSql(q: SqlQuoting, source: string, key: 'device' | 'gateway'): string {
  const c = (n: string) => q.ident(n);
  const order = key === 'device' ? 'ts' : '(ts, device)';
  const devices = key === 'gateway' ? `,
  MIN_BY(device, ${order}) AS first_device,
  MAX_BY(device, ${order}) AS last_device` : '';
  return `SELECT ${key}, metric, bucket,
  COUNT(*) AS ${c('count')},
  SUM(value) AS ${c('sum')},
  MIN(value) AS ${c('min')},
  MAX(value) AS ${c('max')},
  SUM((value - mean) * (value - mean)) AS m2,
  MIN_BY(value, ${order}) AS ${c('first')},
  MIN(ts) AS first_ts,
  MAX_BY(value, ${order}) AS ${c('last')},
  MAX(ts) AS last_ts${devices}
FROM (
  SELECT b.*, AVG(value) OVER (PARTITION BY ${key}, metric, bucket) AS mean
  FROM (SELECT s.*, date_trunc('minute', s.ts) AS bucket FROM ${source} s) b
) x
GROUP BY ${key}, metric, bucket`;
}

/** Where a rollup finds the device of each source row's first and last reading. */
export interface DeviceSource {
  /** Column of the source holding the device of its first reading (`device` for device rows). */
  first: string;
  last: string;
}

/**
 * Merge the rows of a finer view into `unit` buckets per `keys`, metric. `tie` names the columns
 * that break (ts) ties between rows for first/last (the device when rows of several devices merge:
 * `device`, or the rows' first_device/last_device when they already mix devices); rows of one key
 * never tie, their buckets being disjoint in time. With `devices`, the output carries first_device
 * and last_device: the device of the row picked for first and for last. First/last are
 * MIN_BY/MAX_BY over (first_ts, tie) / (last_ts, tie); Chan's m2 needs the group's mean in every
 * row, from SUM windows (unordered: no sort within a partition). A `minute` rollup of minute rows
 * only merges rows of the same minute across keys (fleet_1m from gateway_1m).
 */
export function rollupSql(q: SqlQuoting, source: string, keys: string[], unit: 'minute' | 'hour' | 'day', tie: DeviceSource | null, devices: DeviceSource | null = null): string {
  const c = (n: string) => q.ident(n);
  const k = keys.map((x) => `${x}, `).join('');
  const part = `PARTITION BY ${k}metric, b`;
  const firstBy = tie ? `(first_ts, ${tie.first})` : 'first_ts';
  const lastBy = tie ? `(last_ts, ${tie.last})` : 'last_ts';
  const dev = `(${c('sum')} / ${c('count')} - tsum / tcount)`;
  const deviceCols = devices ? `,
  MIN_BY(${devices.first}, ${firstBy}) AS first_device,
  MAX_BY(${devices.last}, ${lastBy}) AS last_device` : '';
  return `SELECT ${k}metric, b AS bucket,
  CAST(SUM(${c('count')}) AS BIGINT) AS ${c('count')},
  SUM(${c('sum')}) AS ${c('sum')},
  MIN(${c('min')}) AS ${c('min')},
  MAX(${c('max')}) AS ${c('max')},
  SUM(m2 + ${c('count')} * ${dev} * ${dev}) AS m2,
  MIN_BY(${c('first')}, ${firstBy}) AS ${c('first')},
  MIN(first_ts) AS first_ts,
  MAX_BY(${c('last')}, ${lastBy}) AS ${c('last')},
  MAX(last_ts) AS last_ts${deviceCols}
FROM (
  SELECT f.*,
    SUM(${c('count')}) OVER (${part}) AS tcount,
    SUM(${c('sum')}) OVER (${part}) AS tsum
  FROM (SELECT s.*, date_trunc('${unit}', s.bucket) AS b FROM ${source} s) f
) x
GROUP BY ${k}metric, b`;
}

/** One step of a day's build: a relation named `name` computed from `from`. */
export interface ViewStep {
  name: ViewName;
  /** Key columns of the rows, before metric. */
  keys: string[];
  /** Rows mix devices: the step has first_device and last_device (DEVICE_COLUMNS). */
  devices: boolean;
  sql: (q: SqlQuoting) => string;
}

/** Device rows: the row's device is its first's and last's. */
const OWN: DeviceSource = { first: 'device', last: 'device' };
/** Rows that already carry first_device/last_device. */
const CARRIED: DeviceSource = { first: 'first_device', last: 'last_device' };

/**
 * The views of one day, in dependency order, from the relation `readings` (readingsSql); every step
 * is published. The gateway views group by the reading's own gateway column (after dedup), so a
 * device that moved gateways counts under each gateway for the readings that gateway delivered.
 * fleet_1m merges gateway_1m (a few rows per minute, not one per device); its (ts, device) ties
 * between gateways are broken by the rows' own first_device/last_device, and dedup leaves no two
 * gateways with one (device, metric, ts). fleet_1h stays a rollup of device_1h, as before.
 */
export const VIEW_STEPS: readonly ViewStep[] = [
  { name: 'device_1m', keys: ['device'], devices: false, sql: (q) => minuteSql(q, 'readings', 'device') },
  { name: 'device_1h', keys: ['device'], devices: false, sql: (q) => rollupSql(q, 'device_1m', ['device'], 'hour', null) },
  { name: 'device_1d', keys: ['device'], devices: false, sql: (q) => rollupSql(q, 'device_1h', ['device'], 'day', null) },
  { name: 'gateway_1m', keys: ['gateway'], devices: true, sql: (q) => minuteSql(q, 'readings', 'gateway') },
  { name: 'gateway_1h', keys: ['gateway'], devices: true, sql: (q) => rollupSql(q, 'gateway_1m', ['gateway'], 'hour', null, CARRIED) },
  { name: 'gateway_1d', keys: ['gateway'], devices: true, sql: (q) => rollupSql(q, 'gateway_1h', ['gateway'], 'day', null, CARRIED) },
  { name: 'fleet_1m', keys: [], devices: true, sql: (q) => rollupSql(q, 'gateway_1m', [], 'minute', CARRIED, CARRIED) },
  { name: 'fleet_1h', keys: [], devices: true, sql: (q) => rollupSql(q, 'device_1h', [], 'hour', OWN, OWN) },
  { name: 'fleet_1d', keys: [], devices: true, sql: (q) => rollupSql(q, 'fleet_1h', [], 'day', null, CARRIED) },
];

/** The file's column list of a view, in order, with `ts` wrapping each timestamp column. */
export function outputColumns(q: SqlQuoting, keys: string[], ts: (col: string) => string, devices = false): string {
  const cols = [...keys, 'metric', 'bucket', ...SUMMARY_COLUMNS, ...(devices ? DEVICE_COLUMNS : [])];
  return cols.map((n) => ((TIMESTAMP_COLUMNS as readonly string[]).includes(n) ? `${ts(n)} AS ${n}` : q.ident(n))).join(', ');
}
