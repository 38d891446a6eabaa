/**
 * The credential store's conformance suite (test/support/store-conformance/credentials.ts) on both
 * backends:
 * - SQLite: a temp dir's cloud.db opened as the cloud opens it (openCloudDb); "another store" is a
 *   second connection to the file, as `braid cloud key ...` or a second cloud process has;
 * - PostgreSQL 15 (test/support/postgres.ts): a fresh database per test, migrated; "another store"
 *   is a second pool, as a second node has. The databases use an ICU en-US collation, not the test
 *   server's C locale, so a listing that leaned on the database's order would differ from SQLite's.
 */
import pg from 'pg';
import { PgCredentialStore, createPgPool, migrate } from '../../cloud/store/pg/index.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { SqliteCredentialStore } from '../../cloud/store/sqlite-credentials.js';
import type { Db } from '../../shared/sqlite.js';
import { tempDir } from '../support/gateway.js';
import { type TestPostgres, havePostgres, startPostgres } from '../support/postgres.js';
import { credentialStoreConformance } from '../support/store-conformance/credentials.js';

describe('CredentialStore on SQLite (cloud.db)', () => {
  credentialStoreConformance(async () => {
    const dir = tempDir('braid-cred-');
    const file = `${dir.path}/cloud.db`;
    const dbs: Db[] = [await openCloudDb(file)];
    return {
      store: new SqliteCredentialStore(dbs[0]),
      another: async () => {
        const db = await openCloudDb(file);
        dbs.push(db);
        return new SqliteCredentialStore(db);
      },
      rows: async () => [
        ...await dbs[0].all('SELECT * FROM gateways'),
        ...await dbs[0].all('SELECT * FROM api_keys'),
      ],
      close: async () => {
        await Promise.all(dbs.map((db) => db.close()));
        dir.remove();
      },
    };
  });
});

const have = havePostgres();

(have ? describe : describe.skip)('CredentialStore on PostgreSQL (postgresql-15)', () => {
  let server: TestPostgres;
  let admin: pg.Client;
  let n = 0;

  beforeAll(async () => {
    server = await startPostgres();
    admin = new pg.Client({ connectionString: server.url });
    await admin.connect();
  }, 60_000);
  afterAll(async () => {
    await admin?.end();
    await server?.stop();
  }, 30_000);

  credentialStoreConformance(async () => {
    const name = `cred${++n}`;
    await admin.query(`CREATE DATABASE ${name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'`);
    const url = server.url.replace(/\/[^/]+$/, `/${name}`);
    const pools = [createPgPool({ url, poolMax: 4 })];
    await migrate(pools[0]);
    return {
      store: new PgCredentialStore(pools[0]),
      another: async () => {
        const p = createPgPool({ url, poolMax: 4 });
        pools.push(p);
        return new PgCredentialStore(p);
      },
      rows: async () => [
        ...(await pools[0].query('SELECT * FROM gateways')).rows,
        ...(await pools[0].query('SELECT * FROM api_keys')).rows,
      ],
      close: async () => { await Promise.all(pools.map((p) => p.end())); },
    };
  });
});
