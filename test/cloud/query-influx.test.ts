/**
 * query.viewStore = 'influx': the batch job feeds a real influxd 1.6.7 through the real InfluxDB
 * sink, and the merged query reads its rows with InfluxQL. Its answers equal brute force and the
 * Parquet view store's, byte for byte; while InfluxDB does not hold the live manifest's version
 * (a run without the sink, a failing sink, a server down) the query answers from Parquet, exactly.
 */
import { Registry } from 'prom-client';
import { startBatchRun } from '../../cloud/batch/index.js';
import { cloudConfigSchema } from '../../cloud/config.js';
import { QueryLayer } from '../../cloud/query/index.js';
import { createInfluxSink, type InfluxConfig } from '../../cloud/sinks/influx/index.js';
import { addApiKey } from '../../cloud/store/credentials.js';
import { loadConfig } from '../../shared/config.js';
import { nullLogger } from '../../shared/logger.js';
import { AGGS } from '../../shared/summary.js';
import { DAY_MS, HOUR_MS, parseDuration } from '../../shared/time.js';
import { startTestCloud, type TestCloud } from '../support/cloud.js';
import { requireBinary, tempDir } from '../support/gateway.js';
import { startInfluxd, type TestServer } from '../support/influx.js';
import { MasterFixture } from '../support/master-fixture.js';
import {
  BATCH_OPTIONS, buildQueryFixture, DAY0, expectedPoints, pointDiffs, SpeedTable, speedDbFile, type QueryFixture, type TestScope,
} from '../support/query-fixture.js';

const haveInfluxd = requireBinary('influxd', 'influxdb');
const NOW = DAY0 + 5 * DAY_MS;
const stale = (g: string) => g !== 'gw-a';
const FULL = { from: DAY0, to: DAY0 + 4 * DAY_MS };

