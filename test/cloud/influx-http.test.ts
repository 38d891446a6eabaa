/**
 * The InfluxDB sink against a scripted node:http server (undici style, test/support/http-script.ts):
 * batching, gzip, auth, API detection, retries with backoff and Retry-After, no retry below 429,
 * partial failure, timeouts, close, metrics.
 */
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { Registry } from 'prom-client';
import { cloudConfigSchema } from '../../cloud/config.js';
import { createInfluxSink, type InfluxConfig, type InfluxSink } from '../../cloud/sinks/influx/index.js';
import type { ViewChanges } from '../../cloud/batch/sink.js';
import { loadConfig } from '../../shared/config.js';
import { nullLogger } from '../../shared/logger.js';
import { tempDir } from '../support/gateway.js';
import { HttpScript, answer, type ScriptedRequest, type Step } from '../support/http-script.js';
import { writeFixtureViews } from '../support/view-sink-conformance.js';

const QUICK = { retryInitialMs: 5, retryMaxMs: 20, jitter: 0.5 };

/** Answers like a healthy server: /ping with `version` (if any), /query ok, writes 204. */
const healthy = (version: string | null = '1.6.7~rc0'): Step => (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/ping') return answer.status(204, undefined, version ? { 'X-Influxdb-Version': version } : {})(req, res);
  if (path === '/query') return answer.status(200, { results: [{ statement_id: 0 }] })(req, res);
  return answer.status(204)(req, res);
};

const pathOf = (r: ScriptedRequest) => new URL(r.url, 'http://x').pathname;
const writes = (s: HttpScript) => s.requests.filter((r) => /\/write$/.test(pathOf(r)));
const lines = (r: ScriptedRequest) => (r.headers['content-encoding'] === 'gzip' ? gunzipSync(r.body) : r.body).toString('utf8').split('\n');

let server: HttpScript;
let registry: Registry;
let dir: ReturnType<typeof tempDir>;
let fixture: { changes: ViewChanges; total: number };
const sinks: InfluxSink[] = [];

function sink(influx: Partial<InfluxConfig>, tuning = {}): InfluxSink {
  const config = loadConfig(cloudConfigSchema, { env: {}, flags: { influx: { url: server.url, batchSize: 50, maxRetries: 3, ...influx } } }).influx;
  const s = createInfluxSink(config, nullLogger(), registry, { ...QUICK, ...tuning });
  sinks.push(s);
  return s;
}

const metric = async (name: string, labels: Record<string, string> = { sink: 'influx' }) => {
  const m = (await registry.getSingleMetric(name)!.get()).values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l) && !('le' in v.labels));
  return m?.value ?? 0;
};

beforeAll(async () => {
  dir = tempDir('braid-views-');
  const { changes, rows } = await writeFixtureViews(dir.path);
  fixture = { changes, total: Object.values(rows).reduce((n, r) => n + r.length, 0) };
});
afterAll(() => dir.remove());
beforeEach(async () => {
  registry = new Registry();
  server = await HttpScript.start(healthy());
});
afterEach(async () => {
  await Promise.all(sinks.splice(0).map((s) => s.close()));
  await server.close();
});

describe('v1 /write', () => {
  it('sends batches of batchSize, gzipped, with db, precision=ms and basic auth; creates the database once', async () => {
    const s = sink({ api: 'v1', database: 'my db', username: 'u', password: 'p"w' });
    await expect(s.write(fixture.changes)).resolves.toEqual({ points: fixture.total });
    await s.write(fixture.changes);
    const queries = server.requests.filter((r) => pathOf(r) === '/query');
    expect(queries).toHaveLength(1);
    expect(new URLSearchParams(queries[0].body.toString()).get('q')).toBe('CREATE DATABASE "my db"');
    const w = writes(server);
    expect(w).toHaveLength(2 * Math.ceil(fixture.total / 50));
    for (const r of w) {
      expect(r.url).toBe('/write?db=my+db&precision=ms');
      expect(r.headers).toMatchObject({ 'content-encoding': 'gzip', authorization: `Basic ${Buffer.from('u:p"w').toString('base64')}` });
    }
    const sent = w.slice(0, w.length / 2).flatMap(lines);
    expect(sent).toHaveLength(fixture.total);
    expect(lines(w[0])).toHaveLength(50);
    expect(sent.every((l) => /^(device|gateway|fleet)_1[mhd],/.test(l))).toBe(true);
    expect(await metric('braid_sink_points_total')).toBe(2 * fixture.total);
  });
});

