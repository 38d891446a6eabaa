/**
 * The PostgreSQL store's pool and migrations (cloud/store/pg/), on a real PostgreSQL 15 started by the
 * test (test/support/postgres.ts), a database per test:
 * - migration 1 is cloud.db's schema: the same tables, columns, NOT NULLs, primary keys, UNIQUEs and
 *   indexes as a real cloud.db opened by openCloudDb (so a table added to cloud/store/schema.ts
 *   without a migration fails here; tables only PostgreSQL has, PG_ONLY_TABLES, are named and left
 *   out), with the types the translation promises; the primary keys
 *   make a repeated insert a no-op or an error, never a second row [INV-2];
 * - four runners started at once (four pools) apply each migration once, waiting on the advisory lock;
 * - a database newer than the code is refused, naming both versions; a migration that fails part
 *   way leaves nothing of itself;
 * - the pool's statement_timeout cuts a long statement, its connection timeout a silent server;
 *   BIGINT comes back as a number.
 */
import { once } from 'node:events';
import { type AddressInfo, type Socket, createServer } from 'node:net';
import type pg from 'pg';
import { openCloudDb } from '../../cloud/store/index.js';
import {
  MIGRATIONS, PG_ONLY_TABLES, PG_SCHEMA_VERSION, type Migration, type PgStoreOptions, createPgPool, migrate, schemaVersion,
} from '../../cloud/store/pg/index.js';
import { tempDir } from '../support/gateway.js';
import { type TestPostgres, havePostgres, startPostgres } from '../support/postgres.js';

const have = havePostgres();
/** Every version this code has (1, 2, ...), and the next one, for a migration a test appends. */
const ALL = MIGRATIONS.map((m) => m.version);
const NEXT = PG_SCHEMA_VERSION + 1;

/** cloud.db's TEXT columns that hold JSON text; PostgreSQL keeps them as JSONB. */
const JSON_COLUMNS = new Set([
  'meta.value', 'gaps.devices', 'batch_runs.watermark', 'batch_runs.sinks',
  'gateway_status.health', 'gateway_status.connected', 'devices.metrics',
]);
const PG_TYPE: Record<string, string> = { INTEGER: 'bigint', REAL: 'double precision', TEXT: 'text' };

interface TableShape {
  columns: Array<{ name: string; type: string; notNull: boolean }>;
  primaryKey: string[];
  /** Column lists of UNIQUE constraints other than the primary key, sorted. */
  unique: string[][];
  /** Secondary (non-unique) indexes: name -> columns. */
  indexes: Record<string, string[]>;
}

