/**
 * View rows as InfluxDB line protocol: measurement = view name, tags = device|gateway and metric,
 * timestamp = bucket start in ms. Pure functions.
 *
 * Every line of a view carries the same field set with the same types (count and the *_ts fields
 * integers, the rest floats), because InfluxDB refuses a field whose type changes (400, "field type
 * conflict"), and a point sent again overwrites the one with the same series and time: a rerun
 * converges instead of adding.
 */
import type { ViewRow } from '../view-rows.js';

/** Why a row cannot be written as a point; a label of braid_sink_points_skipped_total. */
export type SkipReason = 'empty_tag' | 'unrepresentable_tag' | 'bad_count';

/** The fields of a point, in line order. */
export const POINT_FIELDS = ['count', 'sum', 'min', 'max', 'm2', 'mean', 'stddev', 'first', 'last', 'first_ts', 'last_ts'] as const;
export type PointField = (typeof POINT_FIELDS)[number];
/** Fields written as integers (`12i`); the others are floats. */
export const INTEGER_FIELDS: ReadonlySet<PointField> = new Set(['count', 'first_ts', 'last_ts']);

/**
 * String fields, after the numeric ones, where the row has them (gateway and fleet views): the
 * devices of first and last, so a reader merges first/last across devices exactly (docs/serving.md).
 */
export const STRING_FIELDS = ['first_device', 'last_device'] as const;

export interface LineOptions {
  /**
   * Write STRING_FIELDS (default true). VictoriaMetrics stores a string field as a series of zeros,
   * so the sink leaves them out for a server that is not InfluxDB.
   */
  stringFields?: boolean;
}

/** Measurement names: comma and space are escaped (line protocol reference, "Special characters"). */
export function escapeMeasurement(s: string): string {
  return s.replace(/[, ]/g, (c) => `\\${c}`);
}

/** Tag keys and values: comma, equals sign and space are escaped. */
export function escapeTag(s: string): string {
  return s.replace(/[,= ]/g, (c) => `\\${c}`);
}

/**
 * Whether a tag value survives the round trip. Line protocol has no escape for a line break, and
 * InfluxDB 1.x does not read `\\` as an escaped backslash, so a backslash right before a character
 * we must escape (or at the end) would be taken for the escape itself. Empty tag values are invalid.
 */
export function tagProblem(value: string): SkipReason | undefined {
  if (value === '') return 'empty_tag';
  if (/[\n\r]/.test(value) || /\\([,= ]|$)/.test(value)) return 'unrepresentable_tag';
  return undefined;
}

/** The point's fields as numbers (mean and population stddev derived from the summary). */
export function pointFields(row: ViewRow): Partial<Record<PointField, number>> {
  const out: Partial<Record<PointField, number>> = {
    count: row.count, sum: row.sum, min: row.min, max: row.max, m2: row.m2,
    mean: row.sum / row.count,
    // m2 can come out a hair below 0 from rounding; stddev of one reading is 0
    stddev: Math.sqrt(Math.max(0, row.m2) / row.count),
  };
  if (row.first !== null) out.first = row.first;
  if (row.last !== null) out.last = row.last;
  if (row.firstTs !== null) out.first_ts = row.firstTs;
  if (row.lastTs !== null) out.last_ts = row.lastTs;
  return out;
}

/** JS shortest round-trip form ("1e+21" included) is what Go's ParseFloat and VictoriaMetrics read. */
function formatField(name: PointField, v: number): string | undefined {
  if (!Number.isFinite(v)) return undefined; // line protocol has no NaN or Infinity
  return INTEGER_FIELDS.has(name) ? `${Math.round(v)}i` : String(v);
}

/** A string field value: backslash and double quote are escaped (the only escapes InfluxDB reads there). */
export function quoteStringField(s: string): string {
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** One line, or why the row has none. */
export function toLine(measurement: string, row: ViewRow, o: LineOptions = {}): { line: string } | { skip: SkipReason } {
  if (!(row.count >= 1) || !Number.isFinite(row.count)) return { skip: 'bad_count' };
  let tags = '';
  // sorted tag keys: what InfluxDB recommends for parse speed
  for (const key of Object.keys(row.tags).sort()) {
    const value = row.tags[key];
    const problem = tagProblem(value);
    if (problem) return { skip: problem };
    tags += `,${escapeTag(key)}=${escapeTag(value)}`;
  }
  const fields: string[] = [];
  const values = pointFields(row);
  for (const name of POINT_FIELDS) {
    const v = values[name];
    const text = v === undefined ? undefined : formatField(name, v);
    if (text !== undefined) fields.push(`${name}=${text}`);
  }
  if (o.stringFields !== false) {
    if (row.firstDevice != null) fields.push(`first_device=${quoteStringField(row.firstDevice)}`);
    if (row.lastDevice != null) fields.push(`last_device=${quoteStringField(row.lastDevice)}`);
  }
  return { line: `${escapeMeasurement(measurement)}${tags} ${fields.join(',')} ${Math.round(row.bucket)}` };
}
