/**
 * The cloud's speed store (docs/serving.md) against a real cloud on 127.0.0.1:0: pushes stored as
 * sent, idempotent, the count guard, every refusal counted with nothing stored, the reads of the
 * merged query, and the prune behind the live manifest (a real batch run over real ingest).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { batchOptionsFrom, startBatchRun } from '../../cloud/batch/index.js';
import { gatewayLastContact, readSpeedPartials } from '../../cloud/speed/index.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { scrapedValue } from '../../shared/metrics.js';
import { ingestBody, makeReadings, postIngest, queryCloudDb, testCloudConfig } from '../support/cloud.js';
import { eventually, tempDir } from '../support/gateway.js';
import { MINUTE0, type SpeedCloud, type Tuple, credentials, partial, postSpeed, pushBody, startSpeedCloud, storedPartials } from './speed-fixtures.js';

let dir: { path: string; remove: () => void };
let cloud: SpeedCloud | null = null;

beforeEach(() => { dir = tempDir('braid-speed-'); });
afterEach(async () => {
  await cloud?.close();
  cloud = null;
  dir.remove();
});

const asRows = (g: string, ps: Tuple[]) => ps.map(([device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts]) =>
  ({ gateway: g, device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts }));
const metrics = async (c: SpeedCloud, key: string) => (await fetch(`${c.url}/metrics`, { headers: { authorization: `Bearer ${key}` } })).text();

describe('POST /api/v1/speed', () => {
  test('a push is stored as sent; the answer carries E of the live manifest (none yet: 0)', async () => {
    const { tokens } = await credentials(dir.path, ['gw-1']);
    cloud = await startSpeedCloud(dir.path);
    const ps = [partial('d1', 'temp', 0, 1, 3, 21.5), partial('d1', 'hum', 0, 1), partial('d2', 'temp', 1, 2, 2, 19)];
    const a = await postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', ps));
    expect(a.status).toBe(200);
    expect(a.body).toEqual({ watermark: 0, manifestVersion: null, stored: 3 });
    expect(await storedPartials(dir.path)).toEqual(asRows('gw-1', ps).sort((x, y) => (x.device + x.metric < y.device + y.metric ? -1 : 1)));
    // Without gzip it is accepted too (Content-Encoding identity).
    expect((await postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', []), { gzip: false })).status).toBe(200);
  });

  test('re-pushing the same partials changes nothing [idempotent]', async () => {
    const { tokens } = await credentials(dir.path, ['gw-1']);
    cloud = await startSpeedCloud(dir.path);
    const ps = Array.from({ length: 50 }, (_, i) => partial(`d${i % 5}`, i % 2 ? 'temp' : 'hum', i, 1 + (i % 3), 1 + (i % 4), i));
    expect((await postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', ps))).status).toBe(200);
    const before = await storedPartials(dir.path);
    for (let i = 0; i < 3; i++) expect((await postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', [...ps].reverse()))).status).toBe(200);
    expect(await storedPartials(dir.path)).toEqual(before);
    expect(before).toHaveLength(50);
  });

  test('the count guard: a late retry of an older, smaller partial does not undo a newer one', async () => {
    const { tokens } = await credentials(dir.path, ['gw-1']);
    cloud = await startSpeedCloud(dir.path);
    const newer = partial('d1', 'temp', 0, 4, 7, 22);
    const older = partial('d1', 'temp', 0, 4, 5, 21);
    expect((await postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', [newer]))).body).toMatchObject({ stored: 1 });
    expect((await postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', [older]))).body).toMatchObject({ stored: 0 });
    expect(await storedPartials(dir.path)).toEqual(asRows('gw-1', [newer]));
    // Within one push too: the larger count wins whatever the order.
    const bigger = partial('d1', 'temp', 0, 4, 9, 23);
    await postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', [bigger, older]));
    expect(await storedPartials(dir.path)).toEqual(asRows('gw-1', [bigger]));
  });

  test('bad pushes are refused with their code, counted in braid_speed_rejected_total, and store nothing [INV-5]', async () => {
    const { tokens, read } = await credentials(dir.path, ['gw-1', 'gw-2']);
    cloud = await startSpeedCloud(dir.path, { speed: { maxPartialsPerRequest: 5 } });
    const ok = [partial('d1', 'temp', 0, 1)];
    const post = (token: string | null, body: unknown, o?: { gzip?: boolean; raw?: Buffer }) => postSpeed(cloud!.url, token, body, o);

    expect(await post(null, pushBody('gw-1', ok))).toMatchObject({ status: 401, body: { code: 'BRAID_ERR_UNAUTHORIZED' } });
    expect(await post('bgt_not-a-token', pushBody('gw-1', ok))).toMatchObject({ status: 401, body: { code: 'BRAID_ERR_UNAUTHORIZED' } });
    expect(await post(tokens['gw-2'], pushBody('gw-1', ok))).toMatchObject({ status: 403, body: { code: 'BRAID_ERR_FORBIDDEN' } });

    const bad: Array<[unknown, RegExp]> = [
      [{ ...pushBody('gw-1', ok), v: 2 }, /^v: /],
      [pushBody('gw-1', [...ok, ['d1', 'temp', MINUTE0, 1, 1, 5, 6, 5, 0, 5, MINUTE0, 5, MINUTE0]]), /^partials\[1\]\[7\] \(max\): /],
      [pushBody('gw-1', [['d1', 'temp', MINUTE0 + 5, 1, 1, 5, 5, 5, 0, 5, MINUTE0 + 5, 5, MINUTE0 + 5]]), /^partials\[0\]\[2\] \(minute\): /],
      [pushBody('gw-1', [['d1', 'temp', MINUTE0, 0, 1, 5, 5, 5, 0, 5, MINUTE0, 5, MINUTE0]]), /^partials\[0\]\[3\] \(epoch\): /],
      [pushBody('gw-1', [['d1', 'temp', MINUTE0, 1, 1, 5, 5, 5, 0, 5, MINUTE0 + 60_000, 5, MINUTE0]]), /^partials\[0\]\[10\] \(first_ts\): /],
      [pushBody('gw-1', [['', 'temp', MINUTE0, 1, 1, 5, 5, 5, 0, 5, MINUTE0, 5, MINUTE0]]), /^partials\[0\]\[0\] \(device\): /],
      [pushBody('gw-1', [['d1', 'temp', MINUTE0, 1]]), /^partials\[0\]: must be \[device, metric/],
      [pushBody('gw-1', ok, { devices: [{ id: 'd1', connected: 'yes' }] }), /^devices\[0\]\.connected: /],
      [pushBody('gw-1', ok, { health: [1] }), /^health: /],
      // [INV-5] U+0000: PostgreSQL TEXT and JSONB refuse it, and the group commit it shares would fail.
      [pushBody('gw-1', [partial('d\u00001', 'temp', 0, 1)]), /^partials\[0\]\[0\] \(device\): must not contain the NUL character \(U\+0000\), got "d\\u00001"$/],
      [pushBody('gw-1', [...ok, partial('d1', 'te\u0000mp', 1, 1)]), /^partials\[1\]\[1\] \(metric\): must not contain the NUL character/],
      [pushBody('gw-1', ok, { devices: [{ id: 'd1\u0000', connected: true }] }), /^devices\[0\]\.id: must not contain the NUL character/],
      [pushBody('gw-1', ok, { health: { status: 'ok', speedPush: { lastError: 'boom\u0000' } } }), /^health\.speedPush\.lastError: must not contain the NUL character \(U\+0000\), got "boom\\u0000"$/],
      [pushBody('gw-1', ok, { health: { sinks: [{ name: 'x' }, { name: '\u0000' }] } }), /^health\.sinks\[1\]\.name: must not contain the NUL character/],
      [pushBody('gw-1', ok, { health: { outbox: { 'pen\u0000ding': 3 } } }), /^health\.outbox: a key must not contain the NUL character \(U\+0000\), got "pen\\u0000ding"$/],
    ];
    for (const [body, message] of bad) {
      const a = await post(tokens['gw-1'], body);
      expect(a).toMatchObject({ status: 400, body: { code: 'BRAID_ERR_BAD_REQUEST' } });
      expect(String(a.body.message)).toMatch(message);
    }
    expect(await post(tokens['gw-1'], null, { raw: Buffer.from('{"v":1,'), gzip: false })).toMatchObject({ status: 400, body: { code: 'BRAID_ERR_BAD_REQUEST' } });
    const tooMany = Array.from({ length: 6 }, (_, i) => partial('d1', 'temp', i, 1));
    const big = await post(tokens['gw-1'], pushBody('gw-1', tooMany));
    expect(big).toMatchObject({ status: 413, body: { code: 'BRAID_ERR_PAYLOAD_TOO_LARGE' } });
    expect(String(big.body.message)).toMatch(/^partials: 6 entries, over the limit of 5/);

    expect(await storedPartials(dir.path)).toEqual([]);
    expect(await queryCloudDb(dir.path, 'SELECT * FROM gateway_status')).toEqual([]);
    const text = await metrics(cloud, read);
    expect(scrapedValue(text, 'braid_speed_rejected_total', { code: 'BRAID_ERR_UNAUTHORIZED' })).toBe(2);
    expect(scrapedValue(text, 'braid_speed_rejected_total', { code: 'BRAID_ERR_FORBIDDEN' })).toBe(1);
    expect(scrapedValue(text, 'braid_speed_rejected_total', { code: 'BRAID_ERR_BAD_REQUEST' })).toBe(bad.length + 1);
    expect(scrapedValue(text, 'braid_speed_rejected_total', { code: 'BRAID_ERR_PAYLOAD_TOO_LARGE' })).toBe(1);
    // ...and the cloud still takes good pushes.
    expect((await post(tokens['gw-1'], pushBody('gw-1', ok))).status).toBe(200);
  });

  test('[INV-5] a push with U+0000 in its health and a good push of another gateway at the same moment: only the NUL one is refused', async () => {
    const { tokens, read } = await credentials(dir.path, ['gw-1', 'gw-2']);
    cloud = await startSpeedCloud(dir.path);
    const ps = [partial('d1', 'temp', 0, 1, 3, 21.5)];
    const [bad, good] = await Promise.all([
      postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', ps, { health: { status: 'ok', note: 'a\u0000b' } })),
      postSpeed(cloud.url, tokens['gw-2'], pushBody('gw-2', ps)),
    ]);
    expect(bad).toMatchObject({ status: 400, body: { code: 'BRAID_ERR_BAD_REQUEST' } });
    expect(String(bad.body.message)).toMatch(/^health\.note: must not contain the NUL character \(U\+0000\)/);
    expect(good).toMatchObject({ status: 200, body: { stored: 1 } });
    expect(await storedPartials(dir.path)).toEqual(asRows('gw-2', ps));
    expect((await queryCloudDb<{ gateway: string }>(dir.path, 'SELECT gateway FROM gateway_status')).map((r) => r.gateway)).toEqual(['gw-2']);
    const text = await metrics(cloud, read);
    expect(scrapedValue(text, 'braid_speed_rejected_total', { code: 'BRAID_ERR_BAD_REQUEST' })).toBe(1);
  });
});

describe('reads for the merged query', () => {
  test('readSpeedPartials: epochs above E[g] only (0 when absent), minute in [fromMs, toMs), by device, gateway or fleet', async () => {
    // A gateway id that is also a property of every object must not find Object's prototype.
    const CTOR: string = 'constructor';
    const { tokens } = await credentials(dir.path, ['gw-1', CTOR]);
    cloud = await startSpeedCloud(dir.path);
    await postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', [partial('d1', 'temp', 0, 1), partial('d1', 'temp', 1, 2), partial('d2', 'temp', 2, 3), partial('d2', 'hum', 2, 3)]));
    await postSpeed(cloud.url, tokens[CTOR], pushBody(CTOR, [partial('d9', 'temp', 1, 1)]));
    const db = cloud.app.server.ctx.db.reader;
    const q = { metric: 'temp', fromMs: MINUTE0, toMs: MINUTE0 + 3 * 60_000 };
    const key = (rows: Array<{ gateway: string; device: string; epoch: number }>) => rows.map((r) => `${r.gateway}/${r.device}/${r.epoch}`);

    expect(key(await readSpeedPartials(db, { ...q, watermark: {} }))).toEqual(['gw-1/d1/1', 'constructor/d9/1', 'gw-1/d1/2', 'gw-1/d2/3']);
    expect(key(await readSpeedPartials(db, { ...q, watermark: { 'gw-1': 2 } }))).toEqual(['constructor/d9/1', 'gw-1/d2/3']);
    expect(key(await readSpeedPartials(db, { ...q, device: 'd1', watermark: { 'gw-1': 1 } }))).toEqual(['gw-1/d1/2']);
    expect(key(await readSpeedPartials(db, { ...q, gateway: 'constructor', watermark: {} }))).toEqual(['constructor/d9/1']);
    expect(key(await readSpeedPartials(db, { ...q, fromMs: MINUTE0 + 60_000, toMs: MINUTE0 + 2 * 60_000, watermark: {} }))).toEqual(['constructor/d9/1', 'gw-1/d1/2']);
    const [row] = await readSpeedPartials(db, { ...q, device: 'd2', watermark: {} });
    expect(row).toEqual({ gateway: 'gw-1', device: 'd2', minute: MINUTE0 + 120_000, epoch: 3, count: 1, sum: 20, min: 20, max: 20, m2: 0, first: 20, first_ts: MINUTE0 + 121_000, last: 20, last_ts: MINUTE0 + 121_000 });

    const contact = await gatewayLastContact(db);
    expect(Object.keys(contact).sort()).toEqual(['constructor', 'gw-1']);
    expect(Math.abs(contact['gw-1'] - Date.now())).toBeLessThan(5000);
  });
});

/** Ingest seq 1..30 of `g`: epochs 1 (1..10) and 2 (11..20) closed, 3 (21..30) open; then seal. */
async function ingestThreeEpochs(c: SpeedCloud, token: string, g: string): Promise<void> {
  const readings = makeReadings(1, 30, { epoch: (s) => Math.ceil(s / 10) });
  const a = await postIngest(c.url, token, ingestBody(g, readings, { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 10 }, { epoch: 2, firstSeq: 11, lastSeq: 20 }] }));
  expect(a.status).toBe(200);
  await c.app.server.ingest.sealNow();
}

