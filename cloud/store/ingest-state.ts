/**
 * The ingest state in cloud.db (docs/cloud-storage.md): seq range sets (`received`, `sealed`,
 * `staged`), epochs, gap records and the master file catalog. Plain statements on a Db, the SQL of
 * SqliteIngestStore (cloud/ingest/sqlite-store.ts), which runs them inside its BEGIN IMMEDIATE
 * transactions (the WriteQueue): that is what makes a read-decide-write sequence safe against a
 * second ingest process on the same data dir.
 */
import { type GatewayRange, type Range, rangeChanges, rangesToAdd } from '../ingest/ranges.js';
import { type Db, MAX_SQL_PARAMS, chunkRows, placeholders } from '../../shared/sqlite.js';

/** A merged range set: a table and the key that picks one set in it. */
export type RangeSet =
  | { table: 'received' | 'sealed'; gateway: string }
  | { table: 'staged'; segment: string; gateway: string };

function keyOf(set: RangeSet): { where: string; params: string[] } {
  return set.table === 'staged'
    ? { where: 'segment = ? AND gateway = ?', params: [set.segment, set.gateway] }
    : { where: 'gateway = ?', params: [set.gateway] };
}

/**
 * The ranges of `set` that overlap or touch [from, to], sorted. Two index seeks: the last range
 * starting at or before from - 1, and those starting up to to + 1.
 */
export async function rangesNear(db: Db, set: RangeSet, from: number, to: number): Promise<Range[]> {
  const k = keyOf(set);
  const rows = await db.all<Range>(
    `SELECT from_seq AS "from", to_seq AS "to" FROM ${set.table}
     WHERE ${k.where} AND from_seq <= ?
       AND from_seq >= COALESCE((SELECT MAX(from_seq) FROM ${set.table} WHERE ${k.where} AND from_seq <= ?), ?)
     ORDER BY from_seq`,
    [...k.params, to + 1, ...k.params, from - 1, from - 1]);
  return rows.filter((r) => r.to >= from - 1);
}

/**
 * Add each gateway's ranges to its set in `table`, keeping every set merged (no two rows overlap
 * or touch), for all the gateways of a group commit or a seal at once (up to ~50): one read of the
 * rows that overlap or touch any added range (rangesNear's predicate for each), then a DELETE, an
 * UPDATE and an INSERT of the rows that change, each only when there are some (ranges.ts
 * rangeChanges), per chunk of parameters, instead of two or more statements per gateway.
 * A set growing at its end (every gateway's, as the forwarder sends) is the read and one UPDATE.
 * `segment`: the staged set of that segment.
 */
export async function addRangesAll(db: Db, table: 'received' | 'sealed' | 'staged', byGateway: Map<string, Range[]>, segment?: string): Promise<void> {
  const { items, seg } = rangesToAdd(table, byGateway, segment);
  if (items.length === 0) return;
  const staged = table === 'staged';
  const near: GatewayRange[] = [];
  for (const chunk of chunkRows(items, 3, MAX_SQL_PARAMS - 1)) {
    near.push(...await db.all<GatewayRange>(
      `WITH v(gateway, f, t) AS (VALUES ${placeholders(chunk.length, 3)})
       SELECT s.gateway AS gateway, s.from_seq AS "from", s.to_seq AS "to" FROM v JOIN ${table} s
         ON ${staged ? 's.segment = ? AND ' : ''}s.gateway = v.gateway AND s.from_seq <= v.t + 1 AND s.to_seq >= v.f - 1
        AND s.from_seq >= COALESCE((SELECT MAX(x.from_seq) FROM ${table} x
          WHERE ${staged ? 'x.segment = s.segment AND ' : ''}x.gateway = v.gateway AND x.from_seq <= v.f - 1), v.f - 1)`,
      [...chunk.flatMap((r) => [r.gateway, r.from, r.to]), ...seg]));
  }
  const { del, upd, ins } = rangeChanges(near, byGateway);
  for (const chunk of chunkRows(del, 2, MAX_SQL_PARAMS - 1)) {
    await db.run(`DELETE FROM ${table} WHERE ${staged ? 'segment = ? AND ' : ''}(gateway, from_seq) IN (VALUES ${placeholders(chunk.length, 2)})`,
      [...seg, ...chunk.flatMap((r) => [r.gateway, r.from])]);
  }
  for (const chunk of chunkRows(upd, 3, MAX_SQL_PARAMS - 1)) {
    await db.run(`WITH v(gateway, f, t) AS (VALUES ${placeholders(chunk.length, 3)})
       UPDATE ${table} SET to_seq = v.t FROM v WHERE ${staged ? `${table}.segment = ? AND ` : ''}${table}.gateway = v.gateway AND ${table}.from_seq = v.f`,
      [...chunk.flatMap((r) => [r.gateway, r.from, r.to]), ...seg]);
  }
  for (const chunk of chunkRows(ins, staged ? 4 : 3)) {
    await db.run(`INSERT INTO ${table} (${staged ? 'segment, ' : ''}gateway, from_seq, to_seq) VALUES ${placeholders(chunk.length, staged ? 4 : 3)}`,
      chunk.flatMap((r) => [...seg, r.gateway, r.from, r.to]));
  }
}

