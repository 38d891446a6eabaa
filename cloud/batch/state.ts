/**
 * What the batch reads and writes in cloud.db: the snapshot a run starts from (watermark E and the
 * master files to read), the run history (batch_runs) and its bookkeeping in `meta` (retired view
 * versions, sinks' pending days).
 */
import type { Db } from '../../shared/sqlite.js';
import { watermark } from '../ingest/watermark.js';
import type { SinkOutcome } from './sink.js';

export interface MasterFile {
  /** Relative to the data dir. */
  path: string;
  day: string;
  rows: number;
}

export interface Snapshot {
  /** E, taken once per run. */
  watermark: Record<string, number>;
  /** UTC days to rebuild, sorted. */
  days: string[];
  /** The catalogued master files of those days. */
  files: MasterFile[];
}

/**
 * Per gateway, the epoch span whose readings changed between two watermarks: (lo, hi].
 * A gateway that vanished from E (E[g] = 0) changes its whole covered span.
 */
export function changedSpans(prev: Record<string, number>, next: Record<string, number>): Array<{ gateway: string; lo: number; hi: number }> {
  const out: Array<{ gateway: string; lo: number; hi: number }> = [];
  for (const g of new Set([...Object.keys(prev), ...Object.keys(next)])) {
    const a = prev[g] ?? 0;
    const b = next[g] ?? 0;
    if (a !== b) out.push({ gateway: g, lo: Math.min(a, b), hi: Math.max(a, b) });
  }
  return out.sort((x, y) => (x.gateway < y.gateway ? -1 : 1));
}

/**
 * Take E and decide the days, in one read transaction so the catalog and E agree. Incremental
 * (`prev` given): the days of master files holding readings of epochs in (E_prev[g], E[g]] for
 * some gateway g; full (`prev` null): every catalogued day.
 */