const epochsStored = async (g: string) => (await storedPartials(dir.path, g)).map((r) => r.epoch);

describe('pruning behind the live manifest', () => {
  test('after a batch run publishes E, partials <= E go only once that manifest is live (and pruneGraceMs passed); a late re-push of them is dropped', async () => {
    const { tokens, read } = await credentials(dir.path, ['gw-1']);
    // A grace of 5 s (was 1.5 s): the check that the partials are still there once the run is done
    // comes after the rest of the run past its publish, which a loaded run can stretch past 1.5 s.
    cloud = await startSpeedCloud(dir.path, {}, { pruneGraceMs: 5_000, manifestPollMs: 25 });
    const ps = [partial('d1', 'temp', 0, 1, 2), partial('d1', 'temp', 1, 2, 2), partial('d1', 'temp', 2, 3, 2)];
    await postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', ps));
    await ingestThreeEpochs(cloud, tokens['gw-1'], 'gw-1');

    // [INV-3] watch while the run goes: whenever a partial <= 2 is missing, a manifest with E >= 2 is already live.
    const manifestFile = join(dir.path, 'views', 'manifest.json');
    const problems: string[] = [];
    let stop = false;
    const watcher = (async () => {
      while (!stop) {
        const n = (await epochsStored('gw-1')).filter((e) => e <= 2).length;
        const live = existsSync(manifestFile) ? (JSON.parse(readFileSync(manifestFile, 'utf8')) as { watermark: Record<string, number> }).watermark['gw-1'] ?? 0 : 0;
        if (n < 2 && live < 2) problems.push(`partials pruned while the live E is ${live}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    // The run in "another process": no hook, the manifest poll finds it.
    const run = await startBatchRun(batchOptionsFrom(testCloudConfig(dir.path)), { trigger: 'cli' });
    const result = await run.done;
    expect(result.watermark).toEqual({ 'gw-1': 2 });
    expect(await epochsStored('gw-1')).toEqual([1, 2, 3]); // live, but within the grace
    await eventually(async () => (await epochsStored('gw-1')).join() === '3', 20_000);
    stop = true;
    await watcher;
    expect(problems).toEqual([]);

    // The gateway did not know E yet and sends epoch 2 again: told E = 2, nothing stored.
    const again = await postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', [partial('d1', 'temp', 1, 2, 3), partial('d1', 'temp', 2, 3, 3)]));
    expect(again.body).toEqual({ watermark: 2, manifestVersion: result.version, stored: 1 });
    expect(await storedPartials(dir.path, 'gw-1')).toEqual(asRows('gw-1', [partial('d1', 'temp', 2, 3, 3)]));
    const text = await metrics(cloud, read);
    expect(scrapedValue(text, 'braid_speed_partials_stale_total')).toBe(1);
    expect(scrapedValue(text, 'braid_speed_partials_pruned_total')).toBe(2);
  }, 60_000);

  test('a run of the cloud\'s own scheduler prunes through onPublished; at start-up the cloud prunes behind the live manifest', async () => {
    const { tokens } = await credentials(dir.path, ['gw-1']);
    // A long poll: only the hook can be what prunes in time.
    cloud = await startSpeedCloud(dir.path, {}, { pruneGraceMs: 0, manifestPollMs: 60_000 });
    await postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', [partial('d1', 'temp', 0, 1), partial('d1', 'temp', 1, 2), partial('d1', 'temp', 2, 3)]));
    await ingestThreeEpochs(cloud, tokens['gw-1'], 'gw-1');
    const run = await cloud.app.scheduler().runNow('api');
    await run.done;
    await eventually(async () => (await epochsStored('gw-1')).join() === '3', 5000);

    // Partials <= E written behind the cloud's back (an older cloud version, a restore) go at start-up.
    await cloud.close();
    const db = await openCloudDb(join(dir.path, 'cloud.db'));
    await db.run(`INSERT INTO speed_partials VALUES ('gw-1', 'd5', 'temp', ?, 1, 1, 1, 1, 1, 0, 1, ?, 1, ?, 0), ('gw-1', 'd5', 'temp', ?, 2, 1, 1, 1, 1, 0, 1, ?, 1, ?, 0)`,
      [MINUTE0, MINUTE0, MINUTE0, MINUTE0, MINUTE0, MINUTE0]);
    await db.close();
    cloud = await startSpeedCloud(dir.path, {}, { pruneGraceMs: 0, manifestPollMs: 60_000 });
    await eventually(async () => (await epochsStored('gw-1')).join() === '3', 5000);
  }, 30_000);
});
