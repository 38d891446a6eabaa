/**
 * The SQLite side of forwarding: which rows, epochs and gaps the next request carries
 * (docs/ingest-protocol.md), and the one transaction that applies the cloud's acknowledgement.
 */
import { type Db, type WriteQueue, chunkRows, placeholders } from '../../shared/sqlite.js';
import { ACKED_SEQ_KEY, flushDedupKeys, getMeta, outboxRowBytesSql, setMeta } from '../store/schema.js';

export { ACKED_SEQ_KEY };
/** Most epoch or gap records in one request; the rest ride along with later ones. */
const MAX_RECORDS = 10_000;
/** Ids per `IN (...)` when marking records, well under SQLite's parameter limit. */
const IDS_PER_STATEMENT = 500;

/** `[seq, epoch, device, metric, ts, value]`, as on the wire. */
export type ReadingTuple = [number, number, string, string, number, number];

export interface EpochRecord { epoch: number; firstSeq: number; lastSeq: number }

export interface GapRecord {
  id: number; reason: string; fromSeq: number; toSeq: number; count: number;
  /** Event-time range of the readings it names; null when unknown (cloud_lost: the rows left with the cloud's ack). */
  minTs: number | null; maxTs: number | null; devices: string[];
}

/** What one ingest request carries, before `v`, `gateway` and `sentAt` are added. */
export interface Batch {
  firstSeq: number;
  lastSeq: number;
  readings: ReadingTuple[];
  epochs: EpochRecord[];
  gaps: GapRecord[];
}

/** The request body of docs/ingest-protocol.md, before gzip. */
export interface IngestBody extends Batch { v: 1; gateway: string; sentAt: number }

