/**
 * Gateway clocks against a real cloud (createCloud): each gateway's clock offset measured from the
 * sentAt of its speed pushes and ingest requests (max over a window: a resent, older body does not
 * pull it down), shown in GET /api/v1/gateways and braid_gateway_clock_offset_seconds; readings
 * stamped more than ingest.maxFutureMs into the cloud's future are stored (never dropped), counted
 * per gateway once (braid_readings_future_total, GET /api/v1/gateways) and warned about in the
 * ingest answer.
 */
import { CLOCK_WINDOW_MS, GatewayClocks } from '../../cloud/ingest/clock.js';
import { scrapedValue } from '../../shared/metrics.js';
import { type Reading, ingestBody, makeReadings, postIngest, readMaster } from '../support/cloud.js';
import { tempDir } from '../support/gateway.js';
import { type SpeedCloud, credentials, getJson, postSpeed, pushBody, startSpeedCloud } from './speed-fixtures.js';

let dir: { path: string; remove: () => void };
let cloud: SpeedCloud | null = null;

beforeEach(() => { dir = tempDir('braid-clock-'); });
afterEach(async () => {
  await cloud?.close();
  cloud = null;
  dir.remove();
});

type GatewayDoc = { id: string; clockOffsetMs: number | null; clockOffsetAt: string | null; futureReadings: number; lastFutureReading: unknown };
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

async function gateways(key: string): Promise<Record<string, GatewayDoc>> {
  const a = await getJson(cloud!.url, '/api/v1/gateways', key);
  expect(a.status).toBe(200);
  return Object.fromEntries((a.body.gateways as GatewayDoc[]).map((g) => [g.id, g]));
}

async function scrape(key: string): Promise<string> {
  const res = await fetch(`${cloud!.url}/metrics`, { headers: { authorization: `Bearer ${key}` } });
  expect(res.status).toBe(200);
  return res.text();
}

test('the clock offset of each gateway, from its speed pushes and ingest requests, in GET /api/v1/gateways and the metric', async () => {
  const { tokens, read } = await credentials(dir.path, ['gw-ahead', 'gw-behind', 'gw-quiet']);
  cloud = await startSpeedCloud(dir.path);
  // gw-ahead: its clock runs 90 s ahead; it pushes, and once resends a body stamped 20 s earlier
  // (as a retry does): a sample with a long delay must not pull the estimate down.
  const AHEAD = 90_000;
  for (let i = 0; i < 5; i++) {
    expect((await postSpeed(cloud.url, tokens['gw-ahead'], pushBody('gw-ahead', [], { sentAt: Date.now() + AHEAD }))).status).toBe(200);
  }
  expect((await postSpeed(cloud.url, tokens['gw-ahead'], pushBody('gw-ahead', [], { sentAt: Date.now() + AHEAD - 20_000 }))).status).toBe(200);
  // gw-behind only ingests, its clock 30 s behind.
  const BEHIND = -30_000;
  expect((await postIngest(cloud.url, tokens['gw-behind'], ingestBody('gw-behind', makeReadings(1, 10), { sentAt: Date.now() + BEHIND }))).status).toBe(200);
  expect((await postIngest(cloud.url, tokens['gw-behind'], ingestBody('gw-behind', makeReadings(11, 20), { sentAt: Date.now() + BEHIND }))).status).toBe(200);

  const g = await gateways(read);
  // A sample is the offset minus the request's delay (ms on loopback): within a second of the truth, never above it by more than rounding.
  expect(g['gw-ahead'].clockOffsetMs).toBeGreaterThan(AHEAD - 1000);
  expect(g['gw-ahead'].clockOffsetMs).toBeLessThanOrEqual(AHEAD + 1);
  expect(g['gw-behind'].clockOffsetMs).toBeGreaterThan(BEHIND - 1000);
  expect(g['gw-behind'].clockOffsetMs).toBeLessThanOrEqual(BEHIND + 1);
  expect(g['gw-ahead'].clockOffsetAt).toMatch(ISO);
  expect(g['gw-quiet']).toMatchObject({ clockOffsetMs: null, clockOffsetAt: null, futureReadings: 0, lastFutureReading: null });

  const text = await scrape(read);
  expect(scrapedValue(text, 'braid_gateway_clock_offset_seconds', { gateway: 'gw-ahead' }) * 1000).toBeCloseTo(g['gw-ahead'].clockOffsetMs!, -1);
  expect(scrapedValue(text, 'braid_gateway_clock_offset_seconds', { gateway: 'gw-behind' }) * 1000).toBeCloseTo(g['gw-behind'].clockOffsetMs!, -1);
  expect(text).not.toMatch(/braid_gateway_clock_offset_seconds\{gateway="gw-quiet"\}/);
}, 30_000);

