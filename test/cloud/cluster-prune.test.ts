/**
 * Cluster mode, the speed store's prune [INV-3]: partials are deleted only behind a manifest every
 * live node serves. A real cloud (createCloud) on a real PostgreSQL 15, and a second node as the
 * store knows one: a lease row of its own (PgNodeRegistry), reporting the version it serves. While
 * that node reports an older version, nothing the new manifest covers is pruned (its queries still
 * read those partials); once it reports the new one, or its lease ends, the prune goes ahead.
 */
import type pg from 'pg';
import { PgCredentialStore, PgNodeRegistry, createPgPool } from '../../cloud/store/pg/index.js';
import { addGateway } from '../../cloud/store/credentials.js';
import { ingestBody, makeReadings, postIngest } from '../support/cloud.js';
import { eventually, tempDir } from '../support/gateway.js';
import { type TestPostgres, havePostgres, startPostgres } from '../support/postgres.js';
import { type SpeedCloud, partial, postSpeed, pushBody, startSpeedCloud } from './speed-fixtures.js';

const have = havePostgres();

(have ? describe : describe.skip)('cluster mode: the speed prune waits for every node (postgresql-15)', () => {
  let server: TestPostgres;
  let pool: pg.Pool;
  let url = '';
  let cloud: SpeedCloud | null = null;
  const dir = tempDir('braid-cluster-prune-');

  beforeAll(async () => {
    server = await startPostgres();
    url = await server.createDatabase('prune');
    pool = createPgPool({ url, poolMax: 2 });
  }, 60_000);
  afterAll(async () => {
    await cloud?.close();
    await pool?.end();
    await server?.stop();
    dir.remove();
  }, 30_000);

  const epochs = async () => (await pool.query<{ epoch: number }>("SELECT DISTINCT epoch FROM speed_partials WHERE gateway = 'gw-1' ORDER BY epoch")).rows.map((r) => Number(r.epoch));

  test('a node that still serves an older manifest holds the prune back; its report of the new version, or its end, lets it go', async () => {
    cloud = await startSpeedCloud(dir.path, { store: { url } }, { pruneGraceMs: 0, manifestPollMs: 100 });
    const token = await addGateway(new PgCredentialStore(pool), 'gw-1');
    const other = new PgNodeRegistry(pool);
    await other.register({ node: 'node-b', host: 'elsewhere', pid: 1, startedAt: Date.now() }, 120_000);
    expect(await other.renew('node-b', 120_000, null)).toEqual({ fenced: false });

    expect((await postSpeed(cloud.url, token, pushBody('gw-1', [partial('d1', 'temp', 0, 1), partial('d1', 'temp', 1, 2), partial('d1', 'temp', 2, 3)]))).status).toBe(200);
    const readings = makeReadings(1, 30, { epoch: (seq) => Math.ceil(seq / 10) });
    const a = await postIngest(cloud.url, token, ingestBody('gw-1', readings, { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 10 }, { epoch: 2, firstSeq: 11, lastSeq: 20 }] }));
    expect(a.status).toBe(200);
    await cloud.app.server.ingest.sealNow();
    const run = await cloud.app.scheduler().runNow('api');
    const result = await run.done;
    expect(result).toMatchObject({ published: true, watermark: { 'gw-1': 2 } });

    // This node serves the new version at once (its own publish); node-b says it serves none yet.
    await eventually(async () => (await cloud!.app.server.ctx.manifests.current())?.version === result.version, 5000);
    await new Promise((r) => setTimeout(r, 1500)); // 15 prune polls
    expect(await epochs()).toEqual([1, 2, 3]);

    // Still one version behind: still held.
    await other.renew('node-b', 120_000, result.version - 1);
    await new Promise((r) => setTimeout(r, 1000));
    expect(await epochs()).toEqual([1, 2, 3]);

    await other.renew('node-b', 120_000, result.version);
    await eventually(async () => (await epochs()).join() === '3', 20_000);

    // The next manifest covers epoch 3; node-b stops renewing at the old version, then ends cleanly.
    expect((await postSpeed(cloud.url, token, pushBody('gw-1', [partial('d1', 'temp', 3, 4)]))).status).toBe(200);
    const more = makeReadings(31, 40, { epoch: () => 4 });
    expect((await postIngest(cloud.url, token, ingestBody('gw-1', more, { epochs: [{ epoch: 3, firstSeq: 21, lastSeq: 30 }] }))).status).toBe(200);
    await cloud.app.server.ingest.sealNow();
    const second = await (await cloud.app.scheduler().runNow('api')).done;
    expect(second).toMatchObject({ published: true, watermark: { 'gw-1': 3 } });
    await new Promise((r) => setTimeout(r, 1500));
    expect(await epochs()).toEqual([3, 4]);
    await other.end('node-b');
    await eventually(async () => (await epochs()).join() === '4', 20_000);
  }, 90_000);
});