export async function loadAckedSeq(reader: Db): Promise<number> {
  const text = await getMeta(reader, ACKED_SEQ_KEY);
  const n = text === undefined ? 0 : Number(text);
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

/** Rows still in the outbox (unacknowledged), for close() and status pages. */
export async function countPending(reader: Db, ackedSeq: number): Promise<number> {
  const row = await reader.get<{ n: number }>('SELECT COUNT(*) AS n FROM outbox_rows WHERE seq > ?', [ackedSeq]);
  return row?.n ?? 0;
}

function parseDevices(text: string): string[] {
  // budget.ts stores a JSON array; tolerate a bare comma list rather than lose the gap record.
  try {
    const v: unknown = JSON.parse(text);
    if (Array.isArray(v)) return v.map(String);
  } catch { /* fall through */ }
  return text.split(',').map((s) => s.trim()).filter(Boolean);
}

interface GapRowDb { id: number; reason: string; from_seq: number; to_seq: number; count: number; min_ts: number; max_ts: number; devices: string }

function unsentGaps(reader: Db): Promise<GapRowDb[]> {
  return reader.all<GapRowDb>('SELECT id, reason, from_seq, to_seq, count, min_ts, max_ts, devices FROM gaps WHERE sent = 0 ORDER BY id LIMIT ?', [MAX_RECORDS]);
}

/** [from, to] ranges sorted and merged (touching ones too). */
function normalizeRanges(ranges: ReadonlyArray<readonly [number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const [from, to] of [...ranges].sort((a, b) => a[0] - b[0])) {
    const last = out[out.length - 1];
    if (last && from <= last[1] + 1) last[1] = Math.max(last[1], to);
    else out.push([from, to]);
  }
  return out;
}

function toGapRecord(g: GapRowDb): GapRecord {
  const known = g.min_ts >= 0 && g.max_ts >= 0;
  return {
    id: g.id, reason: g.reason, fromSeq: g.from_seq, toSeq: g.to_seq, count: g.count,
    minTs: known ? g.min_ts : null, maxTs: known ? g.max_ts : null, devices: parseDevices(g.devices),
  };
}

/** Epoch and gap records a batch in flight carries: the batch read ahead of it leaves them out (still unmarked until its ack). */
export interface InFlightRecords { epochs: ReadonlySet<number>; gaps: ReadonlySet<number> }

/**
 * The next batch after `ackedSeq`, or null when there is nothing to send. With `inFlight`, the
 * records it names are left out, as if already marked.
 *
 * Epochs and gaps are read BEFORE the readings (two statements on a shared reader, no snapshot):
 * an epoch closed, or a gap written, by then only names seqs committed by then, so when the
 * readings query finds none past `ackedSeq`, every seq those records name is already gone from
 * the outbox, and `lastSeq` may safely move up to a gap's end.
 */
export async function readBatch(reader: Db, ackedSeq: number, maxReadings: number, inFlight?: InFlightRecords): Promise<Batch | null> {
  const epochRows = await reader.all<{ epoch: number; first_seq: number; last_seq: number }>(
    'SELECT epoch, first_seq, last_seq FROM epochs WHERE closed_at IS NOT NULL AND reported = 0 ORDER BY epoch LIMIT ?', [MAX_RECORDS]);
  const gapsNow = async () => (await unsentGaps(reader)).filter((g) => !inFlight?.gaps.has(g.id)).map(toGapRecord);
  let allGaps: GapRecord[] = await gapsNow();
  const rows = await reader.all<{ seq: number; epoch: number; device: string; metric: string; ts: number; value: number }>(
    // The rows carry their series' number (schema.ts outbox_rows); the retention keeps a series while a row refers to it.
    'SELECT o.seq, o.epoch, s.device, s.metric, o.ts, o.value FROM outbox_rows o JOIN series s ON s.id = o.series WHERE o.seq > ? ORDER BY o.seq LIMIT ?',
    [ackedSeq, Math.max(1, maxReadings)]);

  const allEpochs: EpochRecord[] = epochRows.filter((e) => !inFlight?.epochs.has(e.epoch))
    .map((e) => ({ epoch: e.epoch, firstSeq: e.first_seq, lastSeq: e.last_seq }));

  if (rows.length === 0) {
    if (allEpochs.length === 0 && allGaps.length === 0) return null;
    // Protocol: a batch without readings has firstSeq = lastSeq + 1 = the next seq to send.
    const lastSeq = allGaps.reduce((m, g) => Math.max(m, g.toSeq), ackedSeq);
    // A drop between the two reads may have taken the rows below these gaps: if they leave a
    // hole, read the gaps again and take those up to lastSeq (which stays as decided above).
    const covered = normalizeRanges(allGaps.map((g) => [g.fromSeq, g.toSeq] as const));
    if (lastSeq > ackedSeq && !(covered.length > 0 && covered[0][0] <= ackedSeq + 1 && covered[0][1] >= lastSeq)) {
      allGaps = (await gapsNow()).filter((g) => g.toSeq <= lastSeq);
    }
    return { firstSeq: lastSeq + 1, lastSeq, readings: [], epochs: allEpochs, gaps: allGaps };
  }

  const readings: ReadingTuple[] = rows.map((r) => [r.seq, r.epoch, r.device, r.metric, r.ts, r.value]);
  const lastSeq = rows[rows.length - 1].seq;
  // Rows missing between ackedSeq and lastSeq were dropped at the disk budget, their gap record
  // written in the same transaction: possibly after the gaps query above. Read the gaps again, so
  // the batch names every seq it skips (the cloud refuses one that does not, BRAID_ERR_INGEST_SEQ_SKIP).
  // Safe here: lastSeq comes from the rows, and a gap is only taken up to it.
  let prev = ackedSeq;
  for (const r of rows) {
    if (r.seq !== prev + 1) {
      allGaps = await gapsNow();
      break;
    }
    prev = r.seq;
  }
  // An epoch goes with the batch that carries (or follows) its last seq, so the cloud can judge it
  // complete on arrival. Gaps follow the same rule: a gap above this batch would otherwise tempt
  // lastSeq to jump over unsent rows between the two, and the ack would delete them.
  const epochs = allEpochs.filter((e) => e.lastSeq <= lastSeq);
  const gaps = allGaps.filter((g) => g.toSeq <= lastSeq);
  const firstSeq = gaps.reduce((m, g) => Math.min(m, g.fromSeq), rows[0].seq);
  return { firstSeq, lastSeq, readings, epochs, gaps };
}

export function ingestBody(batch: Batch, gateway: string, sentAt: number): IngestBody {
  return { v: 1, gateway, firstSeq: batch.firstSeq, lastSeq: batch.lastSeq, readings: batch.readings, epochs: batch.epochs, gaps: batch.gaps, sentAt };
}

export interface AckApplied {
  /** acked_seq after the transaction (never lower than before: an old ack is harmless). */
  ackedSeq: number;
  /** Outbox rows this acknowledgement deleted. */
  rows: number;
  /** Their disk bytes, as the outbox budget counts them (outboxRowBytes). */
  bytes: number;
}

async function markIds(db: Db, table: 'epochs' | 'gaps', set: string, column: string, ids: number[]): Promise<void> {
  for (const chunk of chunkRows(ids, 1, IDS_PER_STATEMENT)) {
    await db.run(`UPDATE ${table} SET ${set} WHERE ${column} IN ${placeholders(1, chunk.length)}`, chunk);
  }
}

/**
 * Apply a 2xx answer `{ ackSeq }` to `batch`, in one write-queue transaction, so a crash leaves
 * either the whole acknowledgement or none of it (then the batch is resent and the cloud counts it
 * once [INV-2]).
 */
export function applyAck(writes: WriteQueue, batch: Batch, ackSeq: number, prevAcked: number): Promise<AckApplied> {
  const upTo = Math.min(ackSeq, batch.lastSeq);
  const ackedSeq = Math.max(prevAcked, upTo);
  return writes.tx(async (db) => {
    // [INV-1] rows are deleted only after a 2xx: the cloud answered, so seqs <= ackSeq that this
    // request carried are durable in the master dataset. min(ackSeq, lastSeq) never reaches rows
    // this request did not carry. The count is taken in this transaction, just before the delete:
    // what this acknowledgement removes, not rows the disk budget dropped meanwhile (the budget
    // accounts for those itself). One aggregate row, not a RETURNING row a reading: a batch of
    // 5,000 took 7.3 ms that way, 2.9 ms this way, on the writer the group commits wait for.
    // [INV-2] the identities of the rows go to dedup_keys before the rows (schema.ts DEDUP_FLUSHED_KEY).
    let deleted = { rows: 0, bytes: 0 };
    if (upTo > 0) {
      await flushDedupKeys(db, upTo);
      const counted = await db.get<{ rows: number; bytes: number | null }>(
        `SELECT COUNT(*) AS rows, SUM(${outboxRowBytesSql('s.device', 's.metric')}) AS bytes FROM outbox_rows o LEFT JOIN series s ON s.id = o.series WHERE o.seq <= ?`, [upTo]);
      if (counted && counted.rows > 0) {
        await db.run('DELETE FROM outbox_rows WHERE seq <= ?', [upTo]);
        deleted = { rows: counted.rows, bytes: counted.bytes ?? 0 };
      }
    }
    await markIds(db, 'epochs', 'reported = 1', 'epoch', batch.epochs.map((e) => e.epoch));
    await markIds(db, 'gaps', 'sent = 1', 'id', batch.gaps.map((g) => g.id));
    if (ackedSeq !== prevAcked) await setMeta(db, ACKED_SEQ_KEY, ackedSeq);
    return { ackedSeq, ...deleted };
  });
}
