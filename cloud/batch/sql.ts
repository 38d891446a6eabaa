/**
 * The batch SQL, portable part: standard SQL (subqueries, GROUP BY, JOIN USING, VAR_POP, date_trunc,
 * row values like (ts, device)) plus MIN_BY/MAX_BY, which DuckDB (alias of arg_min/arg_max), Spark
 * SQL (3.0+) and Trino all have, ordering by a row value field by field. So the same statements run
 * on the three engines. Everything engine-specific (reading Parquet, writing it, temp tables,
 * timestamp types, pragmas, the bit functions of the clean-minute certificate) is in dialect.ts.
 * docs/batch.md shows the whole script.
 *
 * No step sorts the readings, and the readings are aggregated once (buildSteps): first/last and the
 * dedup are MIN_BY/MAX_BY in a GROUP BY, a rollup's group sums are aggregated and joined back, and
 * the only window is the metric's shift over the day's few series (docs/benchmarks.md has the history). Every view row is the
 * summary of shared/summary.ts [DESIGN "The algebra"]:
 * - a 1-minute bucket from the readings, m2 = n * VAR_POP(v - shift), shift the series' smallest value;
 * - a coarser bucket merges the finer rows (Chan's formula for a group): n = Σn_i,
 *   m2 = Σ(m2_i + n_i * (mean_i - mean)^2) with means from shifted sums, equal to pairwise Chan up
 *   to rounding;
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
export function readingsSql(scan: string, watermark: Record<string, number>, series: readonly string[] = ['device', 'metric']): string | null {
  const entries = Object.entries(watermark).filter(([, e]) => e > 0);
  if (entries.length === 0) return null;
  const values = entries.map(([g, e]) => `(${str(g)}, ${Math.trunc(e)})`).join(', ');
  // `series`: the columns of `scan` naming a reading's series, (device, metric) or one that stands
  // for them (the fallback's series rank, an integer key rather than two strings).
  const key = series.map((c) => `r.${c}, `).join('');
  return `SELECT ${key}r.ts,
  MIN_BY(r.value, (r.gateway, r.seq)) AS value,
  MIN(r.gateway) AS gateway
FROM ${scan} r
JOIN (VALUES ${values}) AS wm (gateway, e) ON r.gateway = wm.gateway AND r.epoch <= wm.e
GROUP BY ${key}r.ts`;
}

/**
 * What the portable SQL needs from an engine beyond quoting: the bit operations of the certificate
 * that a minute's readings have distinct timestamps (rawMinutesSql).
 */
export interface SqlDialect extends SqlQuoting {
  /** The second of a reading's ts in its minute (0-59), as an integer. */
  minuteLane(ts: string): string;
  /** The 64-bit mask with bit `lane` set. */
  laneBit(lane: string): string;
  /** Aggregate: the bitwise OR of masks. */
  bitOrAgg(mask: string): string;
  /** The number of bits set in a mask. */
  bitCount(mask: string): string;
  /**
   * The fallback dedup's key, ordered as the row value (grank, seq) (two BIGINTs). Optional: the
   * row value itself when absent (standard SQL); an engine may pack it into one value of the same
   * order.
   */
  dedupKey?(grank: string, seq: string): string;
}

/**
 * The watermark as a relation (gateway, e, grank): E[gateway], and the gateway's rank in the SQL
 * order of gateway ids, so that the lowest gateway of a group is a MIN over an integer. Null when
 * no gateway has a covered epoch.
 */
export function watermarkSql(watermark: Record<string, number>): string | null {
  const entries = Object.entries(watermark).filter(([, e]) => e > 0);
  if (entries.length === 0) return null;
  const values = entries.map(([g, e]) => `(${str(g)}, ${Math.trunc(e)})`).join(', ');
  return `SELECT gateway, e, ROW_NUMBER() OVER (ORDER BY gateway) AS grank FROM (VALUES ${values}) AS v (gateway, e)`;
}

