/**
 * The decision of seal step 2 (sealer.ts), run inside IngestStore.sealBegin's transaction on the
 * backend's IngestTx view: the lines of a segment that count are those `staged` names for it; a
 * line it does not name (written by a group commit whose transaction then failed) is adopted into
 * `received` and `staged` only if no one holds its (gateway, seq) yet [INV-2].
 */
import type { IngestTx, SealBegin } from '../store/ingest.js';
import { type Range, missing, normalize } from './ranges.js';

/** The seqs in both sorted, merged range lists (one pass over each). */
export function intersect(a: Range[], b: Range[]): Range[] {
  const out: Range[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const from = Math.max(a[i].from, b[j].from);
    const to = Math.min(a[i].to, b[j].to);
    if (from <= to) out.push({ from, to });
    if (a[i].to < b[j].to) i++;
    else j++;
  }
  return normalize(out);
}

/** `inFile`: the segment file's seqs per gateway, sorted and merged. */
export async function planSeal(tx: IngestTx, segment: string, inFile: Map<string, Range[]>): Promise<SealBegin> {
  const staged = await tx.stagedRanges(segment);
  const valid = new Map<string, Range[]>();
  const lost: SealBegin['lost'] = [];
  /** The lines adopted, by gateway: recorded in `received` and `staged` together at the end (the reads above are per gateway). */
  const adopts = new Map<string, Range[]>();
  let adopted = 0;
  for (const [g, ranges] of staged) {
    if (!inFile.has(g)) lost.push({ gateway: g, lost: ranges });
  }
  for (const [g, file] of inFile) {
    const have = normalize(staged.get(g) ?? []);
    const gone = have.flatMap((r) => missing(file, r.from, r.to));
    if (gone.length > 0) lost.push({ gateway: g, lost: gone });
    const adopt: Range[] = [];
    for (const e of file.flatMap((r) => missing(have, r.from, r.to))) {
      const held = normalize(await tx.receivedNear(g, e.from, e.to));
      adopt.push(...missing(held, e.from, e.to));
    }
    if (adopt.length > 0) {
      adopts.set(g, adopt);
      adopted += adopt.reduce((s, r) => s + r.to - r.from + 1, 0);
    }
    // Only what the file holds: a staged seq lost from the file must not look sealed.
    valid.set(g, intersect(normalize([...have, ...adopt]), file));
  }
  if (adopts.size > 0) {
    await tx.addReceivedAll(adopts);
    await tx.addStagedAll(segment, adopts);
  }
  return { valid, adopted, lost };
}
