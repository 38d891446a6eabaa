/**
 * The speed layer's read side: rolling windows per device and metric, merged from the 1-minute
 * partials (never a rescan of raw readings). A window of span W covers the 1-minute buckets that
 * cover [now - W, now]: every minute from minuteOf(now - W) to the current one, included.
 */
import { EMPTY, fromColumns, merge, toWindowStats, type Summary, type SummaryColumns, type WindowStats } from '../../shared/summary.js';
import { MINUTE_MS, minuteOf } from '../../shared/time.js';
import type { Db } from '../../shared/sqlite.js';

export const WINDOW_SPANS = { '1m': 1, '5m': 5, '15m': 15, '1h': 60, '24h': 1440 } as const;
export type WindowName = keyof typeof WINDOW_SPANS;

export interface WindowsAnswer {
  device: string;
  metric: string;
  windows: Record<WindowName, WindowStats>;
}

/** A row of `partials` as the windows read it: one minute of one device's metric, one epoch. */
export interface PartialRow extends SummaryColumns {
  minute: number;
}

export function rowToSummary(r: PartialRow, device: string): Summary {
  return fromColumns(r, device);
}

/** The windows of one device's metric at `now`, from the partials (all epochs) in the database. */
export async function readWindows(db: Db, device: string, metric: string, now: number): Promise<WindowsAnswer> {
  const current = minuteOf(now);
  const oldest = minuteOf(now - WINDOW_SPANS['24h'] * MINUTE_MS);
  const rows = await db.all<PartialRow>(
    `SELECT minute, count, sum, min, max, m2, first, first_ts, last, last_ts FROM partials
     WHERE device = ? AND metric = ? AND minute BETWEEN ? AND ? ORDER BY minute DESC`,
    [device, metric, oldest, current],
  );
  return { device, metric, windows: windowsFromRows(rows, device, now) };
}

/** Pure: fold partial rows (any order, any epochs) into the windows at `now`. */
export function windowsFromRows(rows: PartialRow[], device: string, now: number): Record<WindowName, WindowStats> {
  const sorted = [...rows].sort((a, b) => b.minute - a.minute);
  const names = (Object.keys(WINDOW_SPANS) as WindowName[]).sort((a, b) => WINDOW_SPANS[a] - WINDOW_SPANS[b]);
  const out = {} as Record<WindowName, WindowStats>;
  let acc: Summary = { ...EMPTY };
  let i = 0;
  for (const name of names) {
    const from = minuteOf(now - WINDOW_SPANS[name] * MINUTE_MS);
    // Newest first, so each wider window extends the narrower one's summary.
    while (i < sorted.length && sorted[i].minute >= from) {
      if (sorted[i].minute <= now) acc = merge(acc, rowToSummary(sorted[i], device));
      i++;
    }
    out[name] = toWindowStats(acc);
  }
  return out;
}
