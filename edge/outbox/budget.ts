/**
 * The outbox disk budget [INV-6]: when unsent readings exceed `maxBytes`, or the data dir's
 * filesystem has less than `minFreeBytes` free (the disk floor), the oldest ones not in flight to
 * the cloud are dropped, counted, and replaced by one gap record (device set, seq range, count,
 * time range) that the forwarder sends to the cloud like a batch.
 */
import { performance } from 'node:perf_hooks';
import type { Db } from '../../shared/sqlite.js';
import { flushDedupKeys, freeDiskBytes, outboxRowBytes } from '../store/schema.js';

/** Why readings were dropped: over outbox.maxBytes, or below outbox.minFreeBytes free on the disk. */
export type DropReason = 'disk_budget' | 'disk_floor';

export interface GapRecord {
  fromSeq: number;
  toSeq: number;
  count: number;
  bytes: number;
  minTs: number;
  maxTs: number;
  devices: string[];
}

/**
 * Delete the oldest unsent rows after `afterSeq` until `bytesToFree` is freed (as outboxRowBytes
 * counts rows). Runs inside the caller's transaction. `more`, asked each time that much is freed,
 * answers how many bytes are still wanted (the disk floor: rows take fewer page bytes than the
 * budget counts, and only freed pages make room). Returns the gap record written, or null when
 * nothing could be dropped.
 */
export async function dropOldest(db: Db, afterSeq: number, bytesToFree: number, now: number, reason: DropReason = 'disk_budget', more?: () => Promise<number>): Promise<GapRecord | null> {
  let freed = 0;
  let target = bytesToFree;
  let gap: GapRecord | null = null;
  const devices = new Set<string>();
  let cursor = afterSeq;
  for (;;) {
    let exhausted = false;
    while (freed < target) {
      const rows = await db.all<{ seq: number; device: string; metric: string; ts: number }>(
        'SELECT o.seq, s.device, s.metric, o.ts FROM outbox_rows o JOIN series s ON s.id = o.series WHERE o.seq > ? ORDER BY o.seq LIMIT 5000', [cursor]);
      if (!rows.length) { exhausted = true; break; }
      const from = rows[0].seq;
      for (const r of rows) {
        const b = outboxRowBytes(r.device, r.metric);
        if (!gap) gap = { fromSeq: r.seq, toSeq: r.seq, count: 0, bytes: 0, minTs: r.ts, maxTs: r.ts, devices: [] };
        gap.toSeq = r.seq;
        gap.count++;
        gap.bytes += b;
        if (r.ts < gap.minTs) gap.minTs = r.ts;
        if (r.ts > gap.maxTs) gap.maxTs = r.ts;
        devices.add(r.device);
        freed += b;
        cursor = r.seq;
        if (freed >= target) break;
      }
      // Rows from..cursor are all unsent (seq > afterSeq), so a range delete is exact; their
      // identities go to dedup_keys first [INV-2] (schema.ts DEDUP_FLUSHED_KEY).
      await flushDedupKeys(db, cursor);
      await db.run('DELETE FROM outbox_rows WHERE seq BETWEEN ? AND ?', [from, cursor]);
    }
    if (exhausted || !more) break;
    const wanted = await more();
    // Less than a page: the freelist counts whole pages, and one more row frees none.
    if (wanted < 4096) break;
    target = freed + wanted;
  }
  if (!gap) return null;
  gap.devices = [...devices].sort();
  await db.run(
    'INSERT INTO gaps (created_at, reason, from_seq, to_seq, count, min_ts, max_ts, devices) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    [now, reason, gap.fromSeq, gap.toSeq, gap.count, gap.minTs, gap.maxTs, JSON.stringify(gap.devices)],
  );
  // The open epoch's row is not written at every commit (committer.ts): should these be its newest
  // rows, a restart must still find their seqs given (loadCommitterState reads the outbox's).
  await db.run('UPDATE epochs SET last_seq = MAX(last_seq, ?) WHERE closed_at IS NULL', [gap.toSeq]);
  return gap;
}

/**
 * Bytes of gateway.db's free pages. Deleted rows do not shrink the file: their pages go on SQLite's
 * freelist and new commits fill them before the file grows, so for the outbox they are free space
 * the filesystem does not show.
 */
export async function freePageBytes(db: Db): Promise<number> {
  const n = await db.get<{ freelist_count: number }>('PRAGMA freelist_count');
  const size = await db.get<{ page_size: number }>('PRAGMA page_size');
  return (n?.freelist_count ?? 0) * (size?.page_size ?? 0);
}

/** The disk floor is looked at most this often (a statfs and two PRAGMAs), in ms, after commits. */
export const FLOOR_CHECK_MS = 1_000;

/**
 * The disk floor [INV-6]: a full disk fails every commit, so the gateway would refuse the newest
 * readings (no PUBACK) while keeping the oldest; below `minFreeBytes` free it drops the oldest
 * unsent readings instead, as the budget does, until 10% above the floor (not one drop per
 * commit). Free = the filesystem's free bytes + gateway.db's free pages (what the file can still
 * take without growing): dropped rows free pages, not disk, so counting only the disk would drop
 * again and again; and the drop goes on until the pages it freed cover the shortfall.
 */
export class DiskFloor {
  private lastCheck = -Infinity;

  constructor(
    private readonly dir: string,
    /** 0 turns the floor off. */
    readonly minFreeBytes: number,
    private readonly free: (dir: string) => Promise<number> = freeDiskBytes,
    private readonly clock: () => number = () => performance.now(),
  ) {}

  /** A look is due: the floor is on and the last look was FLOOR_CHECK_MS ago or more. */
  due(): boolean {
    return this.minFreeBytes > 0 && this.clock() - this.lastCheck >= FLOOR_CHECK_MS;
  }

  /**
   * Bytes of unsent readings to drop to be 10% above the floor again, 0 when enough is free (or the
   * floor is off); `more(db)`, inside the dropping transaction, what is still short once they are.
   */
  async deficit(db: Db): Promise<{ bytes: number; freeBytes: number; more: (tx: Db) => Promise<number> }> {
    const none = { bytes: 0, freeBytes: NaN, more: async () => 0 };
    if (this.minFreeBytes <= 0) return none;
    this.lastCheck = this.clock();
    const disk = await this.free(this.dir);
    const freeBytes = disk + (await freePageBytes(db));
    if (freeBytes >= this.minFreeBytes) return { ...none, freeBytes };
    const target = this.minFreeBytes + Math.floor(this.minFreeBytes / 10);
    return { bytes: target - freeBytes, freeBytes, more: async (tx) => target - disk - (await freePageBytes(tx)) };
  }
}
