/**
 * GET /api/v1/query refusals: 401/403 by key, and every 400 (BRAID_ERR_BAD_REQUEST) names the
 * parameter it is about [INV-5]; the bucket limit names query.maxBuckets. Also the answer before
 * any batch run (manifest version 0) and the parameters' pure planning.
 */
import { planQuery, QueryLayer } from '../../cloud/query/index.js';
import { addApiKey, addGateway } from '../../cloud/store/credentials.js';
import { startTestCloud, type TestCloud } from '../support/cloud.js';
import { tempDir } from '../support/gateway.js';
import { SpeedTable, speedDbFile } from '../support/query-fixture.js';

let cloud: TestCloud;
let dir: ReturnType<typeof tempDir>;
let table: SpeedTable;
const keys: Record<string, string> = {};

beforeAll(async () => {
  dir = tempDir('braid-query-err-');
  table = await SpeedTable.open(speedDbFile(dir.path));
  const layer = new QueryLayer({ speed: table });
  cloud = await startTestCloud(dir.path, { query: { maxBuckets: 1000 } }, { plugins: [layer.plugin], services: [layer] });
  const db = cloud.server.ctx.db.reader;
  keys.read = await addApiKey(db, 'reader', 'read');
  keys.admin = await addApiKey(db, 'boss', 'admin');
  keys.gateway = await addGateway(db, 'gw-1');
});

afterAll(async () => {
  await cloud?.close();
  await table?.close();
  dir?.remove();
});

async function get(qs: string, auth: string | null = keys.read) {
  const res = await fetch(`${cloud.url}/api/v1/query?${qs}`, { headers: auth ? { authorization: auth.startsWith('Bearer') || auth.startsWith('Basic') ? auth : `Bearer ${auth}` } : {} });
  return { status: res.status, body: await res.json() as { code?: string; message?: string; [k: string]: unknown } };
}

const OK = 'metric=temp&from=2024-11-24T00:00:00Z&to=2024-11-25T00:00:00Z';

describe('auth', () => {
  it.each([
    ['no key', null, 401, 'BRAID_ERR_UNAUTHORIZED'],
    ['an unknown key', 'brk_nope', 401, 'BRAID_ERR_UNAUTHORIZED'],
    ['not a bearer', 'Basic dXNlcjpwYXNz', 401, 'BRAID_ERR_UNAUTHORIZED'],
    ['a gateway token', 'gateway', 403, 'BRAID_ERR_FORBIDDEN'],
  ])('%s: %i %s', async (_what, who, status, code) => {
    const r = await get(OK, who === null ? null : keys[who] ?? who);
    expect(r).toMatchObject({ status, body: { code } });
  });

  it('a stranger gets 401 before any parameter is looked at', async () => {
    expect((await get('agg=nope', null)).status).toBe(401);
  });

  it('read and admin keys may query; before any batch run the answer is version 0 with no points', async () => {
    for (const k of [keys.read, keys.admin]) {
      const r = await get(`${OK}&device=d1&step=1h`, k);
      expect(r).toEqual({ status: 200, body: { metric: 'temp', scope: { device: 'd1' }, step: '1h', agg: 'avg', manifest: { version: 0, watermark: {} }, points: [] } });
    }
    expect((await get(OK)).body.scope).toEqual({ fleet: true });
  });
});

/** The parameters a 400 message is about: `querystring parameter "x": ...` or `x: ...` / `x, y: ...`. */
function named(message: string): string[] {
  const m = /^querystring parameter "([^"]+)"/.exec(message) ?? /^([\w.]+(?:, [\w.]+)*):/.exec(message);
  return m ? m[1].split(', ') : [];
}

