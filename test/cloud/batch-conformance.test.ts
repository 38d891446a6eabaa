/**
 * Batch conformance [DESIGN "The algebra"]: on random master data (ties on ts across devices,
 * duplicates across gateways, several epochs, some of them above E), every row of every view
 * equals the summary shared/summary.ts computes from the deduplicated readings with epoch <= E.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startBatchRun, type BatchJobOptions } from '../../cloud/batch/index.js';
import { changedSpans } from '../../cloud/batch/state.js';
import { DuckDBInstance } from '@duckdb/node-api';
import { nextViews, emptyViews, readManifest, type Manifest } from '../../cloud/batch/manifest.js';
import { viewFileName, viewPartOfPath } from '../../cloud/batch/files.js';
import type { ViewName } from '../../cloud/batch/sink.js';
import { readingsSql } from '../../cloud/batch/sql.js';
import { bucketStart, DAY_MS } from '../../shared/time.js';
import { VIEW_SPECS } from '../../cloud/query/views/types.js';
import {
  coveredReadings, expectedViews, GatewaySim, MasterFixture, readViews, rng, summaryDiff, viewDiffs, type FixtureReading,
} from '../support/master-fixture.js';

const DAY0 = Date.UTC(2024, 10, 22);
const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'braid-batch-'));
  dirs.push(d);
  return d;
}

export function jobOptions(dataDir: string): BatchJobOptions {
  return { dataDir, memoryLimit: '512MB', threads: 2, retainVersionsMs: 3600_000 };
}

/** The gateways close their epochs, the rows are sealed, each gateway reports, and a full batch runs on `dir`. */
async function sealAndRun(dir: string, fx: MasterFixture, gws: GatewaySim[], rows: FixtureReading[]) {
  for (const g of gws) g.closeEpoch();
  await fx.seal(rows);
  for (const g of gws) await g.report(fx);
  await fx.close();
  return (await startBatchRun(jobOptions(dir), { trigger: 'cli' })).done;
}

/**
 * Random readings from three gateways over three days: gw-b's epoch `hole` is not sealed (so E[gw-b]
 * stops before it while its later epochs are in master), gw-c's last epoch is never closed.
 */
async function randomFleet(fx: MasterFixture, seed: number, n: number) {
  const rand = rng(seed);
  const gws = ['gw-a', 'gw-b', 'gw-c'].map((id) => new GatewaySim(id));
  const devices = ['d1', 'd2', 'd3', 'd4', 'd5', 'd6'];
  const metrics = ['temp', 'hum', 'pressure'];
  const all: FixtureReading[] = [];
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)];
  for (let i = 0; i < n; i++) {
    const g = pick(gws);
    const metric = pick(metrics);
    // A 15 s grid over 3 days: many readings of different devices share a ts.
    const ts = DAY0 + Math.floor(rand() * ((3 * DAY_MS) / 15_000)) * 15_000;
    const value = metric === 'pressure' ? 101_325 + rand() * 10 : Math.round(rand() * 1000) / 10 - 20;
    const r = g.reading(pick(devices), metric, ts, value);
    all.push(r);
    // The same identity delivered by another gateway too (a device that moved), another value.
    if (rand() < 0.1) all.push(pick(gws.filter((x) => x !== g)).reading(r.device, r.metric, r.ts, r.value + 1));
    if (rand() < 0.05) g.closeEpoch();
  }
  gws[0].closeEpoch();
  gws[1].closeEpoch();
  const hole = Math.max(2, Math.floor(gws[1].currentEpoch / 2));
  const sealed = all.filter((r) => !(r.gateway === 'gw-b' && r.epoch === hole));
  for (let i = 0; i < sealed.length;) {
    const size = 50 + Math.floor(rand() * 400);
    await fx.seal(sealed.slice(i, i + size));
    i += size;
  }
  for (const g of gws) await g.report(fx);
  const e = { 'gw-a': gws[0].currentEpoch - 1, 'gw-b': hole - 1, 'gw-c': gws[2].currentEpoch - 1 };
  return { all, e };
}