describe('v2 /api/v2/write (influxdb-client)', () => {
  it('sends batches to org, bucket, precision=ms with the token, gzipped', async () => {
    const s = sink({ api: 'v2', token: 't0k', org: 'o', bucket: 'b' });
    await expect(s.write(fixture.changes)).resolves.toEqual({ points: fixture.total });
    const w = writes(server);
    expect(server.requests.map(pathOf).every((p) => p === '/api/v2/write')).toBe(true);
    expect(w).toHaveLength(Math.ceil(fixture.total / 50));
    expect(w[0].url).toBe('/api/v2/write?org=o&bucket=b&precision=ms');
    expect(w[0].headers).toMatchObject({ 'content-encoding': 'gzip', authorization: 'Token t0k' });
    expect(w.flatMap(lines)).toHaveLength(fixture.total);
  });
});

describe('api auto', () => {
  it.each([
    ['1.6.7~rc0', '/write', 1],
    ['1.8.10', '/api/v2/write', 1], // 1.x still keeps databases: created, then bucket = database
    ['v2.7.1', '/api/v2/write', 0],
    [null, '/api/v2/write', 0], // VictoriaMetrics
  ])('X-Influxdb-Version %j writes to %s', async (version, path, creates) => {
    await server.close();
    server = await HttpScript.start(healthy(version));
    const s = sink({ database: 'db1', bucket: 'bk', username: 'u', password: 'p' });
    await s.write(fixture.changes);
    expect(server.requests[0].url).toBe('/ping');
    expect(server.requests.filter((r) => pathOf(r) === '/query')).toHaveLength(creates);
    expect(writes(server).every((r) => pathOf(r) === path)).toBe(true);
    if (version === '1.8.10') expect(writes(server)[0]).toMatchObject({ url: expect.stringContaining('bucket=db1'), headers: { authorization: 'Token u:p' } });
  });

  it('a /ping that fails (503, socket) is retried before choosing', async () => {
    server.script(answer.status(503), answer.destroy());
    const s = sink({});
    await s.write(fixture.changes);
    expect(server.requests.slice(0, 3).map((r) => r.url)).toEqual(['/ping', '/ping', '/ping']);
    expect(writes(server).every((r) => pathOf(r) === '/write')).toBe(true);
  });
});

describe.each(['v1', 'v2'] as const)('failures on %s', (api) => {
  // v1 asks /query first (CREATE DATABASE): let it through
  const pre = (): Step[] => (api === 'v1' ? [healthy()] : []);

  it('retries 503 (honouring Retry-After, in seconds), a dropped socket and 429, then succeeds', async () => {
    server.script(...pre(), answer.status(503, 'busy', { 'Retry-After': '1' }), answer.destroy(), answer.status(429, 'slow down'));
    const s = sink({ api });
    await expect(s.write(fixture.changes)).resolves.toEqual({ points: fixture.total });
    const w = writes(server);
    expect(w).toHaveLength(3 + Math.ceil(fixture.total / 50));
    expect(w[1].at - w[0].at).toBeGreaterThanOrEqual(990);
    expect(lines(w[3])).toEqual(lines(w[0])); // the same batch, sent again
    expect(await metric('braid_sink_failures_total')).toBe(0);
  });

  it.each([400, 401, 404, 413])('does not retry %i: fails at once, not retriable', async (status) => {
    server.script(...pre(), answer.status(status, { error: 'nope' }));
    const s = sink({ api });
    const err = await s.write(fixture.changes).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'BRAID_ERR_SINK_FAILED', pointsWritten: 0 });
    expect((err as { canRetry: () => boolean }).canRetry()).toBe(false);
    expect(writes(server)).toHaveLength(1);
    expect(await metric('braid_sink_failures_total')).toBe(1);
  });

  it('a server that goes down mid-way: keeps what was written, fails retriable after maxRetries', async () => {
    server.script(...pre(), answer.status(204));
    const fail: Step = (req, res) => answer.status(pathOf(req) === '/query' ? 200 : 500, 'down')(req, res);
    for (let i = 0; i < 10; i += 1) server.script(fail);
    const s = sink({ api, maxRetries: 2 });
    const err = await s.write(fixture.changes).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'BRAID_ERR_SINK_FAILED', pointsWritten: 50 });
    expect((err as { canRetry: () => boolean }).canRetry()).toBe(true);
    expect(writes(server)).toHaveLength(1 + 3);
    expect(await metric('braid_sink_points_total')).toBe(50);
    expect(await metric('braid_sink_failures_total')).toBe(1);
  });

  it('a request that hangs times out after timeoutMs and is retried', async () => {
    server.script(...pre(), answer.hang());
    const s = sink({ api, timeoutMs: 300 });
    const called = performance.now();
    await expect(s.write(fixture.changes)).resolves.toEqual({ points: fixture.total });
    const w = writes(server);
    // The server may see the hung write some ms after the client started its timer (one busy event
    // loop runs both), so the gap is measured from a moment before the timer's start: the call, or
    // the arrival of the request before the write (v1's CREATE DATABASE), whichever is later. Less
    // 1 ms: libuv keeps its clock in whole milliseconds.
    const before = server.requests[server.requests.indexOf(w[0]) - 1];
    expect(w[1].at - Math.max(called, before?.at ?? called)).toBeGreaterThanOrEqual(299);
    expect(w[1].at - w[0].at).toBeLessThan(5000);
  });
});

