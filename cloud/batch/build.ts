/**
 * Build one UTC day's views: the dialect reads the day's master files, the portable SQL
 * (sql.ts buildSteps) filters by E, summarizes and deduplicates where needed, the dialect writes
 * one Parquet file per view.
 */
import { join } from 'node:path';
import type { DuckDialect } from './dialect.js';
import { buildSteps, MERGED_VIEWS, type MergedView, outputColumns, previousFileOf, touchedMinutesSql, VIEW_STEPS, type PreviousDay } from './sql.js';
import type { ViewName } from './sink.js';
import { HOUR_MS, MINUTE_MS } from '../../shared/time.js';
import { dayStartMs, HOUR_FILE_VIEWS, viewFileName } from './files.js';

export interface DayBuild {
  /** Readings the views of the day cover (after the E filter and dedup). */
  readings: number;
  /**
   * Per published view, the files written under `outDir` with the hour each holds (null: the day;
   * files.ts HOUR_FILE_VIEWS hold an hour each); no file in a view when the day has no readings.
   */
  files: Partial<Record<ViewName, BuiltFile[]>>;
  /**
   * The hours whose hour files this build replaced: an incremental build's touched hours, whose
   * live files are now its files (or none, an hour left without rows); the live files of the day's
   * other hours stay as they are. null: every file of the day is replaced.
   */
  replacedHours: number[] | null;
}

export interface BuiltFile {
  file: string;
  hour: number | null;
}

/** A live view file of the day (absolute path) and the hour it holds (null: the day). */
export interface LiveFile {
  path: string;
  hour: number | null;
}

/**
 * An incremental build's view of the live version of the day: its files of the minute views (an
 * hour file each) and of the hour views (one each), which it merges into instead of computing
 * again (sql.ts PreviousDay).
 */
export interface PreviousDayFiles {
  files: Record<MergedView, LiveFile[]>;
  spans: PreviousDay['spans'];
}

/** Where a view file's rows lie: a UTC hour, epoch ms [fromMs, toMs). */
interface Within {
  fromMs: number;
  toMs: number;
}

/** A view file's order in the engine's quoting: key, metric, bucket. */
const fileOrder = (engine: DuckDialect, view: (typeof VIEW_STEPS)[number]) => [...view.keys, 'metric', 'bucket'].map((c) => engine.ident(c)).join(', ');

/** Where a build writes a view file before it is published: its name in the version directory, flattened into `outDir`. */
const tmpFile = (outDir: string, view: ViewName, day: string, hour: number | null) => join(outDir, viewFileName(view, day, hour).replace('/', '-'));

const tsLiteral = (ms: number) => `TIMESTAMP '${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')}'`;

/**
 * A view's rows in file columns, unsorted. With `kept` (an incremental build of a minute view,
 * whose step holds the touched minutes only), the live files' rows of the other minutes join them.
 */
function viewRows(engine: DuckDialect, view: (typeof VIEW_STEPS)[number], kept: string, tables: { touched: string; source: string }): string {
  const cols = outputColumns(engine, view.keys, (c) => engine.outTimestamp(c), view.devices);
  return `SELECT ${cols} FROM ${kept} p WHERE CAST(p.bucket AS TIMESTAMP) NOT IN (SELECT bucket FROM ${tables.touched})
UNION ALL
SELECT ${cols} FROM ${tables.source}`;
}

/**
 * The SELECT that writes a view's file: its columns in file order, sorted by key, metric, bucket (or
 * the view's `order`, the same order), the rows of one hour with `within`. With `kept`, the rows
 * of viewRows.
 */
export function viewFileSelect(engine: DuckDialect, view: (typeof VIEW_STEPS)[number], kept?: string, tables: { touched: string; source: string } = { touched: 'touched', source: engine.ident(view.name) }, within?: Within): string {
  const range = within ? ` WHERE bucket >= ${tsLiteral(within.fromMs)} AND bucket < ${tsLiteral(within.toMs)}` : '';
  if (kept) return `SELECT * FROM (${viewRows(engine, view, kept, tables)}) v${range} ORDER BY ${fileOrder(engine, view)}`;
  const cols = outputColumns(engine, view.keys, (c) => engine.outTimestamp(c), view.devices);
  const order = view.order ? view.order.map((c) => engine.ident(c)).join(', ') : fileOrder(engine, view);
  return `SELECT ${cols} FROM ${engine.ident(view.name)}${range} ORDER BY ${order}`;
}