describe('batch views conformance with shared/summary.ts', () => {
  it.each([1, 2, 3])('seed %i: every row of every view equals the reference summary', async (seed) => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const { all, e } = await randomFleet(fx, seed, 4000);
    await fx.close();

    const run = await startBatchRun(jobOptions(dir), { trigger: 'cli' });
    const result = await run.done;
    expect(result.watermark).toEqual(e);
    expect(result.kind).toBe('full');

    const covered = coveredReadings(all, e);
    // The data exercises what it should: readings above E, duplicates across gateways.
    expect(all.filter((r) => r.epoch > e[r.gateway as keyof typeof e]).length).toBeGreaterThan(50);
    expect(covered.length).toBeLessThan(all.filter((r) => r.epoch <= e[r.gateway as keyof typeof e]).length);
    expect(result.readings).toBe(covered.length);

    const diffs = viewDiffs(await readViews(dir), expectedViews(covered));
    expect(diffs.slice(0, 10)).toEqual([]);
  });

  it('m2 of values large against their spread (1e9, 3.3e7, 1e12 ± 500) is within 1e-9 of the exact value', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const rand = rng(11);
    const gws = [new GatewaySim('gw-a'), new GatewaySim('gw-b')];
    const all: FixtureReading[] = [];
    // Counters and uptimes: a large value plus noise of a few hundred (3 decimals), every 5-14 s for three hours.
    for (const [device, base] of [['d1', 1e9], ['d2', 3.3e7], ['d3', 1e12]] as const) {
      for (let ts = DAY0 + 3_600_000; ts < DAY0 + 4 * 3_600_000; ts += 5_000 + Math.floor(rand() * 10) * 1_000) {
        const g = gws[Math.floor(rand() * 2)];
        const r = g.reading(device, 'energy', ts, base + Math.round(rand() * 1e6) / 1e3);
        all.push(r);
        if (rand() < 0.05) all.push(gws.find((x) => x !== g)!.reading(device, 'energy', ts, r.value + 1));
      }
    }
    const result = await sealAndRun(dir, fx, gws, all);
    const covered = coveredReadings(all, result.watermark);
    expect(result.readings).toBe(covered.length);
    const got = await readViews(dir);
    // Every column but m2 equals the reference; m2 is held to the exact value (the reference's own
    // pairwise means round at 1e12 by more than 1e-9 of these spreads).
    const want = expectedViews(covered);
    const exact = exactM2(covered);
    for (const view of Object.keys(want)) for (const [k, s] of want[view]) s.m2 = exact[view].get(k)!;
    const diffs = viewDiffs(got, want);
    expect(diffs.slice(0, 10)).toEqual([]);
  });

  it('ties on ts across devices pick first/last by (ts, device); duplicates keep the lowest (gateway, seq)', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const a = new GatewaySim('gw-a');
    const b = new GatewaySim('gw-b');
    const t = DAY0 + 3_600_000;
    const rows = [
      b.reading('d2', 'temp', t, 2), // same ts as d1: d1 is first
      a.reading('d9', 'temp', t + 59_000, 9),
      b.reading('d1', 'temp', t, 1),
      a.reading('d3', 'temp', t + 59_000, 3), // same ts as d9: d9 is last
      a.reading('d1', 'temp', t, 100), // identity of b's d1 reading: gw-a < gw-b, this one wins
      b.reading('d4', 'temp', t + 59_000, 4), // same ts as gw-a's last (d9): the fleet's last across gateways is d9
    ];
    await sealAndRun(dir, fx, [a, b], rows);
    const views = await readViews(dir);
    const fleet = views.fleet_1h.get(`|temp|${t}`)!.summary;
    expect(fleet).toMatchObject({ count: 5, first: 100, firstTs: t, last: 9, lastTs: t + 59_000, min: 2, max: 100 });
    // first_device/last_device name the device of the reading picked, across the tie [docs/serving.md]
    expect(fleet).toMatchObject({ firstDevice: 'd1', lastDevice: 'd9' });
    // fleet_1m merges the gateways' minutes: both ties are between gw-a's and gw-b's rows (d1 vs d2 first, d9 vs d4 last).
    // Different merge trees (gateway minutes vs device minutes): sum and m2 to 1e-12 relative [INV-4], the rest exact.
    expect(summaryDiff(views.fleet_1m.get(`|temp|${t}`)!.summary, fleet, 1e-12)).toBeNull();
    expect(summaryDiff(views.gateway_1m.get(`gw-a|temp|${t}`)!.summary, views.gateway_1h.get(`gw-a|temp|${t}`)!.summary, 1e-12)).toBeNull();
    expect(views.fleet_1d.get(`|temp|${DAY0}`)!.summary).toMatchObject({ first: 100, firstDevice: 'd1', last: 9, lastDevice: 'd9' });
    expect(views.gateway_1h.get(`gw-a|temp|${t}`)!.summary).toMatchObject({ count: 3, first: 100, last: 9, firstDevice: 'd1', lastDevice: 'd9' });
    expect(views.gateway_1d.get(`gw-a|temp|${DAY0}`)!.summary).toMatchObject({ firstDevice: 'd1', lastDevice: 'd9' });
    expect(views.gateway_1h.get(`gw-b|temp|${t}`)!.summary).toMatchObject({ count: 2, first: 2, last: 4, firstDevice: 'd2', lastDevice: 'd4' });
    expect(views.device_1m.get(`d1|temp|${t}`)!.summary).toMatchObject({ count: 1, sum: 100 });
  });

  it('a gateway that delivers one identity twice: its lower seq wins, under a lower gateway\'s copy', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const a = new GatewaySim('gw-a');
    const b = new GatewaySim('gw-b');
    const t = DAY0 + 7_200_000;
    const rows = [
      b.reading('d1', 'temp', t, 30), // gw-b seq 1
      b.reading('d1', 'temp', t, 40), // gw-b seq 2: the same identity again
      b.reading('d2', 'temp', t + 1_000, 7), // gw-b seq 3
      b.reading('d2', 'temp', t + 1_000, 8), // gw-b seq 4: seq 3 wins
      a.reading('d1', 'temp', t, 20), // gw-a seq 1: gw-a < gw-b, this one wins for d1
      a.reading('d1', 'temp', t, 10), // gw-a seq 2
    ];
    await sealAndRun(dir, fx, [a, b], rows);
    const views = await readViews(dir);
    expect(views.device_1m.get(`d1|temp|${t}`)!.summary).toMatchObject({ count: 1, sum: 20, first: 20 });
    expect(views.device_1m.get(`d2|temp|${t}`)!.summary).toMatchObject({ count: 1, sum: 7, first: 7 });
    expect(views.gateway_1m.get(`gw-a|temp|${t}`)!.summary).toMatchObject({ count: 1, sum: 20 });
    expect(views.gateway_1m.get(`gw-b|temp|${t}`)!.summary).toMatchObject({ count: 1, sum: 7 });
  });
});

