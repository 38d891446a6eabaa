/**
 * The PostgreSQL store's connection pool (node-postgres): bounded, with server-side timeouts so a
 * stuck statement or a node that hangs inside a transaction cannot hold locks (the batch lock, a
 * group commit's rows) for good. Cluster mode: docs/cluster-store.md.
 */
import pg from 'pg';
import type { Logger } from '../../../shared/logger.js';

export interface PgStoreOptions {
  /** `postgres://user:pass@host:port/db` (libpq URL; `?sslmode=...` and the like pass through). */
  url: string;
  /** Connections at most in this process's pool. Default 10. */
  poolMax: number;
  /**
   * Server-side `statement_timeout`: PostgreSQL cancels a statement running longer (error 57014).
   * Default 15,000 ms, SQLite's busy_timeout in cloud.db. 0: none.
   */
  statementTimeoutMs: number;
  /** How long to wait for a new connection (TCP, TLS, auth) or a free one from the pool. Default 5,000 ms. */
  connectionTimeoutMs: number;
  /** An unused connection is closed after this long. Default 30,000 ms. */
  idleTimeoutMs: number;
  /**
   * Server-side `idle_in_transaction_session_timeout`: a session idle inside an open transaction
   * (a process stopped with SIGSTOP, a lost await) is ended and its locks freed. Default 60,000 ms. 0: none.
   */
  idleInTransactionTimeoutMs: number;
  /** `application_name`, shown in pg_stat_activity. Default `braid-cloud`. */
  applicationName: string;
}

export const DEFAULT_PG_STORE_OPTIONS: Omit<PgStoreOptions, 'url'> = {
  poolMax: 10,
  statementTimeoutMs: 15_000,
  connectionTimeoutMs: 5_000, // also bounds the wait for a free pooled connection
  idleTimeoutMs: 30_000,
  idleInTransactionTimeoutMs: 60_000,
  applicationName: 'braid-cloud',
};

/**
 * BIGINT (int8) as a JS number: seqs, epochs and ms timestamps are far below 2^53, and a number
 * beyond it is an error rather than a silent rounding. node-postgres returns int8 as a string by
 * default; this is set per pool (its `types` option), not with the global pg.types.setTypeParser.
 */
function parseInt8(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new RangeError(`BIGINT ${text} is beyond Number.MAX_SAFE_INTEGER`);
  return n;
}

const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === pg.types.builtins.INT8 && format !== 'binary'
    ? parseInt8
    : pg.types.getTypeParser(oid, format as 'text'))) as typeof pg.types.getTypeParser,
};

/**
 * Run `job` in one transaction on one pooled connection (`begin` opens it): COMMIT after it,
 * ROLLBACK on a throw. A connection whose ROLLBACK failed is in an unknown state: destroyed, not
 * pooled.
 */
export async function pgTransaction<T>(pool: pg.Pool, job: (c: pg.PoolClient) => Promise<T>, begin = 'BEGIN'): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query(begin);
    try {
      const out = await job(client);
      await client.query('COMMIT');
      return out;
    } catch (err) {
      await client.query('ROLLBACK').catch((e: Error) => { broken = e; });
      throw err;
    }
  } finally {
    client.release(broken);
  }
}

/** A pool with the options' limits and timeouts. Close it with `end()`. */
export function createPgPool(options: Partial<PgStoreOptions> & { url: string }, logger?: Logger): pg.Pool {
  const o: PgStoreOptions = { ...DEFAULT_PG_STORE_OPTIONS, ...options };
  const pool = new pg.Pool({
    connectionString: o.url,
    max: o.poolMax,
    connectionTimeoutMillis: o.connectionTimeoutMs,
    idleTimeoutMillis: o.idleTimeoutMs,
    statement_timeout: o.statementTimeoutMs > 0 ? o.statementTimeoutMs : false,
    idle_in_transaction_session_timeout: o.idleInTransactionTimeoutMs > 0 ? o.idleInTransactionTimeoutMs : undefined,
    application_name: o.applicationName,
    types,
  });
  // An idle pooled connection that breaks (server restart, network) emits 'error' on the pool; without
  // a listener that is an uncaught exception. The pool drops the connection and opens another when asked.
  pool.on('error', (err) => logger?.warn({ err: err.message }, 'PostgreSQL: an idle pooled connection failed'));
  // A checked-out connection has no listener of the pool's (pg-pool removes its idle one at
  // checkout), and node-postgres emits 'error' on the client when the server ends the session, even
  // while the statement in flight gets the error too: without this a PostgreSQL restart under load
  // crashed the node (found by test/cloud/cluster-faults.test.ts). The caller sees the failed
  // statement (a retriable 503); a transaction between statements finds the client unqueryable, and
  // release() drops it from the pool.
  pool.on('connect', (client) => {
    client.on('error', (err) => logger?.debug({ err: err.message }, 'PostgreSQL: a pooled connection in use failed'));
  });
  return pool;
}
