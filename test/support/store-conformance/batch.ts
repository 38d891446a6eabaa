/**
 * The conformance suite of the batch part of the cloud store (docs/cluster-store.md: BatchStore and
 * ViewPointer), run by test/cloud/store-batch.test.ts on SQLite and on PostgreSQL, in the style of
 * aedes' abstract persistence tests. Each test gets a fresh database from the caller; `open` may be
 * called several times in one test, each call a store instance of its own (a process, or a node)
 * on that one database, so the concurrency the interface promises is tested between instances:
 *
 * - batch_runs: insert, progress, finish (JSON watermark and sinks), interrupted runs closed, the
 *   newest first, the last success;
 * - meta: JSON values round trip, overwrite, delete, seen by another instance at once;
 * - the batch lock: one holder among instances; free after release, and after the holder dies;
 * - cron slots: of 4 instances claiming one slot at once exactly one wins; a slot is never won twice;
 * - the view pointer: compare-and-set (of two publishers on one base exactly one wins, the live
 *   manifest is the winner's), onPublished heard on another instance within a second;
 * - the snapshot: E, the days and the files equal today's takeSnapshot on cloud.db over the same rows.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Manifest } from '../../../cloud/batch/manifest.js';
import { VIEW_NAMES, type ViewName } from '../../../cloud/batch/sink.js';
import { takeSnapshot, type RunRow } from '../../../cloud/batch/state.js';
import type { BatchLockHandle, BatchStores } from '../../../cloud/batch/store.js';
import { openCloudDb } from '../../../cloud/store/schema.js';
import { eventually, tempDir } from '../gateway.js';

export interface BatchStoreInstance {
  store: BatchStores;
  close: () => Promise<void>;
}

export interface BatchConformanceOptions {
  /** Run SQL that both dialects accept on the current test's database (seeding the ingest tables). */
  exec: (sql: string) => Promise<void>;
  /**
   * The holder of the batch lock dies: SQLite, its process (batch.lock then names a pid that is
   * gone); PostgreSQL, its session (pg_terminate_backend).
   */
  killLockHolder: () => Promise<void>;
}

/** The ingest tables of a cloud with two gateways, in SQL both dialects run. */
export const SNAPSHOT_SEED: readonly string[] = [
  // gw-1: epochs 1..3; 1..15 sealed, 16..20 a gap record: E = 2 (epoch 3 not sealed).
  `INSERT INTO epochs (gateway, epoch, first_seq, last_seq) VALUES ('gw-1', 1, 1, 10), ('gw-1', 2, 11, 20), ('gw-1', 3, 21, 30)`,
  `INSERT INTO sealed (gateway, from_seq, to_seq) VALUES ('gw-1', 1, 15)`,
  `INSERT INTO gaps (gateway, id, reason, from_seq, to_seq, count, min_ts, max_ts, devices, received_at)
     VALUES ('gw-1', 1, 'disk_budget', 16, 20, 5, 1732320000000, 1732320060000, '["d-1"]', 1732320100000)`,
  // gw-2: epoch 1 sealed, epoch 2 only half: E = 1.
  `INSERT INTO epochs (gateway, epoch, first_seq, last_seq) VALUES ('gw-2', 1, 1, 5), ('gw-2', 2, 6, 9)`,
  `INSERT INTO sealed (gateway, from_seq, to_seq) VALUES ('gw-2', 1, 5), ('gw-2', 7, 7)`,
  // gw-3 reported epoch 2 only: E = 0.
  `INSERT INTO epochs (gateway, epoch, first_seq, last_seq) VALUES ('gw-3', 2, 4, 6)`,
  `INSERT INTO files (path, day, rows, bytes, created_at) VALUES
     ('master/day=2024-11-23/part-b.parquet', '2024-11-23', 10, 1000, 1),
     ('master/day=2024-11-23/part-a.parquet', '2024-11-23', 3, 300, 2),
     ('master/day=2024-11-24/part-c.parquet', '2024-11-24', 7, 700, 3),
     ('master/day=2024-11-25/part-d.parquet', '2024-11-25', 9, 900, 4)`,
  `INSERT INTO file_gateways (path, gateway, min_seq, max_seq, min_epoch, max_epoch, rows) VALUES
     ('master/day=2024-11-23/part-b.parquet', 'gw-1', 1, 10, 1, 1, 10),
     ('master/day=2024-11-23/part-a.parquet', 'gw-2', 1, 3, 1, 1, 3),
     ('master/day=2024-11-24/part-c.parquet', 'gw-1', 11, 15, 2, 2, 5),
     ('master/day=2024-11-24/part-c.parquet', 'gw-2', 4, 5, 1, 1, 2),
     ('master/day=2024-11-25/part-d.parquet', 'gw-1', 21, 29, 3, 3, 9)`,
];

