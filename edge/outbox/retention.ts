/**
 * Retention: what the gateway may forget, and when. Each function deletes one chunk and returns
 * how many rows it removed; the caller queues chunk after chunk as separate write jobs, so a large
 * backlog never holds the write lock for long (group commits run between the chunks).
 */
import type { Db } from '../../shared/sqlite.js';
import { CURSOR_KEY, WATERMARK_KEY } from '../speedpush/index.js';
import { DEDUP_TS_LIMIT, dedupKeySeriesSql, dedupKeySql, dedupKeyTsSql, getMeta, SERIES_MAX } from '../store/schema.js';

export const RETENTION_CHUNK_ROWS = 20_000;

/**
 * Identities whose event time and first sighting are both older than the dedup window [INV-2].
 * `dedup_keys` is keyed by ts first (ts * 2^20 + series), so the chunk is a range of keys.
 */
export async function pruneDedupChunk(db: Db, now: number, windowMs: number, fromTs: number, limit = RETENTION_CHUNK_ROWS): Promise<{ deleted: number; nextTs: number | null }> {
  const cutoff = now - windowMs;
  const from = Math.max(fromTs, -DEDUP_TS_LIMIT);
  const edge = await db.get<{ ts: number }>(
    `SELECT ${dedupKeyTsSql('key')} AS ts FROM dedup_keys WHERE key >= ${dedupKeySql('?', '0')} AND key < ${dedupKeySql('?', '0')} ORDER BY key LIMIT 1 OFFSET ?`, [from, cutoff, limit]);
  // A chunk must move past fromTs: when more than `limit` identities share one ts (a fleet that
  // stamps whole seconds), that ts is taken whole, or the next chunk would start where this one did.
  const upTo = edge ? (edge.ts > from ? edge.ts : edge.ts + 1) : cutoff;
  // ts + late: the later of the identity's ts and its first sighting (schema.ts dedup_keys).
  const { changes } = await db.run(
    `DELETE FROM dedup_keys WHERE key >= ${dedupKeySql('?', '0')} AND key < ${dedupKeySql('?', '0')} AND ${dedupKeyTsSql('key')} + late < ?`, [from, upTo, cutoff]);
  return { deleted: changes, nextTs: edge ? upTo : null };
}

/**
 * Series (device, metric) no dedup identity and no outbox row refers to any more, once their
 * numbers near the end (SERIES_MAX, schema.ts): new series then take the numbers freed. One scan of
 * the dedup keys and the outbox, so only then (a gateway whose devices keep inventing metric names,
 * or years of device churn).
 */
export async function pruneSeries(db: Db, nearEnd = 65_536): Promise<number> {
  const max = await db.get<{ id: number | null }>('SELECT MAX(id) AS id FROM series');
  if ((max?.id ?? 0) < SERIES_MAX - nearEnd) return 0;
  const { changes } = await db.run(
    `DELETE FROM series WHERE id NOT IN (SELECT DISTINCT ${dedupKeySeriesSql('key')} FROM dedup_keys) AND id NOT IN (SELECT series FROM outbox_rows)`);
  return changes;
}

/**
 * Speed partials whose event minute is older than the retention. With `keepUnpushed` (a cloud takes
 * the partials), only those the cloud no longer needs from here: pushed (updated_at below the push
 * cursor) or of an epoch its live views cover (<= the watermark it told). A reading days late has
 * an old minute at once: pruned before its push, the cloud's speed side would never count it and
 * queries would miss it until a batch run covers its epoch [INV-3].
 */
export async function prunePartialsChunk(db: Db, now: number, retentionMinutes: number, limit = RETENTION_CHUNK_ROWS, keepUnpushed = false): Promise<number> {
  const cutoff = now - retentionMinutes * 60_000;
  if (!keepUnpushed) {
    const { changes } = await db.run(
      'DELETE FROM partials WHERE rowid IN (SELECT rowid FROM partials WHERE minute < ? LIMIT ?)',
      [cutoff, limit]);
    return changes;
  }
  const cursor = Number((await getMeta(db, CURSOR_KEY)) ?? 0) || 0;
  const watermark = Number((await getMeta(db, WATERMARK_KEY)) ?? 0) || 0;
  const { changes } = await db.run(
    `DELETE FROM partials WHERE rowid IN (SELECT rowid FROM partials
       WHERE minute < ? AND (epoch <= ? OR updated_at < ?) LIMIT ?)`,
    [cutoff, watermark, cursor, limit]);
  return changes;
}

/** Reported epochs, sent gap records and quarantined payloads older than `keepMs` (small tables). */
export async function pruneBookkeeping(db: Db, now: number, keepMs: number): Promise<number> {
  const cutoff = now - keepMs;
  let n = 0;
  // The newest epoch stays: it carries the last seq and epoch numbers across restarts.
  n += (await db.run('DELETE FROM epochs WHERE reported = 1 AND closed_at < ? AND epoch < (SELECT MAX(epoch) FROM epochs)', [cutoff])).changes;
  n += (await db.run('DELETE FROM gaps WHERE sent = 1 AND created_at < ?', [cutoff])).changes;
  n += (await db.run('DELETE FROM quarantine WHERE at < ?', [cutoff])).changes;
  return n;
}
