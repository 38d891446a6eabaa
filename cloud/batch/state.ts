/**
 * What the batch reads and writes in cloud.db: the snapshot a run starts from (watermark E and the
 * master files to read), the run history (batch_runs) and its bookkeeping in `meta` (retired view
 * versions, sinks' pending days).
 */
import type { Db } from '../../shared/sqlite.js';
import { covers, normalize, type Range } from '../ingest/ranges.js';
import { watermarkFrom, type EpochRow } from '../ingest/watermark.js';
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
 * E (cloud/ingest/watermark.ts `watermark`, the same values) without reading every epoch: E[g] is
 * one below the first epoch number k >= 1 that g has not reported or whose seqs are not all sealed
 * or named by a gap record. An epoch contained in one `sealed` row (the last one starting at or
 * before its first seq: one index seek) or one `gaps` row is complete, so SQLite returns only the
 * other epochs (candidates, checked in JS against the union of the gateway's sealed and gap
 * ranges as watermarkOf does) and, per gateway, where its epoch numbers stop. With a week of
 * epochs (100,800 rows in the benchmark) reading them all into JS objects was ~200 ms of CPU of a
 * run that builds nothing new; now a run reads a few rows.
 */
async function readWatermark(db: Db): Promise<Record<string, number>> {
  // Per gateway: 1 when it has no epoch 1, else the first epoch number after a run of reported ones.
  // Most gateways' epoch numbers run from 1 without a hole: then that is one past the largest, which
  // one pass over the primary key tells (count, smallest and largest); only when some gateway has a
  // hole does SQLite look for each epoch's successor (one index seek per epoch: 38 against 11 ms
  // over the bench's 100,800 epochs, 2026-12-06).
  const runs = await db.all<{ gateway: string; lo: number | null; hi: number; n: number }>(
    `SELECT gateway, MIN(CASE WHEN epoch >= 1 THEN epoch END) AS lo, MAX(epoch) AS hi, SUM(epoch >= 1) AS n FROM epochs GROUP BY gateway`);
  const holes = runs.some((r) => r.lo === 1 && r.n !== r.hi);
  const stops = !holes
    ? runs.map((r) => ({ gateway: r.gateway, stop: r.lo === 1 ? r.hi + 1 : 1 }))
    : await db.all<{ gateway: string; stop: number }>(
      `SELECT gateway, CASE WHEN EXISTS (SELECT 1 FROM epochs o WHERE o.gateway = e.gateway AND o.epoch = 1) THEN MIN(epoch) + 1 ELSE 1 END AS stop
       FROM epochs e
       WHERE epoch >= 1 AND NOT EXISTS (SELECT 1 FROM epochs x WHERE x.gateway = e.gateway AND x.epoch = e.epoch + 1)
       GROUP BY gateway
       UNION ALL
       SELECT gateway, 1 AS stop FROM epochs GROUP BY gateway HAVING MAX(epoch) < 1`);
  const candidates = await db.all<{ gateway: string; epoch: number; firstSeq: number; lastSeq: number }>(
    `SELECT gateway, epoch, first_seq AS firstSeq, last_seq AS lastSeq FROM epochs e
     WHERE epoch >= 1 AND first_seq <= last_seq
       AND COALESCE((SELECT s.to_seq FROM sealed s WHERE s.gateway = e.gateway AND s.from_seq <= e.first_seq ORDER BY s.from_seq DESC LIMIT 1), e.last_seq - 1) < e.last_seq
       AND NOT EXISTS (SELECT 1 FROM gaps g WHERE g.gateway = e.gateway AND g.from_seq <= e.first_seq AND g.to_seq >= e.last_seq)
     ORDER BY gateway, epoch`);
  const stop = new Map(stops.map((r) => [r.gateway, r.stop]));
  if (candidates.length) {
    const byGateway = async (table: 'sealed' | 'gaps') => {
      const m = new Map<string, Range[]>();
      for (const r of await db.all<{ gateway: string; from: number; to: number }>(`SELECT gateway, from_seq AS "from", to_seq AS "to" FROM ${table}`)) {
        const list = m.get(r.gateway);
        if (list) list.push(r); else m.set(r.gateway, [r]);
      }
      return m;
    };
    const sealed = await byGateway('sealed');
    const gaps = await byGateway('gaps');
    const covered = new Map<string, Range[]>();
    for (const c of candidates) {
      if (c.epoch >= (stop.get(c.gateway) ?? 1)) continue;
      let ranges = covered.get(c.gateway);
      if (!ranges) covered.set(c.gateway, ranges = normalize([...(sealed.get(c.gateway) ?? []), ...(gaps.get(c.gateway) ?? [])]));
      if (!covers(ranges, c.firstSeq, c.lastSeq)) stop.set(c.gateway, c.epoch);
    }
  }
  const out: Record<string, number> = {};
  for (const [gateway, k] of [...stop.entries()].sort(([a], [b]) => a.localeCompare(b))) out[gateway] = k - 1;
  return out;
}

