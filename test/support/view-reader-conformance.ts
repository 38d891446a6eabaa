/**
 * The conformance suite every batch view reader runs (aedes' abstract-persistence style): random
 * master data (ties on ts across devices, duplicates across gateways, awkward device names) run
 * through the real batch job — which also feeds the store's sink, if it has one — then every view,
 * key and metric read back over whole and partial ranges must equal the rows shared/summary.ts
 * computes from the covered readings: count, min, max, first/last (value, ts, device) exact, sum
 * and m2 within 1e-9 relative. Same views in, same rows out, whatever the store.
 */
import { join } from 'node:path';
import { readManifest, startBatchRun, VIEW_NAMES, type Manifest, type ViewName, type ViewSink } from '../../cloud/batch/index.js';
import { VIEW_SPECS, type SummaryRow, type ViewKey, type ViewReader } from '../../cloud/query/index.js';
import type { Summary } from '../../shared/summary.js';
import { DAY_MS, HOUR_MS } from '../../shared/time.js';
import { tempDir } from './gateway.js';
import { coveredReadings, expectedViews, GatewaySim, MasterFixture, rng, summaryDiff, type FixtureReading } from './master-fixture.js';

const DAY0 = Date.UTC(2024, 10, 22);
/** Names that need escaping in line protocol or InfluxQL (space, comma, equals, quotes, non-ASCII, backslash). */
export const READER_DEVICES = ['d-1', 'd 2', 'd,3=x"q', "dé'4", 'd\\5', 'd6'];
export const READER_GATEWAYS = ['gw-1', 'gw 2,b'];
export const READER_METRICS = ['temp', 'rel hum'];

export interface ReaderHarness {
  /** Sinks the batch run feeds (the store's writer), none for Parquet. */
  sinks: ViewSink[];
  /** The reader under test, for the data dir the suite built. */
  reader: (dataDir: string) => Promise<ViewReader>;
}

export interface ReaderConformanceOptions {
  /** Skip the suite (the server is not installed; requireBinary() said so visibly). */
  skip?: boolean;
  /** Start what the store needs (once for the suite). */
  start: () => Promise<{ harness: ReaderHarness; stop: () => Promise<void> }>;
}

async function buildViews(dataDir: string, sinks: ViewSink[]): Promise<{ manifest: Manifest; readings: FixtureReading[] }> {
  const rand = rng(11);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)];
  const gws = READER_GATEWAYS.map((id) => new GatewaySim(id));
  const all: FixtureReading[] = [];
  for (let i = 0; i < 3000; i++) {
    const g = pick(gws);
    const metric = pick(READER_METRICS);
    const ts = DAY0 + Math.floor(rand() * ((3 * DAY_MS) / 15_000)) * 15_000;
    const r = g.reading(pick(READER_DEVICES), metric, ts, Math.round(rand() * 1000) / 10 - 20 + (metric === 'rel hum' ? 0.1 : 0));
    all.push(r);
    if (rand() < 0.1) all.push(pick(gws.filter((x) => x !== g)).reading(r.device, r.metric, r.ts, r.value + 1));
    if (rand() < 0.05) g.closeEpoch();
  }
  gws[0].closeEpoch();
  // gw 2,b's open epoch stays above E: its readings are in master/ but in no view.
  const fx = await MasterFixture.open(dataDir);
  for (let i = 0; i < all.length; i += 400) await fx.seal(all.slice(i, i + 400));
  for (const g of gws) await g.report(fx);
  await fx.close();
  const run = await (await startBatchRun({ dataDir, memoryLimit: '512MB', threads: 2, retainVersionsMs: 3600_000 }, { trigger: 'cli' }, { sinks })).done;
  for (const [name, s] of Object.entries(run.sinks)) if (s.outcome !== 'ok') throw new Error(`sink ${name}: ${JSON.stringify(s)}`);
  return { manifest: (await readManifest(join(dataDir, 'views')))!, readings: coveredReadings(all, run.watermark) };
}

function keyFor(view: ViewName, k: string): ViewKey | undefined {
  const scope = VIEW_SPECS[view].scope;
  return scope === 'device' ? { device: k } : scope === 'gateway' ? { gateway: k } : undefined;
}

/** Differences between rows read and the expected `key|metric|bucket` summaries of one key and metric. */
function rowDiffs(got: SummaryRow[], want: Map<string, Summary>, prefix: string, fromMs: number, toMs: number): string[] {
  const expected = [...want.entries()]
    .filter(([k]) => k.startsWith(prefix))
    .map(([k, s]) => ({ bucket: Number(k.slice(prefix.length)), s }))
    .filter((e) => e.bucket >= fromMs && e.bucket < toMs)
    .sort((a, b) => a.bucket - b.bucket);
  const out: string[] = [];
  if (got.map((r) => r.bucket).join() !== expected.map((e) => e.bucket).join()) {
    out.push(`${prefix}: buckets ${got.map((r) => r.bucket).slice(0, 5).join()}... != ${expected.map((e) => e.bucket).slice(0, 5).join()}... (${got.length} vs ${expected.length})`);
    return out;
  }
  got.forEach((r, i) => {
    const d = summaryDiff(r, expected[i].s);
    if (d) out.push(`${prefix}${r.bucket}: ${d}`);
  });
  return out;
}