describe('every 400 names its parameter', () => {
  it.each([
    ['metric', 'from=1&to=2'],
    ['metric', 'metric=&from=1&to=2'],
    ['from', 'metric=temp&to=2'],
    ['to', 'metric=temp&from=1'],
    ['from', 'metric=temp&from=yesterday&to=2'],
    ['from', 'metric=temp&from=2024-11-24T10:00:00&to=2024-11-25T00:00:00Z'], // no zone: refused, not guessed
    ['to', 'metric=temp&from=1&to=2024-02-30'],
    ['from', 'metric=temp&from=2024-11-25T00:00:00Z&to=2024-11-24T00:00:00Z'],
    ['from', 'metric=temp&from=5&to=5'],
    ['device', `${OK}&device=d1&gateway=gw-1`],
    ['device', `${OK}&device=`],
    ['gateway', `${OK}&gateway=`],
    ['device', `${OK}&device=a&device=b`],
    ['step', `${OK}&step=5x`],
    ['step', `${OK}&step=0m`],
    ['step', `${OK}&device=d1&step=30s`],
    ['step', `${OK}&gateway=gw-1&step=30s`], // every scope's finest view is 1m
    ['step', `${OK}&step=90s`],
    ['step', `${OK}&gateway=gw-1&step=1m`], // 1440 buckets > query.maxBuckets (1000)
    ['agg', `${OK}&agg=median`],
    ['step', `${OK}&device=d1&step=1m`], // 1440 buckets > query.maxBuckets (1000)
    // U+0000: no name holds one (ingest refuses it), and the view reader's cache keys are NUL-separated.
    ['metric', 'metric=te%00mp&from=1&to=2'],
    ['device', `${OK}&device=d%001`],
    ['gateway', `${OK}&gateway=gw-1%00`],
  ])('%s: %s', async (param, qs) => {
    const r = await get(qs);
    expect(r.status).toBe(400);
    expect(r.body.code).toBe('BRAID_ERR_BAD_REQUEST');
    expect(named(r.body.message!)).toContain(param);
  });

  it('every refusal is counted by its code, schema refusals and missing keys included (braid_query_rejected_total)', async () => {
    const counts = async () => Object.fromEntries((await cloud.server.ctx.registry.getSingleMetric('braid_query_rejected_total')!.get()).values
      .map((v) => [String(v.labels.code), v.value]));
    const before = await counts();
    expect((await get(`${OK}&agg=median`)).status).toBe(400); // the route's schema
    expect((await get(`${OK}&gateway=g&step=30s`)).status).toBe(400); // the planner
    expect((await get(OK, null)).status).toBe(401);
    expect((await get(`${OK}&device=d1&step=1h`)).status).toBe(200);
    const after = await counts();
    const delta = (code: string) => (after[code] ?? 0) - (before[code] ?? 0);
    expect({ bad: delta('BRAID_ERR_BAD_REQUEST'), unauthorized: delta('BRAID_ERR_UNAUTHORIZED') }).toEqual({ bad: 2, unauthorized: 1 });
  });

  it('the bucket limit names query.maxBuckets and the smallest step names the finest view', async () => {
    expect((await get(`${OK}&device=d1&step=1m`)).body.message).toMatch(/1440 buckets, more than query\.maxBuckets \(1000\)/);
    expect((await get(`${OK}&gateway=g&step=30s`)).body.message).toMatch(/finest view of a gateway query \(gateway_1m\); the smallest step is 1m/);
    expect((await get(`${OK}&step=90s`)).body.message).toMatch(/finest view of a fleet query \(fleet_1m\); the smallest step is 1m/);
    // exactly at the limit is fine: 1000 one-minute buckets
    expect((await get(`metric=temp&device=d1&from=0&to=${1000 * 60_000}&step=1m`)).status).toBe(200);
    expect((await get(`metric=temp&device=d1&from=0&to=${1001 * 60_000}&step=1m`)).status).toBe(400);
  });
});

describe('planQuery (pure)', () => {
  const limits = { maxBuckets: 100_000 };
  it('rounds from down and to up to the step; picks the coarsest view whose width divides the step', () => {
    const base = { metric: 'm', from: String(Date.UTC(2024, 0, 1, 5, 17)), to: String(Date.UTC(2024, 0, 3, 3, 1)) };
    expect(planQuery({ ...base, device: 'd', step: '1d' }, limits)).toMatchObject({ view: 'device_1d', fromMs: Date.UTC(2024, 0, 1), toMs: Date.UTC(2024, 0, 4), key: { device: 'd' } });
    expect(planQuery({ ...base, device: 'd', step: '90m' }, limits)).toMatchObject({ view: 'device_1m', stepMs: 5_400_000 });
    expect(planQuery({ ...base, device: 'd', step: '2h' }, limits)).toMatchObject({ view: 'device_1h' });
    expect(planQuery({ ...base, device: 'd', step: '1w' }, limits)).toMatchObject({ view: 'device_1d' });
    expect(planQuery({ ...base, gateway: 'g', step: '3h' }, limits)).toMatchObject({ view: 'gateway_1h', key: { gateway: 'g' } });
    expect(planQuery({ ...base, step: '2d' }, limits)).toMatchObject({ view: 'fleet_1d', key: undefined, scope: { fleet: true } });
    // Every scope answers whole minutes: gateway_1m and fleet_1m for steps that are not whole hours.
    expect(planQuery({ ...base, gateway: 'g', step: '1m' }, limits)).toMatchObject({ view: 'gateway_1m', stepMs: 60_000, fromMs: Date.UTC(2024, 0, 1, 5, 17) });
    expect(planQuery({ ...base, gateway: 'g', step: '30m' }, limits)).toMatchObject({ view: 'gateway_1m', fromMs: Date.UTC(2024, 0, 1, 5), toMs: Date.UTC(2024, 0, 3, 3, 30) });
    expect(planQuery({ ...base, step: '5m' }, limits)).toMatchObject({ view: 'fleet_1m', key: undefined });
    expect(planQuery({ ...base, step: '90m' }, limits)).toMatchObject({ view: 'fleet_1m' });
    expect(planQuery({ ...base, step: '120m' }, limits)).toMatchObject({ view: 'fleet_1h' });
  });

  it('throws BRAID_ERR_BAD_REQUEST', () => {
    expect(() => planQuery({ metric: 'm', from: '1', to: '2', step: '1ms' }, limits)).toThrow(expect.objectContaining({ code: 'BRAID_ERR_BAD_REQUEST' }));
  });
});
