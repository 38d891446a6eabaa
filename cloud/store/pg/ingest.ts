/**
 * The IngestStore (cloud/store/ingest.ts) on PostgreSQL, migration 1's tables: the statements of
 * cloud/store/ingest-state.ts and clock.ts's gateway_clock rows in PostgreSQL's dialect (ON
 * CONFLICT DO NOTHING for OR IGNORE, upsert columns qualified by the table), under the same
 * decisions (plan.ts, seal-plan.ts on an IngestTx). Held equal to the SQLite store by
 * test/support/store-conformance/ingest.ts.
 *
 * SQLite's one writer serialised every read-decide-write; here a transaction takes a per-gateway
 * advisory lock (exclusive, held to COMMIT) for every gateway it decides about, sorted so two
 * nodes' groups never deadlock. A second node's commit of the same gateway waits, then reads (READ
 * COMMITTED) the first one's `received`: the same batch sent to two nodes is stored once [INV-2].
 * Other gateways commit in parallel. The staging callback runs inside the transaction, so no
 * transaction is retried once it has staged: a failure rolls back and the gateway resends [INV-1].
 *
 * Fencing (cluster mode): a group commit that names its node (`req.node`) first reads that node's
 * `nodes` row FOR SHARE, live lease only; a claim of the node (an UPDATE of the row, pg/nodes.ts)
 * waits for the commit or is seen by it, so a node whose staging was taken over stages nothing and
 * answers 503 (StagingLeaseLostError).
 */
import type pg from 'pg';
import { clockOffsetParams, clockOffsetsUpsert } from '../../ingest/clock.js';
import { type GroupPlan, commitGroupIn } from '../../ingest/plan.js';
import { type GatewayRange, type Range, rangeChanges, rangesToAdd } from '../../ingest/ranges.js';
import { planSeal } from '../../ingest/seal-plan.js';
import type { GroupCommitRequest, IngestStore, IngestTx, SealBegin } from '../ingest.js';
import { StagingLeaseLostError } from '../nodes.js';
import { type CatalogEntry, CLOUD_LOST_REASON, type EpochRow, UNKNOWN_TS, epochTuples, epochsAsked, epochsByGateway } from '../ingest-state.js';
import { PG_MAX_PARAMS } from './speed.js';
import { pgTransaction } from './pool.js';
import { asStoreError } from './unavailable.js';

/** First key of the per-gateway ingest advisory locks ('bing'); the second is hashtext(gateway). */
export const INGEST_LOCK_CLASS = 0x62696e67;

type RangeTable = 'received' | 'sealed' | 'staged';

/** Byte-wise order, as SQLite's BINARY collation orders text. */
const cmp = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

function chunks<T>(rows: T[], paramsPerRow: number): T[][] {
  const per = Math.max(1, Math.floor(PG_MAX_PARAMS / paramsPerRow));
  const out: T[][] = [];
  for (let i = 0; i < rows.length; i += per) out.push(rows.slice(i, i + per));
  return out;
}

/** `($1,...,$k),($k+1,...)` for `rows` rows of `perRow` values after `offset` leading parameters. */
function values(rows: number, perRow: number, offset = 0): string {
  const out: string[] = [];
  for (let r = 0; r < rows; r++) out.push(`(${Array.from({ length: perRow }, (_, c) => `$${offset + r * perRow + c + 1}`).join(',')})`);
  return out.join(',');
}

/** The ranges of one set (a table, a gateway and for `staged` a segment) overlapping or touching [from, to]. */
async function rangesNear(c: pg.PoolClient, table: RangeTable, key: string[], from: number, to: number): Promise<Range[]> {
  const where = table === 'staged' ? 'segment = $1 AND gateway = $2' : 'gateway = $1';
  const n = key.length;
  const r = await c.query<Range>(
    `SELECT from_seq AS "from", to_seq AS "to" FROM ${table}
     WHERE ${where} AND from_seq <= $${n + 1}
       AND from_seq >= COALESCE((SELECT MAX(from_seq) FROM ${table} WHERE ${where} AND from_seq <= $${n + 2}), $${n + 2})
     ORDER BY from_seq`,
    [...key, to + 1, from - 1]);
  return r.rows.filter((x) => x.to >= from - 1);
}

/**
 * ingest-state.ts addRangesAll: every gateway's ranges added to its set, each set kept merged, in one
 * read and a delete, an update and an insert, each only when needed (arrays as parameters: no chunking). `segment`: the staged set.
 */
