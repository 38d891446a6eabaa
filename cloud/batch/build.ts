/**
 * Build one UTC day's views: the dialect reads the day's master files, the portable SQL
 * (sql.ts buildSteps) filters by E, summarizes and deduplicates where needed, the dialect writes
 * one Parquet file per view.
 */
import { join } from 'node:path';
import type { DuckDialect } from './dialect.js';
import { buildSteps, MERGED_VIEWS, type MergedView, outputColumns, previousFileOf, touchedMinutesSql, VIEW_STEPS, type PreviousDay } from './sql.js';
import type { ViewName } from './sink.js';
import { MINUTE_MS } from '../../shared/time.js';

export interface DayBuild {
  /** Readings the views of the day cover (after the E filter and dedup). */
  readings: number;
  /** Per published view, the file written under `outDir`; empty when the day has no readings. */
  files: Partial<Record<ViewName, string>>;
}

/**
 * An incremental build's view of the live version of the day: its files (absolute paths) of the
 * minute views and the hour views, which it merges into instead of computing again (sql.ts PreviousDay).
 */
export interface PreviousDayFiles {
  files: Record<MergedView, string>;
  spans: PreviousDay['spans'];
}

/**
 * The SELECT that writes a view's file: its columns in file order, sorted by key, metric, bucket (or
 * the view's `order`, the same order). With `kept` (an incremental build of a minute view, whose
 * step holds the touched minutes only), the live file's rows of the other minutes join them.
 */
export function viewFileSelect(engine: DuckDialect, view: (typeof VIEW_STEPS)[number], kept?: string, tables: { touched: string; source: string } = { touched: 'touched', source: engine.ident(view.name) }): string {
  const cols = outputColumns(engine, view.keys, (c) => engine.outTimestamp(c), view.devices);
  if (kept) {
    const order = [...view.keys, 'metric', 'bucket'].map((c) => engine.ident(c)).join(', ');
    return `SELECT * FROM (SELECT ${cols} FROM ${kept} p WHERE CAST(p.bucket AS TIMESTAMP) NOT IN (SELECT bucket FROM ${tables.touched})
UNION ALL
SELECT ${cols} FROM ${tables.source}) v ORDER BY ${order}`;
  }
  const order = (view.order ?? [...view.keys, 'metric', 'bucket']).map((c) => engine.ident(c)).join(', ');
  return `SELECT ${cols} FROM ${engine.ident(view.name)} ORDER BY ${order}`;
}

/**
 * Compute the views of `day` from `files` (absolute paths) and write them to
 * `<outDir>/<view>-day=<day>.parquet`. Rows are written sorted by key, metric, bucket, so the
 * files of equal views are equal row for row. With `previous`, only the minutes whose readings'
 * coverage changed are computed from the master files (sql.ts buildSteps). The statements go to
 * the engine in three calls (the steps, the count, the files), not one each: a day of a small
 * fleet costs a few milliseconds of SQL, and a round trip each was most of it on a busy machine.
 */
export async function buildDay(engine: DuckDialect, day: string, files: string[], watermark: Record<string, number>, outDir: string, previous?: PreviousDayFiles, helper?: DuckDialect): Promise<DayBuild> {
  let prev: PreviousDay | undefined;
  if (previous && files.length) {
    // The touched minutes from the rows of the changed epochs only, and then their rows from the
    // touched time range only: bounds on the files' own columns, which the Parquet reader checks
    // against each file's and row group's statistics (a superset of the rows; the SQL keeps the
    // same ones as over the whole day).
    const spans = previous.spans;
    const changed = spans.length ? engine.scanMaster(files, { epochAbove: Math.min(...spans.map((x) => x.lo)), epochAtMost: Math.max(...spans.map((x) => x.hi)) }) : engine.scanMaster(files);
    await engine.materialize('touched', touchedMinutesSql(changed, spans));
    const range = await engine.timestampRange('touched', 'bucket');
    prev = {
      files: Object.fromEntries(MERGED_VIEWS.map((v) => [v, engine.readParquet(previous.files[v])])) as Record<MergedView, string>,
      spans,
      rowsScan: engine.scanMaster(files, range ? { fromMs: range.fromMs, toMs: range.toMs + MINUTE_MS } : { fromMs: 0, toMs: 0 }),
    };
  }
  const steps = files.length ? buildSteps(engine, engine.scanMaster(files), watermark, prev) : null;
  if (!steps) {
    if (prev) await engine.drop('touched');
    return { readings: 0, files: {} };
  }
  const out: Partial<Record<ViewName, string>> = {};
  const file = (view: ViewName) => join(outDir, `${view}-day=${day}.parquet`);
  // An incremental build with a helper connection writes device_1m's file (the largest, a merge of
  // the live file's rows with the touched minutes', most of its time serial) on it while this
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
      device1m = helper!.copyToParquet(viewFileSelect(helper!, view, previousFileOf(prev!, 'device_1m'), { touched: t.touched, source: t.device_1m }), file('device_1m'));
      device1m.catch(() => undefined); // awaited below
    }
    await engine.materializeAll(steps.slice(split));
    // device_1d holds the whole day (incremental, device_1m only its touched minutes).
    const n = await engine.sum('device_1d', engine.ident('count'));
    const writes: Array<{ select: string; file: string }> = [];
    if (n > 0) {
      for (const view of VIEW_STEPS) {
        out[view.name] = file(view.name);
        if (device1m && view.name === 'device_1m') continue;
        const kept = prev && previousFileOf(prev, view.name);
        writes.push({ select: viewFileSelect(engine, view, kept || undefined), file: file(view.name) });
      }
    }
    await engine.writeAndDrop(writes, [...steps.map((s) => s.name).reverse(), ...(prev ? ['touched'] : [])]);
    if (device1m) await device1m;
    return { readings: n, files: out };
  } finally {
    if (device1m) await device1m.catch(() => undefined);
    if (shared.length) await engine.dropShared(shared).catch(() => undefined);
  }
}