describe('view columns', () => {
  it('gateway and fleet views add first_device and last_device after the summary columns; device views do not', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const a = new GatewaySim('gw-a');
    await fx.seal([a.reading('d1', 'temp', DAY0 + 5_000, 1), a.reading('d2', 'temp', DAY0 + 5_000, 2)]);
    a.closeEpoch();
    await a.report(fx);
    await fx.close();
    await (await startBatchRun(jobOptions(dir), { trigger: 'cli' })).done;
    const manifest = await readManifest(join(dir, 'views'));
    const inst = await DuckDBInstance.create(':memory:');
    const conn = await inst.connect();
    try {
      const columns = async (view: ViewName) => (await conn.runAndReadAll(
        `DESCRIBE SELECT * FROM read_parquet('${join(dir, 'views', manifest!.views[view][0])}')`)).getRowObjects().map((r) => `${String(r.column_name)}:${String(r.column_type)}`);
      const summary = ['count:BIGINT', 'sum:DOUBLE', 'min:DOUBLE', 'max:DOUBLE', 'm2:DOUBLE', 'first:DOUBLE', 'first_ts:TIMESTAMP', 'last:DOUBLE', 'last_ts:TIMESTAMP'];
      const devices = ['first_device:VARCHAR', 'last_device:VARCHAR'];
      for (const v of ['device_1m', 'device_1h', 'device_1d'] as const) expect(await columns(v)).toEqual(['device:VARCHAR', 'metric:VARCHAR', 'bucket:TIMESTAMP', ...summary]);
      for (const v of ['gateway_1m', 'gateway_1h', 'gateway_1d'] as const) expect(await columns(v)).toEqual(['gateway:VARCHAR', 'metric:VARCHAR', 'bucket:TIMESTAMP', ...summary, ...devices]);
      for (const v of ['fleet_1m', 'fleet_1h', 'fleet_1d'] as const) expect(await columns(v)).toEqual(['metric:VARCHAR', 'bucket:TIMESTAMP', ...summary, ...devices]);
    } finally {
      conn.closeSync();
      inst.closeSync();
    }
  });
});