/**
 * Per gateway, its highest seq in `received` (0 when none), in one statement per 500 gateways:
 * each the last row by from_seq, one index seek (the ranges are merged, so its to_seq is the
 * highest).
 */
export async function maxReceived(db: Db, gateways: string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const chunk of chunkRows(gateways, 1, 500)) {
    const rows = await db.all<{ gateway: string; to: number | null }>(
      `WITH g(gateway) AS (VALUES ${placeholders(chunk.length, 1)})
       SELECT g.gateway AS gateway, (SELECT to_seq FROM received r WHERE r.gateway = g.gateway ORDER BY r.from_seq DESC LIMIT 1) AS "to" FROM g`,
      chunk);
    for (const r of rows) out.set(r.gateway, r.to ?? 0);
  }
  return out;
}

/** The staged ranges of `segment`, by gateway. */
export async function stagedRanges(db: Db, segment: string): Promise<Map<string, Range[]>> {
  const rows = await db.all<{ gateway: string; from: number; to: number }>(
    'SELECT gateway, from_seq AS "from", to_seq AS "to" FROM staged WHERE segment = ? ORDER BY gateway, from_seq', [segment]);
  const out = new Map<string, Range[]>();
  for (const r of rows) {
    const list = out.get(r.gateway) ?? [];
    list.push({ from: r.from, to: r.to });
    out.set(r.gateway, list);
  }
  return out;
}

export async function deleteStaged(db: Db, segment: string): Promise<void> {
  await db.run('DELETE FROM staged WHERE segment = ?', [segment]);
}

export interface EpochRow { epoch: number; firstSeq: number; lastSeq: number }
export interface GapRow {
  id: number; reason: string; fromSeq: number; toSeq: number; count: number;
  /** Event-time range of the readings (epoch ms); null when unknown (a `cloud_lost` record). */
  minTs: number | null; maxTs: number | null; devices: string[];
}

/** A gap record's reason when the cloud acknowledged the seqs and lost them since (a restore from backup). */
export const CLOUD_LOST_REASON = 'cloud_lost';
/** min_ts and max_ts of a gap record whose event-time range is unknown (no reading has a negative ts). */
export const UNKNOWN_TS = -1;

/** A group's epoch rows of every gateway as (gateway, epoch, first_seq, last_seq) tuples (both stores' insertEpochs). */
export function epochTuples(byGateway: Map<string, EpochRow[]>): Array<[string, number, number, number]> {
  return [...byGateway].flatMap(([gateway, epochs]) => epochs.map((e): [string, number, number, number] => [gateway, e.epoch, e.firstSeq, e.lastSeq]));
}

/** The (gateway, epoch) pairs asked for, each once (both stores' storedEpochs). */
export function epochsAsked(byGateway: Map<string, number[]>): Array<[string, number]> {
  return [...byGateway].flatMap(([gateway, epochs]) => [...new Set(epochs)].map((epoch): [string, number] => [gateway, epoch]));
}

/** Stored epoch rows grouped by gateway, added to `out` (both stores' storedEpochs). */
export function epochsByGateway(rows: Iterable<EpochRow & { gateway: string }>, out = new Map<string, EpochRow[]>()): Map<string, EpochRow[]> {
  for (const { gateway, ...e } of rows) {
    const l = out.get(gateway);
    if (l) l.push(e);
    else out.set(gateway, [e]);
  }
  return out;
}