/** A manifest of `version` naming one file per view for `day`. */
export function fixtureManifest(version: number, day = '2024-11-23', watermark: Record<string, number> = { 'gw-1': version }): Manifest {
  const v = `v${String(version).padStart(6, '0')}`;
  const views = Object.fromEntries(VIEW_NAMES.map((n) => [n, [`${v}/${n}/day=${day}.parquet`]])) as Record<ViewName, string[]>;
  return { version, createdAt: new Date(Date.UTC(2024, 10, 23, 0, version)).toISOString(), watermark, views };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Register the suite under `name`; `open()` gives a new store instance on the current test's database. */
export function batchStoreConformance(name: string, open: () => Promise<BatchStoreInstance>, o: BatchConformanceOptions): void {
  describe(`batch store conformance: ${name}`, () => {
    const opened: BatchStoreInstance[] = [];
    const locks: BatchLockHandle[] = [];
    const instance = async () => {
      const i = await open();
      opened.push(i);
      return i.store;
    };
    const lock = async (s: BatchStores, holder: string) => {
      const l = await s.batch.tryLock(holder);
      locks.push(l);
      return l;
    };
    afterEach(async () => {
      for (const l of locks.splice(0)) await l.release().catch(() => undefined);
      for (const i of opened.splice(0)) await i.close();
    });

    test('batch runs: insert, progress, finish, interrupted runs closed, newest first, last success', async () => {
      const s = (await instance()).batch;
      expect(await s.listRuns()).toEqual([]);
      expect(await s.lastSuccessAt()).toBeNull();
      const a = await s.insertRun('incremental', 'cron', 1000);
      const b = await s.insertRun('full', 'api', 2000);
      expect(b).toBeGreaterThan(a);
      await s.updateRunProgress(a, 120, 2);
      const running = (await s.listRuns()).find((r) => r.id === a);
      expect(running).toEqual<RunRow>({
        id: a, kind: 'incremental', trigger: 'cron', startedAt: 1000, endedAt: null, outcome: 'running',
        rowsRead: 120, partitions: 2, version: null, watermark: null, sinks: null, error: null,
      });
      await s.finishRun(a, {
        endedAt: 1500, outcome: 'ok', rowsRead: 130, partitions: 3, version: 7, watermark: { 'gw-1': 4, 'gw 2': 0 },
        sinks: { influx: { outcome: 'ok', days: 2, points: 40 } }, error: null, kind: 'full',
      });
      expect(await s.lastSuccessAt()).toBe(1500);
      // Another instance (a process, a node) reads the same history.
      const other = (await instance()).batch;
      expect(await other.listRuns()).toEqual<RunRow[]>([
        { id: b, kind: 'full', trigger: 'api', startedAt: 2000, endedAt: null, outcome: 'running', rowsRead: null, partitions: null, version: null, watermark: null, sinks: null, error: null },
        {
          id: a, kind: 'full', trigger: 'cron', startedAt: 1000, endedAt: 1500, outcome: 'ok', rowsRead: 130, partitions: 3, version: 7,
          watermark: { 'gw-1': 4, 'gw 2': 0 }, sinks: { influx: { outcome: 'ok', days: 2, points: 40 } }, error: null,
        },
      ]);
      // The lock's new holder closes what a dead process left running; a failed run keeps its kind without one given.
      await other.closeInterruptedRuns(3000);
      const closed = (await s.listRuns(1))[0];
      expect(closed).toMatchObject({ id: b, outcome: 'failed', endedAt: 3000, kind: 'full', error: expect.stringMatching(/interrupted/) });
      const c = await s.insertRun('incremental', 'cli', 4000);
      await s.finishRun(c, { endedAt: 4100, outcome: 'failed', rowsRead: 0, partitions: 0, version: null, watermark: null, sinks: null, error: 'boom' });
      expect((await s.listRuns(1))[0]).toMatchObject({ id: c, kind: 'incremental', outcome: 'failed', error: 'boom', watermark: null, sinks: null });
      // The last success walks back past the failures.
      expect(await other.lastSuccessAt()).toBe(1500);
      expect((await s.listRuns(2)).map((r) => r.id)).toEqual([c, b]);
    });

    test('meta: JSON values round trip, are overwritten and deleted, and another instance sees them at once', async () => {
      const s = (await instance()).batch;
      const t = (await instance()).batch;
      expect(await s.getMeta('batch.none')).toBeNull();
      const values: Record<string, unknown> = {
        'batch.version': 12,
        'batch.retired': { v000001: 1732406400000, v000002: 1732406500000 },
        'batch.sink.influx': { version: 3, pending: ['2024-11-23', '2024-11-24'] },
        'k.string': 'é "quoted" \\ text',
        'k.bool': false,
        'k.float': 0.1,
        'k.nested': { a: [1, { b: null }], 'key with space': '' },
      };
      for (const [k, v] of Object.entries(values)) await s.setMeta(k, v);
      for (const [k, v] of Object.entries(values)) expect(await t.getMeta(k)).toEqual(v);
      await t.setMeta('batch.version', 13);
      expect(await s.getMeta<number>('batch.version')).toBe(13);
      await s.deleteMeta('batch.retired');
      expect(await t.getMeta('batch.retired')).toBeNull();
    });

    test('the batch lock: one holder among instances, the others refused naming it (409); free after release', async () => {
      const [a, b, c] = [await instance(), await instance(), await instance()];
      const held = await lock(a, 'node-a:101');
      await expect(b.batch.tryLock('node-b:102')).rejects.toMatchObject({ code: 'BRAID_ERR_BATCH_RUNNING', statusCode: 409 });
      // Racing for it while held: nobody gets it.
      const racing = await Promise.allSettled([b.batch.tryLock('node-b:102'), c.batch.tryLock('node-c:103')]);
      expect(racing.map((r) => r.status)).toEqual(['rejected', 'rejected']);
      await held.release();
      await held.release(); // idempotent
      // Freed: of two racing for it, exactly one gets it.
      const both = await Promise.allSettled([b.batch.tryLock('node-b:102'), c.batch.tryLock('node-c:103')]);
      const won = both.filter((r): r is PromiseFulfilledResult<BatchLockHandle> => r.status === 'fulfilled');
      expect(won).toHaveLength(1);
      locks.push(won[0].value);
      expect(both.find((r) => r.status === 'rejected')).toMatchObject({ reason: { code: 'BRAID_ERR_BATCH_RUNNING' } });
      await won[0].value.release();
      locks.push(await lock(a, 'node-a:101'));
    });

    test('the batch lock is freed when its holder dies', async () => {
      const [a, b] = [await instance(), await instance()];
      await lock(a, 'node-a:201');
      await expect(b.batch.tryLock('node-b:202')).rejects.toMatchObject({ code: 'BRAID_ERR_BATCH_RUNNING' });
      await o.killLockHolder();
      const got = await eventually(async () => b.batch.tryLock('node-b:202').then((l) => { locks.push(l); return true; }, () => false), 10_000, 50);
      expect(got).toBe(true);
      await expect(a.batch.tryLock('node-a:203')).rejects.toMatchObject({ code: 'BRAID_ERR_BATCH_RUNNING' });
    });

    test('cron slots: of 4 instances claiming one slot at once exactly one wins; a slot is never won twice', async () => {
      const nodes = await Promise.all([1, 2, 3, 4].map(() => instance()));
      const slot = Date.UTC(2024, 10, 23, 2, 0);
      const first = await Promise.all(nodes.map((n, i) => n.batch.claimSlot(slot, `node-${i}`)));
      expect(first.filter(Boolean)).toHaveLength(1);
      // A node whose cron fired late for the same slot does not run it again.
      expect(await Promise.all(nodes.map((n, i) => n.batch.claimSlot(slot, `node-${i}`)))).toEqual([false, false, false, false]);
      // The next slot: again exactly one.
      const next = await Promise.all(nodes.map((n, i) => n.batch.claimSlot(slot + 3_600_000, `node-${i}`)));
      expect(next.filter(Boolean)).toHaveLength(1);
    });

    test('the view pointer: compare-and-set; of two publishers on one base exactly one wins', async () => {
      const [a, b] = [await instance(), await instance()];
      expect(await a.views.current()).toBeNull();
      // From nothing: a wrong base loses.
      expect(await a.views.publish(5, fixtureManifest(1))).toBe(false);
      expect(await a.views.current()).toBeNull();
      expect(await a.views.publish(null, fixtureManifest(1))).toBe(true);
      expect(await b.views.current()).toEqual(fixtureManifest(1));
      // A run that started before version 1 was published (base: none) loses.
      expect(await b.views.publish(null, fixtureManifest(2))).toBe(false);
      // Two runs on base 1 publishing at once: exactly one wins, and the live manifest is its.
      const m2a = fixtureManifest(2, '2024-11-24', { 'gw-1': 2 });
      const m2b = fixtureManifest(2, '2024-11-25', { 'gw-1': 3 });
      const [ra, rb] = await Promise.all([a.views.publish(1, m2a), b.views.publish(1, m2b)]);
      expect([ra, rb].filter(Boolean)).toHaveLength(1);
      const live = await a.views.current();
      expect(live).toEqual(ra ? m2a : m2b);
      expect(await b.views.current()).toEqual(live);
      // The next run goes on from the live version.
      expect(await b.views.publish(2, fixtureManifest(3))).toBe(true);
      expect((await a.views.current())?.version).toBe(3);
    });

    test('onPublished: a version published by one instance is heard on another within a second', async () => {
      const [a, b] = [await instance(), await instance()];
      expect(await a.views.publish(null, fixtureManifest(1))).toBe(true);
      const heard: Array<{ version: number; at: number }> = [];
      const stop = b.views.onPublished((version) => heard.push({ version, at: Date.now() }));
      try {
        await sleep(600); // the subscriber's first look: version 1 is the one it starts from, not news
        expect(heard).toEqual([]);
        const t0 = Date.now();
        expect(await a.views.publish(1, fixtureManifest(2))).toBe(true);
        await eventually(() => heard.length > 0, 1000, 10);
        expect(heard[0].version).toBe(2);
        expect(heard[0].at - t0).toBeLessThan(1000);
        expect(await a.views.publish(2, fixtureManifest(3))).toBe(true);
        await eventually(() => heard.length > 1, 1000, 10);
        await sleep(300);
        expect(heard.map((h) => h.version)).toEqual([2, 3]);
      } finally {
        stop();
      }
      const after = heard.length;
      expect(await a.views.publish(3, fixtureManifest(4))).toBe(true);
      await sleep(1200);
      expect(heard).toHaveLength(after); // unsubscribed
    });

    test('the snapshot equals today\'s takeSnapshot on cloud.db over the same rows, full and incremental', async () => {
      const s = (await instance()).batch;
      for (const sql of SNAPSHOT_SEED) await o.exec(sql);
      const dir = tempDir('braid-snap-ref-');
      mkdirSync(dir.path, { recursive: true });
      const ref = await openCloudDb(join(dir.path, 'cloud.db'));
      try {
        for (const sql of SNAPSHOT_SEED) await ref.exec(sql);
        const full = await s.snapshot(null);
        expect(full).toEqual(await takeSnapshot(ref, null));
        // The values themselves, so both cannot agree on a wrong answer.
        expect(full.watermark).toEqual({ 'gw-1': 2, 'gw-2': 1, 'gw-3': 0 });
        expect(full.days).toEqual(['2024-11-23', '2024-11-24', '2024-11-25']);
        expect(full.files.map((f) => f.path)).toEqual([
          'master/day=2024-11-23/part-a.parquet', 'master/day=2024-11-23/part-b.parquet',
          'master/day=2024-11-24/part-c.parquet', 'master/day=2024-11-25/part-d.parquet',
        ]);
        expect(full.files[0]).toEqual({ path: 'master/day=2024-11-23/part-a.parquet', day: '2024-11-23', rows: 3 });
        const prevs: Array<Record<string, number>> = [{ 'gw-1': 1 }, { 'gw-1': 2, 'gw-2': 1, 'gw-3': 0 }, { 'gw-1': 3, 'gw-2': 0 }, {}];
        for (const prev of prevs) {
          expect(await s.snapshot(prev)).toEqual(await takeSnapshot(ref, prev));
        }
        // From an E before (read from the epochs since it) or from one that does not hold here
        // (gw-1's epoch 3 is not complete: read from every epoch), E is the full snapshot's.
        expect((await s.snapshot({ 'gw-1': 1 })).watermark).toEqual(full.watermark);
        expect((await s.snapshot({ 'gw-1': 3, 'gw-2': 0 })).watermark).toEqual(full.watermark);
        // E moved for gw-1 (1 -> 2) and gw-2 (0 -> 1): the days of files holding those epochs.
        expect((await s.snapshot({ 'gw-1': 1 })).days).toEqual(['2024-11-23', '2024-11-24']);
        expect(await s.snapshot({ 'gw-1': 2, 'gw-2': 1, 'gw-3': 0 })).toEqual({ watermark: full.watermark, days: [], files: [] });
      } finally {
        await ref.close();
        dir.remove();
      }
    });
  });
}