async function addRangesAll(c: pg.PoolClient, table: RangeTable, byGateway: Map<string, Range[]>, segment?: string): Promise<void> {
  const { items, seg } = rangesToAdd(table, byGateway, segment);
  if (items.length === 0) return;
  const staged = table === 'staged';
  const near = await c.query<GatewayRange>(
    `SELECT s.gateway, s.from_seq AS "from", s.to_seq AS "to"
     FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS v(gateway, f, t) JOIN ${table} s
       ON ${staged ? 's.segment = $4 AND ' : ''}s.gateway = v.gateway AND s.from_seq <= v.t + 1 AND s.to_seq >= v.f - 1
      AND s.from_seq >= COALESCE((SELECT MAX(x.from_seq) FROM ${table} x
        WHERE ${staged ? 'x.segment = s.segment AND ' : ''}x.gateway = v.gateway AND x.from_seq <= v.f - 1), v.f - 1)`,
    [items.map((r) => r.gateway), items.map((r) => r.from), items.map((r) => r.to), ...seg]);
  const { del, upd, ins } = rangeChanges(near.rows.map((r) => ({ gateway: r.gateway, from: Number(r.from), to: Number(r.to) })), byGateway);
  if (del.length > 0) {
    await c.query(`DELETE FROM ${table} WHERE ${staged ? 'segment = $3 AND ' : ''}(gateway, from_seq) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))`,
      [del.map((r) => r.gateway), del.map((r) => r.from), ...seg]);
  }
  if (upd.length > 0) {
    await c.query(`UPDATE ${table} AS s SET to_seq = v.t FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS v(gateway, f, t)
       WHERE ${staged ? 's.segment = $4 AND ' : ''}s.gateway = v.gateway AND s.from_seq = v.f`,
      [upd.map((r) => r.gateway), upd.map((r) => r.from), upd.map((r) => r.to), ...seg]);
  }
  if (ins.length > 0) {
    await c.query(`INSERT INTO ${table} (${staged ? 'segment, ' : ''}gateway, from_seq, to_seq)
       SELECT ${staged ? '$4::text, ' : ''}* FROM unnest($1::text[], $2::bigint[], $3::bigint[])`,
      [ins.map((r) => r.gateway), ins.map((r) => r.from), ins.map((r) => r.to), ...seg]);
  }
}

function pgIngestTx(c: pg.PoolClient): IngestTx {
  return {
    maxReceived: async (gs) => new Map((await c.query<{ gateway: string; to: number | null }>(
      `SELECT g.gateway, (SELECT to_seq FROM received r WHERE r.gateway = g.gateway ORDER BY r.from_seq DESC LIMIT 1) AS "to"
       FROM unnest($1::text[]) AS g(gateway)`, [gs])).rows.map((r) => [r.gateway, Number(r.to ?? 0)])),
    receivedNear: (g, from, to) => rangesNear(c, 'received', [g], from, to),
    gapRangesIn: async (g, from, to) => (await c.query<Range>(
      'SELECT from_seq AS "from", to_seq AS "to" FROM gaps WHERE gateway = $1 AND to_seq >= $2 AND from_seq <= $3', [g, from, to])).rows,
    storedEpochs: async (byGateway) => {
      const asked = epochsAsked(byGateway);
      const r = await c.query<EpochRow & { gateway: string }>(
        `SELECT e.gateway, e.epoch, e.first_seq AS "firstSeq", e.last_seq AS "lastSeq"
         FROM unnest($1::text[], $2::bigint[]) AS v(gateway, epoch) JOIN epochs e ON e.gateway = v.gateway AND e.epoch = v.epoch`,
        [asked.map((x) => x[0]), asked.map((x) => x[1])]);
      return epochsByGateway(r.rows.map((e) => ({ gateway: e.gateway, epoch: Number(e.epoch), firstSeq: Number(e.firstSeq), lastSeq: Number(e.lastSeq) })));
    },
    insertEpochs: async (byGateway) => {
      const rows = epochTuples(byGateway);
      if (rows.length === 0) return;
      await c.query(`INSERT INTO epochs (gateway, epoch, first_seq, last_seq) SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) ON CONFLICT DO NOTHING`,
        [rows.map((x) => x[0]), rows.map((x) => x[1]), rows.map((x) => x[2]), rows.map((x) => x[3])]);
    },
    insertGaps: async (g, gaps, now) => {
      let added = 0;
      let lostReadings = 0;
      for (const chunk of chunks(gaps, 10)) {
        const r = await c.query<{ reason: string; count: number }>(
          `INSERT INTO gaps (gateway, id, reason, from_seq, to_seq, count, min_ts, max_ts, devices, received_at) VALUES ${values(chunk.length, 10)}
           ON CONFLICT DO NOTHING RETURNING reason, count`,
          chunk.flatMap((x) => [g, x.id, x.reason, x.fromSeq, x.toSeq, x.count, x.minTs ?? UNKNOWN_TS, x.maxTs ?? UNKNOWN_TS, JSON.stringify(x.devices), now]));
        added += r.rows.length;
        for (const row of r.rows) if (row.reason === CLOUD_LOST_REASON) lostReadings += Number(row.count);
      }
      return { added, lostReadings };
    },
    recordClockOffsets: async (offsets, now) => {
      for (const chunk of chunks(offsets, 3)) await c.query(clockOffsetsUpsert(values(chunk.length, 3)), clockOffsetParams(chunk, now));
    },
    recordFutureReadings: async (g, f, now) => {
      await c.query(
        `INSERT INTO gateway_clock (gateway, future_readings, future_device, future_metric, future_ts, future_at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (gateway) DO UPDATE SET future_readings = gateway_clock.future_readings + excluded.future_readings,
           future_device = excluded.future_device, future_metric = excluded.future_metric, future_ts = excluded.future_ts, future_at = excluded.future_at`,
        [g, f.count, f.device, f.metric, f.ts, now]);
    },
    stagedRanges: async (segment) => {
      const r = await c.query<{ gateway: string; from: number; to: number }>(
        'SELECT gateway, from_seq AS "from", to_seq AS "to" FROM staged WHERE segment = $1 ORDER BY gateway COLLATE "C", from_seq', [segment]);
      const out = new Map<string, Range[]>();
      for (const row of r.rows) {
        const list = out.get(row.gateway) ?? [];
        list.push({ from: row.from, to: row.to });
        out.set(row.gateway, list);
      }
      return out;
    },
    addReceivedAll: (byGateway) => addRangesAll(c, 'received', byGateway),
    addStagedAll: (segment, byGateway) => addRangesAll(c, 'staged', byGateway, segment),
  };
}

