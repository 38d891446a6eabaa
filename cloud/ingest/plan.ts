/**
 * The decision half of a group commit, run inside its transaction (IngestStore.commitGroup, on the
 * backend's IngestTx view; SQLite's BEGIN IMMEDIATE): which requests
 * are refused (they skip seqs, or contradict a stored epoch), which readings of the others are new (not in `received`, nor in an
 * earlier request of the same group) [INV-2], plus the epochs and gap records they carry. Because
 * the decision and the `received` update commit together, under the store's write lock, two ingest
 * processes given the same batch stage it once between them.
 */
import type { BraidError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { GroupCommitRequest, IngestTx } from '../store/ingest.js';
import type { EpochRow } from '../store/ingest-state.js';
import { type FutureReadings, futureReadings } from './clock.js';
import { IngestEpochConflictError, IngestSeqSkipError, MAX_LISTED_SKIPS } from './errors.js';
import { missing, normalize, type Range } from './ranges.js';
import { type ReadingColumns, seqRangesOf } from './columns.js';
import type { IngestBatch } from './validate.js';

/** Something stored but worth the gateway's (and its operator's) attention. */
export interface IngestWarning { code: string; message: string; count: number }

export interface IngestAck {
  /** Every seq <= ackSeq that the request carried is durable. */
  ackSeq: number;
  stored: number;
  duplicates: number;
  /** Present only when there is one: readings stamped too far into the cloud's future (BRAID_WARN_FUTURE_TS). */
  warnings?: IngestWarning[];
}

export interface RequestOutcome extends IngestAck {
  newEpochs: number;
  newGaps: number;
  /** Seqs named by its new `cloud_lost` gap records (acknowledged by the cloud earlier, lost there since, e.g. by a restore). */
  newLostReadings: number;
  /** Set when the request is refused (it skips seqs, or contradicts a stored epoch): nothing of it was kept. */
  refused?: BraidError;
  /** Its new readings stamped after the cloud's now + maxFutureMs (stored, counted). */
  future: FutureReadings | null;
}

/**
 * New readings of one request, to be staged. `json`: the bytes of `rows` as the request held them
 * (every reading of the request is new), which the staging line then takes as they are.
 */
export interface StagingLine { gateway: string; rows: ReadingColumns; json?: Buffer }

export interface GroupPlan {
  outcomes: RequestOutcome[];
  lines: StagingLine[];
  /** Per gateway, the seq ranges this group adds to `received`. */
  added: Map<string, Range[]>;
}

/** Consecutive seqs of ascending rows as ranges. */
export const seqRanges = seqRangesOf;

/**
 * `stored`: the gateway's highest seq in `received` when the group began (maxReceived; the ranges
 * there are merged, so no stored seq lies above it); `maxSeq` also counts this group's batches.
 */
interface GatewayState { added: Range[]; maxSeq: number; stored: number }

const fmtRanges = (rs: Range[]) => rs.slice(0, 3).map((r) => (r.from === r.to ? `${r.from}` : `${r.from}..${r.to}`)).join(', ')
  + (rs.length > 3 ? ` and ${rs.length - 3} more range(s)` : '');

/**
 * The first epoch record of `b` whose span differs from the stored one (or another of b's), as a
 * message; null when none. `known`: the gateway's epochs stored, and those of this group's batches
 * accepted before `b` (insertEpochs records them at the group's end).
 */
function epochConflict(known: Map<number, EpochRow> | undefined, g: string, b: IngestBatch): string | null {
  if (b.epochs.length === 0) return null;
  const seen = new Map<number, EpochRow>();
  for (const e of b.epochs) {
    const other = seen.get(e.epoch);
    if (other && (other.firstSeq !== e.firstSeq || other.lastSeq !== e.lastSeq)) {
      return `epochs: epoch ${e.epoch} of gateway ${g} appears twice in this batch, as ${other.firstSeq}..${other.lastSeq} and ${e.firstSeq}..${e.lastSeq}`;
    }
    seen.set(e.epoch, e);
  }
  for (const e of seen.values()) {
    const s = known?.get(e.epoch);
    if (s && (s.firstSeq !== e.firstSeq || s.lastSeq !== e.lastSeq)) {
      return `epochs: epoch ${s.epoch} of gateway ${g} is stored as seqs ${s.firstSeq}..${s.lastSeq}, this batch says ${e.firstSeq}..${e.lastSeq}; `
        + 'a closed epoch never changes (a gateway whose data dir was reset needs a new gateway id); nothing of this batch was stored';
    }
  }
  return null;
}

/**
 * The seqs `b` skips: those above `held` (the highest seq of the gateway stored, or advanced past
 * by an accepted batch's lastSeq) up to `b.lastSeq` that none of b's readings, b's gap records or
 * the gap records already stored account for. Empty for everything the forwarder sends
 * (docs/ingest-protocol.md): its batches start right after what the cloud acknowledged, and its
 * only holes are readings dropped at the disk budget, named by a gap record that goes with the
 * first batch reaching past it. Seqs at or below `held` are never a skip: a retransmit, or a batch
 * repeating seqs already stored, only carries duplicates. Epoch records are not looked at: an epoch
 * may name seqs the cloud has not had yet (it is complete only once they, or gaps, arrive).
 */
async function skipped(tx: IngestTx, g: string, held: number, b: IngestBatch): Promise<Range[]> {
  if (b.lastSeq <= held) return [];
  const from = held + 1;
  const own = normalize([...seqRanges(b.readings), ...b.gaps.map((x) => ({ from: x.fromSeq, to: x.toSeq }))]);
  // The batch accounts for itself (what the forwarder sends): the stored gap records need no read.
  if (missing(own, from, b.lastSeq).length === 0) return [];
  const accounted = normalize([...own, ...await tx.gapRangesIn(g, from, b.lastSeq)]);
  return missing(accounted, from, b.lastSeq);
}

/**
 * One group commit inside a store's transaction, the same on every store [INV-1][INV-2]: plan the
 * group, record the clock estimates of the gateways heard from (in the transaction they caused
 * anyway), stage the new lines durably, then record them as received and staged. The store
 * commits after; a throw leaves nothing.
 */
export async function commitGroupIn(tx: IngestTx, req: GroupCommitRequest): Promise<GroupPlan> {
  const now = req.now();
  const p = await planGroup(tx, req.batches, now, req.log, req.maxFutureMs);
  const offsets: Array<{ gateway: string; offsetMs: number }> = [];
  for (const g of new Set(req.batches.map((b) => b.gateway))) {
    const offset = req.clockOffset(g, now);
    if (offset !== null) offsets.push({ gateway: g, offsetMs: offset });
  }
  if (offsets.length > 0) await tx.recordClockOffsets(offsets, now);
  if (p.lines.length > 0) {
    // [INV-1] durable before the COMMIT that makes it count.
    const placed = await req.stage(p.lines);
    // Every gateway's at once: a few statements a group, not ~4 a gateway.
    await tx.addReceivedAll(p.added);
    for (const [segment, byGateway] of placed) await tx.addStagedAll(segment, byGateway);
  }
  return p;
}

/**
 * Plan (and record the bookkeeping of) one group. `maxFutureMs`: new readings stamped later than
 * `now + maxFutureMs` are counted per gateway in gateway_clock and reported in the outcome.
 */
export async function planGroup(tx: IngestTx, batches: IngestBatch[], now: number, log: Logger, maxFutureMs = Infinity): Promise<GroupPlan> {
  const state = new Map<string, GatewayState>();
  const lines: StagingLine[] = [];
  const outcomes: RequestOutcome[] = [];
  // Nothing below writes `received` (commitGroupIn does, after staging): read for every gateway at once.
  const storedMax = batches.length > 0 ? await tx.maxReceived([...new Set(batches.map((b) => b.gateway))]) : new Map<string, number>();
  // The stored spans of every epoch the group's batches name, in one read (was one a batch); the
  // new ones are inserted at the end in one statement (was one a batch), and meanwhile kept here.
  const asked = new Map<string, number[]>();
  for (const b of batches) if (b.epochs.length > 0) asked.set(b.gateway, [...(asked.get(b.gateway) ?? []), ...b.epochs.map((e) => e.epoch)]);
  const knownEpochs = new Map<string, Map<number, EpochRow>>();
  if (asked.size > 0) for (const [g, rows] of await tx.storedEpochs(asked)) knownEpochs.set(g, new Map(rows.map((r) => [r.epoch, r])));
  const epochsToInsert = new Map<string, EpochRow[]>();
  for (const b of batches) {
    const g = b.gateway;
    let st = state.get(g);
    if (!st) {
      const stored = storedMax.get(g) ?? 0;
      st = { added: [], maxSeq: stored, stored };
      state.set(g, st);
    }
    // A batch that skips seqs is refused whole, before anything of it is kept: recording the hole
    // (or its epochs, or its gaps) would be permanent, and a token could plant one at will.
    const skip = await skipped(tx, g, st.maxSeq, b);
    if (skip.length > 0) {
      const n = skip.reduce((k, r) => k + r.to - r.from + 1, 0);
      const message = `seq skip: gateway ${g} has had seqs up to ${st.maxSeq} stored; this batch (firstSeq ${b.firstSeq}, lastSeq ${b.lastSeq}) `
        + `skips ${n} seq(s), ${fmtRanges(skip)}, with neither readings nor a gap record for them. Send them, or a gap record naming them `
        + '(docs/ingest-protocol.md); nothing of this batch was stored';
      log.warn({ gateway: g, heldSeq: st.maxSeq, firstSeq: b.firstSeq, lastSeq: b.lastSeq, skipped: skip.slice(0, 10), count: n }, 'ingest refused a batch that skips seqs');
      const details = { heldSeq: st.maxSeq, missing: skip.slice(0, MAX_LISTED_SKIPS).map((r) => ({ fromSeq: r.from, toSeq: r.to })), missingCount: n };
      outcomes.push({ ackSeq: 0, stored: 0, duplicates: 0, newEpochs: 0, newGaps: 0, newLostReadings: 0, refused: new IngestSeqSkipError(message, details), future: null });
      continue;
    }
    const conflict = epochConflict(knownEpochs.get(g), g, b);
    if (conflict) {
      log.warn({ gateway: g, firstSeq: b.firstSeq, lastSeq: b.lastSeq }, conflict);
      outcomes.push({ ackSeq: 0, stored: 0, duplicates: 0, newEpochs: 0, newGaps: 0, newLostReadings: 0, refused: new IngestEpochConflictError(conflict), future: null });
      continue;
    }
    const { added: newGaps, lostReadings: newLostReadings } = await tx.insertGaps(g, b.gaps, now);
    let newEpochs = 0;
    for (const e of b.epochs) {
      let known = knownEpochs.get(g);
      if (!known) knownEpochs.set(g, known = new Map());
      // Insert-once by (gateway, epoch): a resent one is kept as first stored.
      if (known.has(e.epoch)) continue;
      known.set(e.epoch, e);
      epochsToInsert.set(g, [...(epochsToInsert.get(g) ?? []), e]);
      newEpochs++;
    }

    let fresh: ReadingColumns | null = null;
    const n = b.readings.length;
    if (n > 0) {
      const lo = b.readings.seq[0];
      const hi = b.readings.seq[n - 1];
      // Rows above everything stored (the forwarder's next batch) need no read of `received`.
      const have = normalize([...(lo > st.stored ? [] : await tx.receivedNear(g, lo, hi)), ...st.added]);
      const want = missing(have, lo, hi);
      fresh = want.length === 0 ? null : b.readings.select(want);
      if (fresh && fresh.length > 0) {
        lines.push(fresh === b.readings && b.readingsJson ? { gateway: g, rows: fresh, json: b.readingsJson } : { gateway: g, rows: fresh });
        st.added = normalize([...st.added, ...seqRanges(fresh)]);
        st.maxSeq = Math.max(st.maxSeq, fresh.seq[fresh.length - 1]);
      }
    }
    const stored = fresh?.length ?? 0;
    // The protocol's lastSeq also covers gap-only tails: the next batch starts after it.
    st.maxSeq = Math.max(st.maxSeq, b.lastSeq);
    // Flagged, not dropped: acknowledged data is never lost, and the clock may be the cloud's.
    const future = fresh && stored > 0 ? futureReadings(fresh, now + maxFutureMs) : null;
    if (future) {
      await tx.recordFutureReadings(g, future, now);
      log.warn({ gateway: g, count: future.count, device: future.device, metric: future.metric, ts: future.ts, maxFutureMs }, 'readings stamped ahead of the cloud\'s clock');
    }
    outcomes.push({ ackSeq: b.lastSeq, stored, duplicates: n - stored, newEpochs, newGaps, newLostReadings, future });
  }
  if (epochsToInsert.size > 0) await tx.insertEpochs(epochsToInsert);
  const added = new Map<string, Range[]>();
  for (const [g, st] of state) if (st.added.length > 0) added.set(g, st.added);
  return { outcomes, lines, added };
}