/**
 * The gateways' epochs from prev[g] on (EpochRow: watermarkFrom's input), in one statement of SQL
 * that SQLite and PostgreSQL both run: the gateways by a skip scan of the primary key (one seek a
 * gateway, not a pass over its epochs), then for each a range of the key. `prev` is a relation
 * (key, value) of the E before, from its JSON: the store's own JSON function on its parameter.
 */
export function epochsFromSql(prev: string): string {
  return `WITH RECURSIVE g(gateway) AS (
  SELECT MIN(gateway) FROM epochs
  UNION ALL
  SELECT (SELECT MIN(x.gateway) FROM epochs x WHERE x.gateway > g.gateway) FROM g WHERE g.gateway IS NOT NULL
), p(gateway, e) AS (${prev})
SELECT g.gateway AS gateway, e.epoch AS epoch, e.first_seq AS "firstSeq", e.last_seq AS "lastSeq"
FROM g LEFT JOIN p ON p.gateway = g.gateway
LEFT JOIN epochs e ON e.gateway = g.gateway AND e.epoch >= COALESCE(p.e, 0)
WHERE g.gateway IS NOT NULL
ORDER BY g.gateway, e.epoch`;
}

/** epochsFromSql on cloud.db: prev is the parameter, JSON text. */
export const EPOCHS_FROM_SQL = epochsFromSql('SELECT key, value FROM json_each(?)');

/**
 * E as of now, given the E of the run before (`prev`): from the epochs above it only
 * (watermark.ts watermarkFrom), so an incremental run's snapshot reads what was reported since, not
 * the whole history (which grows by a row a gateway a minute: ~55 ms a week of 10 gateways'
 * epochs, seconds a year). Read from every epoch when prev does not hold here.
 */
async function readWatermarkFrom(db: Db, prev: Record<string, number>): Promise<Record<string, number>> {
  const epochs = await db.all<EpochRow>(EPOCHS_FROM_SQL, [JSON.stringify(prev)]);
  const ranges = (table: 'sealed' | 'gaps') => db.all<Range & { gateway: string }>(`SELECT gateway, from_seq AS "from", to_seq AS "to" FROM ${table}`);
  return watermarkFrom(prev, epochs, await ranges('sealed'), await ranges('gaps')) ?? readWatermark(db);
}

/**
 * Take E and decide the days, in one read transaction so the catalog and E agree. Incremental
 * (`prev` given): the days of master files holding readings of epochs in (E_prev[g], E[g]] for
 * some gateway g; full (`prev` null): every catalogued day. E is read from the epochs since prev
 * when there is one (readWatermarkFrom), from every epoch otherwise.
 */
export async function takeSnapshot(db: Db, prev: Record<string, number> | null): Promise<Snapshot> {
  await db.exec('BEGIN');
  try {
    const e = prev === null ? await readWatermark(db) : await readWatermarkFrom(db, prev);
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
