/**
 * The batch store's conformance suite (test/support/store-conformance/batch.ts) on both
 * implementations:
 * - SQLite: a temp data dir's cloud.db (openCloudDb), batch.lock and views/manifest.json, each
 *   instance on a connection of its own, as `braid batch run` and `braid cloud` are today;
 * - PostgreSQL 15 started by the test (test/support/postgres.ts), a fresh migrated database per
 *   test, each instance with a pool of its own, as nodes are.
 * Plus what only PostgreSQL has: the lock's session named in pg_stat_activity, NOTIFY heard at
 * once, onPublished polling on while its LISTEN connection is cut; and a whole batch run (job.ts)
 * on the PostgreSQL store, two nodes starting it at once.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type pg from 'pg';
import { Writable } from 'node:stream';
import { BatchScheduler, startBatchRun, type BatchRun } from '../../cloud/batch/index.js';
import { openSqliteBatchStores } from '../../cloud/batch/store.js';
import { createPgPool, migrate, PgBatchStore, PgViewPointer } from '../../cloud/store/pg/index.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { createLogger } from '../../shared/logger.js';
import type { Db } from '../../shared/sqlite.js';
import { eventually, tempDir } from '../support/gateway.js';
import {
  coveredReadings, dayOf, expectedViews, GatewaySim, MasterFixture, masterOnPostgres, readViews, viewDiffs,
} from '../support/master-fixture.js';
import { type TestPostgres, havePostgres, startPostgres } from '../support/postgres.js';
import { batchStoreConformance, fixtureManifest } from '../support/store-conformance/batch.js';

describe('SQLite', () => {
  let dir: { path: string; remove: () => void };
  let seedDb: Db | null = null;
  beforeEach(() => {
    dir = tempDir('braid-store-batch-');
    mkdirSync(join(dir.path, 'views'), { recursive: true });
  });
  afterEach(async () => {
    await seedDb?.close();
    seedDb = null;
    dir.remove();
  });

  batchStoreConformance('SQLite (cloud.db, batch.lock, views/manifest.json)', async () => {
    const s = await openSqliteBatchStores(dir.path);
    return { store: s, close: () => s.close() };
  }, {
    exec: async (sql) => {
      seedDb ??= await openCloudDb(join(dir.path, 'cloud.db'));
      await seedDb.exec(sql);
    },
    // The holder's process is gone: batch.lock names a pid that no longer exists.
    killLockHolder: async () => {
      const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
      await writeFile(join(dir.path, 'batch.lock'), JSON.stringify({ pid: dead, startedAt: 1 }));
    },
  });
});

test('SQLite: processes opening a new cloud.db at the same moment all open it (the WAL switch waits, it is not SQLITE_BUSY)', async () => {
  // 4 at once on a fresh file, 100 times: before the switch to WAL was retried, about 1 open in 120 failed.
  for (let i = 0; i < 100; i++) {
    const d = tempDir('braid-open4-');
    try {
      const opened = await Promise.allSettled([1, 2, 3, 4].map(() => openCloudDb(join(d.path, 'cloud.db'))));
      for (const o of opened) if (o.status === 'fulfilled') await o.value.close();
      expect(opened.map((o) => (o.status === 'rejected' ? String(o.reason) : 'ok'))).toEqual(['ok', 'ok', 'ok', 'ok']);
    } finally {
      d.remove();
    }
  }
}, 120_000);

test('SQLite: a run\'s progress update beside another caller\'s read on the batch connection, while ingest commits, never fails', async () => {
  // node-sqlite3's parallel mode left a get()'s statement active until its finalize, and a write
  // queued on the connection meanwhile ran inside that read: after another connection's commit,
  // SQLITE_BUSY at once (143 of 300 here before; a batch run failed that way in CI). openCloudDb's
  // connections run one statement at a time.
  const d = tempDir('braid-progress-busy-');
  const stores = await openSqliteBatchStores(d.path);
  const ingest = await openCloudDb(join(d.path, 'cloud.db'));
  try {
    // Rows for both reads to find (a read that finds none is done at its first step).
    await stores.batch.setMeta('batch.lastVersion', 1);
    const done = await stores.batch.insertRun('full', 'cli', 1);
    await stores.batch.finishRun(done, { endedAt: 2, outcome: 'ok', rowsRead: 1, partitions: 1, version: 1, watermark: {}, sinks: null, error: null });
    const id = await stores.batch.insertRun('full', 'cli', 3);
    const failures: string[] = [];
    for (let i = 1; i <= 300; i++) {
      await Promise.all([
        stores.batch.getMeta('batch.lastVersion'),
        stores.batch.lastSuccessAt(),
        ingest.run("INSERT INTO meta (key, value) VALUES ('ingest.probe', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [String(i)]),
        stores.batch.updateRunProgress(id, i, i).catch((err: Error) => { failures.push(err.message); }),
      ]);
    }
    expect(failures).toEqual([]);
    expect((await stores.batch.listRuns()).find((r) => r.id === id)).toMatchObject({ rowsRead: 300, partitions: 300 });
  } finally {
    await ingest.close();
    await stores.close();
    d.remove();
  }
}, 60_000);

test('SQLite: a run whose base version was replaced while it built publishes nothing and fails with BRAID_ERR_BATCH_RUNNING', async () => {
  const d = tempDir('braid-cas-run-');
  try {
    const fx = await MasterFixture.open(d.path);
    const g = new GatewaySim('gw-a');
    const rows = Array.from({ length: 40 }, (_, i) => g.reading('d1', 'temp', Date.UTC(2024, 10, 23) + i * 60_000, i));
    g.closeEpoch();
    await fx.seal(rows);
    await g.report(fx);
    await fx.close();
    const stores = await openSqliteBatchStores(d.path);
    const rival = await openSqliteBatchStores(d.path);
    try {
      // Another publisher (a process that ignored the lock) moves the pointer while this run builds.
      const store = {
        batch: stores.batch,
        views: { ...stores.views, current: () => stores.views.current(), onPublished: stores.views.onPublished.bind(stores.views),
          publish: async (expected: number | null, next: Parameters<typeof stores.views.publish>[1]) => {
            expect(await rival.views.publish(null, fixtureManifest(50))).toBe(true);
            return stores.views.publish(expected, next);
          } },
      };
      const run = await startBatchRun({ dataDir: d.path, memoryLimit: '256MB', threads: 1, retainVersionsMs: 3600_000 }, { trigger: 'cli' }, { store });
      await expect(run.done).rejects.toMatchObject({ code: 'BRAID_ERR_BATCH_RUNNING', message: expect.stringMatching(/version 50/) });
      expect((await rival.views.current())?.version).toBe(50);
      expect(existsSync(join(d.path, 'views', 'v000001'))).toBe(false);
      expect((await rival.batch.listRuns())[0]).toMatchObject({ id: run.id, outcome: 'failed' });
    } finally {
      await stores.close();
      await rival.close();
    }
  } finally {
    d.remove();
  }
}, 60_000);

const have = havePostgres();

(have ? describe : describe.skip)('PostgreSQL (postgresql-15)', () => {
  let server: TestPostgres;
  let n = 0;
  let url = '';
  let admin: pg.Pool | null = null;
  const stops: Array<() => Promise<void>> = [];

  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  beforeEach(async () => {
    url = await server.createDatabase(`b${++n}`);
    admin = createPgPool({ url, poolMax: 2 });
    await migrate(admin);
  });
  afterEach(async () => {
    for (const s of stops.splice(0)) await s();
    await admin?.end();
    admin = null;
  });
  afterAll(async () => { await server?.stop(); }, 30_000);

  /** A node's store: a pool of its own on the test's database. */
  const openNode = (extra: { pollMs?: number } = {}) => {
    const pool = createPgPool({ url, poolMax: 4 });
    const views = new PgViewPointer({ pool, url, ...extra });
    const store = { batch: new PgBatchStore({ pool, url }), views };
    return { store, close: async () => { views.stop(); await pool.end(); } };
  };

  batchStoreConformance('PostgreSQL (advisory lock, batch_slots, view_pointer)', async () => openNode(), {
    exec: async (sql) => { await admin!.query(sql); },
    // The holder's session ends (a node lost, a connection cut): the server frees its advisory lock.
    killLockHolder: async () => {
      const r = await admin!.query(`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name LIKE 'braid-batch %'`);
      expect(r.rows).toEqual([{ ok: true }]);
    },
  });

  test('the lock\'s holder is named by its session; a refused caller\'s message names it', async () => {
    const a = openNode();
    const b = openNode();
    stops.push(a.close, b.close);
    const held = await a.store.batch.tryLock('node-a:4242');
    try {
      const apps = (await admin!.query(`SELECT application_name AS app FROM pg_stat_activity WHERE application_name LIKE 'braid-batch%'`)).rows;
      expect(apps).toEqual([{ app: 'braid-batch node-a:4242' }]);
      await expect(b.store.batch.tryLock('node-b:1')).rejects.toThrow(/node-a:4242.*advisory lock/);
      // The refused caller's connection is not left open.
      await eventually(async () => (await admin!.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'braid-batch node-b:1'`)).rows[0].n === 0, 10_000);
    } finally {
      await held.release();
    }
    expect((await admin!.query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory'`)).rows[0].n).toBe(0);
  });

  test('onPublished hears NOTIFY without waiting for a poll: a publish is heard on another node within 200 ms', async () => {
    const a = openNode();
    const b = openNode({ pollMs: 60_000 }); // one read at the start, then LISTEN alone
    stops.push(a.close, b.close);
    const heard: Array<{ v: number; at: number }> = [];
    const stop = b.store.views.onPublished((v) => heard.push({ v, at: Date.now() }));
    try {
      await eventually(async () => (await admin!.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'braid-listen'`)).rows[0].n === 1, 10_000);
      await new Promise((r) => setTimeout(r, 200));
      for (const v of [1, 2, 3]) {
        const t0 = Date.now();
        expect(await a.store.views.publish(v === 1 ? null : v - 1, fixtureManifest(v))).toBe(true);
        await eventually(() => heard.some((h) => h.v === v), 1000, 5);
        expect(heard.find((h) => h.v === v)!.at - t0).toBeLessThan(200);
      }
      expect(heard.map((h) => h.v)).toEqual([1, 2, 3]);
    } finally {
      stop();
    }
  });

  test('onPublished keeps working by polling while the LISTEN connection is cut, and listens again', async () => {
    const a = openNode();
    const b = openNode({ pollMs: 300 });
    stops.push(a.close, b.close);
    expect(await a.store.views.publish(null, fixtureManifest(1))).toBe(true);
    const heard: number[] = [];
    const stop = b.store.views.onPublished((v) => heard.push(v));
    try {
      await eventually(async () => (await admin!.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'braid-listen'`)).rows[0].n === 1, 10_000);
      await new Promise((r) => setTimeout(r, 400));
      await admin!.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'braid-listen'`);
      expect(await a.store.views.publish(1, fixtureManifest(2))).toBe(true);
      await eventually(() => heard.includes(2), 2000, 10);
      // LISTEN is back on the next poll.
      await eventually(async () => (await admin!.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'braid-listen'`)).rows[0].n === 1, 10_000);
      expect(await a.store.views.publish(2, fixtureManifest(3))).toBe(true);
      await eventually(() => heard.includes(3), 1000, 10);
      expect(heard).toEqual([2, 3]);
    } finally {
      stop();
    }
  });

  test('publish writes views/manifest.json for outside readers after the pointer moved', async () => {
    const d = tempDir('braid-pg-views-');
    try {
      const pool = createPgPool({ url, poolMax: 2 });
      stops.push(() => pool.end());
      const views = new PgViewPointer({ pool, url, viewsDir: d.path });
      expect(await views.publish(null, fixtureManifest(1))).toBe(true);
      const { readManifest } = await import('../../cloud/batch/manifest.js');
      expect(await readManifest(d.path)).toEqual(fixtureManifest(1));
      // A losing publisher writes nothing.
      expect(await views.publish(null, fixtureManifest(9))).toBe(false);
      expect((await readManifest(d.path))?.version).toBe(1);
    } finally {
      d.remove();
    }
  });

  test('a batch run on the PostgreSQL store, started on two nodes at once: one runs, its views equal the oracle, the pointer and history are in PostgreSQL', async () => {
    const d = tempDir('braid-pg-run-');
    try {
      const { all, day0 } = await masterOnPostgres(d.path, (sql, params) => admin!.query(sql, params));

      const node = () => {
        const pool = createPgPool({ url, poolMax: 4 });
        stops.push(() => pool.end());
        return { batch: new PgBatchStore({ pool, url }), views: new PgViewPointer({ pool, url, viewsDir: join(d.path, 'views') }) };
      };
      const opts = { dataDir: d.path, memoryLimit: '256MB', threads: 1, retainVersionsMs: 3600_000 };
      const started = await Promise.allSettled([node(), node()].map((store) => startBatchRun(opts, { trigger: 'cron' }, { store })));
      const ran = started.filter((s): s is PromiseFulfilledResult<BatchRun> => s.status === 'fulfilled');
      expect(ran).toHaveLength(1);
      expect(started.find((s) => s.status === 'rejected')).toMatchObject({ reason: { code: 'BRAID_ERR_BATCH_RUNNING' } });
      const r = await ran[0].value.done;
      expect(r).toMatchObject({ published: true, version: 1, days: [dayOf(day0), dayOf(day0 + 86_400_000)] });
      const e = { 'gw-a': 3, 'gw-b': 3 };
      expect(r.watermark).toEqual(e);
      expect(viewDiffs(await readViews(d.path), expectedViews(coveredReadings(all, e))).slice(0, 10)).toEqual([]);
      expect(existsSync(join(d.path, 'cloud.db'))).toBe(false);

      const other = node();
      expect((await other.views.current())?.version).toBe(1);
      expect((await other.views.current())?.watermark).toEqual(e);
      expect(await other.batch.getMeta('batch.version')).toBe(1);
      expect(await other.batch.listRuns()).toEqual([expect.objectContaining({ id: r.id, outcome: 'ok', version: 1, watermark: e, trigger: 'cron' })]);
      // Nothing new: the next run publishes nothing.
      const again = await (await startBatchRun(opts, { trigger: 'cli' }, { store: other })).done;
      expect(again).toMatchObject({ published: false, version: 1 });
      expect((await admin!.query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory'`)).rows[0].n).toBe(0);
    } finally {
      d.remove();
    }
  }, 60_000);

  test('two schedulers (nodes) on one PostgreSQL store, cron every second: each slot is claimed by one node and run once', async () => {
    const d = tempDir('braid-pg-cron-');
    const lines: Array<{ msg: string }> = [];
    const stream = new Writable({ write(chunk, _enc, cb) { for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l)); cb(); } });
    const logger = createLogger({ level: 'info' }, stream);
    const scheds = [0, 1].map(() => {
      const pool = createPgPool({ url, poolMax: 4 });
      stops.push(() => pool.end());
      const store = { batch: new PgBatchStore({ pool, url }), views: new PgViewPointer({ pool, url, viewsDir: join(d.path, 'views') }) };
      return new BatchScheduler({ dataDir: d.path, memoryLimit: '256MB', threads: 1, retainVersionsMs: 3600_000, cron: '* * * * * *' }, { store, logger });
    });
    try {
      for (const s of scheds) s.start();
      await new Promise((r) => setTimeout(r, 3500));
    } finally {
      await Promise.all(scheds.map((s) => s.close()));
      d.remove();
    }
    const slots = (await admin!.query<{ slot: number; node: string }>('SELECT slot, node FROM batch_slots ORDER BY slot')).rows;
    const runs = (await admin!.query<{ n: number }>(`SELECT count(*)::int AS n FROM batch_runs WHERE trigger = 'cron'`)).rows[0].n;
    expect(slots.length).toBeGreaterThanOrEqual(3);
    for (const s of slots) expect(s.slot % 1000).toBe(0);
    // Every slot was run by its claimant (the last may have been cut by close) and by nobody else.
    expect(runs).toBeLessThanOrEqual(slots.length);
    expect(runs).toBeGreaterThanOrEqual(slots.length - 1);
    // The other node fired for the same slots and stood down.
    const skipped = lines.filter((l) => l.msg === 'scheduled batch run skipped: another process took this slot').length;
    expect(skipped).toBeGreaterThanOrEqual(slots.length - 1);
    expect(lines.filter((l) => /already running/.test(l.msg))).toEqual([]);
  }, 30_000);
});
