/**
 * The vector watermark (DESIGN.md): E[g] is the highest epoch e of gateway g such that every epoch
 * 1..e is complete, i.e. each of its seqs is sealed in the master dataset or named by a gap record.
 * Pure: the batch job calls it on what it reads from cloud.db.
 */
import { covers, normalize, type Range } from './ranges.js';

export interface EpochSpan {
  epoch: number;
  firstSeq: number;
  lastSeq: number;
}

/**
 * E[g] for one gateway; 0 when epoch 1 is not complete (or not reported) yet. With `from`, epochs
 * 1..from are taken as complete, and only those above it are looked at (watermarkFrom).
 */
export function watermarkOf(epochs: EpochSpan[], sealed: Range[], gaps: Range[], from = 0): number {
  const covered = normalize([...sealed, ...gaps]);
  const byEpoch = new Map(epochs.map((e) => [e.epoch, e]));
  let e = from;
  for (;;) {
    const next = byEpoch.get(e + 1);
    if (!next || !covers(covered, next.firstSeq, next.lastSeq)) return e;
    e++;
  }
}

function groupBy<T extends { gateway: string }>(rows: T[]): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const r of rows) {
    const list = m.get(r.gateway);
    if (list) list.push(r); else m.set(r.gateway, [r]);
  }
  return m;
}

/** E for every gateway that has reported an epoch. */
export function watermark(
  epochs: Array<EpochSpan & { gateway: string }>,
  sealed: Array<Range & { gateway: string }>,
  gaps: Array<Range & { gateway: string }>,
): Record<string, number> {
  const e = groupBy(epochs);
  const s = groupBy(sealed);
  const g = groupBy(gaps);
  const out: Record<string, number> = {};
  for (const [gateway, list] of [...e.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    out[gateway] = watermarkOf(list, s.get(gateway) ?? [], g.get(gateway) ?? []);
  }
  return out;
}

/** A gateway's epoch as watermarkFrom reads them: null fields for a gateway with none at or above its E before. */
export type EpochRow = { gateway: string; epoch: number | null; firstSeq: number | null; lastSeq: number | null };

/**
 * E from the E of a run before (`prev`), reading only the epochs numbered from prev[g] on: `epochs`
 * holds, for every gateway with an epoch, its epochs >= prev[g] (0 for a gateway not in prev), or
 * one row of nulls when it has none there. Equal to `watermark` over every row, because what makes
 * an epoch complete only grows: epochs, sealed ranges and gap records are added, never changed or
 * removed (cloud/store: INSERT OR IGNORE, ranges merged), so epochs 1..prev[g], complete then, are
 * complete now, and E[g] is prev[g] or more.
 *
 * Null when `prev` does not hold here, which only a cloud.db other than the one `prev` was read
 * from can cause (restored from a backup older than the views, say): a gateway of prev whose
 * epoch prev[g] is missing or no longer complete. The caller then reads E from every epoch.
 */
export function watermarkFrom(
  prev: Record<string, number>,
  epochs: EpochRow[],
  sealed: Array<Range & { gateway: string }>,
  gaps: Array<Range & { gateway: string }>,
): Record<string, number> | null {
  const byGateway = new Map<string, EpochSpan[]>();
  for (const r of epochs) {
    const list = byGateway.get(r.gateway) ?? [];
    byGateway.set(r.gateway, list);
    if (r.epoch !== null) list.push({ epoch: r.epoch, firstSeq: r.firstSeq!, lastSeq: r.lastSeq! });
  }
  const sealedOf = groupBy(sealed);
  const gapsOf = groupBy(gaps);
  const out: Record<string, number> = {};
  for (const [g, p] of Object.entries(prev)) if (p >= 1 && !byGateway.has(g)) return null;
  for (const gateway of [...byGateway.keys()].sort((a, b) => a.localeCompare(b))) {
    const list = byGateway.get(gateway)!;
    const p = Math.max(0, prev[gateway] ?? 0);
    const s = sealedOf.get(gateway) ?? [];
    const gp = gapsOf.get(gateway) ?? [];
    if (p >= 1) {
      const last = list.find((x) => x.epoch === p);
      if (!last || !covers(normalize([...s, ...gp]), last.firstSeq, last.lastSeq)) return null;
    }
    out[gateway] = watermarkOf(list, s, gp, p);
  }
  return out;
}