export class PgIngestStore implements IngestStore {
  readonly kind = 'postgres' as const;
  private readonly pool: pg.Pool;

  /** The pool is the caller's (createPgPool), migrated; close it after the store. */
  constructor(pool: pg.Pool) {
    this.pool = pool;
  }

  /** One transaction holding the ingest lock of each of `gateways` (sorted: no deadlock between nodes). */
  private async tx<T>(what: string, gateways: Iterable<string>, job: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    try {
      return await pgTransaction(this.pool, async (client) => {
        for (const g of [...new Set(gateways)].sort(cmp)) await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [INGEST_LOCK_CLASS, g]);
        return job(client);
      });
    } catch (err) {
      throw asStoreError(err, what);
    }
  }

  commitGroup(req: GroupCommitRequest): Promise<GroupPlan> {
    return this.tx('ingest group commit', req.batches.map((b) => b.gateway), async (c) => {
      // The fence, before anything is staged: a claim of this node (pg/nodes.ts) waits for this row lock, or was seen.
      if (req.node !== undefined) {
        const own = await c.query(`SELECT 1 FROM nodes WHERE node = $1 AND claimed_by IS NULL AND ended_at IS NULL AND lease_until > now() FOR SHARE`, [req.node]);
        if (own.rows.length === 0) throw new StagingLeaseLostError(req.node);
      }
      return commitGroupIn(pgIngestTx(c), req);
    });
  }

  sealBegin(segment: string, inFile: Map<string, Range[]>): Promise<SealBegin> {
    return this.tx('seal begin', inFile.keys(), (c) => planSeal(pgIngestTx(c), segment, inFile));
  }

  sealCommit(segment: string, files: CatalogEntry[], valid: Map<string, Range[]>, now: number): Promise<void> {
    return this.tx('seal commit', valid.keys(), async (c) => {
      for (const f of files) {
        await c.query('INSERT INTO files (path, day, rows, bytes, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING', [f.path, f.day, f.rows, f.bytes, now]);
        for (const chunk of chunks(f.gateways, 7)) {
          await c.query(`INSERT INTO file_gateways (path, gateway, min_seq, max_seq, min_epoch, max_epoch, rows) VALUES ${values(chunk.length, 7)} ON CONFLICT DO NOTHING`,
            chunk.flatMap((g) => [f.path, g.gateway, g.minSeq, g.maxSeq, g.minEpoch, g.maxEpoch, g.rows]));
        }
      }
      await addRangesAll(c, 'sealed', valid);
      await c.query('DELETE FROM staged WHERE segment = $1', [segment]);
    });
  }
}
