/**
 * The AlertStore conformance suite (test/support/store-conformance/alerts.ts) on both backends,
 * through openCloudStore as the cloud opens it:
 * - SQLite: cloud.db in a temp data dir; another() opens a second store on the same dir (one process);
 * - PostgreSQL 15 (test/support/postgres.ts): a fresh database per test, another() a second pool.
 */
import { openCloudStore, type CloudStore } from '../../cloud/store/cloud-store.js';
import { tempDir } from '../support/gateway.js';
import { type TestPostgres, havePostgres, startPostgres } from '../support/postgres.js';
import { alertStoreConformance } from '../support/store-conformance/alerts.js';

const opener = (url: () => Promise<string>) => async () => {
  const dir = tempDir('braid-alerts-store-');
  const u = await url();
  const stores: CloudStore[] = [await openCloudStore(u, dir.path, { poolMax: 4 })];
  return {
    store: stores[0].alerts,
    another: async () => {
      const s = await openCloudStore(u, dir.path, { poolMax: 4 });
      stores.push(s);
      return s.alerts;
    },
    close: async () => {
      for (const s of stores.splice(0).reverse()) await s.close();
      dir.remove();
    },
  };
};

describe('AlertStore on SQLite (cloud.db)', () => {
  alertStoreConformance(opener(async () => 'sqlite'));
});

const have = havePostgres();
let server: TestPostgres | null = null;
let n = 0;

(have ? describe : describe.skip)('AlertStore on PostgreSQL (postgresql-15)', () => {
  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  afterAll(async () => { await server?.stop(); }, 30_000);
  alertStoreConformance(opener(() => server!.createDatabase(`alerts_${++n}`)));
});