describe('lifecycle and input', () => {
  it('close() is idempotent, ends a write waiting to retry, and a write after it is refused', async () => {
    server.script(answer.status(200), answer.status(503, 'busy', { 'Retry-After': '30' }));
    const s = sink({ api: 'v1' });
    const pending = s.write(fixture.changes).catch((e: unknown) => e);
    await server.waitForRequests(2);
    const t0 = Date.now();
    await Promise.all([s.close(), s.close()]);
    expect(await pending).toMatchObject({ code: 'BRAID_ERR_SINK_FAILED' });
    expect(Date.now() - t0).toBeLessThan(5000);
    await expect(s.write(fixture.changes)).rejects.toMatchObject({ code: 'BRAID_ERR_CLOSED' });
  });

  it('leaves out rows a tag cannot carry, counted by reason, and writes the rest', async () => {
    const file = join(dir.path, 'odd.parquet');
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    await conn.run(`COPY (SELECT * FROM (VALUES ('ok', 'm'), ('bad\\', 'm'), ('', 'm')) AS t(device, metric)
      CROSS JOIN (SELECT CAST(TIMESTAMP '2024-11-24 00:00:00' AS TIMESTAMP_MS) AS bucket, CAST(2 AS BIGINT) AS count, 3.0::DOUBLE AS sum,
        1.0::DOUBLE AS min, 2.0::DOUBLE AS max, 0.5::DOUBLE AS m2, 1.0::DOUBLE AS first, CAST(TIMESTAMP '2024-11-24 00:00:01' AS TIMESTAMP_MS) AS first_ts,
        2.0::DOUBLE AS last, CAST(TIMESTAMP '2024-11-24 00:00:02' AS TIMESTAMP_MS) AS last_ts)) TO '${file}' (FORMAT parquet)`);
    conn.closeSync();
    db.closeSync();
    const s = sink({ api: 'v1' });
    await expect(s.write({ ...fixture.changes, views: { device_1m: [file] } as ViewChanges['views'] })).resolves.toEqual({ points: 1 });
    expect(lines(writes(server)[0])).toEqual([
      'device_1m,device=ok,metric=m count=2i,sum=3,min=1,max=2,m2=0.5,mean=1.5,stddev=0.5,first=1,last=2,first_ts=1732406401000i,last_ts=1732406402000i 1732406400000',
    ]);
    expect(await metric('braid_sink_points_skipped_total', { sink: 'influx', reason: 'unrepresentable_tag' })).toBe(1);
    expect(await metric('braid_sink_points_skipped_total', { sink: 'influx', reason: 'empty_tag' })).toBe(1);
  });

  it('times every write in braid_sink_write_seconds', async () => {
    const s = sink({ api: 'v2' });
    await s.write(fixture.changes);
    const text = await registry.getSingleMetricAsString('braid_sink_write_seconds');
    expect(text).toContain('braid_sink_write_seconds_count{sink="influx"} 1');
  });
});
