/**
 * The ingest store conformance suite (test/support/store-conformance/ingest.ts) on every backend in
 * BACKENDS. SQLite: a temp dir's cloud.db (openCloudDb), a connection and WriteQueue per store as a
 * cloud process has. PostgreSQL 15, started by this file (test/support/postgres.ts): a fresh
 * migrated database per test, a pool per store (another() is a second node).
 */
import { PgIngestStore } from '../../cloud/store/pg/index.js';
import { type TestPostgres, havePostgres, migratedDatabase, startPostgres } from '../support/postgres.js';
import { SqliteIngestStore } from '../../cloud/ingest/index.js';
import { WriteQueue } from '../../shared/sqlite.js';
import { tempCloudDb } from '../support/cloud-db.js';
import { type IngestStoreHarness, ingestStoreConformance } from '../support/store-conformance/ingest.js';

async function sqliteHarness(): Promise<IngestStoreHarness> {
  const { open, close } = tempCloudDb('braid-store-ingest-');
  const store = new SqliteIngestStore(new WriteQueue(await open()));
  const reader = await open();
  return {
    store,
    another: async () => new SqliteIngestStore(new WriteQueue(await open())),
    rows: (sql) => reader.all<Record<string, unknown>>(sql),
    close,
  };
}

const have = havePostgres();
let server: TestPostgres | null = null;
let n = 0;
if (have) {
  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  afterAll(async () => { await server?.stop(); }, 30_000);
}

async function pgHarness(): Promise<IngestStoreHarness> {
  const { first, open, close } = await migratedDatabase(server!, `ingest_${++n}`);
  return {
    store: new PgIngestStore(first),
    another: async () => new PgIngestStore(open()),
    rows: async (sql) => (await first.query<Record<string, unknown>>(sql)).rows,
    close,
  };
}

/** The backends the suite runs on, each with its harness factory. */
const BACKENDS: Array<{ name: string; factory: () => Promise<IngestStoreHarness> }> = [
  { name: 'SQLite (cloud.db)', factory: sqliteHarness },
  ...(have ? [{ name: 'PostgreSQL', factory: pgHarness }] : []),
];

for (const b of BACKENDS) ingestStoreConformance(b.name, b.factory);
if (!have) describe.skip('IngestStore conformance: PostgreSQL (postgresql-15 not installed)', () => { test('skipped', () => undefined); });
