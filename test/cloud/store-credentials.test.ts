/**
 * The credential store's conformance suite (test/support/store-conformance/credentials.ts) on both
 * backends:
 * - SQLite: a temp dir's cloud.db opened as the cloud opens it (openCloudDb); "another store" is a
 *   second connection to the file, as `braid cloud key ...` or a second cloud process has;
 * - PostgreSQL 15 (test/support/postgres.ts): a fresh database per test, migrated; "another store"
 *   is a second pool, as a second node has. The databases use an ICU en-US collation, not the test
 *   server's C locale, so a listing that leaned on the database's order would differ from SQLite's.
 *   Beside the suite, PostgreSQL's own failure modes: a server out of reach is a 503
 *   StoreUnavailableError (retriable, so a gateway resends or fails over), never a 500 naming a
 *   socket error; connections the server ended (a restart, a failover) are replaced by themselves.
 */
import pg from 'pg';
import { Authenticator } from '../../cloud/api/auth.js';
import { addGateway, hashSecret } from '../../cloud/store/credentials.js';
import { PgCredentialStore, StoreUnavailableError, createPgPool, migrate } from '../../cloud/store/pg/index.js';
import { SqliteCredentialStore } from '../../cloud/store/sqlite-credentials.js';
import { errorReply } from '../../shared/http-errors.js';
import { tempCloudDb } from '../support/cloud-db.js';
import { freePort } from '../support/influx.js';
import { type TestPostgres, havePostgres, startPostgres } from '../support/postgres.js';
import { credentialStoreConformance } from '../support/store-conformance/credentials.js';

describe('CredentialStore on SQLite (cloud.db)', () => {
  credentialStoreConformance(async () => {
    const db = tempCloudDb('braid-cred-');
    const first = await db.open();
    return {
      store: new SqliteCredentialStore(first),
      another: async () => new SqliteCredentialStore(await db.open()),
      rows: async () => [
        ...await first.all('SELECT * FROM gateways'),
        ...await first.all('SELECT * FROM api_keys'),
      ],
      close: db.close,
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

  test('a server out of reach: every method rejects with a retriable 503 StoreUnavailableError', async () => {
    const pool = createPgPool({ url: `postgres://braid@127.0.0.1:${await freePort()}/nowhere`, connectionTimeoutMs: 2_000 });
    try {
      const store = new PgCredentialStore(pool);
      const calls: Array<() => Promise<unknown>> = [
        () => store.lookup(hashSecret('bgt_x'), 'gateway'), () => store.lookup(hashSecret('brk_x'), 'key'),
        () => store.addGateway('gw-1', hashSecret('t'), Date.now()), () => store.rotateGateway('gw-1', hashSecret('u')),
        () => store.removeGateway('gw-1'), () => store.listGateways(),
        () => store.addApiKey('k', 'read', hashSecret('k'), Date.now()), () => store.removeApiKey('k'), () => store.listApiKeys(),
      ];
      for (const call of calls) {
        const err = await call().then(() => null, (e: unknown) => e);
        expect(err).toBeInstanceOf(StoreUnavailableError);
        expect(err).toMatchObject({ code: 'BRAID_ERR_STORE_UNAVAILABLE', statusCode: 503 });
        expect((err as StoreUnavailableError).canRetry()).toBe(true);
      }
      // What the cloud's auth hook answers with it: a 503 with a stable code, no socket error named as the code.
      const err = await new Authenticator(store).principal('bgt_whatever').then(() => null, (e: unknown) => e);
      expect(errorReply(err as Error)).toMatchObject({ status: 503, body: { code: 'BRAID_ERR_STORE_UNAVAILABLE' } });
    } finally {
      await pool.end();
    }
  });

  test('connections the server ended (a restart, a failover) are replaced: lookups resume by themselves', async () => {
    const name = `cred${++n}`;
    await server.createDatabase(name);
    const url = server.url.replace(/\/[^/]+$/, `/${name}`);
    const applicationName = `braid-cred-${name}`;
    const pool = createPgPool({ url, poolMax: 3, applicationName });
    try {
      await migrate(pool);
      const store = new PgCredentialStore(pool);
      const token = await addGateway(store, 'gw-1');
      await Promise.all([1, 2, 3].map(() => store.lookup(hashSecret(token), 'gateway'))); // three pooled connections
      const ended = await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [applicationName]);
      expect(ended.rowCount).toBeGreaterThan(0);
      const failures: unknown[] = [];
      let found = null;
      for (let i = 0; i < 10 && !found; i++) {
        found = await store.lookup(hashSecret(token), 'gateway').catch((e: unknown) => { failures.push(e); return null; });
      }
      expect(found).toEqual({ kind: 'gateway', gateway: 'gw-1' });
      // A lookup that met a dead connection said so as a retriable 503, nothing else.
      for (const f of failures) expect(f).toMatchObject({ code: 'BRAID_ERR_STORE_UNAVAILABLE' });
      expect(failures.length).toBeLessThanOrEqual(3);
    } finally {
      await pool.end();
    }
  });
});
