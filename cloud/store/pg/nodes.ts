/**
 * The NodeRegistry (cloud/store/nodes.ts) on PostgreSQL: migration 3's `nodes` table. Every
 * judgement of time is the database's now(), in the statement that acts on it, so a node's clock
 * (skewed, or stopped in a GC pause) plays no part. A claim is one UPDATE: its row lock orders two
 * claimants (the second re-reads the row and finds it claimed) and orders a claim against a group
 * commit, which holds the claimed node's row FOR SHARE while it stages (cloud/store/pg/ingest.ts):
 * a commit either finishes before the claim, or sees the claim and stages nothing.
 */
import type pg from 'pg';
import type { LiveNode, NodeInfo, NodeRegistry } from '../nodes.js';
import { asStoreError } from './unavailable.js';

/** Rows of nodes that ended or were claimed, older than this, are deleted at a registration. */
const COLLECT_AFTER = "interval '1 day'";

/** The condition of a live lease on the `nodes` row aliased `n`. */
const LIVE = (n: string) => `${n}.claimed_by IS NULL AND ${n}.ended_at IS NULL AND ${n}.lease_until > now()`;

export class PgNodeRegistry implements NodeRegistry {
  private readonly pool: pg.Pool | pg.PoolClient;

  /** The pool is the caller's (createPgPool), migrated. */
  constructor(pool: pg.Pool | pg.PoolClient) {
    this.pool = pool;
  }

  private async q<R extends pg.QueryResultRow>(what: string, sql: string, params: unknown[]): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(sql, params);
    } catch (err) {
      throw asStoreError(err, what);
    }
  }

  async register(info: NodeInfo, leaseMs: number): Promise<void> {
    await this.q('node register', `INSERT INTO nodes (node, host, pid, started_at, lease_until)
      VALUES ($1, $2, $3, $4, now() + $5::double precision * interval '1 millisecond')`, [info.node, info.host, info.pid, info.startedAt, leaseMs]);
    // Rows of nodes gone long ago; a staging dir still named by one is then adopted by its age.
    await this.q('node rows collect', `DELETE FROM nodes WHERE lease_until < now() - ${COLLECT_AFTER} AND (claimed_by IS NOT NULL OR ended_at IS NOT NULL)`, []);
  }

  async renew(node: string, leaseMs: number, servedVersion: number | null): Promise<{ fenced: boolean }> {
    // A lease that ran out but was not claimed is taken up again: a claim after this waits for the
    // row and then finds the lease live (the claim's WHERE is re-checked on the new row).
    const r = await this.q('node renew', `UPDATE nodes SET lease_until = now() + $2::double precision * interval '1 millisecond', served_version = $3
      WHERE node = $1 AND claimed_by IS NULL AND ended_at IS NULL`, [node, leaseMs, servedVersion]);
    return { fenced: (r.rowCount ?? 0) === 0 };
  }

  async claim(dead: string, me: string): Promise<boolean> {
    if (dead === me) return false;
    const r = await this.q('node claim', `UPDATE nodes d SET claimed_by = $2, claimed_at = now()
      WHERE d.node = $1
        AND (d.ended_at IS NOT NULL OR d.lease_until < now())
        AND (d.claimed_by IS NULL OR d.claimed_by = $2
             OR NOT EXISTS (SELECT 1 FROM nodes c WHERE c.node = d.claimed_by AND ${LIVE('c')}))
        AND EXISTS (SELECT 1 FROM nodes m WHERE m.node = $2 AND ${LIVE('m')})`, [dead, me]);
    return (r.rowCount ?? 0) === 1;
  }

  async known(node: string): Promise<boolean> {
    return (await this.q('node lookup', 'SELECT 1 FROM nodes WHERE node = $1', [node])).rows.length > 0;
  }

  async live(): Promise<LiveNode[]> {
    const r = await this.q<LiveNode>('live nodes', `SELECT node, host, served_version AS "servedVersion",
        (extract(epoch FROM lease_until) * 1000)::bigint AS "leaseUntil"
      FROM nodes n WHERE ${LIVE('n')} ORDER BY node COLLATE "C"`, []);
    return r.rows;
  }

  async end(node: string): Promise<void> {
    await this.q('node end', `UPDATE nodes SET ended_at = (extract(epoch FROM now()) * 1000)::bigint
      WHERE node = $1 AND ended_at IS NULL`, [node]);
  }
}