/** Insert-once by (gateway, epoch): a group's new epochs of every gateway, per chunk of 4,000 parameters. */
export async function insertEpochs(db: Db, byGateway: Map<string, EpochRow[]>): Promise<void> {
  for (const chunk of chunkRows(epochTuples(byGateway), 4, 4000)) {
    await db.run(`INSERT OR IGNORE INTO epochs (gateway, epoch, first_seq, last_seq) VALUES ${placeholders(chunk.length, 4)}`, chunk.flat());
  }
}

/** The stored spans of these epochs, by gateway (those stored): one read per 500 of them, for every gateway of a group. */
export async function storedEpochs(db: Db, byGateway: Map<string, number[]>): Promise<Map<string, EpochRow[]>> {
  const out = new Map<string, EpochRow[]>();
  for (const chunk of chunkRows(epochsAsked(byGateway), 2, 1000)) {
    epochsByGateway(await db.all<EpochRow & { gateway: string }>(
      `WITH v(gateway, epoch) AS (VALUES ${placeholders(chunk.length, 2)})
       SELECT e.gateway AS gateway, e.epoch AS epoch, e.first_seq AS "firstSeq", e.last_seq AS "lastSeq" FROM v JOIN epochs e ON e.gateway = v.gateway AND e.epoch = v.epoch`,
      chunk.flat()), out);
  }
  return out;
}

/**
 * Record gap records, idempotent by (gateway, id). Returns how many were new, and the count of
 * the new `cloud_lost` ones (their seqs).
 */
export async function insertGaps(db: Db, gateway: string, gaps: GapRow[], now: number): Promise<{ added: number; lostReadings: number }> {
  let added = 0;
  let lostReadings = 0;
  for (const chunk of chunkRows(gaps, 10, 4000)) {
    const params: unknown[] = [];
    for (const g of chunk) params.push(gateway, g.id, g.reason, g.fromSeq, g.toSeq, g.count, g.minTs ?? UNKNOWN_TS, g.maxTs ?? UNKNOWN_TS, JSON.stringify(g.devices), now);
    // RETURNING lists only the rows inserted, not the repeats OR IGNORE skipped.
    const rows = await db.all<{ reason: string; count: number }>(
      `INSERT OR IGNORE INTO gaps (gateway, id, reason, from_seq, to_seq, count, min_ts, max_ts, devices, received_at) VALUES ${placeholders(chunk.length, 10)}
       RETURNING reason, count`,
      params);
    added += rows.length;
    for (const r of rows) if (r.reason === CLOUD_LOST_REASON) lostReadings += r.count;
  }
  return { added, lostReadings };
}

/** Gap-record ranges of a gateway that overlap [from, to]. */
export async function gapRangesIn(db: Db, gateway: string, from: number, to: number): Promise<Range[]> {
  return db.all<Range>('SELECT from_seq AS "from", to_seq AS "to" FROM gaps WHERE gateway = ? AND to_seq >= ? AND from_seq <= ?', [gateway, from, to]);
}

/** A master file and what it holds per gateway, as catalogued at seal. */
export interface CatalogEntry {
  /** Relative to the data dir: master/day=YYYY-MM-DD/part-<segment>.parquet */
  path: string;
  day: string;
  rows: number;
  bytes: number;
  gateways: Array<{ gateway: string; minSeq: number; maxSeq: number; minEpoch: number; maxEpoch: number; rows: number }>;
}

/** Catalog files (idempotent: re-sealing after a crash finds the rows there). */
export async function insertFiles(db: Db, files: CatalogEntry[], now: number): Promise<void> {
  for (const f of files) {
    await db.run('INSERT OR IGNORE INTO files (path, day, rows, bytes, created_at) VALUES (?, ?, ?, ?, ?)', [f.path, f.day, f.rows, f.bytes, now]);
    for (const chunk of chunkRows(f.gateways, 7, 7000)) {
      const params: unknown[] = [];
      for (const g of chunk) params.push(f.path, g.gateway, g.minSeq, g.maxSeq, g.minEpoch, g.maxEpoch, g.rows);
      await db.run(`INSERT OR IGNORE INTO file_gateways (path, gateway, min_seq, max_seq, min_epoch, max_epoch, rows) VALUES ${placeholders(chunk.length, 7)}`, params);
    }
  }
}