test('readings stamped past ingest.maxFutureMs are stored, counted once per gateway, named in GET /api/v1/gateways and warned about in the answer', async () => {
  const { tokens, read } = await credentials(dir.path, ['gw-1', 'gw-2']);
  cloud = await startSpeedCloud(dir.path, { ingest: { maxFutureMs: 60_000 } });
  const now = Date.now();
  const rows: Reading[] = makeReadings(1, 10);
  rows[3] = [4, 1, 'dev-x', 'temp', now + 10 * 60_000, 1];
  rows[5] = [6, 1, 'dev-y', 'hum', now + 3 * 3600_000, 2];
  rows[7] = [8, 1, 'dev-x', 'temp', now + 11 * 60_000, 3];
  rows[8] = [9, 1, 'dev-z', 'temp', now + 30_000, 4]; // ahead, but within maxFutureMs
  const a = await postIngest(cloud.url, tokens['gw-1'], ingestBody('gw-1', rows));
  expect(a.status).toBe(200);
  expect(a.body).toEqual({
    ackSeq: 10, stored: 10, duplicates: 0,
    warnings: [{ code: 'BRAID_WARN_FUTURE_TS', count: 3, message: expect.stringContaining('3 reading(s) stamped more than 60000 ms after the cloud\'s clock (ingest.maxFutureMs)') }],
  });
  expect((a.body.warnings as Array<{ message: string }>)[0].message).toContain(`dev-y/hum at ${new Date(now + 3 * 3600_000).toISOString()}`);
  // A retransmit stores nothing new and counts nothing again; a batch without future readings has no warnings.
  expect((await postIngest(cloud.url, tokens['gw-1'], ingestBody('gw-1', rows))).body).toEqual({ ackSeq: 10, stored: 0, duplicates: 10 });
  expect((await postIngest(cloud.url, tokens['gw-1'], ingestBody('gw-1', makeReadings(11, 20)))).body).toEqual({ ackSeq: 20, stored: 10, duplicates: 0 });
  const b = await postIngest(cloud.url, tokens['gw-1'], ingestBody('gw-1', [[21, 2, 'dev-x', 'temp', now + 2 * 3600_000, 5]]));
  expect((b.body.warnings as Array<{ count: number }>)[0].count).toBe(1);

  const g = await gateways(read);
  expect(g['gw-1'].futureReadings).toBe(4);
  expect(g['gw-1'].lastFutureReading).toEqual({ device: 'dev-x', metric: 'temp', ts: new Date(now + 2 * 3600_000).toISOString(), seenAt: expect.stringMatching(ISO) });
  expect(g['gw-2']).toMatchObject({ futureReadings: 0, lastFutureReading: null });
  const text = await scrape(read);
  expect(scrapedValue(text, 'braid_readings_future_total', { gateway: 'gw-1' })).toBe(4);

  // Flagged, not dropped: every reading is in the master dataset, the future ones as sent.
  await cloud.app.server.ingest.sealNow();
  const master = await readMaster(dir.path);
  expect(master.map((r) => r.seq).sort((x, y) => x - y)).toEqual(Array.from({ length: 21 }, (_, i) => i + 1));
  expect(master.find((r) => r.seq === 6)).toMatchObject({ device: 'dev-y', metric: 'hum', ts: now + 3 * 3600_000, value: 2 });
}, 30_000);

test('the estimate: the max over the window, so a delayed sample does not lower it; a clock put back shows once the window has passed', () => {
  const c = new GatewayClocks();
  const t0 = 1_000_000;
  expect(c.offset('g', t0)).toBeNull();
  expect(c.sample('g', null, t0)).toBeNull();
  expect(c.sample('g', t0 + 5_000 - 3, t0)).toBe(4_997); // 5 s ahead, 3 ms of delay
  expect(c.sample('g', t0 + 1_000 + 5_000 - 40, t0 + 1_000)).toBe(4_997); // a slower request
  expect(c.sample('g', t0 + 2_000 + 5_000 - 800, t0 + 2_000)).toBe(4_997); // a retry of an older body
  expect(c.sample('g', t0 + 3_000 + 5_000 - 1, t0 + 3_000)).toBe(4_999); // a faster one: closer to the truth
  // The clock is put right (offset 0): the old samples leave the window, then the estimate follows.
  let t = t0 + 4_000;
  for (; t <= t0 + 3_000 + CLOCK_WINDOW_MS; t += 1_000) expect(c.sample('g', t - 2, t)).toBe(4_999);
  expect(c.sample('g', t - 2, t)).toBe(-2);
  // A step forward shows at once; a gateway that goes quiet keeps its last estimate.
  expect(c.sample('g', t + 1_000 + 60_000, t + 1_000)).toBe(60_000);
  expect(c.offset('g', t + 10 * CLOCK_WINDOW_MS)).toBe(60_000);
  expect([...c.all(t)]).toEqual([['g', 60_000]]);
});
