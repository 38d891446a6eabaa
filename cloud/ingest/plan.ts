/**
 * The decision half of a group commit, run inside its BEGIN IMMEDIATE transaction: which readings
 * of each request are new (not in `received`, nor in an earlier request of the same group) [INV-2],
 * plus the epochs, gap records and seq holes the requests carry. Because the decision and the
 * `received` update commit together, under SQLite's write lock, two ingest processes given the
 * same batch stage it once between them.
 */
import type { Logger } from '../../shared/logger.js';
import type { Db } from '../../shared/sqlite.js';
import { gapRangesIn, insertEpochs, insertGaps, insertSeqGap, maxReceived, rangesNear } from '../store/ingest-state.js';
import { missing, normalize, type Range } from './ranges.js';
import type { IngestBatch, ReadingTuple } from './validate.js';

export interface IngestAck {
  /** Every seq <= ackSeq that the request carried is durable. */
  ackSeq: number;
  stored: number;
  duplicates: number;
}

export interface RequestOutcome extends IngestAck {
  newEpochs: number;
  newGaps: number;
  holes: Range[];
}

/** New readings of one request, to be staged. */
export interface StagingLine { gateway: string; rows: ReadingTuple[] }

export interface GroupPlan {
  outcomes: RequestOutcome[];
  lines: StagingLine[];
  /** Per gateway, the seq ranges this group adds to `received`. */
  added: Map<string, Range[]>;
}

/** Consecutive seqs of ascending rows as ranges. */
export function seqRanges(rows: ReadingTuple[]): Range[] {
  const out: Range[] = [];
  for (const r of rows) {
    const last = out[out.length - 1];
    if (last && r[0] === last.to + 1) last.to = r[0];
    else out.push({ from: r[0], to: r[0] });
  }
  return out;
}

/** The rows (ascending seq) whose seq lies in `want` (sorted, merged). */
function rowsIn(rows: ReadingTuple[], want: Range[]): ReadingTuple[] {
  if (want.length === 1 && want[0].from <= rows[0][0] && want[0].to >= rows[rows.length - 1][0]) return rows;
  const out: ReadingTuple[] = [];
  let k = 0;
  for (const r of rows) {
    while (k < want.length && want[k].to < r[0]) k++;
    if (k === want.length) break;
    if (want[k].from <= r[0]) out.push(r);
  }
  return out;
}

interface GatewayState { added: Range[]; maxSeq: number }

export async function planGroup(db: Db, batches: IngestBatch[], now: number, log: Logger): Promise<GroupPlan> {
  const state = new Map<string, GatewayState>();
  const lines: StagingLine[] = [];
  const outcomes: RequestOutcome[] = [];
  for (const b of batches) {
    const g = b.gateway;
    let st = state.get(g);
    if (!st) {
      st = { added: [], maxSeq: await maxReceived(db, g) };
      state.set(g, st);
    }
    // Gap records first: the hole check below counts them as covering their seqs.
    const newGaps = await insertGaps(db, g, b.gaps, now);
    const newEpochs = await insertEpochs(db, g, b.epochs);

    // A seq hole: a seq above everything received, within this batch's span, that neither a
    // reading of the batch nor a gap record accounts for (the protocol allows no other holes).
    const holes: Range[] = [];
    if (b.lastSeq > st.maxSeq) {
      const span = { from: st.maxSeq + 1, to: b.lastSeq };
      const accounted = normalize([...seqRanges(b.readings), ...await gapRangesIn(db, g, span.from, span.to)]);
      for (const h of missing(accounted, span.from, span.to)) {
        holes.push(h);
        // Never papered over: kept for the operator, counted, logged. The seqs may still arrive.
        await insertSeqGap(db, g, h, now);
        log.warn({ gateway: g, fromSeq: h.from, toSeq: h.to, batchFirstSeq: b.firstSeq }, 'seq hole: seqs missing above the highest received and no gap record covers them');
      }
    }

    let fresh: ReadingTuple[] = [];
    if (b.readings.length > 0) {
      const lo = b.readings[0][0];
      const hi = b.readings[b.readings.length - 1][0];
      const have = normalize([...await rangesNear(db, { table: 'received', gateway: g }, lo, hi), ...st.added]);
      const want = missing(have, lo, hi);
      fresh = want.length === 0 ? [] : rowsIn(b.readings, want);
      if (fresh.length > 0) {
        lines.push({ gateway: g, rows: fresh });
        st.added = normalize([...st.added, ...seqRanges(fresh)]);
        st.maxSeq = Math.max(st.maxSeq, fresh[fresh.length - 1][0]);
      }
    }
    // The protocol's lastSeq also covers gap-only tails: the next batch starts after it.
    st.maxSeq = Math.max(st.maxSeq, b.lastSeq);
    outcomes.push({ ackSeq: b.lastSeq, stored: fresh.length, duplicates: b.readings.length - fresh.length, newEpochs, newGaps, holes });
  }
  const added = new Map<string, Range[]>();
  for (const [g, st] of state) if (st.added.length > 0) added.set(g, st.added);
  return { outcomes, lines, added };
}
