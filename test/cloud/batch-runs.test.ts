/**
 * Batch runs over time: incremental == full [INV-4], rerun after deleting views/ [INV-4], master
 * untouched, the vector watermark (readings above E left out, taken in when E advances), late
 * readings, batch.lock, sinks that fail, old versions collected.
 */
import { mkdir, mkdtemp, rm, readdir, readFile, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dayOfPath, viewPartOfPath } from '../../cloud/batch/files.js';
import { runThreads } from '../../cloud/batch/job.js';
import { EPOCHS_FROM_SQL, takeSnapshot } from '../../cloud/batch/state.js';
import { watermark, watermarkFrom, type EpochRow } from '../../cloud/ingest/watermark.js';
import { startBatchRun, VIEW_NAMES, type BatchJobOptions, type ViewChanges, type ViewSink } from '../../cloud/batch/index.js';
import { BatchLock } from '../../cloud/batch/lock.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import type { Db } from '../../shared/sqlite.js';
import { DAY_MS } from '../../shared/time.js';
import {
  coveredReadings, dayOf, expectedViews, GatewaySim, hashMaster, MasterFixture, readViews, rng, sameViews, viewDiffs, type FixtureReading,
} from '../support/master-fixture.js';

const DAY0 = Date.UTC(2024, 10, 20);
const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'braid-batch-'));
  dirs.push(d);
  return d;
}

const opts = (dataDir: string, o: Partial<BatchJobOptions> = {}): BatchJobOptions =>
  ({ dataDir, memoryLimit: '512MB', threads: 2, retainVersionsMs: 3600_000, ...o });

/** A small fleet that appends readings and seals them like ingest does. */
class Fleet {
  readonly all: FixtureReading[] = [];
  readonly gws = ['gw-a', 'gw-b'].map((id) => new GatewaySim(id));
  private readonly rand: () => number;
  constructor(readonly fx: MasterFixture, seed: number) {
    this.rand = rng(seed);
  }

  /** `n` readings with ts in [fromDay, fromDay + days), sealed, epochs closed and reported. */
  async append(n: number, fromDay: number, days = 1, opts: { report?: boolean } = {}): Promise<FixtureReading[]> {
    const rows: FixtureReading[] = [];
    for (let i = 0; i < n; i++) {
      const g = this.gws[Math.floor(this.rand() * this.gws.length)];
      const ts = fromDay + Math.floor(this.rand() * days * 1440) * 60_000 + Math.floor(this.rand() * 4) * 15_000;
      const r = g.reading(`d${Math.floor(this.rand() * 5)}`, this.rand() < 0.5 ? 'temp' : 'hum', ts, Math.round(this.rand() * 500) / 10);
      rows.push(r);
      if (this.rand() < 0.05) rows.push(this.gws.find((x) => x !== g)!.reading(r.device, r.metric, r.ts, r.value + 0.5));
    }
    for (const g of this.gws) g.closeEpoch();
    await this.fx.seal(rows);
    this.all.push(...rows);
    if (opts.report !== false) await this.report();
    return rows;
  }

  async report(): Promise<void> {
    for (const g of this.gws) await g.report(this.fx);
  }

  /** E as the fleet knows it: every closed epoch reported and sealed. */
  e(): Record<string, number> {
    return Object.fromEntries(this.gws.map((g) => [g.id, g.currentEpoch - 1]));
  }
}

/** The live manifest's views of a data dir: per view, its paths as the file lists them. */
async function liveViews(dir: string): Promise<Record<string, string[]>> {
  return (JSON.parse(await readFile(join(dir, 'views/manifest.json'), 'utf8')) as { views: Record<string, string[]> }).views;
}

async function check(dir: string, all: FixtureReading[], e: Record<string, number>): Promise<void> {
  const diffs = viewDiffs(await readViews(dir), expectedViews(coveredReadings(all, e)));
  expect(diffs.slice(0, 10)).toEqual([]);
}

type IngestRows = {
  epochs: Array<{ gateway: string; epoch: number; firstSeq: number; lastSeq: number }>;
  sealed: Array<{ gateway: string; from: number; to: number }>;
  gaps: Array<{ gateway: string; from: number; to: number }>;
};

