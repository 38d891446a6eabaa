/**
 * A prototype, not the batch's SQL: the steps of cloud/batch/sql.ts rewritten as single hash
 * aggregations, for the benchmark to time beside the real statements on the same day and to check
 * row for row against them. What changes:
 *
 * - readings: the dedup as GROUP BY device, metric, ts with arg_min(value, (gateway, seq)) (the
 *   lowest (gateway, seq) wins, as ROW_NUMBER ... = 1 picks it) instead of a window over every row;
 * - the 1-minute steps: one GROUP BY with m2 = VAR_POP(value) * COUNT(*) (DuckDB's var_pop is
 *   Welford's update, combined across threads with Chan's formula: no sum-of-squares cancellation)
 *   and first/last = arg_min/arg_max by (ts, device), instead of AVG/COUNT/ROW_NUMBER windows then
 *   a GROUP BY;
 * - the rollups: first/last with arg_min/arg_max by (first_ts, tie) / (last_ts, tie) instead of two
 *   ROW_NUMBER windows (the group totals for Chan's m2 stay a SUM window).
 *
 * arg_min/arg_max are min_by/max_by in Spark SQL and Trino (both order by ROW values), VAR_POP is
 * standard SQL: the rewrite stays within what the three engines share, but it is the dialect's call.
 */
import type { SqlQuoting } from '../../cloud/batch/sql.js';

export interface AltStep { name: string; of: string; keys: string[]; devices: boolean; sql: string }

function minute(q: SqlQuoting, key: 'device' | 'gateway'): string {
  const c = (n: string) => q.ident(n);
  const order = key === 'device' ? 'ts' : '(ts, device)';
  const devices = key === 'gateway' ? `,
  arg_min(device, (ts, device)) AS first_device,
  arg_max(device, (ts, device)) AS last_device` : '';
  return `SELECT ${key}, metric, date_trunc('minute', ts) AS bucket,
  COUNT(*) AS ${c('count')}, SUM(value) AS ${c('sum')}, MIN(value) AS ${c('min')}, MAX(value) AS ${c('max')},
  VAR_POP(value) * COUNT(*) AS m2,
  arg_min(value, ${order}) AS ${c('first')}, MIN(ts) AS first_ts,
  arg_max(value, ${order}) AS ${c('last')}, MAX(ts) AS last_ts${devices}
FROM alt_readings
GROUP BY ${key}, metric, date_trunc('minute', ts)`;
}

function rollup(q: SqlQuoting, source: string, keys: string[], unit: 'hour' | 'day', tie: string | null, devices: { first: string; last: string } | null): string {
  const c = (n: string) => q.ident(n);
  const k = keys.map((x) => `${x}, `).join('');
  const part = `PARTITION BY ${k}metric, b`;
  const dev = `(${c('sum')} / ${c('count')} - tsum / tcount)`;
  const fo = tie ? `(first_ts, ${tie})` : 'first_ts';
  const lo = tie ? `(last_ts, ${tie})` : 'last_ts';
  const deviceCols = devices ? `,
  arg_min(${devices.first}, ${fo}) AS first_device,
  arg_max(${devices.last}, ${lo}) AS last_device` : '';
  return `SELECT ${k}metric, b AS bucket,
  CAST(SUM(${c('count')}) AS BIGINT) AS ${c('count')}, SUM(${c('sum')}) AS ${c('sum')}, MIN(${c('min')}) AS ${c('min')}, MAX(${c('max')}) AS ${c('max')},
  SUM(m2 + ${c('count')} * ${dev} * ${dev}) AS m2,
  arg_min(${c('first')}, ${fo}) AS ${c('first')}, MIN(first_ts) AS first_ts,
  arg_max(${c('last')}, ${lo}) AS ${c('last')}, MAX(last_ts) AS last_ts${deviceCols}
FROM (
  SELECT f.*, SUM(${c('count')}) OVER (${part}) AS tcount, SUM(${c('sum')}) OVER (${part}) AS tsum
  FROM (SELECT s.*, date_trunc('${unit}', s.bucket) AS b FROM ${source} s) f
) x
GROUP BY ${k}metric, b`;
}

/** `readings` over `scan` (the dialect's relation) with the watermark join of readingsSql. */
export function altReadings(scan: string, watermark: Record<string, number>): string {
  const values = Object.entries(watermark).filter(([, e]) => e > 0).map(([g, e]) => `('${g.replace(/'/g, "''")}', ${Math.trunc(e)})`).join(', ');
  return `SELECT r.device, r.metric, r.ts, arg_min(r.value, (r.gateway, r.seq)) AS value, MIN(r.gateway) AS gateway
FROM ${scan} r
JOIN (VALUES ${values}) AS wm (gateway, e) ON r.gateway = wm.gateway AND r.epoch <= wm.e
GROUP BY r.device, r.metric, r.ts`;
}

const CARRIED = { first: 'first_device', last: 'last_device' };

/** The steps in dependency order; `of` names the real step each one replaces. */
export function altSteps(q: SqlQuoting): AltStep[] {
  return [
    { name: 'alt_device_1m', of: 'device_1m', keys: ['device'], devices: false, sql: minute(q, 'device') },
    { name: 'alt_device_1h', of: 'device_1h', keys: ['device'], devices: false, sql: rollup(q, 'alt_device_1m', ['device'], 'hour', null, null) },
    { name: 'alt_device_1d', of: 'device_1d', keys: ['device'], devices: false, sql: rollup(q, 'alt_device_1h', ['device'], 'day', null, null) },
    { name: 'alt_gateway_1m', of: 'gateway_1m', keys: ['gateway'], devices: true, sql: minute(q, 'gateway') },
    { name: 'alt_gateway_1h', of: 'gateway_1h', keys: ['gateway'], devices: true, sql: rollup(q, 'alt_gateway_1m', ['gateway'], 'hour', null, CARRIED) },
    { name: 'alt_gateway_1d', of: 'gateway_1d', keys: ['gateway'], devices: true, sql: rollup(q, 'alt_gateway_1h', ['gateway'], 'day', null, CARRIED) },
    { name: 'alt_fleet_1h', of: 'fleet_1h', keys: [], devices: true, sql: rollup(q, 'alt_device_1h', [], 'hour', 'device', { first: 'device', last: 'device' }) },
    { name: 'alt_fleet_1d', of: 'fleet_1d', keys: [], devices: true, sql: rollup(q, 'alt_fleet_1h', [], 'day', null, CARRIED) },
  ];
}

/**
 * SQL counting the rows where `alt` and `real` differ: a missing or extra row, count/min/max/
 * first/last/timestamps/devices not equal, or sum/m2 off by more than `rel` relative.
 */
export function diffSql(q: SqlQuoting, alt: string, real: string, keys: string[], devices: boolean, rel = 1e-9): string {
  const c = (n: string) => q.ident(n);
  const on = [...keys, 'metric', 'bucket'].map((k) => `a.${k} = b.${k}`).join(' AND ');
  const exact = ['count', 'min', 'max', 'first', 'first_ts', 'last', 'last_ts', ...(devices ? ['first_device', 'last_device'] : [])]
    .map((n) => `a.${c(n)} IS DISTINCT FROM b.${c(n)}`).join(' OR ');
  const close = (n: string) => `abs(a.${c(n)} - b.${c(n)}) > ${rel} * greatest(1, abs(b.${c(n)}))`;
  return `SELECT COUNT(*) AS n FROM ${alt} a FULL JOIN ${real} b ON ${on}
WHERE a.metric IS NULL OR b.metric IS NULL OR ${exact} OR ${close('sum')} OR ${close('m2')}`;
}
