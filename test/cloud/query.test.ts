/**
 * GET /api/v1/query against brute force [INV-3]: master data run through the real batch job, speed
 * partials of epochs above and below E in a real SQLite table, every scope × agg × several steps
 * equal to shared/summary.ts over the deduplicated readings (1e-9 relative; first/last exact,
 * ties across devices included). Also: the manifest is read once per answer, CSV, the fast path.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readManifest, startBatchRun, viewPartOfPath } from '../../cloud/batch/index.js';
import { QueryLayer } from '../../cloud/query/index.js';
import { addApiKey } from '../../cloud/store/credentials.js';
import { AGGS, type Agg } from '../../shared/summary.js';
import { DAY_MS, HOUR_MS, MINUTE_MS, parseDuration } from '../../shared/time.js';
import { startTestCloud, type TestCloud } from '../support/cloud.js';
import { tempDir } from '../support/gateway.js';
import { MasterFixture } from '../support/master-fixture.js';
import {
  BATCH_OPTIONS, buildQueryFixture, DAY0, expectedPoints, TIE_DEVICE, pointDiffs, SpeedTable, speedDbFile, type QueryFixture, type TestScope,
} from '../support/query-fixture.js';

const NOW = DAY0 + 5 * DAY_MS;
/** gw-a pushed just now; gw-b an hour ago (stale); gw-c never (stale). */
const stale = (g: string) => g !== 'gw-a';

interface Env { dir: ReturnType<typeof tempDir>; table: SpeedTable; f: QueryFixture; cloud: TestCloud; layer: QueryLayer; key: string }
let env: Env;
let onBatchRead: ((m: unknown) => Promise<void>) | null = null;

beforeAll(async () => {
  const dir = tempDir('braid-query-');
  const table = await SpeedTable.open(speedDbFile(dir.path));
  const f = await buildQueryFixture(dir.path, table);
  await f.fx.close();
  await table.contact('gw-a', NOW - 1000);
  await table.contact('gw-b', NOW - HOUR_MS);
  const layer = new QueryLayer({ speed: table, now: () => NOW, hooks: { afterBatchRead: (m) => onBatchRead?.(m) } });
  const cloud = await startTestCloud(dir.path, { query: { maxBuckets: 10_000 } }, { plugins: [layer.plugin], services: [layer] });
  const key = await addApiKey(cloud.server.ctx.db.reader, 'reader', 'read');
  env = { dir, table, f, cloud, layer, key };
}, 60_000);

afterAll(async () => {
  await env?.cloud.close();
  await env?.table.close();
  env?.dir.remove();
});

async function query(params: Record<string, string | number>, headers: Record<string, string> = {}) {
  const qs = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]));
  const res = await fetch(`${env.cloud.url}/api/v1/query?${qs}`, { headers: { authorization: `Bearer ${env.key}`, ...headers } });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, body: res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : null };
}

/** braid_query_view_files_read_total by where the rows came from. */
async function filesRead(): Promise<{ series: number; cache: number; duckdb: number }> {
  const metric = env.cloud.server.ctx.registry.getSingleMetric('braid_query_view_files_read_total');
  const out = { series: 0, cache: 0, duckdb: 0 };
  for (const v of (await metric!.get()).values) out[v.labels.from as keyof typeof out] = v.value;
  return out;
}

const diff = (a: { series: number; cache: number; duckdb: number }, b: typeof a) => ({ series: b.series - a.series, cache: b.cache - a.cache, duckdb: b.duckdb - a.duckdb });

const scopeParams = (s: TestScope): Record<string, string> => ('device' in s ? { device: s.device } : 'gateway' in s ? { gateway: s.gateway } : {});

const FULL = { from: DAY0, to: DAY0 + 4 * DAY_MS };
/** Not on any step: from rounds down, to up. */
const ODD = { from: DAY0 + 5 * HOUR_MS + 17 * MINUTE_MS + 3, to: DAY0 + 2 * DAY_MS + 3 * HOUR_MS + 60_001 };

const CASES: Array<{ scope: TestScope; steps: string[] }> = [
  { scope: { device: 'd1' }, steps: ['1m', '5m', '1h', '90m', '1d', '2d'] },
  { scope: { device: 'd4' }, steps: ['1m', '1h', '1d'] },
  { scope: { gateway: 'gw-a' }, steps: ['1m', '5m', '1h', '3h', '1d', '2d'] },
  { scope: { gateway: 'gw-b' }, steps: ['1m', '1h', '1d'] },
  { scope: { gateway: 'gw-c' }, steps: ['1m', '1h', '1d'] },
  { scope: { fleet: true }, steps: ['1m', '5m', '15m', '1h', '3h', '1d', '2d'] },
];

