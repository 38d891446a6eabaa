/**
 * Applies the PostgreSQL store's migrations (migrations.ts) at start. N nodes may start at once: each
 * runs the whole check-and-apply in one transaction that first takes a transaction-level advisory
 * lock, so the others wait, then find the versions applied and apply nothing. Every migration and
 * its schema_migrations row commit together (PostgreSQL's DDL is transactional): a node killed
 * mid-migration leaves the schema as it was.
 *
 * A database whose schema is newer than the code (an old node started during a rolling upgrade) is
 * refused (StoreSchemaNewerError naming both versions): the old code would write rows in a shape
 * the new schema does not expect.
 */
import type pg from 'pg';
import { StoreSchemaNewerError } from './errors.js';
import { MIGRATIONS, type Migration } from './migrations.js';

/**
 * The advisory lock key every Braid node takes to migrate ('braid-mg' as 8 ASCII bytes, below
 * 2^63). Other applications sharing the database would have to pick the same number to collide.
 */
export const MIGRATION_LOCK_KEY = '7093839468342111591';

export interface MigrateOptions {
  /** Defaults to every migration this code knows. */
  migrations?: readonly Migration[];
  /** The applied_at stamp (epoch ms). */
  now?: () => number;
  /**
   * statement_timeout inside the migration transaction (waiting for another node's lock included),
   * in place of the pool's: a migration on a big table may run longer than an ordinary statement.
   * Default 600,000 ms.
   */
  timeoutMs?: number;
}

export interface MigrateResult {
  /** The database's version before (0: an empty database). */
  from: number;
  /** Its version now. */
  to: number;
  /** The versions this call applied (empty when another node had, or nothing was pending). */
  applied: number[];
}

/** Programming errors in a migration list: versions must be 1, 2, 3... in order. */
function checkList(migrations: readonly Migration[]): void {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`migration #${i} has version ${m.version}, expected ${i + 1}`);
    if (m.statements.length === 0) throw new Error(`migration ${m.version} has no statements`);
  });
}

const CREATE_SCHEMA_MIGRATIONS = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version    INTEGER PRIMARY KEY,
  name       TEXT    NOT NULL,
  applied_at BIGINT  NOT NULL
)`;

/** The highest version applied, 0 when schema_migrations does not exist (a database Braid never used). */
export async function schemaVersion(db: pg.Pool | pg.ClientBase): Promise<number> {
  // Two statements: a query naming a missing table fails at parse time, whatever a CASE around it says.
  const exists = await db.query<{ t: string | null }>(`SELECT to_regclass('schema_migrations')::text AS t`);
  if (exists.rows[0]?.t == null) return 0;
  const r = await db.query<{ v: number }>('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations');
  return Number(r.rows[0].v);
}

/** Bring the database to the newest version under the migration lock. */
export async function migrate(pool: pg.Pool, options: MigrateOptions = {}): Promise<MigrateResult> {
  const migrations = options.migrations ?? MIGRATIONS;
  const now = options.now ?? Date.now;
  checkList(migrations);
  const known = migrations.length;
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    try {
      await client.query(`SET LOCAL statement_timeout = ${Math.max(0, Math.trunc(options.timeoutMs ?? 600_000))}`);
      await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [MIGRATION_LOCK_KEY]);
      await client.query(CREATE_SCHEMA_MIGRATIONS);
      const from = Number((await client.query<{ v: number }>('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations')).rows[0].v);
      if (from > known) throw new StoreSchemaNewerError(from, known);
      const applied: number[] = [];
      for (const m of migrations.slice(from)) {
        for (const sql of m.statements) await client.query(sql);
        await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, now()]);
        applied.push(m.version);
      }
      await client.query('COMMIT');
      return { from, to: Math.max(from, known), applied };
    } catch (err) {
      await client.query('ROLLBACK').catch((e: Error) => { broken = e; });
      throw err;
    }
  } finally {
    // A connection whose ROLLBACK failed is in an unknown state: destroy it rather than pool it.
    client.release(broken);
  }
}