/**
 * The shift of each series (device, metric) of a scan: its smallest value. m2 is computed on
 * value - shift, and rollups carry the shifted sum (ssum), so values large against their spread
 * (counters near 1e12 ± 500) keep their m2 to rounding of the spread, not of the values.
 */
export function shiftsSql(scan: string): string {
  return `SELECT device, metric, shift, MIN(shift) OVER (PARTITION BY metric) AS mshift, ROW_NUMBER() OVER (ORDER BY device, metric) AS sid
FROM (SELECT device, metric, MIN(value) AS shift FROM ${scan} s GROUP BY device, metric) x`;
}

/**
 * The summary aggregates of readings (`value`, `ts`, `shift`, `mshift`, `sid` columns) in one group,
 * device order by ts. The sum is the shifted sum plus count * shift, not an aggregate of its own: one
 * aggregate less per reading, and as close to the exact sum as a direct SUM (the shifted sum is the
 * exact part, the shift's multiple the rounded one).
 */
function readingAggregates(q: SqlQuoting): string {
  const c = (n: string) => q.ident(n);
  return `COUNT(*) AS ${c('count')},
  SUM(value - shift) + COUNT(*) * MIN(shift) AS ${c('sum')},
  MIN(value) AS ${c('min')},
  MAX(value) AS ${c('max')},
  VAR_POP(value - shift) * COUNT(*) AS m2,
  MIN_BY(value, ts) AS ${c('first')},
  MIN(ts) AS first_ts,
  MAX_BY(value, ts) AS ${c('last')},
  MAX(ts) AS last_ts,
  MIN(shift) AS shift,
  SUM(value - shift) AS ssum,
  MIN(mshift) AS mshift,
  MIN(sid) AS sid`;
}

/**
 * A minute summary's aggregates over rows carrying `value`, `ts` and their series' `shift`: m2 and
 * the sum on values shifted by it (exact, docs/batch.md), the rest on the values themselves.
 */
function minuteAggregates(q: SqlDialect): string {
  const c = (n: string) => q.ident(n);
  return `COUNT(*) AS ${c('count')},
    MIN(value) AS ${c('min')},
    MAX(value) AS ${c('max')},
    VAR_POP(value - shift) * COUNT(*) AS m2,
    MIN_BY(value, ts) AS ${c('first')},
    MIN(ts) AS first_ts,
    MAX_BY(value, ts) AS ${c('last')},
    MAX(ts) AS last_ts,
    SUM(value - shift) AS ssum`;
}

/**
 * 1-minute summaries per device straight from the covered master rows (no dedup), with what tells
 * whether the group needs none. A group is `clean` when one gateway delivered it and the mask of
 * its readings' seconds has a bit per row: then no two rows share a ts, no identity is repeated,
 * every row is a reading of that gateway, and the row is the device's and the gateway's summary as
 * is. Rows sharing a ts share a second, so the mask never passes a repeat [INV-2]; readings of one
 * series less than a second apart fail it too and only take the slower path. Other groups are
 * recomputed from their rows with the dedup (fallbackMinutesSql).
 *
 * m2 is one pass, VAR_POP(value - shift) * COUNT(*): Welford's update on values shifted by their
 * series' smallest value, so its rounding is eps * |mean - shift| / stddev of the shifted values,
 * not of the values themselves (which made an unshifted VAR_POP up to 2.7e-9 off on 1e9 ± 500).
 */