describe('merged query equals brute force over the deduplicated readings', () => {
  it('the fixture exercises both sides, decoys below E, ties across devices and late readings', async () => {
    expect(env.f.run.published).toBe(true);
    expect(env.f.batch.length).toBeLessThan(env.f.phase1.length); // duplicates across gateways
    expect(env.f.speed.length).toBeGreaterThan(500);
    expect(env.f.speed.filter((r) => r.ts < DAY0 + 3 * DAY_MS).length).toBeGreaterThan(300); // late, into batch days
    const ts = new Map<number, Set<string>>();
    for (const r of [...env.f.batch, ...env.f.speed]) ts.set(r.ts, (ts.get(r.ts) ?? new Set()).add(r.device));
    expect([...ts.values()].filter((d) => d.size > 1).length).toBeGreaterThan(50);
    expect(env.f.speed.filter((r) => r.device === TIE_DEVICE).length).toBeGreaterThan(50);
  });

  it.each(['1h', '1m'])('first/last across a ts tie between the batch and the speed side follow (ts, device), step %s', async (step) => {
    let decided = 0;
    for (const scope of [{ fleet: true }, { gateway: 'gw-a' }, { gateway: 'gw-b' }] as TestScope[]) {
      const want = expectedPoints(env.f, 'temp', scope, parseDuration(step), FULL.from, FULL.to, stale);
      for (const agg of ['first', 'last'] as Agg[]) {
        const { body } = await query({ metric: 'temp', ...scopeParams(scope), ...FULL, step, agg });
        expect(pointDiffs(body.points, want, agg)).toEqual([]);
      }
      decided += want.filter((p) => p.summary.firstDevice === TIE_DEVICE || p.summary.lastDevice === TIE_DEVICE).length;
    }
    expect(decided).toBeGreaterThan(20);
  });

  for (const { scope, steps } of CASES) {
    for (const step of steps) {
      it(`${JSON.stringify(scope)} step ${step}: every agg, whole and odd ranges`, async () => {
        const stepMs = parseDuration(step);
        for (const range of [FULL, ODD]) {
          const fromMs = Math.floor(range.from / stepMs) * stepMs;
          const toMs = Math.ceil(range.to / stepMs) * stepMs;
          const want = expectedPoints(env.f, 'temp', scope, stepMs, fromMs, toMs, stale);
          expect(want.length).toBeGreaterThan(0);
          for (const agg of AGGS) {
            const { status, body } = await query({ metric: 'temp', ...scopeParams(scope), ...range, step, agg });
            expect(status).toBe(200);
            expect(body).toMatchObject({ metric: 'temp', scope, step, agg, manifest: { version: env.f.run.version, watermark: env.f.watermark } });
            expect(pointDiffs(body.points, want, agg).slice(0, 5)).toEqual([]);
          }
        }
      });
    }
  }

  it('another metric (values near 1e6: stddev from m2, not from sums of squares)', async () => {
    for (const [scope, step] of [[{ device: 'd2' }, '1h'], [{ fleet: true }, '1d']] as Array<[TestScope, string]>) {
      const stepMs = parseDuration(step);
      const want = expectedPoints(env.f, 'hum', scope, stepMs, FULL.from, FULL.to, stale);
      for (const agg of ['stddev', 'avg', 'first', 'last'] as Agg[]) {
        const { body } = await query({ metric: 'hum', ...scopeParams(scope), ...FULL, step, agg });
        expect(pointDiffs(body.points, want, agg)).toEqual([]);
      }
    }
  });

  it('ISO 8601 bounds, defaults step=1h and agg=avg, and an unknown device answers no points', async () => {
    const { body } = await query({ metric: 'temp', gateway: 'gw-a', from: '2024-11-22T00:00:00Z', to: '2024-11-23T00:00:00.000+00:00' });
    expect(body).toMatchObject({ step: '1h', agg: 'avg' });
    expect(pointDiffs(body.points, expectedPoints(env.f, 'temp', { gateway: 'gw-a' }, HOUR_MS, DAY0, DAY0 + DAY_MS, stale), 'avg')).toEqual([]);
    expect((await query({ metric: 'temp', device: 'nobody', ...FULL, step: '1m' })).body.points).toEqual([]);
  });
});

