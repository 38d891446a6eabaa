/**
 * Ingest's state as the cloud store's interface (docs/cluster-store.md): the group commit and the
 * two catalog steps of a seal, each one transaction, so a caller cannot split what must commit
 * together [INV-1][INV-2]. The decisions themselves are backend-free (cloud/ingest/plan.ts,
 * cloud/ingest/seal-plan.ts) and run on an `IngestTx`, the read-decide-write view an implementation
 * gives them inside its transaction. SQLite: cloud/ingest/sqlite-store.ts (today's SQL on cloud.db,
 * BEGIN IMMEDIATE through the cloud's WriteQueue). Held to test/support/store-conformance/ingest.ts.
 * The console's reads of these tables (received, gaps, seq_gaps, gateway_clock) are RegistryStore's
 * (cloud/store/speed.ts).
 */
import type { FutureReadings } from '../ingest/clock.js';
import type { GroupPlan, StagingLine } from '../ingest/plan.js';
import type { Range } from '../ingest/ranges.js';
import type { IngestBatch } from '../ingest/validate.js';
import type { Logger } from '../../shared/logger.js';
import type { CatalogEntry, EpochRow, GapRow } from './ingest-state.js';

/** Where a group's lines went: per segment, per gateway, the seq ranges. */
export type Placement = Map<string, Map<string, Range[]>>;

/** One group commit's inputs. */
export interface GroupCommitRequest {
  /** The requests of the group, in arrival order: outcomes come back in this order. */
  batches: IngestBatch[];
  /** The cloud's clock, read once the transaction holds its write lock. */
  now: () => number;
  /** New readings stamped later than now + this, in ms, are counted per gateway in gateway_clock. */
  maxFutureMs: number;
  /** The clock offset estimate to record for a gateway of the group (null: none yet). */
  clockOffset: (gateway: string, now: number) => number | null;
  /**
   * Make the group's new lines durable (append, fsync) and say where they went; called inside the
   * transaction, after the decision, only when there are new lines. A throw rolls the group back.
   */
  stage: (lines: StagingLine[]) => Promise<Placement>;
  log: Logger;
  /**
   * Cluster mode: the committing node (its staging lease, cloud/store/nodes.ts). PostgreSQL holds
   * its `nodes` row FOR SHARE through the transaction and refuses the group with
   * StagingLeaseLostError when the lease is not live (claimed by another node, ended, or run out),
   * before anything is staged. Absent: no fence (SQLite, one host, ignores it).
   */
  node?: string;
}

/** What seal step 2 decided for a segment. */
export interface SealBegin {
  /** Per gateway, the seqs of the file that count: vouched for by `staged`, or adopted now. */
  valid: Map<string, Range[]>;
  /** Readings adopted: in the file, named by no `staged` row, held by no one (their commit had failed). */
  adopted: number;
  /** Staged seqs the file does not hold (disk corruption?), per gateway; never counted as sealed. */
  lost: Array<{ gateway: string; lost: Range[] }>;
}

export interface IngestStore {
  readonly kind: 'sqlite' | 'postgres';
  /**
   * One group commit, one transaction [INV-1][INV-2]: decide (plan.ts) against received, epochs and
   * gaps, record epochs, gaps, future readings and clock offsets, stage the new lines through
   * `req.stage`, add them to `received` and `staged`, commit. Resolves only after the commit; a
   * throw means nothing of the group counts (a resend is decided afresh).
   */
  commitGroup(req: GroupCommitRequest): Promise<GroupPlan>;
  /**
   * Seal step 2, one transaction: `inFile` is the segment file's seqs per gateway (sorted, merged);
   * the answer's `valid` is what `staged` vouches for plus unvouched seqs nobody holds (adopted into
   * `received` and `staged`). Repeating it for the same file gives the same `valid`.
   */
  sealBegin(segment: string, inFile: Map<string, Range[]>): Promise<SealBegin>;
  /**
   * Seal step 4, one transaction: the files' catalog rows (`files`, `file_gateways`), `valid` into
   * `sealed`, the segment's `staged` rows out. Idempotent: a second call leaves the same catalog.
   */
  sealCommit(segment: string, files: CatalogEntry[], valid: Map<string, Range[]>, now: number): Promise<void>;
}

/**
 * The transaction view the ingest decisions run on (plan.ts, seal-plan.ts): reads see the
 * transaction's own writes and every commit before it; the implementation holds whatever lock makes
 * read-decide-write safe against another process or node (SQLite: the database's write lock).
 */
export interface IngestTx {
  /**
   * Per gateway, its highest seq in `received` (0 when none): one read for a whole group's gateways
   * (it was one per gateway, ~25 a group under load).
   */
  maxReceived(gateways: string[]): Promise<Map<string, number>>;
  /** `received` ranges of the gateway that overlap or touch [from, to], sorted. */
  receivedNear(gateway: string, from: number, to: number): Promise<Range[]>;
  /** Gap-record ranges of the gateway that overlap [from, to]. */
  gapRangesIn(gateway: string, from: number, to: number): Promise<Range[]>;
  /** The stored spans of these epochs, by gateway (those stored): one read for a whole group's batches. */
  storedEpochs(byGateway: Map<string, number[]>): Promise<Map<string, EpochRow[]>>;
  /** Insert-once by (gateway, epoch), a whole group's new epochs in one statement. */
  insertEpochs(byGateway: Map<string, EpochRow[]>): Promise<void>;
  /** Insert-once by (gateway, id); how many were new, and the seqs of the new cloud_lost ones. */
  insertGaps(gateway: string, gaps: GapRow[], now: number): Promise<{ added: number; lostReadings: number }>;
  recordFutureReadings(gateway: string, f: FutureReadings, now: number): Promise<void>;
  /** Store the current clock offset estimates of these gateways, each named once (gateway_clock; one statement for a group). */
  recordClockOffsets(offsets: Array<{ gateway: string; offsetMs: number }>, now: number): Promise<void>;
  /** The segment's `staged` ranges by gateway. */
  stagedRanges(segment: string): Promise<Map<string, Range[]>>;
  /** Add each gateway's ranges to its `received` set, kept merged: every gateway of a group at once (a read, then an update, a delete and an insert as needed). */
  addReceivedAll(byGateway: Map<string, Range[]>): Promise<void>;
  /** The same for each gateway's `staged` set of this segment. */
  addStagedAll(segment: string, byGateway: Map<string, Range[]>): Promise<void>;
}
