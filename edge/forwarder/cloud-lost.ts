/**
 * A cloud that lost what it had acknowledged (cloud.db restored from an older backup) refuses the
 * gateway's next batch as skipping seqs (409 BRAID_ERR_INGEST_SEQ_SKIP, docs/ingest-protocol.md):
 * the gateway deleted those rows when the cloud acknowledged them, so no retry can send them. The
 * answer names the seqs the cloud misses; those at or below the gateway's acknowledged seq are
 * what the cloud acknowledged and lost, and they are recorded here as a `cloud_lost` gap record
 * (sent with the next batch like a disk-budget one), with the epochs that span them, and the
 * gateway's own gap records inside them, sent again (the cloud lost those records too, and the
 * watermark needs the epochs). Seqs above the acknowledged
 * one are never claimed: the gateway still holds them and sends them as readings.
 */
import type { Db, WriteQueue } from '../../shared/sqlite.js';

/** The gap record reason, as the cloud counts and lists it. */
export const CLOUD_LOST_REASON = 'cloud_lost';
/** min_ts and max_ts of a gap record whose event-time range is unknown; sent as null. */
export const UNKNOWN_TS = -1;

export interface SeqRange { fromSeq: number; toSeq: number }

/** What a seq-skip refusal says, when its body is one; null for anything else (an older cloud, another 409). */
export interface SeqSkip { heldSeq: number | null; missing: SeqRange[] }

const isSeq = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 1;

/** Read a 409 body `{code: BRAID_ERR_INGEST_SEQ_SKIP, heldSeq, missing: [{fromSeq, toSeq}]}`. */
export function parseSeqSkip(body: string): SeqSkip | null {
  let v: unknown;
  try {
    v = JSON.parse(body);
  } catch {
    return null;
  }
  const o = v as { code?: unknown; heldSeq?: unknown; missing?: unknown } | null;
  if (!o || typeof o !== 'object' || o.code !== 'BRAID_ERR_INGEST_SEQ_SKIP' || !Array.isArray(o.missing)) return null;
  const missing: SeqRange[] = [];
  for (const r of o.missing as unknown[]) {
    const x = r as { fromSeq?: unknown; toSeq?: unknown } | null;
    if (!x || !isSeq(x.fromSeq) || !isSeq(x.toSeq) || x.toSeq < x.fromSeq) return null;
    missing.push({ fromSeq: x.fromSeq, toSeq: x.toSeq });
  }
  return { heldSeq: typeof o.heldSeq === 'number' && Number.isSafeInteger(o.heldSeq) ? o.heldSeq : null, missing };
}

/** The part of `missing` at or below `ackedSeq`: what the cloud had acknowledged and no longer has. */
export function lostRanges(missing: SeqRange[], ackedSeq: number): SeqRange[] {
  const out: SeqRange[] = [];
  for (const r of [...missing].sort((a, b) => a.fromSeq - b.fromSeq)) {
    if (r.fromSeq > ackedSeq) break;
    const to = Math.min(r.toSeq, ackedSeq);
    const last = out[out.length - 1];
    if (last && r.fromSeq <= last.toSeq + 1) last.toSeq = Math.max(last.toSeq, to);
    else out.push({ fromSeq: r.fromSeq, toSeq: to });
  }
  return out;
}

/** `ranges` (sorted, merged) minus `cover`. */
function subtract(ranges: SeqRange[], cover: SeqRange[]): SeqRange[] {
  const sorted = [...cover].sort((a, b) => a.fromSeq - b.fromSeq);
  const out: SeqRange[] = [];
  for (const r of ranges) {
    let from = r.fromSeq;
    for (const c of sorted) {
      if (c.toSeq < from || c.fromSeq > r.toSeq) continue;
      if (c.fromSeq > from) out.push({ fromSeq: from, toSeq: c.fromSeq - 1 });
      from = Math.max(from, c.toSeq + 1);
      if (from > r.toSeq) break;
    }
    if (from <= r.toSeq) out.push({ fromSeq: from, toSeq: r.toSeq });
  }
  return out;
}

/** What recordCloudLost changed. */
export interface CloudLostRecorded {
  /** The cloud_lost gap records written (their seq ranges). */
  lost: SeqRange[];
  /** Gap records of this gateway's own drops the cloud had acknowledged and lost too, to be sent again as they were. */
  resent: SeqRange[];
}

/**
 * In one write transaction, for the seqs in `lost` (at or below the acknowledged seq: lostRanges):
 * the gateway's own gap records that the cloud had acknowledged (sent) and that lie inside them are
 * marked unsent, so they go again with their times and devices; the rest, not already named by an
 * unsent gap record, becomes one `cloud_lost` gap record per range (count = its seq span: the
 * readings' times and devices left with the rows at the cloud's ack); and every closed epoch
 * reaching into them is marked unreported, so the next batches carry it again. Nothing changed
 * (both lists empty): all of it was recorded already.
 */
export function recordCloudLost(writes: WriteQueue, lost: SeqRange[], now: number): Promise<CloudLostRecorded> {
  return writes.tx(async (db: Db) => {
    const lo = lost[0].fromSeq;
    const hi = lost[lost.length - 1].toSeq;
    const inside = (g: SeqRange) => lost.some((r) => r.fromSeq <= g.fromSeq && g.toSeq <= r.toSeq);
    const acked = (await db.all<SeqRange & { id: number }>(
      'SELECT id, from_seq AS fromSeq, to_seq AS toSeq FROM gaps WHERE sent = 1 AND to_seq >= ? AND from_seq <= ?', [lo, hi])).filter(inside);
    for (const g of acked) await db.run('UPDATE gaps SET sent = 0 WHERE id = ?', [g.id]);
    const pending = await db.all<SeqRange>(
      'SELECT from_seq AS fromSeq, to_seq AS toSeq FROM gaps WHERE sent = 0 AND to_seq >= ? AND from_seq <= ?', [lo, hi]);
    const fresh = subtract(lost, pending);
    for (const r of fresh) {
      await db.run(
        'INSERT INTO gaps (created_at, reason, from_seq, to_seq, count, min_ts, max_ts, devices) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
        [now, CLOUD_LOST_REASON, r.fromSeq, r.toSeq, r.toSeq - r.fromSeq + 1, UNKNOWN_TS, UNKNOWN_TS, '[]']);
    }
    const resent = acked.map((g) => ({ fromSeq: g.fromSeq, toSeq: g.toSeq }));
    const first = Math.min(fresh[0]?.fromSeq ?? Infinity, ...resent.map((g) => g.fromSeq));
    if (Number.isFinite(first)) await db.run('UPDATE epochs SET reported = 0 WHERE reported = 1 AND closed_at IS NOT NULL AND last_seq >= ?', [first]);
    return { lost: fresh, resent };
  });
}