describe('one manifest per answer', () => {
  it('a batch run publishing between the batch read and the speed read: the answer keeps to one version', async () => {
    const { f } = env;
    // Phase 2's closed epochs go to master, so the next run covers some of the speed table's partials.
    const fx = await MasterFixture.open(env.dir.path);
    const closed = new Set(f.gateways.flatMap((g) => g.closed.map((c) => `${g.id}|${c.epoch}`)));
    const newlyCovered = f.speed.filter((r) => closed.has(`${r.gateway}|${r.epoch}`));
    expect(newlyCovered.length).toBeGreaterThan(20);
    await fx.seal(newlyCovered);
    for (const g of f.gateways) await g.report(fx);
    await fx.close();

    const seen: Array<{ version: number; watermark: Record<string, number> }> = [];
    let published: number | null = null;
    onBatchRead = async (m) => {
      const manifest = m as { version: number; watermark: Record<string, number> };
      seen.push({ version: manifest.version, watermark: manifest.watermark });
      if (published === null) {
        const run = await (await startBatchRun(BATCH_OPTIONS(env.dir.path), { trigger: 'cli' })).done;
        published = run.version;
      }
    };
    env.table.calls.length = 0;
    try {
      const { body } = await query({ metric: 'temp', ...FULL, step: '1h', agg: 'sum' });
      expect(published).toBe(f.run.version + 1);
      // Each attempt's speed read used the E of the manifest its batch rows came from.
      expect(env.table.calls.map((c) => c.watermark)).toEqual(seen.map((s) => s.watermark));
      expect(seen.map((s) => s.version)).toEqual([f.run.version, published]);
      expect(body.manifest.version).toBe(published);
      // Exact for the new version: the newly covered readings count once, on the batch side now.
      const batch = [...f.batch, ...newlyCovered];
      const speed = f.speed.filter((r) => !closed.has(`${r.gateway}|${r.epoch}`));
      const want = expectedPoints({ batch, speed }, 'temp', { fleet: true }, HOUR_MS, FULL.from, FULL.to, stale);
      expect(pointDiffs(body.points, want, 'sum')).toEqual([]);
    } finally {
      onBatchRead = null;
    }
    // The cloud keeps answering from the new version, in one attempt.
    env.table.calls.length = 0;
    const again = await query({ metric: 'temp', device: 'd1', ...FULL, step: '1d', agg: 'count' });
    expect(again.body.manifest.version).toBe(published);
    expect(env.table.calls).toHaveLength(1);
    // Later tests compare with the fixture: move it to the new version.
    f.batch.push(...newlyCovered);
    f.speed.splice(0, f.speed.length, ...f.speed.filter((r) => !closed.has(`${r.gateway}|${r.epoch}`)));
    f.watermark = (await readManifest(join(env.dir.path, 'views')))!.watermark;
    f.run = { ...f.run, version: published! };
  }, 60_000);
});

describe('CSV and the fast path', () => {
  it('Accept: text/csv gives t,value,count,batch,speed,provisional with a header, the same points', async () => {
    const params = { metric: 'temp', gateway: 'gw-b', ...FULL, step: '1d', agg: 'max' };
    const json = (await query(params)).body;
    const csv = await query(params, { accept: 'text/csv' });
    expect(csv.status).toBe(200);
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
    const lines = csv.text.trimEnd().split('\n');
    expect(lines[0]).toBe('t,value,count,batch,speed,provisional');
    expect(lines.slice(1)).toEqual(json.points.map((p: Record<string, unknown>) => `${p.t},${p.value},${p.count},${p.batch},${p.speed},${p.provisional}`));
    expect(json.points.some((p: { provisional: boolean }) => p.provisional)).toBe(true);
    // JSON stays the answer for browsers and for clients that prefer it
    expect((await query(params, { accept: 'application/json, text/csv;q=0.5' })).headers.get('content-type')).toMatch(/json/);
    expect((await query(params, { accept: '*/*' })).headers.get('content-type')).toMatch(/json/);
  });

  it('a day of one device at 1m, asked again, is answered from memory: no view file read through DuckDB', async () => {
    // How fast is bench:query's business (beside InfluxDB, in one run); here: where the rows come from.
    const params = { metric: 'temp', device: 'd3', from: DAY0 + DAY_MS, to: DAY0 + 2 * DAY_MS, step: '1m', agg: 'avg' };
    const before = await filesRead();
    const first = await query(params);
    expect(first.status).toBe(200);
    expect(first.body.points.length).toBeGreaterThan(100);
    const cold = diff(before, await filesRead());
    const perQuery = cold.series + cold.cache + cold.duckdb;
    expect(perQuery).toBeGreaterThan(0);
    const warmFrom = await filesRead();
    for (let i = 0; i < 20; i++) expect((await query(params)).body).toEqual(first.body);
    const warm = diff(warmFrom, await filesRead());
    expect({ ...warm, files: warm.series + warm.cache }).toEqual({ ...warm, duckdb: 0, files: 20 * perQuery });
  });
});

