/**
 * The node registry's conformance suite (test/support/store-conformance/nodes.ts) on PostgreSQL 15
 * (test/support/postgres.ts): a fresh migrated database per test, a pool per registry (another()
 * is a second node). SQLite has no registry: an fcntl lock owns a staging dir on one host.
 */
import { PgNodeRegistry } from '../../cloud/store/pg/index.js';
import { type TestPostgres, havePostgres, migratedDatabase, startPostgres } from '../support/postgres.js';
import { nodeRegistryConformance } from '../support/store-conformance/nodes.js';

const have = havePostgres();
let server: TestPostgres | null = null;
let n = 0;

(have ? describe : describe.skip)('NodeRegistry on PostgreSQL', () => {
  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  afterAll(async () => { await server?.stop(); }, 30_000);

  nodeRegistryConformance(async () => {
    const { first, open, close } = await migratedDatabase(server!, `nodes_${++n}`);
    return {
      registry: new PgNodeRegistry(first),
      another: async () => new PgNodeRegistry(open()),
      storeNow: async () => (await first.query<{ t: number }>('SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS t')).rows[0].t,
      close,
    };
  });
});
