/**
 * Build one UTC day's views: the dialect reads the day's master files, the portable SQL
 * (sql.ts) filters by E, deduplicates and summarizes, the dialect writes one Parquet file per view.
 */
import { join } from 'node:path';
import type { DuckDialect } from './dialect.js';
import { outputColumns, readingsSql, VIEW_STEPS } from './sql.js';
import type { ViewName } from './sink.js';

export interface DayBuild {
  /** Readings the views of the day cover (after the E filter and dedup). */
  readings: number;
  /** Per published view, the file written under `outDir`; empty when the day has no readings. */
  files: Partial<Record<ViewName, string>>;
}

/**
 * Compute the views of `day` from `files` (absolute paths) and write them to
 * `<outDir>/<view>-day=<day>.parquet`. Rows are written sorted by key, metric, bucket, so the
 * files of equal views are equal row for row.
 */
export async function buildDay(engine: DuckDialect, day: string, files: string[], watermark: Record<string, number>, outDir: string): Promise<DayBuild> {
  const readings = files.length ? readingsSql(engine.scanMaster(files), watermark) : null;
  if (!readings) return { readings: 0, files: {} };
  await engine.materialize('readings', readings);
  const n = await engine.count('readings');
  const out: Partial<Record<ViewName, string>> = {};
  if (n > 0) {
    for (const step of VIEW_STEPS) await engine.materialize(step.name, step.sql(engine));
    for (const step of VIEW_STEPS) {
      const name = step.name;
      const order = [...step.keys, 'metric', 'bucket'].join(', ');
      const file = join(outDir, `${name}-day=${day}.parquet`);
      await engine.copyToParquet(
        `SELECT ${outputColumns(engine, step.keys, (c) => engine.outTimestamp(c), step.devices)} FROM ${engine.ident(name)} ORDER BY ${order}`, file);
      out[name] = file;
    }
  }
  for (const step of VIEW_STEPS) await engine.drop(step.name);
  await engine.drop('readings');
  return { readings: n, files: out };
}
