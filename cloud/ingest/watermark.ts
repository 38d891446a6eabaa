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

/** E[g] for one gateway; 0 when epoch 1 is not complete (or not reported) yet. */
export function watermarkOf(epochs: EpochSpan[], sealed: Range[], gaps: Range[]): number {
  const covered = normalize([...sealed, ...gaps]);
  const byEpoch = new Map(epochs.map((e) => [e.epoch, e]));
  let e = 0;
  for (;;) {
    const next = byEpoch.get(e + 1);
    if (!next || !covers(covered, next.firstSeq, next.lastSeq)) return e;
    e++;
  }
}

/** E for every gateway that has reported an epoch. */
export function watermark(
  epochs: Array<EpochSpan & { gateway: string }>,
  sealed: Array<Range & { gateway: string }>,
  gaps: Array<Range & { gateway: string }>,
): Record<string, number> {
  const group = <T extends { gateway: string }>(rows: T[]) => {
    const m = new Map<string, T[]>();
    for (const r of rows) {
      const list = m.get(r.gateway);
      if (list) list.push(r); else m.set(r.gateway, [r]);
    }
    return m;
  };
  const e = group(epochs);
  const s = group(sealed);
  const g = group(gaps);
  const out: Record<string, number> = {};
  for (const [gateway, list] of [...e.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    out[gateway] = watermarkOf(list, s.get(gateway) ?? [], g.get(gateway) ?? []);
  }
  return out;
}