export function viewReaderConformance(name: string, o: ReaderConformanceOptions): void {
  (o.skip ? describe.skip : describe)(`ViewReader conformance: ${name}`, () => {
    let server: Awaited<ReturnType<ReaderConformanceOptions['start']>>;
    let dir: ReturnType<typeof tempDir>;
    let reader: ViewReader;
    let manifest: Manifest;
    let want: Record<string, Map<string, Summary>>;

    beforeAll(async () => {
      server = await o.start();
      dir = tempDir('braid-reader-');
      const built = await buildViews(dir.path, server.harness.sinks);
      manifest = built.manifest;
      want = expectedViews(built.readings);
      reader = await server.harness.reader(dir.path);
    }, 120_000);

    afterAll(async () => {
      await reader?.close();
      for (const s of server?.harness.sinks ?? []) await s.close?.();
      await server?.stop();
      dir?.remove();
    });

    const keysOf = (view: ViewName): string[] => {
      const scope = VIEW_SPECS[view].scope;
      return scope === 'device' ? READER_DEVICES : scope === 'gateway' ? READER_GATEWAYS : [''];
    };

    it.each([...VIEW_NAMES])('%s: every key and metric over the whole range', async (view) => {
      const diffs: string[] = [];
      let rows = 0;
      for (const k of keysOf(view)) for (const metric of READER_METRICS) {
        const got = await reader.read({ view, key: keyFor(view, k), metric, fromMs: DAY0 - DAY_MS, toMs: DAY0 + 5 * DAY_MS, manifest });
        rows += got.length;
        diffs.push(...rowDiffs(got, want[view], `${k}|${metric}|`, -Infinity, Infinity));
      }
      expect(diffs.slice(0, 5)).toEqual([]);
      expect(rows).toBe(want[view].size);
    });

    it.each([...VIEW_NAMES])('%s: a range that cuts days keeps exactly the buckets starting in [from, to)', async (view) => {
      const fromMs = DAY0 + 13 * HOUR_MS + (VIEW_SPECS[view].widthMs < HOUR_MS ? 7 * 60_000 : 0);
      const toMs = VIEW_SPECS[view].widthMs === DAY_MS ? DAY0 + 2 * DAY_MS : DAY0 + DAY_MS + 5 * HOUR_MS;
      const diffs: string[] = [];
      for (const k of keysOf(view)) {
        const got = await reader.read({ view, key: keyFor(view, k), metric: 'temp', fromMs, toMs, manifest });
        diffs.push(...rowDiffs(got, want[view], `${k}|temp|`, fromMs, toMs));
      }
      expect(diffs.slice(0, 5)).toEqual([]);
    });

    it('an unknown key, an unknown metric or a range without views read no row', async () => {
      const all = { fromMs: DAY0, toMs: DAY0 + 3 * DAY_MS, manifest };
      expect(await reader.read({ ...all, view: 'device_1m', key: { device: "nobody' OR ''='" }, metric: 'temp' })).toEqual([]);
      expect(await reader.read({ ...all, view: 'fleet_1h', metric: 'pressure' })).toEqual([]);
      expect(await reader.read({ ...all, view: 'gateway_1d', key: { gateway: 'gw-1' }, metric: 'temp', fromMs: DAY0 + 30 * DAY_MS, toMs: DAY0 + 31 * DAY_MS })).toEqual([]);
    });

    it('a key that does not fit the view is a programming error', async () => {
      await expect(reader.read({ view: 'device_1h', key: { gateway: 'gw-1' }, metric: 'temp', fromMs: DAY0, toMs: DAY0 + DAY_MS, manifest })).rejects.toThrow(TypeError);
      await expect(reader.read({ view: 'fleet_1h', key: { device: 'd-1' }, metric: 'temp', fromMs: DAY0, toMs: DAY0 + DAY_MS, manifest })).rejects.toThrow(TypeError);
    });

    it('reads running at once all get their own rows', async () => {
      const reqs = READER_DEVICES.flatMap((d) => READER_METRICS.map((metric) => ({ view: 'device_1m' as const, key: { device: d }, metric, fromMs: DAY0, toMs: DAY0 + 3 * DAY_MS, manifest })));
      const got = await Promise.all(reqs.map((r) => reader.read(r)));
      got.forEach((rows, i) => expect(rowDiffs(rows, want.device_1m, `${reqs[i].key.device}|${reqs[i].metric}|`, -Infinity, Infinity)).toEqual([]));
    });
  });
}
