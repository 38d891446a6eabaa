/**
 * The batch's build statements run by hand under DuckDB's profiler: for one day of a data dir,
 * `EXPLAIN (ANALYZE, FORMAT JSON)` of each statement that cloud/batch/build.ts `buildDay` runs
 * (every step of cloud/batch/sql.ts `buildSteps` over the dialect's scan, the COPY of every
 * published view), in the same order on the same engine
 * settings (cloud/batch/dialect.ts `DuckDialect`), and beside them the bare device_1m aggregation
 * of the same files. Each statement's operators are summed by type with their CPU time (DuckDB's
 * `operator_timing`, summed over threads) and output rows.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DuckDialect, VIEW_PARQUET_OPTIONS } from '../../cloud/batch/dialect.js';
import { viewFileSelect } from '../../cloud/batch/build.js';
import { buildSteps, VIEW_STEPS } from '../../cloud/batch/sql.js';

export interface OperatorTime {
  /** Operator type, with the window's PARTITION/ORDER or the aggregate's groups when DuckDB names them. */
  op: string;
  detail: string;
  seconds: number;
  rows: number;
}

export interface StatementProfile {
  name: string;
  /** Wall time of the statement (DuckDB `latency`). */
  wallMs: number;
  /** Sum of operator CPU time over threads. */
  cpuMs: number;
  rowsOut: number;
  peakBufferBytes: number;
  spillBytes: number;
  operators: OperatorTime[];
}

interface ProfileNode {
  operator_type?: string;
  operator_name?: string;
  operator_timing?: number;
  operator_cardinality?: number;
  extra_info?: Record<string, unknown>;
  children?: ProfileNode[];
  latency?: number;
  system_peak_buffer_memory?: number;
  system_peak_temp_dir_size?: number;
}

function detailOf(n: ProfileNode): string {
  const x = n.extra_info ?? {};
  const pick = (k: string) => {
    const v = x[k];
    return v === undefined ? '' : Array.isArray(v) ? v.join(', ') : String(v);
  };
  const parts = [pick('Projections') && n.operator_type === 'WINDOW' ? pick('Projections') : '', pick('Groups'), pick('Aggregates') ? `aggs: ${pick('Aggregates')}` : '',
    pick('Conditions'), pick('Join Type'), pick('Function'), pick('Order By')].filter(Boolean);
  return parts.join('; ').replace(/\s+/g, ' ').slice(0, 220);
}

function walk(n: ProfileNode, out: OperatorTime[]): void {
  const type = n.operator_type ?? n.operator_name;
  if (type && type !== 'EXPLAIN_ANALYZE') out.push({ op: type, detail: detailOf(n), seconds: n.operator_timing ?? 0, rows: n.operator_cardinality ?? 0 });
  for (const c of n.children ?? []) walk(c, out);
}

/** One statement under EXPLAIN (ANALYZE, FORMAT JSON); it runs for real (a CREATE makes its table). */
async function profiled(engine: DuckDialect, name: string, sql: string, rawDir: string | null): Promise<StatementProfile> {
  const t0 = performance.now();
  const r = await engine.conn.runAndReadAll(`EXPLAIN (ANALYZE, FORMAT JSON) ${sql}`);
  const wall = performance.now() - t0;
  const text = String(r.getRows()[0]?.[1] ?? '{}');
  if (rawDir) await writeFile(join(rawDir, `${name}.json`), text);
  const root = JSON.parse(text) as ProfileNode;
  const ops: OperatorTime[] = [];
  walk(root, ops);
  // Rows out: what the CREATE / COPY at the top of the plan received from its child.
  let top: ProfileNode | undefined = root;
  while (top && (!top.operator_type || top.operator_type === 'EXPLAIN_ANALYZE' || /CREATE_TABLE_AS|COPY_TO_FILE/.test(top.operator_type))) top = top.children?.[0];
  return {
    name, wallMs: (root.latency ?? wall / 1000) * 1000, cpuMs: ops.reduce((s, o) => s + o.seconds, 0) * 1000, rowsOut: top?.operator_cardinality ?? 0,
    peakBufferBytes: root.system_peak_buffer_memory ?? 0, spillBytes: root.system_peak_temp_dir_size ?? 0,
    operators: ops.sort((a, b) => b.seconds - a.seconds),
  };
}