(haveInfluxd ? describe : describe.skip)('query.viewStore = influx (influxd 1.6.7)', () => {
  let influx: TestServer;
  let dir: ReturnType<typeof tempDir>;
  let table: SpeedTable;
  let f: QueryFixture;
  let clouds: { influx: TestCloud; parquet: TestCloud };
  let key: string;
  let registry: Registry;
  const influxConfig = (url: string): Partial<InfluxConfig> => ({ url, api: 'auto', batchSize: 1000, maxRetries: 0 });
  const sink = () => createInfluxSink(loadConfig(cloudConfigSchema, { env: {}, flags: { influx: influxConfig(influx.url) } }).influx, nullLogger(), new Registry(), { retryInitialMs: 5, retryMaxMs: 20 });

  beforeAll(async () => {
    influx = await startInfluxd();
    dir = tempDir('braid-query-influx-');
    table = await SpeedTable.open(speedDbFile(dir.path));
    const s = sink();
    f = await buildQueryFixture(dir.path, table, { sinks: [s], n1: 2000, n2: 500 });
    await s.close();
    await f.fx.close();
    await table.contact('gw-a', NOW - 1000);
    registry = new Registry();
    const layer = () => new QueryLayer({ speed: table, now: () => NOW });
    const start = async (viewStore: 'influx' | 'parquet', reg?: Registry) => {
      const l = layer();
      return startTestCloud(dir.path, { query: { viewStore, maxBuckets: 10_000 }, influx: influxConfig(influx.url) }, { plugins: [l.plugin], services: [l], registry: reg });
    };
    clouds = { influx: await start('influx', registry), parquet: await start('parquet') };
    key = await addApiKey(clouds.influx.server.ctx.db.reader, 'reader', 'read');
  }, 120_000);

  afterAll(async () => {
    await clouds?.influx.close();
    await clouds?.parquet.close();
    await table?.close();
    await influx?.stop();
    dir?.remove();
  });

  async function query(cloud: TestCloud, params: Record<string, string | number>) {
    const qs = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]));
    const res = await fetch(`${cloud.url}/api/v1/query?${qs}`, { headers: { authorization: `Bearer ${key}` } });
    expect(res.status).toBe(200);
    return res.json() as Promise<{ manifest: { version: number }; points: Array<{ t: string; value: number | null; count: number; batch: number; speed: number; provisional: boolean }> }>;
  }

  const fallbacks = async (reason: string): Promise<number> => {
    const m = await registry.getSingleMetric('braid_query_view_fallbacks_total')?.get();
    return m?.values.find((v) => v.labels.reason === reason)?.value ?? 0;
  };

  const CASES: Array<[TestScope, string]> = [
    [{ device: 'd1' }, '1m'], [{ device: 'd2' }, '1h'], [{ device: 'd0' }, '1d'],
    [{ gateway: 'gw-a' }, '1h'], [{ gateway: 'gw-c' }, '1d'], [{ fleet: true }, '1h'], [{ fleet: true }, '2d'],
  ];
  const scopeParams = (s: TestScope): Record<string, string> => ('device' in s ? { device: s.device } : 'gateway' in s ? { gateway: s.gateway } : {});

  async function sameAsParquetAndBruteForce(): Promise<void> {
    for (const [scope, step] of CASES) {
      const want = expectedPoints(f, 'temp', scope, parseDuration(step), FULL.from, FULL.to, stale);
      for (const agg of AGGS) {
        const params = { metric: 'temp', ...scopeParams(scope), ...FULL, step, agg };
        const [a, b] = await Promise.all([query(clouds.influx, params), query(clouds.parquet, params)]);
        expect(a).toEqual(b);
        expect(pointDiffs(a.points, want, agg)).toEqual([]);
      }
    }
  }

  it('answers from InfluxDB: equal to the Parquet store and to brute force, for every agg', async () => {
    await sameAsParquetAndBruteForce();
    expect(await fallbacks('behind')).toBe(0);
    expect(await fallbacks('error')).toBe(0);
  });

  it('a run the sink has not taken: answers from Parquet for the new version, then from InfluxDB once the sink has it', async () => {
    // Phase 2's closed epochs are sealed: the next run covers them.
    const fx = await MasterFixture.open(dir.path);
    const closed = new Set(f.gateways.flatMap((g) => g.closed.map((c) => `${g.id}|${c.epoch}`)));
    const covered = f.speed.filter((r) => closed.has(`${r.gateway}|${r.epoch}`));
    expect(covered.length).toBeGreaterThan(10);
    await fx.seal(covered);
    for (const g of f.gateways) await g.report(fx);
    await fx.close();
    const run = await (await startBatchRun(BATCH_OPTIONS(dir.path), { trigger: 'cli' })).done; // no sink
    f.batch.push(...covered);
    f.speed.splice(0, f.speed.length, ...f.speed.filter((r) => !closed.has(`${r.gateway}|${r.epoch}`)));

    const before = await fallbacks('behind');
    await sameAsParquetAndBruteForce();
    expect(await fallbacks('behind')).toBeGreaterThan(before);
    expect((await query(clouds.influx, { metric: 'temp', ...FULL, step: '1d' })).manifest.version).toBe(run.version);

    // The next run with the sink hands it the days it missed; InfluxDB serves again.
    const s = sink();
    const next = await (await startBatchRun({ ...BATCH_OPTIONS(dir.path) }, { trigger: 'cli', full: true }, { sinks: [s] })).done;
    await s.close();
    expect(next.sinks.influx?.outcome).toBe('ok');
    const behind = await fallbacks('behind');
    await sameAsParquetAndBruteForce();
    expect(await fallbacks('behind')).toBe(behind);
  }, 60_000);

  it('InfluxDB down: the answer comes from Parquet, exact, and the fallback is counted', async () => {
    await influx.stop();
    const before = await fallbacks('error');
    const want = expectedPoints(f, 'temp', { fleet: true }, HOUR_MS, FULL.from, FULL.to, stale);
    const a = await query(clouds.influx, { metric: 'temp', ...FULL, step: '1h', agg: 'stddev' });
    expect(pointDiffs(a.points, want, 'stddev')).toEqual([]);
    expect(await fallbacks('error')).toBe(before + 1);
  }, 30_000);
});