export function rawMinutesSql(q: SqlDialect, scan: string): string {
  const c = (n: string) => q.ident(n);
  const lane = q.minuteLane('ts');
  // Grouped by the series' rank (sid) rather than its two strings, and the series' names, shifts and
  // sum (shifted sum + count * shift) put on the 288k groups of a day after, not aggregated over its
  // 1.78M readings: ~10% of the statement's CPU.
  return `SELECT o.device, o.metric, g.bucket,
  g.${c('count')}, g.ssum + g.${c('count')} * o.shift AS ${c('sum')}, g.${c('min')}, g.${c('max')}, g.m2,
  g.${c('first')}, g.first_ts, g.${c('last')}, g.last_ts,
  o.shift, g.ssum, o.mshift, o.sid, g.grank, g.clean
FROM (
  SELECT sid, bucket,
    ${minuteAggregates(q)},
    MIN(grank) AS grank,
    (MIN(grank) = MAX(grank) AND ${q.bitCount(q.bitOrAgg(q.laneBit(lane)))} = COUNT(*)) AS clean
  FROM (
    SELECT r.ts, r.value, w.grank, o.shift, o.sid, date_trunc('minute', r.ts) AS bucket
    FROM ${scan} r
    JOIN wm w ON r.gateway = w.gateway AND r.epoch <= w.e
    JOIN shifts o ON r.device = o.device AND r.metric = o.metric
  ) x
  GROUP BY sid, bucket
) g
JOIN shifts o ON g.sid = o.sid`;
}

/**
 * The groups of raw_1m that are not clean (`unclean`), recomputed from their rows: the covered,
 * deduplicated readings [INV-2], summarized per device, the reading's gateway, metric, minute. The
 * dedup is readingsSql's (one row per identity, the value of the lowest (gateway, seq), the lowest
 * gateway) over the gateways' ranks in `wm` (the SQL order of their ids), so its key is two
 * integers, which the dialect may pack into one (`dedupKey`), and the gateway's name is put on
 * the summaries after.
 */
export function fallbackMinutesSql(q: SqlDialect, scan: string): string {
  const c = (n: string) => q.ident(n);
  // The rows carry their series' rank (sid) from the unclean group, and the dedup and the summary
  // group by it rather than by two strings; names and shifts are put on the summaries after.
  const rows = `(SELECT s.*, u.sid FROM ${scan} s
  JOIN (SELECT device, metric, bucket, sid FROM raw_1m WHERE NOT clean) u ON s.device = u.device AND s.metric = u.metric AND date_trunc('minute', s.ts) = u.bucket)`;
  return `SELECT o.device, w.gateway, o.metric, g.bucket,
  g.${c('count')}, g.ssum + g.${c('count')} * o.shift AS ${c('sum')}, g.${c('min')}, g.${c('max')}, g.m2,
  g.${c('first')}, g.first_ts, g.${c('last')}, g.last_ts,
  o.shift, g.ssum, o.mshift, o.sid
FROM (
  SELECT sid, grank, bucket,
    ${minuteAggregates(q)}
  FROM (SELECT f.*, o.shift, date_trunc('minute', f.ts) AS bucket FROM (
    SELECT r.sid, r.ts, MIN_BY(r.value, ${q.dedupKey?.('w.grank', 'r.seq') ?? '(w.grank, r.seq)'}) AS value, MIN(w.grank) AS grank
    FROM ${rows} r
    JOIN wm w ON r.gateway = w.gateway AND r.epoch <= w.e
    GROUP BY r.sid, r.ts
  ) f JOIN shifts o ON f.sid = o.sid) x
  GROUP BY sid, grank, bucket
) g
JOIN shifts o ON g.sid = o.sid
JOIN wm w ON g.grank = w.grank`;
}

