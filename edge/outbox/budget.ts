/**
 * The outbox disk budget [INV-6]: when unsent readings exceed `maxBytes`, the oldest ones not in
 * flight to the cloud are dropped, counted, and replaced by one gap record (device set, seq range,
 * count, time range) that the forwarder sends to the cloud like a batch.
 */
import type { Db } from '../../shared/sqlite.js';
import { outboxRowBytes } from '../store/schema.js';

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
 * Delete the oldest unsent rows after `afterSeq` until `bytesToFree` is freed. Runs inside the
 * caller's transaction. Returns the gap record written, or null when nothing could be dropped.
 */
export async function dropOldest(db: Db, afterSeq: number, bytesToFree: number, now: number): Promise<GapRecord | null> {
  let freed = 0;
  let gap: GapRecord | null = null;
  const devices = new Set<string>();
  let cursor = afterSeq;
  while (freed < bytesToFree) {
    const rows = await db.all<{ seq: number; device: string; metric: string; ts: number }>(
      'SELECT seq, device, metric, ts FROM outbox WHERE seq > ? ORDER BY seq LIMIT 5000', [cursor]);
    if (!rows.length) break;
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
      if (freed >= bytesToFree) break;
    }
  }
  if (!gap) return null;
  gap.devices = [...devices].sort();
  // Rows between fromSeq and toSeq are all unsent (seq > afterSeq), so a range delete is exact.
  await db.run('DELETE FROM outbox WHERE seq BETWEEN ? AND ?', [gap.fromSeq, gap.toSeq]);
  await db.run(
    'INSERT INTO gaps (created_at, reason, from_seq, to_seq, count, min_ts, max_ts, devices) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    [now, 'disk_budget', gap.fromSeq, gap.toSeq, gap.count, gap.minTs, gap.maxTs, JSON.stringify(gap.devices)],
  );
  return gap;
}