/**
 * The relation an incremental build reads a merged view's live rows from: an hour view's file; a
 * minute view's day file, or its hour files (all of them, or with `touchedHours` those of the
 * touched hours only, when the build writes no other hour's file); with none of those, no rows in
 * the files' columns.
 */
function liveRelation(engine: DuckDialect, files: LiveFile[], touchedHours: ReadonlySet<number> | null): string {
  const hit = touchedHours ? files.filter((f) => f.hour !== null && touchedHours.has(f.hour)) : files;
  return hit.length ? engine.readParquet(hit.map((f) => f.path)) : `(SELECT * FROM ${engine.readParquet(files[0].path)} LIMIT 0)`;
}

export interface DayBuildOptions {
  /** An incremental build's live files of the day (sql.ts PreviousDay); none: from the master files alone. */
  previous?: PreviousDayFiles;
  /** A second connection that writes device_1m's files beside the other steps (an incremental run of one day). */
  helper?: DuckDialect;
  /** Write the minute views as hour files (files.ts HOUR_FILE_VIEWS: a recent day), else a file a day. */
  hourFiles: boolean;
}

/**
 * Compute the views of `day` from `files` (absolute paths) and write them under `outDir`: a file a
 * day of each view, or with `hourFiles` an hour file an hour with rows of each minute view.
 * Rows are written sorted by key, metric, bucket, so the files of equal views are equal row for
 * row. With `previous`, only the minutes whose readings' coverage changed are computed from the
 * master files (sql.ts buildSteps); when the live minute views are hour files and stay so, only
 * the hour files of the touched hours are written again. The statements go to the engine in a
 * few calls (the steps, the counts, the files), not one each: a day of a small fleet costs a few
 * milliseconds of SQL, and a round trip each was most of it on a busy machine.
 */