/**
 * Random ingest rows of three gateways: epochs (some numbers never reported, some empty, epoch 0
 * at times), sealed ranges (disjoint, some adjacent, some seqs left out) and gap records.
 */
function randomIngestRows(rand: () => number): IngestRows {
  const int = (n: number) => Math.floor(rand() * n);
  const rows: IngestRows = { epochs: [], sealed: [], gaps: [] };
  for (const gateway of ['g-b', 'g-a', 'g-c']) {
    let seq = 1;
    for (let epoch = int(5) === 0 ? 0 : 1, n = int(9); epoch <= n; epoch++) {
      const len = int(5) === 0 ? 0 : 1 + int(4);
      if (int(12) > 0) rows.epochs.push({ gateway, epoch, firstSeq: seq, lastSeq: seq + len - 1 }); // some numbers never reported
      seq += len;
    }
    // Sealed: disjoint ranges, some adjacent (covered only by their union), some seqs left out.
    for (let from = 1; from < seq;) {
      const to = Math.min(seq - 1, from + int(6));
      if (int(7) > 0) rows.sealed.push({ gateway, from, to });
      from = to + 1 + (int(4) === 0 ? 1 + int(2) : 0);
    }
    for (let i = int(3); i > 0; i--) {
      const from = 1 + int(seq);
      rows.gaps.push({ gateway, from, to: from + int(3) });
    }
  }
  return rows;
}

async function insertIngestRows(db: Db, rows: IngestRows, firstGapId = 0): Promise<void> {
  for (const e of rows.epochs) await db.run('INSERT INTO epochs (gateway, epoch, first_seq, last_seq) VALUES (?, ?, ?, ?)', [e.gateway, e.epoch, e.firstSeq, e.lastSeq]);
  for (const r of rows.sealed) await db.run('INSERT INTO sealed (gateway, from_seq, to_seq) VALUES (?, ?, ?)', [r.gateway, r.from, r.to]);
  for (const [i, r] of rows.gaps.entries()) {
    await db.run(`INSERT INTO gaps (gateway, id, reason, from_seq, to_seq, count, min_ts, max_ts, devices, received_at) VALUES (?, ?, 'disk', ?, ?, 1, 0, 0, '[]', 0)`, [r.gateway, firstGapId + i, r.from, r.to]);
  }
}

