/**
 * `--store <postgres url>` on the commands that take it, as real CLI child processes on a real
 * PostgreSQL 15 (test/support/postgres.ts), a database per test:
 * - `braid cloud gateway add` stores the gateway in PostgreSQL (a second process's PgCredentialStore
 *   finds its token); `key add|list|remove` and BRAID_STORE_URL the same;
 * - `braid cloud --check-config --store` reports the schema version and changes nothing (a fresh
 *   database stays at 0), ok on a migrated one, an error (exit 2) on a newer one, exit 1 naming the
 *   server when nothing listens, exit 2 naming store.url for a bad URL; the password never printed;
 * - `braid cloud --store postgres://...` serves: ingest decided in PostgreSQL, no cloud.db, a clean stop seals;
 * - `braid batch run --store` reads master/ of --data-dir and publishes through PostgreSQL's view
 *   pointer: the views equal the oracle, the manifest and run history are in PostgreSQL, no cloud.db.
 */
import { existsSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import type pg from 'pg';
import { hashSecret } from '../../cloud/store/credentials.js';
import { createPgPool, migrate, schemaVersion, PG_SCHEMA_VERSION, PgCredentialStore, PgViewPointer, PgBatchStore } from '../../cloud/store/pg/index.js';
import { runBraid } from '../support/cli.js';
import { T0, ingestBody, makeReadings, postIngest, readMaster, spawnCloud } from '../support/cloud.js';
import { tempDir } from '../support/gateway.js';
import {
  coveredReadings, dayOf, expectedViews, masterOnPostgres, readViews, viewDiffs,
} from '../support/master-fixture.js';
import { type TestPostgres, havePostgres, startPostgres } from '../support/postgres.js';


const lastLine = (s: string) => s.trim().split('\n').pop()!;
/** The CLI, given 40 s: a batch run on PostgreSQL starts DuckDB. */
const braid = (args: string[], env: Record<string, string> = {}) => runBraid(args, env, 40_000);

const have = havePostgres();

(have ? describe : describe.skip)('--store postgres:// (postgresql-15)', () => {
  let server: TestPostgres;
  let n = 0;
  let url = '';
  let admin: pg.Pool | null = null;
  const dirs: Array<{ path: string; remove: () => void }> = [];
  const dir = (p: string) => { const d = tempDir(p); dirs.push(d); return d; };

  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  beforeEach(async () => {
    url = await server.createDatabase(`c${++n}`);
    admin = createPgPool({ url, poolMax: 2 });
  });
  afterEach(async () => {
    await admin?.end();
    admin = null;
    for (const d of dirs.splice(0)) d.remove();
  });
  afterAll(async () => { await server?.stop(); }, 30_000);

  test('gateway add/list/rotate/remove on PostgreSQL: another process\'s PgCredentialStore sees each change; nothing in --data-dir', async () => {
    const d = dir('braid-cli-pg-gw-');
    const add = await braid(['cloud', 'gateway', 'add', 'gw-1', '--store', url, '--data-dir', d.path]);
    expect(add).toMatchObject({ code: 0 });
    const token = lastLine(add.stdout);
    // The CLI migrated the fresh database before writing.
    expect(await schemaVersion(admin!)).toBe(PG_SCHEMA_VERSION);
    const store = new PgCredentialStore(admin!);
    expect(await store.lookup(hashSecret(token), 'gateway')).toEqual({ kind: 'gateway', gateway: 'gw-1' });
    expect(existsSync(join(d.path, 'cloud.db'))).toBe(false);

    // A second add of the same id is refused; BRAID_STORE_URL works as --store.
    const again = await braid(['cloud', 'gateway', 'add', 'gw-1', '--data-dir', d.path], { BRAID_STORE_URL: url });
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/gw-1/);

    const list = await braid(['cloud', 'gateway', 'list', '--json', '--store', url, '--data-dir', d.path]);
    expect(list.code).toBe(0);
    expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({ id: 'gw-1' })]);

    const rot = await braid(['cloud', 'gateway', 'rotate', 'gw-1', '--store', url, '--data-dir', d.path]);
    expect(rot.code).toBe(0);
    const token2 = lastLine(rot.stdout);
    expect(await store.lookup(hashSecret(token), 'gateway')).toBeNull();
    expect(await store.lookup(hashSecret(token2), 'gateway')).toEqual({ kind: 'gateway', gateway: 'gw-1' });

    expect((await braid(['cloud', 'gateway', 'remove', 'gw-1', '--store', url, '--data-dir', d.path])).code).toBe(0);
    expect(await store.lookup(hashSecret(token2), 'gateway')).toBeNull();
    expect(await store.listGateways()).toEqual([]);
  }, 90_000);

  test('key add/list/remove on PostgreSQL', async () => {
    const d = dir('braid-cli-pg-key-');
    const add = await braid(['cloud', 'key', 'add', 'ops', '--role', 'admin', '--store', url, '--data-dir', d.path]);
    expect(add.code).toBe(0);
    const key = lastLine(add.stdout);
    const store = new PgCredentialStore(admin!);
    expect(await store.lookup(hashSecret(key), 'key')).toEqual({ kind: 'key', name: 'ops', role: 'admin' });
    const list = await braid(['cloud', 'key', 'list', '--json', '--store', url, '--data-dir', d.path]);
    expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({ name: 'ops', role: 'admin' })]);
    expect((await braid(['cloud', 'key', 'remove', 'ops', '--store', url, '--data-dir', d.path])).code).toBe(0);
    expect(await store.lookup(hashSecret(key), 'key')).toBeNull();
    expect(existsSync(join(d.path, 'cloud.db'))).toBe(false);
  }, 60_000);

  test('--check-config --store: a fresh database is reported and left at schema 0; a migrated one ok; a newer one exit 2; the password never printed', async () => {
    const d = dir('braid-cli-pg-check-');
    const withPw = url.replace('postgres://braid@', 'postgres://braid:s3cret-pw@');
    const fresh = await braid(['cloud', '--check-config', '--store', withPw, '--data-dir', d.path]);
    expect(fresh.code).toBe(0);
    expect(fresh.stderr).toMatch(new RegExp(`schema 0, will be migrated to ${PG_SCHEMA_VERSION} at start`));
    expect(fresh.stdout + fresh.stderr).not.toMatch(/s3cret-pw/);
    expect(JSON.parse(fresh.stdout).store.url).toMatch(/^postgres:\/\/braid:(%5Bset%5D|\[set\])@/);
    expect(await schemaVersion(admin!)).toBe(0);

    await migrate(admin!);
    const ok = await braid(['cloud', '--check-config', 'json', '--data-dir', d.path], { BRAID_STORE_URL: url });
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, store: { ok: true, schemaVersion: PG_SCHEMA_VERSION, codeVersion: PG_SCHEMA_VERSION } });
    // braid batch run checks the same store, and the cluster setting that matters to it.
    const batchOk = await braid(['batch', 'run', '--check-config', '--json', '--store', url, '--data-dir', d.path]);
    expect(batchOk.code).toBe(0);
    expect(JSON.parse(batchOk.stdout)).toMatchObject({ ok: true, store: { ok: true, schemaVersion: PG_SCHEMA_VERSION }, findings: [{ rule: 'cluster-cache-dir', key: 'cacheDir' }] });

    await admin!.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [PG_SCHEMA_VERSION + 1, 'from the future', Date.now()]);
    const newer = await braid(['cloud', '--check-config', '--store', url, '--data-dir', d.path]);
    expect(newer.code).toBe(2);
    expect(newer.stderr).toMatch(new RegExp(`schema ${PG_SCHEMA_VERSION + 1} is newer than this braid knows \\(version ${PG_SCHEMA_VERSION}\\)`));
    const batchNewer = await braid(['batch', 'run', '--check-config', '--store', url, '--data-dir', d.path, '--cache-dir', join(d.path, '..', 'local')]);
    expect(batchNewer.code).toBe(2);
    expect(batchNewer.stderr).toMatch(/is newer than this braid knows/);
    // A command that opens the store refuses it too, naming both versions, exit 2.
    const add = await braid(['cloud', 'gateway', 'add', 'gw-1', '--store', url, '--data-dir', d.path]);
    expect(add.code).toBe(2);
    expect(add.stderr).toMatch(/BRAID_ERR_STORE_SCHEMA_NEWER/);
    expect(add.stderr).toMatch(new RegExp(`version ${PG_SCHEMA_VERSION + 1}.*version ${PG_SCHEMA_VERSION}`));
  }, 60_000);

  test('--check-config --store: nothing listening is exit 1 naming the server; a bad URL is exit 2 naming store.url', async () => {
    const d = dir('braid-cli-pg-bad-');
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const down = await braid(['cloud', '--check-config', '--store', `postgres://braid:pw-hidden@127.0.0.1:${port}/braid`, '--data-dir', d.path]);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(new RegExp(`127\\.0\\.0\\.1:${port}/braid unreachable`));
    expect(down.stdout + down.stderr).not.toMatch(/pw-hidden/);

    // A command that opens the store: the retriable store error naming the server, exit 1, no stack.
    const add = await braid(['cloud', 'gateway', 'add', 'gw-1', '--store', `postgres://braid:pw-hidden@127.0.0.1:${port}/braid`, '--data-dir', d.path]);
    expect(add.code).toBe(1);
    expect(add.stderr).toMatch(new RegExp(`PostgreSQL store is unavailable \\(migrate at open of postgres://braid:%5Bset%5D@127\\.0\\.0\\.1:${port}/braid: ECONNREFUSED\\).*BRAID_ERR_STORE_UNAVAILABLE`));
    expect(add.stderr).not.toMatch(/pw-hidden|\n\s+at /);

    for (const bad of ['mysql://x@h/db', 'postgres://']) {
      const r = await braid(['cloud', '--check-config', '--store', bad, '--data-dir', d.path]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/store\.url/);
    }
  }, 60_000);

  test('braid cloud --store postgres:// serves: ingest, query and the manifest go through PostgreSQL; no cloud.db, caches in --cache-dir', async () => {
    const d = dir('braid-cli-pg-serve-');
    const cache = dir('braid-cli-pg-cache-');
    const node = await spawnCloud(d.path, { args: ['--store', url, '--cache-dir', cache.path] });
    try {
      // Migrated at start; the gateway is registered by another process, as an operator would.
      expect(await schemaVersion(admin!)).toBe(PG_SCHEMA_VERSION);
      const add = await braid(['cloud', 'gateway', 'add', 'gw-1', '--store', url, '--data-dir', d.path]);
      expect(add).toMatchObject({ code: 0 });
      const token = lastLine(add.stdout);
      const key = lastLine((await braid(['cloud', 'key', 'add', 'reader', '--role', 'read', '--store', url, '--data-dir', d.path])).stdout);
      const readings = makeReadings(1, 120, { devices: 2 });
      const r = await postIngest(node.url, token, ingestBody('gw-1', readings));
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ ackSeq: 120, stored: 120, duplicates: 0 });
      // The decision is in PostgreSQL: the same batch again is all duplicates.
      expect((await postIngest(node.url, token, ingestBody('gw-1', readings))).body).toMatchObject({ ackSeq: 120, stored: 0, duplicates: 120 });
      expect((await admin!.query('SELECT from_seq, to_seq FROM received WHERE gateway = $1', ['gw-1'])).rows).toEqual([{ from_seq: 1, to_seq: 120 }]);
      const health = await (await fetch(`${node.url}/healthz`)).json();
      expect(health).toEqual({ status: 'ok', store: 'up' });
      const metrics = await (await fetch(`${node.url}/metrics`, { headers: { authorization: `Bearer ${key}` } })).text();
      expect(metrics).toMatch(/^braid_store_up\{kind="postgres"\} 1$/m);
      const q = await fetch(`${node.url}/api/v1/query?metric=temp&from=${T0}&to=${T0 + 86_400_000}&step=1d`, { headers: { authorization: `Bearer ${key}` } });
      expect(q.status).toBe(200);
      expect(await q.json()).toMatchObject({ manifest: { version: 0 } });
      expect(existsSync(join(d.path, 'cloud.db'))).toBe(false);
      expect(await node.stop('SIGTERM')).toMatchObject({ code: 0 });
      // Closing sealed the open segment: master/ holds every reading once, the catalog is in PostgreSQL.
      const master = await readMaster(d.path);
      expect(master.length).toBe(120);
      expect((await admin!.query('SELECT count(*)::int AS n FROM files')).rows[0].n).toBeGreaterThan(0);
    } finally {
      await node.stop('SIGKILL');
    }
  }, 90_000);

  test('braid batch run --store: master/ from --data-dir, the pointer and history in PostgreSQL, views equal the oracle', async () => {
    const d = dir('braid-cli-pg-batch-');
    await migrate(admin!);
    const { all, day0 } = await masterOnPostgres(d.path, (sql, params) => admin!.query(sql, params));

    const r = await braid(['batch', 'run', '--json', '--store', url, '--data-dir', d.path, '--memory-limit', '256MB', '--threads', '1', '--log-level', 'silent']);
    expect(r).toMatchObject({ code: 0 });
    const out = JSON.parse(r.stdout);
    const e = { 'gw-a': 3, 'gw-b': 3 };
    expect(out).toMatchObject({ published: true, version: 1, days: [dayOf(day0), dayOf(day0 + 86_400_000)], watermark: e });
    expect(viewDiffs(await readViews(d.path), expectedViews(coveredReadings(all, e))).slice(0, 10)).toEqual([]);
    expect(existsSync(join(d.path, 'cloud.db'))).toBe(false);
    const views = new PgViewPointer({ pool: admin!, url });
    const live = await views.current();
    expect(live).toMatchObject({ version: 1, watermark: e });
    const batch = new PgBatchStore({ pool: admin!, url });
    expect(await batch.listRuns()).toEqual([expect.objectContaining({ id: out.id, outcome: 'ok', version: 1, trigger: 'cli' })]);
  }, 120_000);
});
