/**
 * The IngestStore (cloud/store/ingest.ts) on cloud.db: today's SQL (cloud/store/ingest-state.ts,
 * the gateway_clock rows of clock.ts). Every method is one BEGIN IMMEDIATE transaction on the
 * cloud's WriteQueue: SQLite's write lock, shared by every process on the data dir, is what makes
 * read-decide-write safe, so two processes given the same batch stage it once between them.
 */
import type { Db, WriteQueue } from '../../shared/sqlite.js';
import type { GroupCommitRequest, IngestStore, IngestTx, SealBegin } from '../store/ingest.js';
import {
  type CatalogEntry, addRangesAll, deleteStaged, gapRangesIn, insertEpochs, insertFiles, insertGaps, maxReceived, rangesNear, stagedRanges, storedEpochs,
} from '../store/ingest-state.js';
import { recordClockOffsets, recordFutureReadings } from './clock.js';
import { type GroupPlan, commitGroupIn } from './plan.js';
import type { Range } from './ranges.js';
import { planSeal } from './seal-plan.js';

/** The IngestTx view of a connection inside a transaction. */
function sqliteIngestTx(db: Db): IngestTx {
  return {
    maxReceived: (gs) => maxReceived(db, gs),
    receivedNear: (g, from, to) => rangesNear(db, { table: 'received', gateway: g }, from, to),
    gapRangesIn: (g, from, to) => gapRangesIn(db, g, from, to),
    storedEpochs: (byGateway) => storedEpochs(db, byGateway),
    insertEpochs: (byGateway) => insertEpochs(db, byGateway),
    insertGaps: (g, gaps, now) => insertGaps(db, g, gaps, now),
    recordFutureReadings: (g, f, now) => recordFutureReadings(db, g, f, now),
    recordClockOffsets: (offsets, now) => recordClockOffsets(db, offsets, now),
    stagedRanges: (segment) => stagedRanges(db, segment),
    addReceivedAll: (byGateway) => addRangesAll(db, 'received', byGateway),
    addStagedAll: (segment, byGateway) => addRangesAll(db, 'staged', byGateway, segment),
  };
}

export class SqliteIngestStore implements IngestStore {
  readonly kind = 'sqlite' as const;
  private readonly writes: WriteQueue;

  constructor(writes: WriteQueue) {
    this.writes = writes;
  }

  commitGroup(req: GroupCommitRequest): Promise<GroupPlan> {
    return this.writes.tx((db) => commitGroupIn(sqliteIngestTx(db), req));
  }

  sealBegin(segment: string, inFile: Map<string, Range[]>): Promise<SealBegin> {
    return this.writes.tx((db) => planSeal(sqliteIngestTx(db), segment, inFile));
  }

  sealCommit(segment: string, files: CatalogEntry[], valid: Map<string, Range[]>, now: number): Promise<void> {
    return this.writes.tx(async (db) => {
      await insertFiles(db, files, now);
      // Every gateway's sealed ranges in three statements (it was two or more a gateway, ~100 for
      // a segment of 50 gateways, each a trip to SQLite's thread while group commits wait their turn).
      await addRangesAll(db, 'sealed', valid);
      await deleteStaged(db, segment);
    });
  }
}
