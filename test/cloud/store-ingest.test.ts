/**
 * The ingest store conformance suite (test/support/store-conformance/ingest.ts) on every backend in
 * BACKENDS. SQLite: a temp dir's cloud.db (openCloudDb), a connection and WriteQueue per store as a
 * cloud process has. A backend is one entry: the PostgreSQL store joins the list with a factory
 * like test/cloud/store-speed.test.ts's (a migrated database per test, a pool per store).
 */
import { join } from 'node:path';
import { SqliteIngestStore } from '../../cloud/ingest/index.js';
import { openCloudDb } from '../../cloud/store/index.js';
import { type Db, WriteQueue } from '../../shared/sqlite.js';
import { tempDir } from '../support/gateway.js';
import { type IngestStoreHarness, ingestStoreConformance } from '../support/store-conformance/ingest.js';

async function sqliteHarness(): Promise<IngestStoreHarness> {
  const dir = tempDir('braid-store-ingest-');
  const file = join(dir.path, 'cloud.db');
  const dbs: Db[] = [];
  const open = async () => {
    const db = await openCloudDb(file);
    dbs.push(db);
    return db;
  };
  const store = new SqliteIngestStore(new WriteQueue(await open()));
  const reader = await open();
  return {
    store,
    another: async () => new SqliteIngestStore(new WriteQueue(await open())),
    rows: (sql) => reader.all<Record<string, unknown>>(sql),
    close: async () => {
      for (const db of dbs.splice(0)) await db.close();
      dir.remove();
    },
  };
}

/** The backends the suite runs on, each with its harness factory. */
const BACKENDS: Array<{ name: string; factory: () => Promise<IngestStoreHarness> }> = [
  { name: 'SQLite (cloud.db)', factory: sqliteHarness },
];

for (const b of BACKENDS) ingestStoreConformance(b.name, b.factory);