/** The intermediate columns a summary relation carries besides the view's: the shift, the sum shifted by it, the metric's shift. */
const CARRY = ['shift', 'ssum', 'mshift'];

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
 * and last_device: the device of the row picked for first and for last. First/last are the rows
 * with the smallest (first_ts, tie) / largest (last_ts, tie): the group's smallest first_ts and
 * largest last_ts come with the joined-back aggregate, and of the rows holding them MIN_BY/MAX_BY
 * by the tie picks one (FILTER). Chan's m2 needs the group's mean in every row: the group's count
 * and shifted sum, aggregated and joined back (USING the group's columns).
 * (An unordered SUM OVER (PARTITION BY ...) is the same, and DuckDB rewrites it into this when the
 * source is a table; over a UNION it ran a WINDOW operator, 640 ms of gateway_1m's 1.1 s a day.) A `minute` rollup of minute rows
 * only merges rows of the same minute across keys (fleet_1m from gateway_1m).
 *
 * Means are taken on shifted sums, so a series near 1e12 merges its minutes to the rounding of its
 * spread, not of its sums: row i's mean is shift_i + ssum_i / n_i. Rows of one series share their
 * shift (`oneShift`: device rows); rows of several series are taken relative to the metric's shift
 * g (the smallest of its series', `mshift`), mean_i - mean = (shift_i - g) + ssum_i / n_i
 * - Σ(ssum_j + n_j (shift_j - g)) / n, and the merged row's shift is g.
 */
export function rollupSql(q: SqlQuoting, source: string, keys: string[], unit: 'minute' | 'hour' | 'day', tie: DeviceSource | null, devices: DeviceSource | null = null, oneShift = false): string {
  const c = (n: string) => q.ident(n);
  const k = keys.map((x) => `${x}, `).join('');
  const rel = oneShift ? '' : '(shift - mshift) + ';
  const dev = `(${rel}ssum / ${c('count')} - tsum / tcount)`;
  const rowSsum = oneShift ? 'ssum' : `(ssum + ${c('count')} * (shift - mshift))`;
  // With a tie: of the rows holding the group's smallest first_ts (tfirst, from the joined-back
  // aggregate), the one with the smallest tie column; as MIN_BY(x, (first_ts, tie)), without a row
  // value key (DuckDB builds a sort key per row for one: 40% of gateway_1m's CPU).
  const first = tie ? `MIN_BY(${c('first')}, ${tie.first}) FILTER (WHERE first_ts = tfirst)` : `MIN_BY(${c('first')}, first_ts)`;
  const last = tie ? `MAX_BY(${c('last')}, ${tie.last}) FILTER (WHERE last_ts = tlast)` : `MAX_BY(${c('last')}, last_ts)`;
  const deviceCols = !devices ? '' : tie ? `,
  MIN(${devices.first}) FILTER (WHERE first_ts = tfirst) AS first_device,
  MAX(${devices.last}) FILTER (WHERE last_ts = tlast) AS last_device` : `,
  MIN_BY(${devices.first}, first_ts) AS first_device,
  MAX_BY(${devices.last}, last_ts) AS last_device`;
  const tieCols = tie ? ', MIN(s.first_ts) AS tfirst, MAX(s.last_ts) AS tlast' : '';
  return `SELECT ${k}metric, b AS bucket,
  CAST(SUM(${c('count')}) AS BIGINT) AS ${c('count')},
  SUM(${c('sum')}) AS ${c('sum')},
  MIN(${c('min')}) AS ${c('min')},
  MAX(${c('max')}) AS ${c('max')},
  SUM(m2 + ${c('count')} * ${dev} * ${dev}) AS m2,
  ${first} AS ${c('first')},
  MIN(first_ts) AS first_ts,
  ${last} AS ${c('last')},
  MAX(last_ts) AS last_ts,
  MIN(${oneShift ? 'shift' : 'mshift'}) AS shift,
  SUM(rsum) AS ssum,
  MIN(mshift) AS mshift${deviceCols}
FROM (SELECT s.*, date_trunc('${unit}', s.bucket) AS b, ${rowSsum} AS rsum FROM ${source} s) g
JOIN (
  SELECT ${k}metric, date_trunc('${unit}', s.bucket) AS b, SUM(${c('count')}) AS tcount, SUM(${rowSsum}) AS tsum${tieCols}
  FROM ${source} s
  GROUP BY ${k}metric, date_trunc('${unit}', s.bucket)
) t USING (${k}metric, b)
GROUP BY ${k}metric, b`;
}

/** One step of a day's build: a relation named `name` computed from the steps before it. */
export interface BuildStep {
  name: string;
  sql: string;
  /**
   * Set when `sql` is `SELECT <columns> FROM <table> WHERE <keep> UNION ALL <rest>` over an earlier
   * step's table: an engine that can change its tables may build the step in place instead (delete
   * the table's rows that fail `keep`, insert `rest`'s rows with `keep` NULL, and make the step a
   * view of `columns` over it) rather than copy the kept rows into a new table. Either way the step
   * holds the same rows, and `keep` stays true on exactly the rows it was true on before.
   */
  inPlace?: { table: string; keep: string; columns: string[]; rest: string };
}

/** One published view of a day: its step's name is the view's. */
export interface ViewStep {
  name: ViewName;
  /** Key columns of the rows, before metric. */
  keys: string[];
  /**
   * The step's columns its file is sorted by, when not keys, metric, bucket: device_1m's rows carry
   * their series' rank in (device, metric) order (`sid`, from shifts), and sorting by it and bucket
   * gives the same order as by two strings and bucket at about half the cost.
   */
  order?: string[];
  /** Rows mix devices: the step has first_device and last_device (DEVICE_COLUMNS). */
  devices: boolean;
}

/** Device rows: the row's device is its first's and last's. */
const OWN: DeviceSource = { first: 'device', last: 'device' };
/** Rows that already carry first_device/last_device. */
const CARRIED: DeviceSource = { first: 'first_device', last: 'last_device' };

/** The published views, in the order buildSteps computes them. */
export const VIEW_STEPS: readonly ViewStep[] = [
  { name: 'device_1m', keys: ['device'], devices: false, order: ['sid', 'bucket'] },
  { name: 'device_1h', keys: ['device'], devices: false },
  { name: 'device_1d', keys: ['device'], devices: false },
  { name: 'gateway_1m', keys: ['gateway'], devices: true },
  { name: 'gateway_1h', keys: ['gateway'], devices: true },
  { name: 'gateway_1d', keys: ['gateway'], devices: true },
  { name: 'fleet_1m', keys: [], devices: true },
  { name: 'fleet_1h', keys: [], devices: true },
  { name: 'fleet_1d', keys: [], devices: true },
];

/**
 * What an incremental build of a day keeps from the live version: that day's files (relations over
 * them) of the views it merges into rather than recomputes (the minutes of device_1m, gateway_1m
 * and fleet_1m, the hours of device_1h, gateway_1h and fleet_1h), and per gateway the epoch span
 * (lo, hi] whose readings changed since it (state.ts changedSpans).
 */
/** The views whose live files of a day an incremental build merges into (PreviousDay). */
export const MERGED_VIEWS = ['device_1m', 'gateway_1m', 'fleet_1m', 'device_1h', 'gateway_1h', 'fleet_1h'] as const;
export type MergedView = (typeof MERGED_VIEWS)[number];
/** The minute views among them: their files take the live file's untouched minutes as they are (build.ts viewFileSelect). */
const MINUTE_MERGED: ReadonlySet<ViewName> = new Set<ViewName>(['device_1m', 'gateway_1m', 'fleet_1m']);

export interface PreviousDay {
  /** A relation over the live file of each merged view, by view name. */
  files: Record<MergedView, string>;
  spans: Array<{ gateway: string; lo: number; hi: number }>;
  /**
   * Set when the caller computed `touched` already (a table of that name): the relation the
   * touched minutes' rows are read from, any superset of them (the day's files bounded to the
   * touched minutes' time range); unset, `touched` is the first step and the rows come from the day.
   */
  rowsScan?: string;
}

/** The live file a minute view's file merges its touched minutes into (incremental), or undefined. */
export function previousFileOf(previous: PreviousDay, view: ViewName): string | undefined {
  return MINUTE_MERGED.has(view) ? previous.files[view as MergedView] : undefined;
}

/** The minutes of the day's rows whose epochs changed coverage: the only minutes an incremental build recomputes. */
export function touchedMinutesSql(scan: string, spans: PreviousDay['spans']): string {
  if (spans.length === 0) return `SELECT date_trunc('minute', s.ts) AS bucket FROM ${scan} s WHERE 1 = 0`;
  const values = spans.map((x) => `(${str(x.gateway)}, ${Math.trunc(x.lo)}, ${Math.trunc(x.hi)})`).join(', ');
  return `SELECT DISTINCT date_trunc('minute', r.ts) AS bucket
FROM ${scan} r
JOIN (VALUES ${values}) AS c (gateway, lo, hi) ON r.gateway = c.gateway AND r.epoch > c.lo AND r.epoch <= c.hi`;
}

/**
 * The statements of one day, in order, over `scan` (the day's master rows) and E; null when no
 * gateway has a covered epoch. One pass over the master rows computes every device's minutes
 * (rawMinutesSql); the minutes that could hold a repeated identity are recomputed with the dedup
 * (fallbackMinutesSql); every other view is derived from minute rows, never from the readings
 * again:
 * - device_1m: the clean groups as they are, plus the fallback rows merged across gateways;
 * - gateway_1m: a row per device, gateway, minute (the clean groups, each one gateway's, and the
 *   fallback's) merged across devices (tie: device);
 * - the hours and days of each scope, and fleet_1m from gateway_1m, as rollups.
 * A device that moved gateways counts under each gateway for the readings that gateway delivered
 * (its gateway being the lowest of the identity's copies). fleet_1m merges gateway_1m (a few rows
 * per minute); its (ts, device) ties between gateways are broken by the rows' own
 * first_device/last_device, and dedup leaves no two gateways with one (device, metric, ts).
 *
 * With `previous` (an incremental run), only the minutes holding a reading whose coverage changed
 * (`touched`) are computed from the master rows, and the minute steps (device_1m, gateway_1m,
 * fleet_1m) hold those minutes only: their files take the other minutes' rows from the live
 * version's files as they are (build.ts viewFileSelect). An hour holding a touched minute
 * (`touched_1h`) is merged again from its minutes (its other minutes read from the live minute
 * files); every other hour's row is the live version's; every day is merged again from its hours.
 * Exact: a reading's coverage is decided by its epoch and its identity lies in its minute, so a
 * minute none of whose readings changed coverage has the same readings, and the same rows, as
 * before, and an hour none of whose minutes changed has the same row. The kept rows' shifted sums
 * are taken from their stored sums (sum - count * shift), so a kept minute or hour of values large
 * against their spread merges with the rounding of its sum (as every rollup did
 * before the shift); a full run merges it exactly.
 */
export function buildSteps(q: SqlDialect, dayScan: string, watermark: Record<string, number>, previous?: PreviousDay): BuildStep[] | null {
  const scan = previous ? `(SELECT s.* FROM ${previous.rowsScan ?? dayScan} s WHERE date_trunc('minute', s.ts) IN (SELECT bucket FROM touched))` : dayScan;
  const wm = watermarkSql(watermark);
  const c = (n: string) => q.ident(n);
  // A shift may be any value of its series near its readings (m2's rounding is that of the
  // distance); every series of the day is in the live version's hours or in the touched rows, so
  // an incremental build takes the shifts from those (the hours' minimums: a row per series and
  // hour) rather than from another pass over the day.
  const shiftSource = previous?.rowsScan
    ? `(SELECT device, metric, ${c('min')} AS value FROM ${previous.files.device_1h} UNION ALL SELECT device, metric, value FROM ${previous.rowsScan})`
    : dayScan;
  if (!wm) return null;
  const cols = ['count', 'sum', 'min', 'max', 'm2', 'first', 'first_ts', 'last', 'last_ts', ...CARRY].map((n) => q.ident(n));
  const summary = cols.join(', ');
  // A row per device, gateway, minute: the clean groups (each one gateway's) and the fallback's.
  const deviceGateway1m = `(SELECT m.device, w.gateway, m.metric, m.bucket, ${cols.map((x) => `m.${x}`).join(', ')}
FROM raw_1m m JOIN wm w ON m.grank = w.grank WHERE m.clean
UNION ALL
SELECT device, gateway, metric, bucket, ${summary} FROM fallback_1m)`;
  // device_1m: the clean minutes of raw_1m as they are and the fallback's merged across gateways;
  // raw_1m's clean rows are most of it (83% here), so an engine that can builds it in raw_1m
  // itself (BuildStep.inPlace): raw_1m WHERE clean stays what gateway_1m reads.
  const device1mColumns = ['device', 'sid', 'metric', 'bucket', 'count', 'sum', 'min', 'max', 'm2', 'first', 'first_ts', 'last', 'last_ts', ...CARRY];
  const device1mRest = rollupSql(q, 'fallback_1m', ['device', 'sid'], 'minute', null, null, true);
  const head: BuildStep[] = [
    ...(previous && !previous.rowsScan ? [{ name: 'touched', sql: touchedMinutesSql(dayScan, previous.spans) }] : []),
    { name: 'wm', sql: wm },
    { name: 'shifts', sql: shiftsSql(shiftSource) },
    { name: 'raw_1m', sql: rawMinutesSql(q, scan) },
    { name: 'fallback_1m', sql: fallbackMinutesSql(q, scan) },
    {
      name: 'device_1m', sql: `SELECT ${device1mColumns.map((n) => q.ident(n)).join(', ')} FROM raw_1m WHERE clean
UNION ALL
${device1mRest}`,
      inPlace: { table: 'raw_1m', keep: 'clean', columns: device1mColumns, rest: device1mRest },
    },
  ];
  const gateway1m = rollupSql(q, deviceGateway1m, ['gateway'], 'minute', OWN, OWN);
  if (!previous) {
    return [
      ...head,
      { name: 'device_1h', sql: rollupSql(q, 'device_1m', ['device'], 'hour', null, null, true) },
      { name: 'device_1d', sql: rollupSql(q, 'device_1h', ['device'], 'day', null, null, true) },
      { name: 'gateway_1m', sql: gateway1m },
      { name: 'gateway_1h', sql: rollupSql(q, 'gateway_1m', ['gateway'], 'hour', null, CARRIED) },
      { name: 'gateway_1d', sql: rollupSql(q, 'gateway_1h', ['gateway'], 'day', null, CARRIED) },
      { name: 'fleet_1m', sql: rollupSql(q, 'gateway_1m', [], 'minute', CARRIED, CARRIED) },
      { name: 'fleet_1h', sql: rollupSql(q, 'device_1h', [], 'hour', OWN, OWN) },
      { name: 'fleet_1d', sql: rollupSql(q, 'fleet_1h', [], 'day', null, CARRIED) },
    ];
  }
  // Incremental: the minute steps hold the touched minutes only (their files merge them with the
  // live file's other minutes: build.ts viewFileSelect); an hour is merged again from its minutes
  // when it holds a touched minute (`touched_1h`; its other minutes read from the live minute
  // file), and kept from the live hour file otherwise; every day is merged from its hours. A kept
  // row's shifted sum comes from its stored sum (sum - count * shift).
  const kept = (keyCols: string, shift: string) => `SELECT ${keyCols}, CAST(p.bucket AS TIMESTAMP) AS bucket,
  p.${c('count')}, p.${c('sum')}, p.${c('min')}, p.${c('max')}, p.m2, p.${c('first')}, CAST(p.first_ts AS TIMESTAMP) AS first_ts,
  p.${c('last')}, CAST(p.last_ts AS TIMESTAMP) AS last_ts, ${shift} AS shift, p.${c('sum')} - p.${c('count')} * ${shift} AS ssum, o.mshift`;
  const byDevice = 'JOIN shifts o ON p.device = o.device AND p.metric = o.metric';
  const byMetric = 'JOIN (SELECT DISTINCT metric, mshift FROM shifts) o ON p.metric = o.metric';
  const inTouchedHours = `date_trunc('hour', CAST(p.bucket AS TIMESTAMP)) IN (SELECT bucket FROM touched_1h) AND CAST(p.bucket AS TIMESTAMP) NOT IN (SELECT bucket FROM touched)`;
  const untouchedHours = 'CAST(p.bucket AS TIMESTAMP) NOT IN (SELECT bucket FROM touched_1h)';
  const gatewayCols = ['gateway', 'metric', 'bucket', 'count', 'sum', 'min', 'max', 'm2', 'first', 'first_ts', 'last', 'last_ts', ...CARRY, 'first_device', 'last_device'].map((n) => q.ident(n)).join(', ');
  return [
    ...head,
    { name: 'touched_1h', sql: `SELECT DISTINCT date_trunc('hour', bucket) AS bucket FROM touched` },
    {
      name: 'device_1m_th', sql: `SELECT device, metric, bucket, ${summary} FROM device_1m
UNION ALL
${kept('p.device, p.metric', 'o.shift')}
FROM ${previous.files.device_1m} p ${byDevice}
WHERE ${inTouchedHours}`,
    },
    {
      name: 'device_1h', sql: `${rollupSql(q, 'device_1m_th', ['device'], 'hour', null, null, true)}
UNION ALL
${kept('p.device, p.metric', 'o.shift')}
FROM ${previous.files.device_1h} p ${byDevice}
WHERE ${untouchedHours}`,
    },
    { name: 'device_1d', sql: rollupSql(q, 'device_1h', ['device'], 'day', null, null, true) },
    { name: 'gateway_1m', sql: gateway1m },
    {
      name: 'gateway_1m_th', sql: `SELECT ${gatewayCols} FROM gateway_1m
UNION ALL
${kept('p.gateway, p.metric', 'o.mshift')}, p.first_device, p.last_device
FROM ${previous.files.gateway_1m} p ${byMetric}
WHERE ${inTouchedHours}`,
    },
    {
      name: 'gateway_1h', sql: `${rollupSql(q, 'gateway_1m_th', ['gateway'], 'hour', null, CARRIED)}
UNION ALL
${kept('p.gateway, p.metric', 'o.mshift')}, p.first_device, p.last_device
FROM ${previous.files.gateway_1h} p ${byMetric}
WHERE ${untouchedHours}`,
    },
    { name: 'gateway_1d', sql: rollupSql(q, 'gateway_1h', ['gateway'], 'day', null, CARRIED) },
    { name: 'fleet_1m', sql: rollupSql(q, 'gateway_1m', [], 'minute', CARRIED, CARRIED) },
    {
      name: 'fleet_1h', sql: `${rollupSql(q, '(SELECT * FROM device_1h WHERE bucket IN (SELECT bucket FROM touched_1h))', [], 'hour', OWN, OWN)}
UNION ALL
${kept('p.metric', 'o.mshift')}, p.first_device, p.last_device
FROM ${previous.files.fleet_1h} p ${byMetric}
WHERE ${untouchedHours}`,
    },
    { name: 'fleet_1d', sql: rollupSql(q, 'fleet_1h', [], 'day', null, CARRIED) },
  ];
}

/** The file's column list of a view, in order, with `ts` wrapping each timestamp column. */
export function outputColumns(q: SqlQuoting, keys: string[], ts: (col: string) => string, devices = false): string {
  const cols = [...keys, 'metric', 'bucket', ...SUMMARY_COLUMNS, ...(devices ? DEVICE_COLUMNS : [])];
  return cols.map((n) => ((TIMESTAMP_COLUMNS as readonly string[]).includes(n) ? `${ts(n)} AS ${n}` : q.ident(n))).join(', ');
}
