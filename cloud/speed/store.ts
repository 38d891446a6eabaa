/**
 * The SQLite speed store's SQL, on cloud.db's `speed_partials` and `speed_pruned`: the upsert with
 * its count guard, the prune behind the live manifest, and the reads of the merged query
 * (docs/serving.md). Callers go through SqliteSpeedStore (sqlite-store.ts), the SpeedStore of
 * cloud/store/speed.ts; cloud/store/pg/speed.ts is the PostgreSQL one.
 */
import { type Db, type WriteQueue, chunkRows, placeholders } from '../../shared/sqlite.js';
import { type SpeedPartialRow, type SpeedPartialsQuery, epochOf } from '../store/speed.js';
import type { PartialTuple } from './validate.js';

export { epochOf, type SpeedPartialRow, type SpeedPartialsQuery };

const COLUMNS = ['gateway', 'device', 'metric', 'minute', 'epoch', 'count', 'sum', 'min', 'max', 'm2', 'first', 'first_ts', 'last', 'last_ts', 'received_at'];
const UPDATED = COLUMNS.slice(5).map((c) => `${c} = excluded.${c}`).join(', ');

/** The epoch up to which `gateway`'s partials were pruned (0: never). */
export async function prunedEpoch(db: Db, gateway: string): Promise<number> {
  const row = await db.get<{ epoch: number }>('SELECT epoch FROM speed_pruned WHERE gateway = ?', [gateway]);
  return row?.epoch ?? 0;
}

/**
 * Upsert one push's partials; run inside the caller's transaction. A row replaces the stored one
 * only if its count is not smaller: a partial only grows while its epoch is open, so a late retry
 * of an older push cannot undo a newer one [idempotent]. Partials of epochs already pruned are
 * dropped, not stored again: the live views hold their readings [INV-3].
 */
export async function upsertPartials(db: Db, gateway: string, partials: PartialTuple[], now: number): Promise<{ stored: number; stale: number }> {
  const pruned = await prunedEpoch(db, gateway);
  const keep = pruned > 0 ? partials.filter((p) => p[3] > pruned) : partials;
  let stored = 0;
  for (const chunk of chunkRows(keep, COLUMNS.length)) {
    const params: unknown[] = [];
    for (const p of chunk) params.push(gateway, ...p, now);
    const { changes } = await db.run(
      `INSERT INTO speed_partials (${COLUMNS.join(', ')}) VALUES ${placeholders(chunk.length, COLUMNS.length)}
       ON CONFLICT (gateway, device, metric, minute, epoch) DO UPDATE SET ${UPDATED}
       WHERE excluded.count >= speed_partials.count`, params);
    stored += changes;
  }
  return { stored, stale: partials.length - keep.length };
}

/**
 * Delete the partials of epochs <= watermark[g], for every g, in chunks of `chunkRows` (one short
 * transaction each, so pushes are not held up). speed_pruned moves first: a push racing the delete
 * cannot put back what is being removed. Call it only once a manifest carrying `watermark` is live.
 */
export async function prunePartials(writes: WriteQueue, watermark: Record<string, number>, chunkRowsN: number): Promise<number> {
  let deleted = 0;
  for (const [gateway, epoch] of Object.entries(watermark)) {
    if (!(epoch > 0)) continue;
    await writes.tx((db) => db.run(
      `INSERT INTO speed_pruned (gateway, epoch) VALUES (?, ?)
       ON CONFLICT (gateway) DO UPDATE SET epoch = MAX(epoch, excluded.epoch)`, [gateway, epoch]));
    for (;;) {
      const { changes } = await writes.tx((db) => db.run(
        `DELETE FROM speed_partials WHERE (gateway, device, metric, minute, epoch) IN
           (SELECT gateway, device, metric, minute, epoch FROM speed_partials WHERE gateway = ? AND epoch <= ? LIMIT ?)`,
        [gateway, epoch, chunkRowsN]));
      deleted += changes;
      if (changes < chunkRowsN) break;
    }
  }
  return deleted;
}

/**
 * The speed side of a merged query: the stored partials of `metric` (of one device, one gateway
 * or the fleet) whose minute is in [fromMs, toMs) and whose epoch is above `watermark[gateway]`
 * (0 when absent), i.e. readings the manifest's views do not hold. Partials of epochs at or below
 * it may still be stored for a while after a manifest goes live; they are left out here.
 */
export async function readSpeedPartials(db: Db, q: SpeedPartialsQuery): Promise<SpeedPartialRow[]> {
  const where = ['metric = ?', 'minute >= ?', 'minute < ?'];
  const params: unknown[] = [q.metric, q.fromMs, q.toMs];
  if (q.device !== undefined) { where.push('device = ?'); params.push(q.device); }
  if (q.gateway !== undefined) { where.push('gateway = ?'); params.push(q.gateway); }
  const rows = await db.all<SpeedPartialRow>(
    `SELECT gateway, device, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts
     FROM speed_partials WHERE ${where.join(' AND ')} ORDER BY minute, gateway, device, epoch`, params);
  // The epoch cut is per gateway: done here rather than as one SQL condition per gateway of the fleet.
  return rows.filter((r) => r.epoch > epochOf(q.watermark, r.gateway));
}

/** Per gateway, when the cloud last heard from it (its last speed push), epoch ms: what `provisional` is judged on. */
export async function gatewayLastContact(db: Db): Promise<Record<string, number>> {
  const rows = await db.all<{ gateway: string; at: number }>('SELECT gateway, last_push_at AS at FROM gateway_status');
  const out: Record<string, number> = {};
  for (const r of rows) out[r.gateway] = r.at;
  return out;
}
