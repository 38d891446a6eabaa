/**
 * Cluster mode with PostgreSQL out of reach: a real cloud (createCloud) on a real PostgreSQL 15
 * reached through a TCP proxy (test/support/tcp-proxy.ts) that the test cuts, as a partition or a
 * server down looks to the node. While it is cut:
 * - ingest and the speed push answer 503 with Retry-After (the gateway keeps its outbox), nothing stored;
 * - a query with a read key the store confirmed is answered from the batch views alone, flagged
 *   `degraded` (JSON field, CSV header), exact for what the manifest covers; an admin route is 503;
 * - /healthz says `store: unreachable`, braid_store_up is 0 (the process stays up).
 * Once mended, everything resumes by itself: the same batch is stored once, answers are whole again.
 */
import type pg from 'pg';
import { addApiKey, addGateway } from '../../cloud/store/credentials.js';
import { PgCredentialStore, createPgPool } from '../../cloud/store/pg/index.js';
import { scrapedValue } from '../../shared/metrics.js';
import { T0, ingestBody, makeReadings, postIngest, readMaster } from '../support/cloud.js';
import { eventually, tempDir } from '../support/gateway.js';
import { type TestPostgres, havePostgres, startPostgres } from '../support/postgres.js';
import { type TcpProxy, startTcpProxy } from '../support/tcp-proxy.js';
import { type SpeedCloud, getJson, partial, postSpeed, pushBody, startSpeedCloud, MINUTE0 } from './speed-fixtures.js';

const have = havePostgres();

(have ? describe : describe.skip)('cluster mode: PostgreSQL out of reach (postgresql-15 behind a cut TCP proxy)', () => {
  let server: TestPostgres;
  let proxy: TcpProxy;
  let pool: pg.Pool;
  let cloud: SpeedCloud | null = null;
  const dir = tempDir('braid-cluster-outage-');

  beforeAll(async () => {
    server = await startPostgres();
    await server.createDatabase('outage');
    proxy = await startTcpProxy(server.port);
    pool = createPgPool({ url: `postgres://braid@127.0.0.1:${server.port}/outage`, poolMax: 2 });
  }, 60_000);
  afterAll(async () => {
    await cloud?.close();
    await proxy?.close();
    await pool?.end();
    await server?.stop();
    dir.remove();
  }, 30_000);

  test('ingest 503, queries degraded and flagged, health and metrics say so; all resumes by itself, nothing lost or counted twice', async () => {
    cloud = await startSpeedCloud(dir.path, { store: { url: `postgres://braid@127.0.0.1:${proxy.port}/outage` } }, { pruneGraceMs: 0 });
    const creds = new PgCredentialStore(pool);
    const token = await addGateway(creds, 'gw-1');
    const read = await addApiKey(creds, 'app', 'read');
    const admin = await addApiKey(creds, 'ops', 'admin');
    const q = `/api/v1/query?metric=temp&from=${T0}&to=${T0 + 2 * 86_400_000}&step=1d&agg=count`;

    // Epoch 1 (seqs 1-10) in the views; epoch 2 in the speed store only.
    const first = makeReadings(1, 10, { epoch: () => 1 });
    expect((await postIngest(cloud.url, token, ingestBody('gw-1', first, { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 10 }] }))).status).toBe(200);
    await cloud.app.server.ingest.sealNow();
    expect(await (await cloud.app.scheduler().runNow('api')).done).toMatchObject({ published: true, watermark: { 'gw-1': 1 } });
    const minute = Math.floor(T0 / 60_000) * 60_000;
    const p = partial('d0', 'temp', (minute - MINUTE0) / 60_000, 2, 4);
    expect((await postSpeed(cloud.url, token, pushBody('gw-1', [p]))).status).toBe(200);
    const whole = await getJson(cloud.url, q, read);
    expect(whole.status).toBe(200);
    expect(whole.body.degraded).toBeUndefined();
    const wholeCount = (whole.body.points as Array<{ count: number; speed: number }>).reduce((s, x) => s + x.count, 0);
    const batchCount = (whole.body.points as Array<{ batch: number }>).reduce((s, x) => s + x.batch, 0);
    expect(batchCount).toBe(first.filter((r) => r[3] === 'temp').length);
    expect(wholeCount).toBe(batchCount + 4);

    proxy.cut();
    const second = makeReadings(11, 20, { epoch: () => 2 });
    const refused = await postIngest(cloud.url, token, ingestBody('gw-1', second));
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect((await postSpeed(cloud.url, token, pushBody('gw-1', [p]))).status).toBe(503);

    const degraded = await getJson(cloud.url, q, read);
    expect(degraded.status).toBe(200);
    expect(degraded.body.degraded).toMatch(/^speed store unreachable/);
    expect((degraded.body.points as Array<{ count: number; speed: number }>).reduce((s, x) => s + x.count, 0)).toBe(batchCount);
    expect((degraded.body.points as Array<{ speed: number }>).every((x) => x.speed === 0)).toBe(true);
    const csv = await fetch(`${cloud.url}${q}`, { headers: { authorization: `Bearer ${read}`, accept: 'text/csv' } });
    expect(csv.status).toBe(200);
    expect(csv.headers.get('x-braid-degraded')).toBe('speed-store-unreachable');
    // No outage grace for admin routes or for a key the store never confirmed.
    expect((await fetch(`${cloud.url}/api/v1/batch/run`, { method: 'POST', headers: { authorization: `Bearer ${admin}` } })).status).toBe(503);
    expect((await getJson(cloud.url, q, 'brk_unknown_key_never_seen')).status).toBeGreaterThanOrEqual(401);

    await eventually(async () => (await getJson(cloud!.url, '/healthz', null)).body.store === 'unreachable', 10_000);
    expect((await getJson(cloud.url, '/healthz', null)).body).toEqual({ status: 'ok', store: 'unreachable' });
    const down = await (await fetch(`${cloud.url}/metrics`, { headers: { authorization: `Bearer ${read}` } })).text();
    expect(scrapedValue(down, 'braid_store_up', { kind: 'postgres' })).toBe(0);
    expect(scrapedValue(down, 'braid_query_degraded_total')).toBeGreaterThanOrEqual(2);

    proxy.mend();
    // The gateway resends the same batch until it gets a 2xx: stored once.
    await eventually(async () => (await postIngest(cloud!.url, token, ingestBody('gw-1', second))).status === 200, 20_000);
    expect((await postIngest(cloud.url, token, ingestBody('gw-1', second))).body).toMatchObject({ ackSeq: 20, stored: 0, duplicates: 10 });
    await eventually(async () => (await getJson(cloud!.url, '/healthz', null)).body.store === 'up', 10_000);
    const back = await getJson(cloud.url, q, read);
    expect(back.body.degraded).toBeUndefined();
    expect((back.body.points as Array<{ count: number }>).reduce((s, x) => s + x.count, 0)).toBe(wholeCount);

    await cloud.app.server.ingest.sealNow();
    const master = await readMaster(dir.path);
    const seqs = master.map((r) => r.seq).sort((a, b) => a - b);
    expect(seqs).toEqual([...first, ...second].map((r) => r[0]).sort((a, b) => a - b));
  }, 120_000);
});
