/**
 * GET /api/v1/devices searched, filtered, sorted and paged on the server (the console's devices
 * page): the parameters against a real cloud fed by speed pushes, bad parameters a 400 naming the
 * parameter and counted, and a fleet of 10,000 devices where one search finds one device and the
 * pages cover every device once (answer times printed, not asserted).
 */
import { type SpeedCloud, credentials, getJson, partial, postSpeed, pushBody, startSpeedCloud } from './speed-fixtures.js';
import { tempDir } from '../support/gateway.js';

let dir: { path: string; remove: () => void };
let cloud: SpeedCloud | null = null;

beforeEach(() => { dir = tempDir('braid-registry-search-'); });
afterEach(async () => {
  await cloud?.close();
  cloud = null;
  dir.remove();
});

type DeviceDoc = { id: string; gateway: string; online: boolean; metrics: string[]; firstSeenAt: string; lastSeenAt: string };
type Page = { devices: DeviceDoc[]; total: number; offset: number; limit: number | null };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('q, gateway, status, sort, order, limit and offset; the total of every match; bad parameters are a 400 naming them, counted', async () => {
  const { tokens, read } = await credentials(dir.path, ['gw-1', 'gw-2']);
  cloud = await startSpeedCloud(dir.path);
  // First seen in this order, a few ms apart (lastSeenAt is when a device was first or last reported).
  for (const [gw, id] of [['gw-1', 'Pump-1'], ['gw-2', 'pump-2'], ['gw-1', 'valve-3'], ['gw-2', 'VALVE-4'], ['gw-1', 'pump-5']]) {
    expect((await postSpeed(cloud.url, tokens[gw], pushBody(gw, [partial(id, 'temp', 0, 1)]))).status).toBe(200);
    await sleep(15);
  }
  expect((await postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', [], { devices: [{ id: 'pump-5', connected: true }, { id: 'valve-3', connected: true }] }))).status).toBe(200);
  expect((await postSpeed(cloud.url, tokens['gw-2'], pushBody('gw-2', [], { devices: [{ id: 'pump-2', connected: false }] }))).status).toBe(200);

  const get = async (qs: string) => {
    const a = await getJson(cloud!.url, `/api/v1/devices${qs}`, read);
    expect(a.status).toBe(200);
    const page = a.body as unknown as Page;
    return { total: page.total, offset: page.offset, limit: page.limit, ids: page.devices.map((d) => d.id), online: page.devices.filter((d) => d.online).map((d) => d.id) };
  };
  // No parameters: every device by id, as before; the new fields beside.
  expect(await get('')).toEqual({ total: 5, offset: 0, limit: null, ids: ['Pump-1', 'VALVE-4', 'pump-2', 'pump-5', 'valve-3'], online: ['pump-5', 'valve-3'] });
  expect(await get('?q=PUMP')).toEqual({ total: 3, offset: 0, limit: null, ids: ['Pump-1', 'pump-2', 'pump-5'], online: ['pump-5'] });
  expect(await get('?q=lve-')).toEqual({ total: 2, offset: 0, limit: null, ids: ['VALVE-4', 'valve-3'], online: ['valve-3'] });
  expect(await get('?status=online')).toMatchObject({ total: 2, ids: ['pump-5', 'valve-3'] });
  expect(await get('?status=offline&gateway=gw-2')).toMatchObject({ total: 2, ids: ['VALVE-4', 'pump-2'] });
  expect(await get('?sort=lastSeen&order=desc')).toMatchObject({ ids: ['pump-5', 'VALVE-4', 'valve-3', 'pump-2', 'Pump-1'] });
  expect(await get('?sort=gateway')).toMatchObject({ ids: ['Pump-1', 'pump-5', 'valve-3', 'VALVE-4', 'pump-2'] });
  expect(await get('?q=p&sort=id&order=desc&limit=2&offset=1')).toEqual({ total: 3, offset: 1, limit: 2, ids: ['pump-2', 'Pump-1'], online: [] });
  expect(await get('?limit=2&offset=10')).toEqual({ total: 5, offset: 10, limit: 2, ids: [], online: [] });

  // Bad parameters: a 400 that names the parameter, counted by route and status; nothing else changes.
  const bad: Array<[string, RegExp]> = [
    ['?limit=0', /limit/], ['?limit=1001', /limit/], ['?limit=ten', /limit/], ['?offset=-1', /offset/], ['?offset=99999999999999999999', /offset/], ['?sort=name', /sort/],
    ['?order=up', /order/], ['?status=away', /status/], ['?alerts=pending', /alerts/], ['?q=' + 'x'.repeat(129), /q\b/], ['?page=2', /page/],
  ];
  for (const [qs, names] of bad) {
    const a = await getJson(cloud.url, `/api/v1/devices${qs}`, read);
    expect({ qs, status: a.status, code: a.body.code }).toEqual({ qs, status: 400, code: 'BRAID_ERR_BAD_REQUEST' });
    expect(a.body.message).toMatch(names);
  }
  const metrics = await fetch(`${cloud.url}/metrics`, { headers: { authorization: `Bearer ${read}` } }).then((r) => r.text());
  expect(metrics).toContain(`braid_registry_rejected_total{route="devices",status="400"} ${bad.length}`);
  expect(await get('')).toMatchObject({ total: 5 });
});

test('10,000 devices: one search finds one device, and the pages of 500 (sorted by last seen) hold every device once', async () => {
  const { tokens, read } = await credentials(dir.path, ['gw-a', 'gw-b']);
  cloud = await startSpeedCloud(dir.path);
  const N = 10_000;
  const id = (i: number) => `sensor-${String(i).padStart(5, '0')}`;
  // Two gateways of 5,000 each, first reported in pushes of 1,000 (several last-seen times), then one push
  // per gateway naming its 5,000 with every third connected (a gateway's latest push says who is connected).
  const gwOf = (i: number) => (i < N / 2 ? 'gw-a' : 'gw-b');
  for (let start = 0; start < N; start += 1_000) {
    const devices = Array.from({ length: 1_000 }, (_, k) => ({ id: id(start + k), connected: false }));
    expect((await postSpeed(cloud.url, tokens[gwOf(start)], pushBody(gwOf(start), [], { devices }))).status).toBe(200);
    await sleep(5);
  }
  for (const gw of ['gw-a', 'gw-b']) {
    const devices = Array.from({ length: N }, (_, i) => i).filter((i) => gwOf(i) === gw).map((i) => ({ id: id(i), connected: i % 3 === 0 }));
    expect((await postSpeed(cloud.url, tokens[gw], pushBody(gw, [], { devices }))).status).toBe(200);
  }
  const timed = async (qs: string) => {
    const t0 = performance.now();
    const a = await getJson(cloud!.url, `/api/v1/devices${qs}`, read);
    const ms = performance.now() - t0;
    expect(a.status).toBe(200);
    return { page: a.body as unknown as Page, ms };
  };
  const times: string[] = [];

  const one = await timed('?q=SENSOR-04217&limit=50');
  times.push(`search one of 10,000 (q=SENSOR-04217): ${one.ms.toFixed(1)} ms`);
  expect(one.page.total).toBe(1);
  expect(one.page.devices.map((d) => [d.id, d.gateway])).toEqual([['sensor-04217', 'gw-a']]);

  const prefix = await timed('?q=sensor-099&limit=50');
  times.push(`prefix search (q=sensor-099, 100 matches): ${prefix.ms.toFixed(1)} ms`);
  expect(prefix.page.total).toBe(100);
  expect(prefix.page.devices.map((d) => d.id)).toEqual(Array.from({ length: 50 }, (_, k) => id(9_900 + k)));

  const online = await timed('?status=online&gateway=gw-b&limit=1');
  times.push(`count online of gw-b: ${online.ms.toFixed(1)} ms`);
  expect(online.page.total).toBe(Array.from({ length: N / 2 }, (_, k) => N / 2 + k).filter((i) => i % 3 === 0).length);

  const seen: string[] = [];
  let last = Infinity;
  const pageMs: number[] = [];
  for (let offset = 0; offset < N; offset += 500) {
    const p = await timed(`?sort=lastSeen&order=desc&limit=500&offset=${offset}`);
    pageMs.push(p.ms);
    expect(p.page.total).toBe(N);
    expect(p.page.devices).toHaveLength(500);
    for (const d of p.page.devices) {
      expect(Date.parse(d.lastSeenAt)).toBeLessThanOrEqual(last);
      last = Date.parse(d.lastSeenAt);
      seen.push(d.id);
    }
  }
  expect(new Set(seen).size).toBe(N);
  times.push(`20 pages of 500 by last seen: ${pageMs.map((m) => m.toFixed(0)).join(', ')} ms (max ${Math.max(...pageMs).toFixed(1)})`);
  const everything = await timed('');
  times.push(`every device, no parameters: ${everything.ms.toFixed(1)} ms`);
  expect(everything.page.devices).toHaveLength(N);
  // eslint-disable-next-line no-console
  console.log(`GET /api/v1/devices with 10,000 devices (SQLite cloud.db):\n  ${times.join('\n  ')}`);
}, 60_000);