export interface DayProfile {
  day: string;
  files: number;
  masterRows: number;
  statements: StatementProfile[];
  bare: StatementProfile;
}

/**
 * Profile buildDay's statements for `day` (absolute master file paths `files`, watermark `e`),
 * then the bare device_1m aggregation of the same files. The statements' JSON profiles go to
 * `rawDir` when given. `outDir` receives the view files the COPYs write.
 */
export async function profileDay(opts: { day: string; files: string[]; masterRows: number; watermark: Record<string, number>; tempDir: string; outDir: string; rawDir: string | null; memoryLimit?: string; threads?: number }): Promise<DayProfile> {
  await mkdir(opts.outDir, { recursive: true });
  if (opts.rawDir) await mkdir(opts.rawDir, { recursive: true });
  const engine = await DuckDialect.open({ memoryLimit: opts.memoryLimit ?? '2GB', threads: opts.threads ?? 0, tempDir: opts.tempDir });
  try {
    const statements: StatementProfile[] = [];
    const steps = buildSteps(engine, engine.scanMaster(opts.files), opts.watermark);
    if (!steps) throw new Error('empty watermark: nothing to profile');
    for (const step of steps) {
      const p = step.inPlace;
      if (!p) {
        statements.push(await profiled(engine, step.name, `CREATE OR REPLACE TEMP TABLE ${engine.ident(step.name)} AS ${step.sql}`, opts.rawDir));
        continue;
      }
      // Built in its table, as the dialect does (cloud/batch/dialect.ts materializeAll).
      const cols = p.columns.map((c) => engine.ident(c)).join(', ');
      statements.push(await profiled(engine, `${step.name} (delete from ${p.table})`, `DELETE FROM ${engine.ident(p.table)} WHERE (${p.keep}) IS NOT TRUE`, opts.rawDir));
      statements.push(await profiled(engine, `${step.name} (insert into ${p.table})`, `INSERT INTO ${engine.ident(p.table)} (${cols}) ${p.rest}`, opts.rawDir));
      await engine.conn.run(`CREATE OR REPLACE TEMP VIEW ${engine.ident(step.name)} AS SELECT ${cols} FROM ${engine.ident(p.table)}`);
    }
    for (const view of VIEW_STEPS) {
      statements.push(await profiled(engine, `copy ${view.name}`, `COPY (${viewFileSelect(engine, view)}) TO '${join(opts.outDir, `${view.name}.parquet`)}' (${VIEW_PARQUET_OPTIONS})`, opts.rawDir));
    }
    const bare = await profiled(engine, 'bare device_1m', `CREATE OR REPLACE TEMP TABLE bare AS ${bareSql(engine, opts.files)}`, opts.rawDir);

    return { day: opts.day, files: opts.files.length, masterRows: opts.masterRows, statements, bare };
  } finally {
    engine.close();
  }
}

/**
 * The bare device_1m aggregation: the same files through the dialect's scan (ts made a UTC
 * TIMESTAMP, as the batch does), GROUP BY device, metric, minute with count/sum/min/max. No E
 * filter, no dedup, no m2/first/last, no other view, nothing written.
 */
export function bareSql(engine: DuckDialect, files: string[]): string {
  return `SELECT device, metric, date_trunc('minute', ts) AS bucket, COUNT(*) AS n, SUM(value) AS s, MIN(value) AS lo, MAX(value) AS hi
FROM ${engine.scanMaster(files)} r
GROUP BY device, metric, date_trunc('minute', ts)`;
}
