/** Durable file steps: fsync a file or a directory, rename into place, version directory names. */
import { open, rename, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DAY_MS, HOUR_MS } from '../../shared/time.js';
import type { ViewName } from './sink.js';

/** fsync a file or a directory (a directory's fsync makes a rename or a new entry in it durable). */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Move finished files into place: fsync each, rename (atomic on one filesystem), then fsync each
 * target directory once, after all its renames (a day's hour files share one).
 */
export async function publishFiles(moves: ReadonlyArray<{ tmp: string; target: string }>): Promise<void> {
  await Promise.all(moves.map((m) => fsyncPath(m.tmp)));
  const dirs = [...new Set(moves.map((m) => dirname(m.target)))];
  await Promise.all(dirs.map((d) => mkdir(d, { recursive: true })));
  for (const m of moves) await rename(m.tmp, m.target);
  await Promise.all(dirs.map((d) => fsyncPath(d)));
}

/** `v000012`: the directory of a view version under views/. */
export function versionDir(version: number): string {
  return `v${String(version).padStart(6, '0')}`;
}

/** The version of a `v000012` directory name, or null for any other name. */
export function parseVersionDir(name: string): number | null {
  const m = /^v(\d{6,})$/.exec(name);
  return m ? Number(m[1]) : null;
}

/**
 * The views whose files of a recent day (recentDay) hold an hour each
 * (`<view>/day=YYYY-MM-DD-hour=HH.parquet`; not an `hour=` directory, which DuckDB, Spark and Trino
 * would read as a partition column) rather than the day: the minute views, the largest, which
 * incremental runs merge new minutes into. A run that touches an hour of a recent day writes that
 * hour's files again and keeps the live files of the day's other hours.
 */
export const HOUR_FILE_VIEWS: ReadonlySet<ViewName> = new Set<ViewName>(['device_1m', 'gateway_1m', 'fleet_1m']);

/**
 * Whether a run at `nowMs` writes `day`'s minute views as hour files: a recent day (the UTC day of
 * the run and the one before), which later runs are likely to touch again. An older day's are a
 * file a day, which a full build writes at once, a query reads as one file, and a run compacts the
 * hour files of a day into once the day is no longer recent (job.ts).
 */
export function recentDay(day: string, nowMs: number): boolean {
  return dayStartMs(day) + RECENT_DAYS * DAY_MS > nowMs;
}

/** Days, the run's own included, whose minute views are hour files. */
export const RECENT_DAYS = 2;

/** UTC midnight of a `YYYY-MM-DD` day, epoch ms. */
export function dayStartMs(day: string): number {
  return Date.parse(`${day}T00:00:00Z`);
}

/** Where a view file lies in time: its UTC day and, for an hour file, its hour (0-23). */
export interface ViewPart {
  day: string;
  hour: number | null;
}

const VIEW_FILE_RE = /day=(\d{4}-\d{2}-\d{2})(?:-hour=(\d{2}))?\.parquet$/;

/** The day and hour of a view file path (`.../day=2024-11-23.parquet`, `.../day=2024-11-23-hour=05.parquet`), or null. */
export function viewPartOfPath(path: string): ViewPart | null {
  const m = VIEW_FILE_RE.exec(path);
  if (!m) return null;
  const hour = m[2] === undefined ? null : Number(m[2]);
  return hour !== null && hour > 23 ? null : { day: m[1], hour };
}

/** The day of a view file path, or null. */
export function dayOfPath(path: string): string | null {
  return viewPartOfPath(path)?.day ?? null;
}

/** A view file's path within a version directory: `<view>/day=D.parquet`, or `<view>/day=D-hour=HH.parquet` for an hour file. */
export function viewFileName(view: ViewName, day: string, hour: number | null): string {
  return hour === null ? `${view}/day=${day}.parquet` : `${view}/day=${day}-hour=${String(hour).padStart(2, '0')}.parquet`;
}

/** Where a view file's rows lie, epoch ms [start, end), from its name (a day or an hour file); null for another name. */
export function viewFileSpan(path: string): { start: number; end: number } | null {
  const part = viewPartOfPath(path);
  if (!part) return null;
  const day = dayStartMs(part.day);
  return part.hour === null ? { start: day, end: day + DAY_MS } : { start: day + part.hour * HOUR_MS, end: day + (part.hour + 1) * HOUR_MS };
}