export async function takeSnapshot(db: Db, prev: Record<string, number> | null): Promise<Snapshot> {
  await db.exec('BEGIN');
  try {
    const epochs = await db.all<{ gateway: string; epoch: number; firstSeq: number; lastSeq: number }>(
      'SELECT gateway, epoch, first_seq AS firstSeq, last_seq AS lastSeq FROM epochs');
    const sealed = await db.all<{ gateway: string; from: number; to: number }>(
      'SELECT gateway, from_seq AS "from", to_seq AS "to" FROM sealed');
    const gaps = await db.all<{ gateway: string; from: number; to: number }>(
      'SELECT gateway, from_seq AS "from", to_seq AS "to" FROM gaps');
    const e = watermark(epochs, sealed, gaps);
    let days: string[];
    if (prev === null) {
      days = (await db.all<{ day: string }>('SELECT DISTINCT day FROM files ORDER BY day')).map((r) => r.day);
    } else {
      const set = new Set<string>();
      for (const s of changedSpans(prev, e)) {
        const rows = await db.all<{ day: string }>(
          `SELECT DISTINCT f.day FROM file_gateways fg JOIN files f ON f.path = fg.path
           WHERE fg.gateway = ? AND fg.max_epoch > ? AND fg.min_epoch <= ?`, [s.gateway, s.lo, s.hi]);
        for (const r of rows) set.add(r.day);
      }
      days = [...set].sort();
    }
    const files: MasterFile[] = [];
    for (let i = 0; i < days.length; i += 500) {
      const chunk = days.slice(i, i + 500);
      files.push(...await db.all<MasterFile>(
        `SELECT path, day, rows FROM files WHERE day IN (${chunk.map(() => '?').join(',')}) ORDER BY day, path`, chunk));
    }
    await db.exec('COMMIT');
    return { watermark: e, days, files };
  } catch (err) {
    await db.exec('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

export type RunKind = 'incremental' | 'full';
export type RunTrigger = 'cron' | 'cli' | 'api';

export interface RunRow {
  id: number;
  kind: RunKind;
  trigger: RunTrigger;
  startedAt: number;
  endedAt: number | null;
  outcome: 'running' | 'ok' | 'failed';
  rowsRead: number | null;
  partitions: number | null;
  version: number | null;
  watermark: Record<string, number> | null;
  sinks: Record<string, SinkOutcome> | null;
  error: string | null;
}

/** Rows left 'running' by a process that died: whoever holds batch.lock may close them. */
export async function closeInterruptedRuns(db: Db, now: number): Promise<void> {
  await db.run(`UPDATE batch_runs SET outcome = 'failed', ended_at = ?, error = 'interrupted: the process running it stopped'
    WHERE outcome = 'running'`, [now]);
}

export async function insertRun(db: Db, kind: RunKind, trigger: RunTrigger, startedAt: number): Promise<number> {
  const r = await db.run(`INSERT INTO batch_runs (kind, trigger, started_at, outcome) VALUES (?, ?, ?, 'running')`, [kind, trigger, startedAt]);
  return r.lastID;
}

export async function updateRunProgress(db: Db, id: number, rowsRead: number, partitions: number): Promise<void> {
  await db.run('UPDATE batch_runs SET rows_read = ?, partitions = ? WHERE id = ?', [rowsRead, partitions, id]);
}

export async function finishRun(db: Db, id: number, r: {
  endedAt: number; outcome: 'ok' | 'failed'; rowsRead: number; partitions: number; version: number | null;
  watermark: Record<string, number> | null; sinks: Record<string, SinkOutcome> | null; error: string | null; kind?: RunKind;
}): Promise<void> {
  await db.run(`UPDATE batch_runs SET ended_at = ?, outcome = ?, rows_read = ?, partitions = ?, version = ?, watermark = ?,
    sinks = ?, error = ?, kind = COALESCE(?, kind) WHERE id = ?`, [
    r.endedAt, r.outcome, r.rowsRead, r.partitions, r.version, r.watermark ? JSON.stringify(r.watermark) : null,
    r.sinks ? JSON.stringify(r.sinks) : null, r.error, r.kind ?? null, id]);
}

interface RawRun {
  id: number; kind: RunKind; trigger: RunTrigger; started_at: number; ended_at: number | null;
  outcome: RunRow['outcome']; rows_read: number | null; partitions: number | null; version: number | null;
  watermark: string | null; sinks: string | null; error: string | null;
}

function parseJson<T>(text: string | null): T | null {
  if (!text) return null;
  try { return JSON.parse(text) as T; } catch { return null; }
}

/** The newest runs first. */
export async function listRuns(db: Db, limit = 20): Promise<RunRow[]> {
  const rows = await db.all<RawRun>('SELECT * FROM batch_runs ORDER BY id DESC LIMIT ?', [limit]);
  return rows.map((r) => ({
    id: r.id, kind: r.kind, trigger: r.trigger, startedAt: r.started_at, endedAt: r.ended_at, outcome: r.outcome,
    rowsRead: r.rows_read, partitions: r.partitions, version: r.version,
    watermark: parseJson(r.watermark), sinks: parseJson(r.sinks), error: r.error,
  }));
}

/** When the newest run that ended ok ended (epoch ms), null when none has; walks back from the newest run. */
export async function lastSuccessAt(db: Db): Promise<number | null> {
  const row = await db.get<{ at: number | null }>(`SELECT ended_at AS at FROM batch_runs WHERE outcome = 'ok' ORDER BY id DESC LIMIT 1`);
  return row?.at ?? null;
}

export async function getMeta<T>(db: Db, key: string): Promise<T | null> {
  const row = await db.get<{ value: string }>('SELECT value FROM meta WHERE key = ?', [key]);
  return row ? parseJson<T>(row.value) : null;
}

export async function setMeta(db: Db, key: string, value: unknown): Promise<void> {
  await db.run('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [key, JSON.stringify(value)]);
}

export async function deleteMeta(db: Db, key: string): Promise<void> {
  await db.run('DELETE FROM meta WHERE key = ?', [key]);
}

/** meta key of the view versions that stopped being live: {"v000003": retiredAtMs}. */
export const RETIRED_KEY = 'batch.retired';
/** meta key of the highest version ever published (versions never go back, even after views/ is deleted). */
export const LAST_VERSION_KEY = 'batch.version';
/** meta key of a sink's days still to write: {pending: ["2024-11-23", ...]}. */
export const sinkKey = (name: string) => `batch.sink.${name}`;