describe('a manifest of an earlier version, without gateway_1m and fleet_1m', () => {
  it('refuses minute steps of a gateway or the fleet with 409 naming the view until a batch run, which rebuilds every day, publishes them', async () => {
    const { f } = env;
    const viewsDir = join(env.dir.path, 'views');
    const live = JSON.parse(await readFile(join(viewsDir, 'manifest.json'), 'utf8')) as { version: number; views: Record<string, string[]> };
    const { gateway_1m: g1m, fleet_1m: f1m, ...older } = live.views;
    expect(g1m.length).toBeGreaterThan(0);
    expect(f1m.length).toBeGreaterThan(0);
    // As an earlier version wrote it: the same views but those two (replaced by rename, as the batch does).
    await writeFile(join(viewsDir, 'manifest.json.tmp'), JSON.stringify({ ...live, views: older }));
    await rename(join(viewsDir, 'manifest.json.tmp'), join(viewsDir, 'manifest.json'));

    const refusals = async () => (await env.cloud.server.ctx.registry.getSingleMetric('braid_query_rejected_total')!.get()).values
      .find((v) => v.labels.code === 'BRAID_ERR_VIEW_NOT_PUBLISHED')?.value ?? 0;
    const counted = await refusals();
    for (const [params, view] of [[{ gateway: 'gw-a', step: '5m' }, 'gateway_1m'], [{ step: '1m' }, 'fleet_1m'], [{ step: '90m' }, 'fleet_1m']] as const) {
      const r = await query({ metric: 'temp', ...FULL, agg: 'sum', ...params });
      expect(r).toMatchObject({ status: 409, body: { code: 'BRAID_ERR_VIEW_NOT_PUBLISHED' } });
      expect(r.body.message).toMatch(new RegExp(`^step: '${params.step}' needs the view ${view}, which the live manifest \\(version ${live.version}\\) does not have`));
    }
    expect(await refusals()).toBe(counted + 3);
    // Hours and days of every scope, and a device's minutes, answer as before.
    for (const [scope, step] of [[{ gateway: 'gw-a' }, '1h'], [{ fleet: true }, '1d'], [{ device: 'd1' }, '5m']] as Array<[TestScope, string]>) {
      const r = await query({ metric: 'temp', ...scopeParams(scope), ...FULL, step, agg: 'sum' });
      expect(r.status).toBe(200);
      expect(pointDiffs(r.body.points, expectedPoints(f, 'temp', scope, parseDuration(step), FULL.from, FULL.to, stale), 'sum')).toEqual([]);
    }

    // The next run, though incremental with nothing new, rebuilds every day: the new views cover all of them.
    const run = await (await startBatchRun(BATCH_OPTIONS(env.dir.path), { trigger: 'cli' })).done;
    expect(run).toMatchObject({ kind: 'full', published: true, version: live.version + 1, watermark: f.watermark });
    const m = (await readManifest(viewsDir))!;
    expect(m.missing).toBeUndefined();
    expect(JSON.parse(await readFile(join(viewsDir, 'manifest.json'), 'utf8'))).not.toHaveProperty('missing');
    const days = (paths: string[]) => [...new Set(paths.map((p) => viewPartOfPath(p)!.day))];
    expect(days(m.views.gateway_1m)).toEqual(days(m.views.gateway_1h));
    expect(days(m.views.fleet_1m)).toEqual(days(m.views.fleet_1h));
    expect(days(m.views.fleet_1h)).toHaveLength(m.views.fleet_1h.length);
    f.run = { ...f.run, version: run.version };
    for (const [scope, step] of [[{ gateway: 'gw-a' }, '5m'], [{ fleet: true }, '1m']] as Array<[TestScope, string]>) {
      for (const agg of ['sum', 'first', 'stddev'] as Agg[]) {
        const r = await query({ metric: 'temp', ...scopeParams(scope), ...FULL, step, agg });
        expect(r).toMatchObject({ status: 200, body: { manifest: { version: run.version } } });
        expect(pointDiffs(r.body.points, expectedPoints(f, 'temp', scope, parseDuration(step), FULL.from, FULL.to, stale), agg)).toEqual([]);
      }
    }
  }, 60_000);
});