describe('batch runs', () => {
  it('E as the snapshot reads it from cloud.db equals watermark() over every epoch, sealed and gap row (random rows)', async () => {
    const db = await openCloudDb(join(await tempDir(), 'cloud.db'));
    const rand = rng(11);
    let positive = 0;
    try {
      for (let round = 0; round < 60; round++) {
        await db.exec('DELETE FROM epochs; DELETE FROM sealed; DELETE FROM gaps');
        const rows = randomIngestRows(rand);
        await insertIngestRows(db, rows);
        const want = watermark(rows.epochs, rows.sealed, rows.gaps);
        expect((await takeSnapshot(db, null)).watermark).toEqual(want);
        positive += Object.values(want).filter((x) => x > 1).length;
      }
      expect(positive).toBeGreaterThan(20); // the rounds exercise E beyond the first epoch
    } finally {
      await db.close();
    }
  });

  it('an incremental snapshot reads E from the E before it and the epochs since, and equals watermark() over every row (random rows added over time)', async () => {
    const db = await openCloudDb(join(await tempDir(), 'cloud.db'));
    const rand = rng(23);
    let moved = 0;
    let fallbacks = 0;
    try {
      for (let round = 0; round < 150; round++) {
        await db.exec('DELETE FROM epochs; DELETE FROM sealed; DELETE FROM gaps');
        const all = randomIngestRows(rand);
        // What had arrived by the run before: per gateway, the rows below a seq (an epoch when all of it is).
        const cut = new Map(['g-a', 'g-b', 'g-c'].map((g) => [g, 1 + Math.floor(rand() * 30)]));
        const before = (r: { gateway: string; to?: number; lastSeq?: number }) => (r.to ?? r.lastSeq!) < cut.get(r.gateway)!;
        const early = { epochs: all.epochs.filter(before), sealed: all.sealed.filter(before), gaps: all.gaps.filter(before) };
        const late = { epochs: all.epochs.filter((r) => !before(r)), sealed: all.sealed.filter((r) => !before(r)), gaps: all.gaps.filter((r) => !before(r)) };
        await insertIngestRows(db, early);
        const prev = (await takeSnapshot(db, null)).watermark;
        expect(prev).toEqual(watermark(early.epochs, early.sealed, early.gaps));
        await insertIngestRows(db, late, early.gaps.length);
        const want = watermark(all.epochs, all.sealed, all.gaps);
        const got = await takeSnapshot(db, prev);
        expect(got.watermark).toEqual(want);
        // Taken from the epochs since prev (not by falling back to every epoch): only those are read.
        const since = await db.all<EpochRow>(EPOCHS_FROM_SQL, [JSON.stringify(prev)]);
        expect(since.filter((r) => r.epoch !== null && r.epoch < (prev[r.gateway] ?? 0))).toEqual([]);
        expect(watermarkFrom(prev, since, all.sealed, all.gaps)).toEqual(want);
        moved += Object.keys(want).filter((g) => want[g] > (prev[g] ?? 0)).length;
        // A prev that does not hold here (an epoch that is not complete, a gateway cloud.db has no
        // epoch of: a cloud.db other than the one it was read from) is not trusted: E is read from every epoch.
        const incomplete = all.epochs.find((x) => x.epoch === (want[x.gateway] ?? 0) + 1); // reported, not complete: E stops below it
        if (incomplete) {
          fallbacks++;
          const bad = { ...prev, [incomplete.gateway]: incomplete.epoch };
          expect(watermarkFrom(bad, await db.all<EpochRow>(EPOCHS_FROM_SQL, [JSON.stringify(bad)]), all.sealed, all.gaps)).toBeNull();
          expect((await takeSnapshot(db, bad)).watermark).toEqual(want);
        }
        const gone = { ...prev, 'g-gone': 3 };
        expect(watermarkFrom(gone, await db.all<EpochRow>(EPOCHS_FROM_SQL, [JSON.stringify(gone)]), all.sealed, all.gaps)).toBeNull();
        expect((await takeSnapshot(db, gone)).watermark).toEqual(want);
      }
      expect(moved).toBeGreaterThan(30); // gateways whose E moved past the E before
      expect(fallbacks).toBeGreaterThan(20);
    } finally {
      await db.close();
    }
  });

  it('a run spreads batch.threads over the days it builds: two days at once, the engine\'s threads making up the rest', () => {
    expect(runThreads(0, 8, 2)).toEqual({ lanes: 2, engineThreads: 1 });
    expect(runThreads(0, 1, 2)).toEqual({ lanes: 1, engineThreads: 2 });
    expect(runThreads(0, 8, 16)).toEqual({ lanes: 2, engineThreads: 15 });
    expect(runThreads(1, 8, 16)).toEqual({ lanes: 1, engineThreads: 1 });
    expect(runThreads(3, 0, 2)).toEqual({ lanes: 1, engineThreads: 3 });
  });

  it('[INV-4] incremental runs after appends equal one --full run; master files are never touched', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const fleet = new Fleet(fx, 7);
    const versions: number[] = [];
    for (let step = 0; step < 4; step++) {
      await fleet.append(600, DAY0 + step * DAY_MS, 2);
      const before = await hashMaster(dir);
      const r = await (await startBatchRun(opts(dir), { trigger: 'cli' })).done;
      expect(await hashMaster(dir)).toEqual(before);
      expect(r.kind).toBe(step === 0 ? 'full' : 'incremental');
      // Only the days the new epochs touched: this step's two days.
      if (step > 0) expect(r.days).toEqual([dayOf(DAY0 + step * DAY_MS), dayOf(DAY0 + (step + 1) * DAY_MS)]);
      versions.push(r.version);
      await check(dir, fleet.all, fleet.e());
    }
    expect(versions).toEqual([1, 2, 3, 4]);
    const incremental = await readViews(dir);
    const manifest = JSON.parse(await readFile(join(dir, 'views/manifest.json'), 'utf8'));
    // The manifest mixes versions: days not rebuilt keep their older files.
    expect(new Set(manifest.views.device_1m.map((p: string) => p.split('/')[0])).size).toBeGreaterThan(1);

    const full = await (await startBatchRun(opts(dir), { full: true, trigger: 'cli' })).done;
    expect(full.kind).toBe('full');
    expect(full.days).toHaveLength(5);
    expect(sameViews(await readViews(dir), incremental)).toEqual([]);
    await fx.close();
  });

  it('[INV-4] an incremental run that touches two hours of a full day merges them into its other minutes and hours, as --full builds them', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const fleet = new Fleet(fx, 13);
    // Runs on the evening of DAY0: a recent day, whose minute views are hour files.
    const now = () => DAY0 + 20 * 3600_000;
    await fleet.append(1500, DAY0, 1);
    await (await startBatchRun(opts(dir), { trigger: 'cli' }, { now })).done;
    // New readings in hours 5 and 6 only (minutes with readings already and new ones).
    await fleet.append(40, DAY0 + 5 * 3600_000, 2 / 24);
    const r = await (await startBatchRun(opts(dir), { trigger: 'cli' }, { now })).done;
    expect(r.kind).toBe('incremental');
    expect(r.days).toEqual([dayOf(DAY0)]);
    await check(dir, fleet.all, fleet.e());
    // Only the touched hours' files of the minute views were written again; the day's other hours
    // keep version 1's files. The hour and day views are one file a day, written again.
    const views = await liveViews(dir);
    for (const v of ['device_1m', 'gateway_1m', 'fleet_1m']) {
      const files = views[v].map((p) => ({ version: p.split('/')[0], hour: viewPartOfPath(p)!.hour }));
      expect({ v, rewritten: files.filter((f) => f.version === 'v000002').map((f) => f.hour) }).toEqual({ v, rewritten: [5, 6] });
      expect({ v, hours: files.map((f) => f.hour) }).toEqual({ v, hours: Array.from({ length: 24 }, (_, h) => h) });
    }
    for (const v of ['device_1h', 'gateway_1d', 'fleet_1h']) expect(views[v]).toEqual([`v000002/${v}/day=${dayOf(DAY0)}.parquet`]);
    const incremental = await readViews(dir);
    await (await startBatchRun(opts(dir), { full: true, trigger: 'cli' }, { now })).done;
    expect(sameViews(await readViews(dir), incremental)).toEqual([]);
    // Two days later DAY0 is no longer recent: the next run that publishes (new readings of
    // another day) compacts its minute views into day files, and leaves its other views as they are.
    const newDay = await fleet.append(40, DAY0 + 2 * DAY_MS, 1);
    const later = () => DAY0 + 2 * DAY_MS + 3600_000;
    const r3 = await (await startBatchRun(opts(dir), { trigger: 'cli' }, { now: later })).done;
    expect({ kind: r3.kind, days: r3.days, version: r3.version }).toEqual({ kind: 'incremental', days: [dayOf(DAY0 + 2 * DAY_MS)], version: 4 });
    const compacted = await liveViews(dir);
    const ofDay = (v: string, d: number) => compacted[v].filter((p) => viewPartOfPath(p)!.day === dayOf(d));
    for (const v of ['device_1m', 'gateway_1m', 'fleet_1m']) expect(ofDay(v, DAY0)).toEqual([`v000004/${v}/day=${dayOf(DAY0)}.parquet`]);
    for (const v of ['device_1h', 'gateway_1d', 'fleet_1h']) expect(ofDay(v, DAY0)).toEqual([`v000003/${v}/day=${dayOf(DAY0)}.parquet`]);
    // The new day is recent: a file for each hour of its readings.
    const newHours = [...new Set(newDay.map((x) => Math.floor((x.ts - DAY0 - 2 * DAY_MS) / 3600_000)))].sort((a, b) => a - b);
    expect(ofDay('device_1m', DAY0 + 2 * DAY_MS).map((p) => viewPartOfPath(p)!.hour)).toEqual(newHours);
    await check(dir, fleet.all, fleet.e());
    await fx.close();
  });

  it('[INV-4] a recent day whose minute views are day files (written when it was not recent, or before hour files) is merged into hour files, every hour of it', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const fleet = new Fleet(fx, 17);
    await fleet.append(600, DAY0, 2);
    await (await startBatchRun(opts(dir), { trigger: 'cli' })).done;
    // Run long after: neither day is recent, so each minute view is a file a day (as every day was before hour files).
    const first = await liveViews(dir);
    for (const v of ['device_1m', 'gateway_1m', 'fleet_1m']) expect(first[v]).toEqual([0, 1].map((d) => `v000001/${v}/day=${dayOf(DAY0 + d * DAY_MS)}.parquet`));
    // Now a run on the second day, which is recent: readings of its hour 3.
    await fleet.append(30, DAY0 + DAY_MS + 3 * 3600_000, 1 / 24);
    const r = await (await startBatchRun(opts(dir), { trigger: 'cli' }, { now: () => DAY0 + DAY_MS + 5 * 3600_000 })).done;
    expect({ kind: r.kind, days: r.days }).toEqual({ kind: 'incremental', days: [dayOf(DAY0 + DAY_MS)] });
    await check(dir, fleet.all, fleet.e());
    const next = await liveViews(dir);
    for (const v of ['device_1m', 'gateway_1m', 'fleet_1m']) {
      // The day not touched keeps its day file; the touched day, recent now, is hour files, every hour of it.
      expect(next[v].filter((p) => viewPartOfPath(p)!.hour === null)).toEqual([`v000001/${v}/day=${dayOf(DAY0)}.parquet`]);
      const hours = next[v].filter((p) => p.startsWith('v000002/'));
      expect(hours.length).toBeGreaterThan(20);
      expect(hours.every((p) => viewPartOfPath(p)!.day === dayOf(DAY0 + DAY_MS) && viewPartOfPath(p)!.hour !== null)).toBe(true);
    }
    await fx.close();
  });

  it('[INV-4] deleting views/ and rerunning restores the same rows', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const fleet = new Fleet(fx, 11);
    await fleet.append(500, DAY0, 3);
    await (await startBatchRun(opts(dir), { trigger: 'cli' })).done;
    await fleet.append(300, DAY0 + 2 * DAY_MS, 2);
    await (await startBatchRun(opts(dir), { trigger: 'cli' })).done;
    const before = await readViews(dir);
    await rm(join(dir, 'views'), { recursive: true });
    const r = await (await startBatchRun(opts(dir), { trigger: 'cli' })).done;
    expect(r.kind).toBe('full');
    // Versions never go back: answers that carry version 2 must not meet another version 1.
    expect(r.version).toBe(3);
    expect(sameViews(await readViews(dir), before)).toEqual([]);
    await fx.close();
  });

  it('a manifest of an earlier version (no gateway_1m, fleet_1m): the next run, though incremental, rebuilds every day with them', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const fleet = new Fleet(fx, 13);
    await fleet.append(500, DAY0, 3);
    await (await startBatchRun(opts(dir), { trigger: 'cli' })).done;
    const file = join(dir, 'views/manifest.json');
    const older = JSON.parse(await readFile(file, 'utf8')) as { views: Record<string, string[]> };
    delete older.views.gateway_1m;
    delete older.views.fleet_1m;
    await writeFile(file, JSON.stringify(older));
    // New readings on one day: incremental would rebuild that day only.
    await fleet.append(100, DAY0 + DAY_MS, 1);
    const r = await (await startBatchRun(opts(dir), { trigger: 'cli' })).done;
    expect({ kind: r.kind, days: r.days }).toEqual({ kind: 'full', days: [0, 1, 2].map((d) => dayOf(DAY0 + d * DAY_MS)) });
    const manifest = JSON.parse(await readFile(file, 'utf8')) as { views: Record<string, string[]> };
    for (const v of ['gateway_1m', 'fleet_1m']) expect({ v, days: new Set(manifest.views[v].map((p) => dayOfPath(p))).size }).toEqual({ v, days: 3 });
    await check(dir, fleet.all, fleet.e());
    // The next one is incremental again.
    await fleet.append(50, DAY0 + 2 * DAY_MS, 1);
    expect((await (await startBatchRun(opts(dir), { trigger: 'cli' })).done).kind).toBe('incremental');
    await fx.close();

    // With nothing to build, such a manifest is still rewritten: with every view, so none is refused.
    const empty = await tempDir();
    await mkdir(join(empty, 'views'), { recursive: true });
    await writeFile(join(empty, 'views/manifest.json'), JSON.stringify({ version: 4, createdAt: '2024-11-20T00:00:00.000Z', watermark: {}, views: { device_1m: [], fleet_1h: [] } }));
    const e = await (await startBatchRun(opts(empty), { trigger: 'cli' })).done;
    expect({ published: e.published, version: e.version }).toEqual({ published: true, version: 5 });
    expect(Object.keys(JSON.parse(await readFile(join(empty, 'views/manifest.json'), 'utf8')).views).sort()).toEqual([...VIEW_NAMES].sort());
    expect((await (await startBatchRun(opts(empty), { trigger: 'cli' })).done).published).toBe(false);
  });

  it('readings of epochs above E are left out, and taken in (their day only) once E covers them', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const fleet = new Fleet(fx, 3);
    await fleet.append(400, DAY0, 2);
    const e1 = fleet.e();
    // Sealed but its epochs not reported yet: not complete, so above E.
    await fleet.append(200, DAY0 + 5 * DAY_MS, 1, { report: false });
    const r1 = await (await startBatchRun(opts(dir), { trigger: 'cli' })).done;
    expect(r1.watermark).toEqual(e1);
    await check(dir, fleet.all, e1);
    const views1 = await readViews(dir);
    expect([...views1.device_1d.values()].some((r) => r.bucket === DAY0 + 5 * DAY_MS)).toBe(false);

    await fleet.report();
    const r2 = await (await startBatchRun(opts(dir), { trigger: 'cli' })).done;
    expect(r2.watermark).toEqual(fleet.e());
    expect(r2.days).toEqual([dayOf(DAY0 + 5 * DAY_MS)]);
    await check(dir, fleet.all, fleet.e());

    // Nothing new: no new version.
    const r3 = await (await startBatchRun(opts(dir), { trigger: 'cli' })).done;
    expect(r3).toMatchObject({ published: false, version: r2.version, days: [] });
    await fx.close();
  });

  it('an epoch covered by a gap record counts as complete', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const g = new GatewaySim('gw-a');
    const rows = [g.reading('d1', 'temp', DAY0 + 1000, 1), g.reading('d1', 'temp', DAY0 + 2000, 2), g.reading('d1', 'temp', DAY0 + 3000, 3)];
    g.closeEpoch();
    await fx.seal([rows[0], rows[2]]); // seq 2 was dropped at the gateway's disk budget
    await g.report(fx);
    expect((await (await startBatchRun(opts(dir), { trigger: 'cli' })).done).watermark).toEqual({ 'gw-a': 0 });
    await fx.gap('gw-a', 1, 2, 2);
    const r = await (await startBatchRun(opts(dir), { trigger: 'cli' })).done;
    expect(r.watermark).toEqual({ 'gw-a': 1 });
    expect((await readViews(dir)).device_1m.get(`d1|temp|${DAY0}`)!.summary).toMatchObject({ count: 2, sum: 4 });
    await fx.close();
  });

  it('late readings (days old) rebuild their old day and only it', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const fleet = new Fleet(fx, 5);
    await fleet.append(500, DAY0, 10);
    await (await startBatchRun(opts(dir), { trigger: 'cli' })).done;
    const before = await readViews(dir);
    // A gateway back from a week offline uploads readings of day 3.
    await fleet.append(50, DAY0 + 3 * DAY_MS, 1);
    const r = await (await startBatchRun(opts(dir), { trigger: 'cli' })).done;
    expect(r.days).toEqual([dayOf(DAY0 + 3 * DAY_MS)]);
    await check(dir, fleet.all, fleet.e());
    const after = await readViews(dir);
    const day3 = (b: number) => b >= DAY0 + 3 * DAY_MS && b < DAY0 + 4 * DAY_MS;
    const count = (v: typeof after) => [...v.device_1d.values()].filter((x) => day3(x.bucket)).reduce((n, x) => n + x.summary.count, 0);
    expect(count(after)).toBeGreaterThan(count(before));
    await fx.close();
  });

  it('a second concurrent run fails with BRAID_ERR_BATCH_RUNNING; a stale lock is taken over', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    await new Fleet(fx, 1).append(100, DAY0);
    await fx.close();
    const held = await BatchLock.acquire(join(dir, 'batch.lock'));
    await expect(startBatchRun(opts(dir), { trigger: 'cli' })).rejects.toMatchObject({ code: 'BRAID_ERR_BATCH_RUNNING', statusCode: 409 });
    await held.release();

    // Two runs started together: exactly one gets the lock.
    const both = await Promise.allSettled([startBatchRun(opts(dir), { trigger: 'cli' }), startBatchRun(opts(dir), { trigger: 'api' })]);
    expect(both.filter((s) => s.status === 'fulfilled')).toHaveLength(1);
    expect(both.find((s) => s.status === 'rejected')).toMatchObject({ reason: { code: 'BRAID_ERR_BATCH_RUNNING' } });
    await (both.find((s) => s.status === 'fulfilled') as PromiseFulfilledResult<Awaited<ReturnType<typeof startBatchRun>>>).value.done;

    // A lock left by a process that is gone.
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
    await writeFile(join(dir, 'batch.lock'), JSON.stringify({ pid: Number(dead), startedAt: 1 }));
    const r = await (await startBatchRun(opts(dir), { trigger: 'cli' })).done;
    expect(r.published).toBe(false);
    await expect(readdir(dir)).resolves.not.toContain('batch.lock');
  });

  it('a failing sink does not block the views and gets its days again at the next run', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const fleet = new Fleet(fx, 9);
    await fleet.append(300, DAY0, 2);
    const calls: ViewChanges[] = [];
    let fail = true;
    const sink: ViewSink = {
      name: 'flaky',
      async write(changes) {
        calls.push(changes);
        if (fail) throw new Error('influx is down');
        return { points: Object.values(changes.views).flat().length };
      },
    };
    const r1 = await (await startBatchRun(opts(dir), { trigger: 'cli' }, { sinks: [sink] })).done;
    expect(r1.sinks.flaky).toMatchObject({ outcome: 'failed', days: 2, error: 'influx is down' });
    await check(dir, fleet.all, fleet.e());
    expect(calls[0].days).toEqual([dayOf(DAY0), dayOf(DAY0 + DAY_MS)]);
    expect(calls[0].views.device_1m.every((p) => p.startsWith(join(dir, 'views', 'v000001')))).toBe(true);

    fail = false;
    await fleet.append(100, DAY0 + 4 * DAY_MS, 1);
    const r2 = await (await startBatchRun(opts(dir), { trigger: 'cli' }, { sinks: [sink] })).done;
    expect(r2.days).toEqual([dayOf(DAY0 + 4 * DAY_MS)]);
    expect(calls[1].days).toEqual([dayOf(DAY0), dayOf(DAY0 + DAY_MS), dayOf(DAY0 + 4 * DAY_MS)]);
    expect(calls[1].version).toBe(r2.version);
    expect(calls[1].views.fleet_1d).toHaveLength(3);
    expect(r2.sinks.flaky).toMatchObject({ outcome: 'ok', days: 3 });

    await fleet.append(50, DAY0 + 4 * DAY_MS, 1);
    await (await startBatchRun(opts(dir), { trigger: 'cli' }, { sinks: [sink] })).done;
    expect(calls[2].days).toEqual([dayOf(DAY0 + 4 * DAY_MS)]);

    const db = await openCloudDb(join(dir, 'cloud.db'));
    const rows = await db.all<{ sinks: string; outcome: string }>('SELECT sinks, outcome FROM batch_runs ORDER BY id');
    await db.close();
    expect(rows.map((r) => r.outcome)).toEqual(['ok', 'ok', 'ok']);
    expect(JSON.parse(rows[0].sinks).flaky.outcome).toBe('failed');
    await fx.close();
  });

  it('a file a later run replaced, in a version that stays live by its other hour files, is deleted batch.retainVersionsMs later', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const fleet = new Fleet(fx, 23);
    let t = DAY0 + 20 * 3600_000; // DAY0 recent: its minute views are hour files
    const now = () => t;
    const run = async () => (await startBatchRun(opts(dir, { retainVersionsMs: 60_000 }), { trigger: 'cli' }, { now })).done;
    const day = dayOf(DAY0);
    const at = (rel: string) => existsSync(join(dir, 'views', rel));
    await fleet.append(400, DAY0, 1);
    await run();
    const hour5 = `v000001/device_1m/day=${day}-hour=05.parquet`;
    const hour4 = `v000001/device_1m/day=${day}-hour=04.parquet`;
    const hours1 = `v000001/device_1h/day=${day}.parquet`;
    expect([at(hour5), at(hour4), at(hours1)]).toEqual([true, true, true]);
    // Hour 5 and the day's hour view written again by version 2; version 1 stays live by its other hours.
    await fleet.append(30, DAY0 + 5 * 3600_000, 1 / 24);
    await run();
    t += 30_000;
    await fleet.append(30, DAY0 + 6 * 3600_000, 1 / 24);
    await run();
    const names = async () => Object.values(await liveViews(dir)).flat();
    expect(await names()).toContain(hour4);
    expect(await names()).not.toContain(hour5);
    // Replaced 30 s ago: kept for a reader of the manifest before.
    expect([at(hour5), at(hours1)]).toEqual([true, true]);
    t += 30_000;
    const r = await run();
    expect(r.published).toBe(false);
    expect(r.deletedVersions).toEqual([]);
    expect([at(hour5), at(hours1), at(hour4)]).toEqual([false, false, true]);
    // Version 2's files replaced by version 3 (its device_1h of the day) go 60 s after that run.
    expect(at(`v000002/device_1h/day=${day}.parquet`)).toBe(true);
    t += 30_000;
    await run();
    expect(at(`v000002/device_1h/day=${day}.parquet`)).toBe(false);
    expect(at(`v000002/device_1m/day=${day}-hour=05.parquet`)).toBe(true);
    await check(dir, fleet.all, fleet.e());
    await fx.close();
  });

  it('old versions are deleted batch.retainVersionsMs after they stopped being live', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const fleet = new Fleet(fx, 2);
    let t = Date.UTC(2025, 0, 1);
    const now = () => t;
    const run = async (full = false) => (await startBatchRun(opts(dir, { retainVersionsMs: 60_000 }), { trigger: 'cli', full }, { now })).done;
    const versions = async () => (await readdir(join(dir, 'views'))).filter((n) => n.startsWith('v')).sort();
    await fleet.append(100, DAY0);
    await run();
    await fleet.append(100, DAY0);
    await run();
    // v000001's only day was rebuilt (not recent: its minute views are day files, written again
    // whole): it is not live any more, but kept for the retention.
    expect(await versions()).toEqual(['v000001', 'v000002']);
    t += 30_000;
    await run(true);
    expect(await versions()).toEqual(['v000001', 'v000002', 'v000003']);
    t += 30_000;
    const r = await run();
    expect(r.deletedVersions).toEqual(['v000001']);
    expect(await versions()).toEqual(['v000002', 'v000003']);
    t += 60_000;
    expect((await run()).deletedVersions).toEqual(['v000002']);
    await check(dir, fleet.all, fleet.e());
    await fx.close();
  });
});