export async function buildDay(engine: DuckDialect, day: string, files: string[], watermark: Record<string, number>, outDir: string, opts: DayBuildOptions): Promise<DayBuild> {
  const { previous, helper, hourFiles } = opts;
  let prev: PreviousDay | undefined;
  // Hour files merged hour by hour: the build replaces the touched hours' files only.
  let touchedHours: Set<number> | null = null;
  if (previous && files.length) {
    // The touched minutes from the rows of the changed epochs only, and then their rows from the
    // touched time range only: bounds on the files' own columns, which the Parquet reader checks
    // against each file's and row group's statistics (a superset of the rows; the SQL keeps the
    // same ones as over the whole day).
    const spans = previous.spans;
    const changed = spans.length ? engine.scanMaster(files, { epochAbove: Math.min(...spans.map((x) => x.lo)), epochAtMost: Math.max(...spans.map((x) => x.hi)) }) : engine.scanMaster(files);
    await engine.materialize('touched', touchedMinutesSql(changed, spans));
    const range = await engine.timestampRange('touched', 'bucket');
    const liveHourFiles = [...HOUR_FILE_VIEWS].every((v) => previous.files[v as MergedView].every((f) => f.hour !== null));
    if (hourFiles && liveHourFiles) touchedHours = new Set(await engine.hoursOf('SELECT bucket FROM touched'));
    prev = {
      files: Object.fromEntries(MERGED_VIEWS.map((v) => [v, liveRelation(engine, previous.files[v], HOUR_FILE_VIEWS.has(v) ? touchedHours : null)])) as Record<MergedView, string>,
      spans,
      rowsScan: engine.scanMaster(files, range ? { fromMs: range.fromMs, toMs: range.toMs + MINUTE_MS } : { fromMs: 0, toMs: 0 }),
    };
  }
  const steps = files.length ? buildSteps(engine, engine.scanMaster(files), watermark, prev) : null;
  if (!steps) {
    if (prev) await engine.drop('touched');
    return { readings: 0, files: {}, replacedHours: null };
  }
  const dayMs = dayStartMs(day);
  const file = (view: ViewName, hour: number | null) => tmpFile(outDir, view, day, hour);
  const out: Partial<Record<ViewName, BuiltFile[]>> = {};
  const write = (view: ViewName, hour: number | null, select: string) => {
    out[view] = [...(out[view] ?? []), { file: file(view, hour), hour }];
    return { select, file: file(view, hour) };
  };
  // A minute view's files: one for the day, or an hour file for each hour its rows lie in (those
  // of `dayHours`, the day's hours with a covered reading, the same for the three minute views;
  // merged with live files, the hours of the merged rows: the touched hours left with rows, or the
  // day's).
  const minuteWrites = async (eng: DuckDialect, view: (typeof VIEW_STEPS)[number], dayHours: number[] | null, kept?: string, tables?: { touched: string; source: string }) => {
    if (!hourFiles) return [write(view.name, null, viewFileSelect(eng, view, kept, tables))];
    const hours = kept ? await eng.hoursOf(viewRows(eng, view, kept, tables ?? { touched: 'touched', source: eng.ident(view.name) })) : dayHours!;
    return hours.map((h) => write(view.name, h, viewFileSelect(eng, view, kept, tables, { fromMs: dayMs + h * HOUR_MS, toMs: dayMs + (h + 1) * HOUR_MS })));
  };
  // An incremental build with a helper connection writes device_1m's files (the largest, a merge of
  // the live files' rows with the touched minutes', most of its time serial) on it while this
  // connection computes the other steps: the touched minutes and `touched` are copied where the
  // helper sees them (a few thousand rows).
  const split = prev && helper ? steps.findIndex((s) => s.name === 'device_1m') + 1 : 0;
  let device1m: Promise<void> | null = null;
  let shared: string[] = [];
  try {
    if (split > 0) {
      await engine.materializeAll(steps.slice(0, split));
      const t = await engine.share(['touched', 'device_1m'], `day_${day.replace(/-/g, '')}`);
      shared = Object.values(t);
      const view = VIEW_STEPS.find((v) => v.name === 'device_1m')!;
      const tables = { touched: t.touched, source: t.device_1m };
      device1m = (async () => helper!.writeAndDrop(await minuteWrites(helper!, view, null, previousFileOf(prev!, 'device_1m'), tables), []))();
      device1m.catch(() => undefined); // awaited below
    }
    await engine.materializeAll(steps.slice(split));
    // device_1d holds the whole day (incremental, device_1m only its touched minutes).
    const n = await engine.sum('device_1d', engine.ident('count'));
    const writes: Array<{ select: string; file: string }> = [];
    if (n > 0) {
      const dayHours = hourFiles && !prev ? await engine.hoursOf('SELECT bucket FROM device_1m') : null;
      for (const view of VIEW_STEPS) {
        if (device1m && view.name === 'device_1m') continue;
        if (HOUR_FILE_VIEWS.has(view.name)) writes.push(...await minuteWrites(engine, view, dayHours, (prev && previousFileOf(prev, view.name)) || undefined));
        else writes.push(write(view.name, null, viewFileSelect(engine, view)));
      }
    }
    await engine.writeAndDrop(writes, [...steps.map((s) => s.name).reverse(), ...(prev ? ['touched'] : [])]);
    if (device1m) await device1m;
    if (n === 0) return { readings: 0, files: {}, replacedHours: null };
    return { readings: n, files: out, replacedHours: touchedHours ? [...touchedHours].sort((a, b) => a - b) : null };
  } finally {
    if (device1m) await device1m.catch(() => undefined);
    if (shared.length) await engine.dropShared(shared).catch(() => undefined);
  }
}

/**
 * Compact a day's minute views from hour files into a file a day each (`files`: each view's live
 * files of the day, absolute paths): the same rows, sorted as a day file is. Returns the files
 * written under `outDir`, by view.
 */
export async function compactDay(engine: DuckDialect, day: string, files: Partial<Record<ViewName, LiveFile[]>>, outDir: string): Promise<Partial<Record<ViewName, string>>> {
  const out: Partial<Record<ViewName, string>> = {};
  const writes: Array<{ select: string; file: string }> = [];
  for (const view of VIEW_STEPS) {
    const live = files[view.name];
    if (!live?.length) continue;
    out[view.name] = tmpFile(outDir, view.name, day, null);
    writes.push({ select: `SELECT * FROM ${engine.readParquet(live.map((f) => f.path))} ORDER BY ${fileOrder(engine, view)}`, file: out[view.name]! });
  }
  await engine.writeAndDrop(writes, []);
  return out;
}