/** The shape of every table of a real cloud.db, with each column's type as migration 1 promises to translate it. */
async function sqliteShapes(): Promise<Record<string, TableShape>> {
  const d = tempDir('braid-pg-shape-');
  const db = await openCloudDb(`${d.path}/cloud.db`);
  try {
    const out: Record<string, TableShape> = {};
    const tables = await db.all<{ name: string }>(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`);
    for (const { name } of tables) {
      const cols = await db.all<{ name: string; type: string; notnull: number; pk: number }>(`PRAGMA table_info(${name})`);
      const shape: TableShape = {
        columns: cols.map((c) => ({
          name: c.name,
          type: JSON_COLUMNS.has(`${name}.${c.name}`) ? 'jsonb' : PG_TYPE[c.type],
          notNull: c.notnull === 1 || c.pk > 0, // a primary key column is NOT NULL in PostgreSQL
        })),
        primaryKey: cols.filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk).map((c) => c.name),
        unique: [],
        indexes: {},
      };
      for (const ix of await db.all<{ name: string; origin: string }>(`PRAGMA index_list(${name})`)) {
        const ixCols = (await db.all<{ name: string; seqno: number }>(`PRAGMA index_info(${ix.name})`)).sort((a, b) => a.seqno - b.seqno).map((c) => c.name);
        if (ix.origin === 'u') shape.unique.push(ixCols);
        else if (ix.origin === 'c') shape.indexes[ix.name] = ixCols;
      }
      shape.unique.sort();
      out[name] = shape;
    }
    return out;
  } finally {
    await db.close();
    d.remove();
  }
}

/** The same, read from PostgreSQL's catalogs. */
async function pgShapes(pool: pg.Pool): Promise<Record<string, TableShape>> {
  const out: Record<string, TableShape> = {};
  const cols = await pool.query<{ table_name: string; column_name: string; data_type: string; is_nullable: string }>(
    `SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
     WHERE table_schema = 'public' ORDER BY table_name, ordinal_position`);
  for (const c of cols.rows) {
    out[c.table_name] ??= { columns: [], primaryKey: [], unique: [], indexes: {} };
    out[c.table_name].columns.push({ name: c.column_name, type: c.data_type, notNull: c.is_nullable === 'NO' });
  }
  const idx = await pool.query<{ table_name: string; index_name: string; primary: boolean; unique: boolean; columns: string[] }>(
    `SELECT t.relname AS table_name, i.relname AS index_name, x.indisprimary AS primary, x.indisunique AS unique,
            ARRAY(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY k(attnum, n)
                  JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.n)::text[] AS columns
     FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid
     JOIN pg_namespace ns ON ns.oid = t.relnamespace WHERE ns.nspname = 'public'`);
  for (const r of idx.rows) {
    const shape = out[r.table_name];
    if (r.primary) shape.primaryKey = r.columns;
    else if (r.unique) shape.unique.push(r.columns);
    else shape.indexes[r.index_name] = r.columns;
  }
  for (const s of Object.values(out)) s.unique.sort();
  return out;
}

(have ? describe : describe.skip)('PostgreSQL store: pool and migrations (postgresql-15)', () => {
  let server: TestPostgres;
  let n = 0;
  const pools: pg.Pool[] = [];
  /** A fresh database on the file's server. */
  const freshDb = () => server.createDatabase(`t${++n}`);
  const pool = (url: string, extra: Partial<PgStoreOptions> = {}) => {
    const p = createPgPool({ ...extra, url });
    pools.push(p);
    return p;
  };

  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  afterEach(async () => { await Promise.all(pools.splice(0).map((p) => p.end())); });
  afterAll(async () => { await server?.stop(); }, 30_000);

  test('a fresh database gets every cloud.db table with its columns, keys and indexes', async () => {
    const p = pool(await freshDb());
    expect(await schemaVersion(p)).toBe(0);
    expect(await migrate(p)).toEqual({ from: 0, to: PG_SCHEMA_VERSION, applied: ALL });
    expect(await schemaVersion(p)).toBe(PG_SCHEMA_VERSION);

    const want = await sqliteShapes();
    const got = await pgShapes(p);
    // The tables cloud.db has today, by name (a guard that the comparison below compares something).
    expect(Object.keys(want).sort()).toEqual([
      'alert_history', 'alert_intake', 'alert_rules', 'alert_states', 'api_keys', 'batch_runs', 'devices', 'epochs', 'file_gateways', 'files', 'gaps', 'gateway_clock', 'gateway_status',
      'gateways', 'meta', 'received', 'sealed', 'seq_gaps', 'speed_partials', 'speed_pruned', 'staged',
    ]);
    const { schema_migrations: versions, ...tables } = got;
    // Later migrations add tables cloud.db has no need of (what stops at one host there): named, and left out.
    for (const t of PG_ONLY_TABLES) {
      expect(tables).toHaveProperty(t);
      delete tables[t];
    }
    expect(tables).toEqual(want);
    expect(versions.primaryKey).toEqual(['version']);
    // Spot checks a reader can follow without the derivation above.
    expect(got.received.primaryKey).toEqual(['gateway', 'from_seq']);
    expect(got.staged.primaryKey).toEqual(['segment', 'gateway', 'from_seq']);
    expect(got.gateways.unique).toEqual([['token_hash']]);
    expect(got.speed_partials.primaryKey).toEqual(['gateway', 'device', 'metric', 'minute', 'epoch']);
  });

  test('the keys make a repeated insert a no-op or an error, never a second row; BIGINT reads as a number', async () => {
    const p = pool(await freshDb());
    await migrate(p);
    const epoch = `INSERT INTO epochs (gateway, epoch, first_seq, last_seq) VALUES ('gw-1', 7, 101, 200) ON CONFLICT DO NOTHING`;
    expect((await p.query(epoch)).rowCount).toBe(1);
    expect((await p.query(epoch)).rowCount).toBe(0);
    await p.query(`INSERT INTO received (gateway, from_seq, to_seq) VALUES ('gw-1', 1, 9007199254740991)`);
    await expect(p.query(`INSERT INTO received (gateway, from_seq, to_seq) VALUES ('gw-1', 1, 5)`)).rejects.toMatchObject({ code: '23505' });
    const row = (await p.query('SELECT from_seq, to_seq FROM received')).rows[0];
    expect(row).toEqual({ from_seq: 1, to_seq: Number.MAX_SAFE_INTEGER });
    // Past 2^53 a BIGINT would be rounded as a number: refused instead.
    await p.query(`UPDATE received SET to_seq = 9007199254740993`);
    await expect(p.query('SELECT to_seq FROM received')).rejects.toThrow(/MAX_SAFE_INTEGER/);
  });

  test('four runners started at once (four pools) apply each migration exactly once', async () => {
    const url = await freshDb();
    // A second, slow migration keeps the first runner inside the lock for a while, so the others
    // really wait on it; its CREATE TABLE (no IF NOT EXISTS) fails if run twice, as migration 1's do.
    // The pools' 200 ms statement_timeout is below that wait: migrate's own timeout must replace it.
    const slow: Migration[] = [...MIGRATIONS, { version: NEXT, name: 'slow', statements: ['SELECT pg_sleep(0.5)', 'CREATE TABLE probe (id INTEGER)'] }];
    const runners = Array.from({ length: 4 }, () => pool(url, { statementTimeoutMs: 200 }));
    const t0 = Date.now();
    const results = await Promise.all(runners.map((p) => migrate(p, { migrations: slow })));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(500);
    expect(results.filter((r) => r.applied.length > 0)).toEqual([{ from: 0, to: NEXT, applied: [...ALL, NEXT] }]);
    expect(results.filter((r) => r.applied.length === 0)).toHaveLength(3);
    for (const r of results.filter((x) => x.applied.length === 0)) expect(r).toEqual({ from: NEXT, to: NEXT, applied: [] });
    const rows = await runners[0].query<{ version: number; name: string }>('SELECT version, name FROM schema_migrations ORDER BY version');
    expect(rows.rows).toEqual([...MIGRATIONS.map((m) => ({ version: m.version, name: m.name })), { version: NEXT, name: 'slow' }]);
  });

  test('a database at a newer version than the code is refused, naming both versions, and left as it is', async () => {
    const p = pool(await freshDb());
    const newer: Migration[] = [...MIGRATIONS, { version: NEXT, name: 'a later release', statements: ['CREATE TABLE later (id INTEGER)'] }];
    await migrate(p, { migrations: newer });
    expect.assertions(3);
    // The code of this release meets a database one version newer: an old node in a rolling upgrade.
    await expect(migrate(p)).rejects.toMatchObject({
      code: 'BRAID_ERR_STORE_SCHEMA_NEWER', databaseVersion: NEXT, codeVersion: PG_SCHEMA_VERSION,
      message: expect.stringMatching(new RegExp(`version ${NEXT}.*version ${PG_SCHEMA_VERSION}`)),
    });
    expect(await schemaVersion(p)).toBe(NEXT);
    expect((await p.query('SELECT count(*) AS n FROM schema_migrations')).rows[0].n).toBe(NEXT);
  });

  test('a migration that fails part way leaves nothing of itself: the version and the schema stay as they were', async () => {
    const p = pool(await freshDb());
    await migrate(p);
    const broken: Migration[] = [...MIGRATIONS, { version: NEXT, name: 'broken', statements: ['CREATE TABLE half (id INTEGER)', 'SELECT * FROM no_such_table'] }];
    await expect(migrate(p, { migrations: broken })).rejects.toMatchObject({ code: '42P01' });
    expect(await schemaVersion(p)).toBe(PG_SCHEMA_VERSION);
    expect((await p.query(`SELECT to_regclass('half')::text AS t`)).rows).toEqual([{ t: null }]);
    // The lock went with the transaction: the next runner is not kept waiting.
    const fixed: Migration[] = [...MIGRATIONS, { version: NEXT, name: 'fixed', statements: ['CREATE TABLE half (id INTEGER)'] }];
    expect(await migrate(p, { migrations: fixed, timeoutMs: 2000 })).toEqual({ from: PG_SCHEMA_VERSION, to: NEXT, applied: [NEXT] });
  });

  test('connectionTimeoutMs bounds the wait for a server that accepts the connection and never answers', async () => {
    // A TCP listener that never speaks PostgreSQL: a hung server or a black-holed proxy.
    const sockets = new Set<Socket>();
    const silent = createServer((s) => { sockets.add(s); });
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const { port } = silent.address() as AddressInfo;
    try {
      const p = pool(`postgres://braid@127.0.0.1:${port}/braid`, { connectionTimeoutMs: 300 });
      const t0 = Date.now();
      await expect(p.query('SELECT 1')).rejects.toThrow(/timeout/i);
      expect(Date.now() - t0).toBeLessThan(3000);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  test('statement_timeout from the options cuts a long statement; the connection stays usable', async () => {
    const p = pool(await freshDb(), { statementTimeoutMs: 200, poolMax: 1 });
    expect((await p.query('SELECT 1 AS ok FROM pg_sleep(0.05)')).rows).toEqual([{ ok: 1 }]);
    const t0 = Date.now();
    // 57014: query_canceled, "canceling statement due to statement timeout".
    await expect(p.query('SELECT pg_sleep(5)')).rejects.toMatchObject({ code: '57014' });
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(180);
    expect(took).toBeLessThan(2000);
    expect((await p.query('SHOW statement_timeout')).rows).toEqual([{ statement_timeout: '200ms' }]);
  });
});
