/**
 * The CloudStore aggregate (cloud/store/cloud-store.ts) on each backend, through one conformance
 * suite (test/support/store-conformance/cloudstore.ts):
 * - SQLite: `openCloudStore('sqlite', dir)`, a temp data dir's cloud.db per test;
 * - PostgreSQL 15 (test/support/postgres.ts): `openCloudStore(url, dir)` on a fresh database per
 *   test, migrated by the first open (so the "two opened at once" case races the migration).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { openCloudStore } from '../../cloud/store/cloud-store.js';
import { PG_SCHEMA_VERSION } from '../../cloud/store/pg/index.js';
import { tempDir } from '../support/gateway.js';
import { type TestPostgres, havePostgres, startPostgres } from '../support/postgres.js';
import { cloudStoreConformance } from '../support/store-conformance/cloudstore.js';

let dir: { path: string; remove: () => void } | null = null;
// views/ as a batch run makes it before it publishes (cloud/batch/job.ts): manifest.json goes there.
beforeEach(() => { dir = tempDir('braid-cloudstore-'); mkdirSync(join(dir.path, 'views')); });
afterEach(() => { dir?.remove(); dir = null; });

const opener = (url: () => string) => async () => {
  const store = await openCloudStore(url(), dir!.path, { poolMax: 4 });
  return { store, close: () => store.close() };
};

cloudStoreConformance('SQLite (cloud.db in a temp data dir)', opener(() => 'sqlite'), { kind: 'sqlite', schemaVersion: 0 });

const have = havePostgres();

(have ? describe : describe.skip)('PostgreSQL (postgresql-15)', () => {
  let server: TestPostgres;
  let n = 0;
  let url = '';
  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  beforeEach(async () => { url = await server.createDatabase(`s${++n}`); });
  afterAll(async () => { await server?.stop(); }, 30_000);

  cloudStoreConformance('PostgreSQL (a fresh database per test, migrated at open)', opener(() => url), { kind: 'postgres', schemaVersion: PG_SCHEMA_VERSION });
});