describe('batch pure parts', () => {
  it('readingsSql is null when no gateway has a covered epoch', () => {
    expect(readingsSql('m', {})).toBeNull();
    expect(readingsSql('m', { g: 0 })).toBeNull();
    expect(readingsSql('m', { "g'1": 3 })).toContain("('g''1', 3)");
  });

  it('changedSpans covers new epochs, new gateways and vanished ones', () => {
    expect(changedSpans({ a: 3, b: 5, c: 2 }, { a: 7, b: 5, d: 1 })).toEqual([
      { gateway: 'a', lo: 3, hi: 7 }, { gateway: 'c', lo: 0, hi: 2 }, { gateway: 'd', lo: 0, hi: 1 },
    ]);
  });

  it('nextViews keeps the previous files of the days not rebuilt and drops rebuilt days left empty', () => {
    const prev: Manifest = {
      version: 3, createdAt: '', watermark: {},
      views: {
        ...emptyViews(),
        device_1h: ['v000002/device_1h/day=2024-11-20.parquet', 'v000003/device_1h/day=2024-11-21.parquet'],
        device_1m: ['v000002/device_1m/day=2024-11-20-hour=23.parquet', 'v000003/device_1m/day=2024-11-21-hour=00.parquet', 'v000003/device_1m/day=2024-11-21-hour=01.parquet'],
      },
    };
    const built = Object.fromEntries(Object.keys(emptyViews()).map((v) => [v, new Map<string, string[]>()])) as never as Parameters<typeof nextViews>[2];
    built.device_1h.set('2024-11-19', ['v000004/device_1h/day=2024-11-19.parquet']);
    // An incremental day: hour 01 written again, hour 00 kept from version 3 (job.ts lists both).
    built.device_1m.set('2024-11-21', ['v000004/device_1m/day=2024-11-21-hour=01.parquet', 'v000003/device_1m/day=2024-11-21-hour=00.parquet']);
    built.device_1m.set('2024-11-19', ['v000004/device_1m/day=2024-11-19-hour=10.parquet', 'v000004/device_1m/day=2024-11-19-hour=09.parquet']);
    const next = nextViews(prev, new Set(['2024-11-19', '2024-11-21']), built);
    expect(next.device_1h).toEqual(['v000004/device_1h/day=2024-11-19.parquet', 'v000002/device_1h/day=2024-11-20.parquet']);
    // In time order: by day, a day's hour files by hour, whatever version wrote them.
    expect(next.device_1m).toEqual([
      'v000004/device_1m/day=2024-11-19-hour=09.parquet', 'v000004/device_1m/day=2024-11-19-hour=10.parquet',
      'v000002/device_1m/day=2024-11-20-hour=23.parquet',
      'v000003/device_1m/day=2024-11-21-hour=00.parquet', 'v000004/device_1m/day=2024-11-21-hour=01.parquet',
    ]);
  });

  it('view file paths: a day file, or an hour file of a minute view', () => {
    expect(viewFileName('device_1h', '2024-11-21', null)).toBe('device_1h/day=2024-11-21.parquet');
    expect(viewFileName('fleet_1m', '2024-11-21', 7)).toBe('fleet_1m/day=2024-11-21-hour=07.parquet');
    expect(viewPartOfPath('v000004/fleet_1m/day=2024-11-21-hour=07.parquet')).toEqual({ day: '2024-11-21', hour: 7 });
    expect(viewPartOfPath('v000004/device_1h/day=2024-11-21.parquet')).toEqual({ day: '2024-11-21', hour: null });
    expect(viewPartOfPath('v000004/device_1m/day=2024-11-21-hour=24.parquet')).toBeNull();
    expect(viewPartOfPath('v000004/device_1m/day=2024-11-21/part-0.parquet')).toBeNull();
  });
});

/** The exact m2 of every view row (rational arithmetic on the doubles: each value times 2^30 is an integer here). */
function exactM2(readings: FixtureReading[]): Record<string, Map<string, number>> {
  const out: Record<string, Map<string, number>> = {};
  for (const [view, spec] of Object.entries(VIEW_SPECS)) {
    const acc = new Map<string, { n: bigint; s: bigint; q: bigint }>();
    for (const r of readings) {
      const key = spec.scope === 'device' ? r.device : spec.scope === 'gateway' ? r.gateway : '';
      const k = `${key}|${r.metric}|${bucketStart(r.ts, spec.widthMs)}`;
      const v = BigInt(r.value * 2 ** 30);
      if (Number(v) !== r.value * 2 ** 30) throw new Error(`${r.value} is not a multiple of 2^-30`);
      const a = acc.get(k) ?? { n: 0n, s: 0n, q: 0n };
      acc.set(k, { n: a.n + 1n, s: a.s + v, q: a.q + v * v });
    }
    out[view] = new Map([...acc].map(([k, a]) => [k, Number(a.n * a.q - a.s * a.s) / Number(a.n) / 2 ** 60]));
  }
  return out;
}
