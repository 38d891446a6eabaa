/**
 * The speed store and registry conformance suite (test/support/store-conformance/speed.ts) on both
 * implementations: SQLite on a temp dir's cloud.db (openCloudDb, a WriteQueue per store as the
 * cloud has), and PostgreSQL 15 started by this file (test/support/postgres.ts), a fresh migrated
 * database per test, a pool per store (another() is a second node).
 */
import { SqliteSpeedStore } from '../../cloud/speed/index.js';
import { PgSpeedStore } from '../../cloud/store/pg/index.js';
import { WriteQueue, chunkRows, placeholders } from '../../shared/sqlite.js';
import { tempCloudDb } from '../support/cloud-db.js';
import { type TestPostgres, havePostgres, migratedDatabase, startPostgres } from '../support/postgres.js';
import { type SpeedStoreHarness, speedStoreConformance } from '../support/store-conformance/speed.js';

/** A row's values in column order, JSON columns (arrays, objects) as JSON text. */
const rowValues = (r: Record<string, unknown>, cols: string[]) => cols.map((c) => (r[c] !== null && typeof r[c] === 'object' ? JSON.stringify(r[c]) : r[c]));

speedStoreConformance('SQLite (cloud.db)', async (): Promise<SpeedStoreHarness> => {
  const db = tempCloudDb('braid-store-speed-');
  const open = async () => {
    const writer = await db.open();
    const reader = await db.open();
    return { store: new SqliteSpeedStore(new WriteQueue(writer), reader), writer };
  };
  const first = await open();
  return {
    store: first.store,
    another: async () => (await open()).store,
    insert: async (table, rows) => {
      const cols = Object.keys(rows[0]);
      for (const chunk of chunkRows(rows, cols.length)) {
        await first.writer.run(`INSERT INTO ${table} (${cols.join(', ')}) VALUES ${placeholders(chunk.length, cols.length)}`,
          chunk.flatMap((r) => rowValues(r, cols)));
      }
    },
    hold: async () => {
      const holder = await db.open();
      await holder.exec('BEGIN IMMEDIATE');
      return async () => { await holder.exec('COMMIT'); };
    },
    close: db.close,
  };
});

const have = havePostgres();
let server: TestPostgres | null = null;
let n = 0;
if (have) {
  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  afterAll(async () => { await server?.stop(); }, 30_000);
}

(have ? speedStoreConformance : () => describe.skip('PostgreSQL (postgresql-15 not installed)', () => { test('skipped', () => undefined); }))(
  'PostgreSQL', async (): Promise<SpeedStoreHarness> => {
    const { first, open, close } = await migratedDatabase(server!, `speed_${++n}`);
    return {
      store: new PgSpeedStore(first),
      another: async () => new PgSpeedStore(open()),
      insert: async (table, rows) => {
        const cols = Object.keys(rows[0]);
        for (const chunk of chunkRows(rows, cols.length, 65_535)) {
          const values = chunk.map((_, r) => `(${cols.map((__, c) => `$${r * cols.length + c + 1}`).join(', ')})`).join(', ');
          await first.query(`INSERT INTO ${table} (${cols.join(', ')}) VALUES ${values}`, chunk.flatMap((r) => rowValues(r, cols)));
        }
      },
      hold: async (gateway) => {
        const client = await first.connect();
        await client.query('BEGIN');
        const r = await client.query('SELECT 1 FROM gateway_status WHERE gateway = $1 FOR UPDATE', [gateway]);
        if (r.rowCount !== 1) throw new Error(`hold(${gateway}): no gateway_status row to lock`);
        return async () => {
          await client.query('COMMIT');
          client.release();
        };
      },
      close,
    };
  },
);
