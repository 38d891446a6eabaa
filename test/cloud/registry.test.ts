/**
 * The registry (docs/serving.md): GET /api/v1/gateways and GET /api/v1/devices against a real
 * cloud fed by speed pushes and real ingest (a refused seq skip, a gap record), a seq hole recorded by
 * an earlier version, and a real batch run (E).
 * A read key reads them (the same answer as an admin key's); a gateway token does not.
 */
import { join } from 'node:path';
import { openCloudDb } from '../../cloud/store/schema.js';
import { ingestBody, makeReadings, postIngest } from '../support/cloud.js';
import { eventually, tempDir } from '../support/gateway.js';
import { type SpeedCloud, credentials, getJson, partial, postSpeed, pushBody, startSpeedCloud } from './speed-fixtures.js';

let dir: { path: string; remove: () => void };
let cloud: SpeedCloud | null = null;

beforeEach(() => { dir = tempDir('braid-registry-'); });
afterEach(async () => {
  await cloud?.close();
  cloud = null;
  dir.remove();
});

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
type GatewayDoc = Record<string, unknown> & { id: string; online: boolean };
type DeviceDoc = { id: string; gateway: string; online: boolean; metrics: string[]; firstSeenAt: string; lastSeenAt: string };

test('GET /api/v1/gateways: online while pushing, then offline after staleAfterMs; health, E, received seq, gap records and seq holes', async () => {
  const { tokens, admin, read } = await credentials(dir.path, ['gw-1', 'gw-2']);
  // Online is asserted by reads right after a push: 3 s of staleness for them (a loaded run stalled
  // past 600 ms would read gw-1 offline), then the wait for offline.
  cloud = await startSpeedCloud(dir.path, { speed: { staleAfterMs: 3_000 } }, { pruneGraceMs: 0 });
  const token = tokens['gw-1'];

  // Ingest: seq 1..10 (epoch 1, closed), 11..20 (16..20 alone, a skip, is refused), then a gap record 21..25 with 26..30.
  const r = makeReadings(1, 30, { epoch: (s) => (s <= 10 ? 1 : 2) });
  expect((await postIngest(cloud.url, token, ingestBody('gw-1', r.slice(0, 10), { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 10 }] }))).status).toBe(200);
  expect((await postIngest(cloud.url, token, ingestBody('gw-1', r.slice(15, 20)))).status).toBe(409);
  expect((await postIngest(cloud.url, token, ingestBody('gw-1', r.slice(10, 20)))).status).toBe(200);
  // A seq hole an earlier version recorded (it stored batches that skipped seqs) is still listed.
  const db = await openCloudDb(join(dir.path, 'cloud.db'));
  await db.run('INSERT INTO seq_gaps (gateway, from_seq, to_seq, seen_at) VALUES (?, ?, ?, ?)', ['gw-1', 11, 15, Date.now()]);
  await db.close();
  const gap = { id: 1, reason: 'disk_budget', fromSeq: 21, toSeq: 25, count: 5, minTs: Date.UTC(2024, 10, 24), maxTs: Date.UTC(2024, 10, 24, 1), devices: ['d1'] };
  expect((await postIngest(cloud.url, token, ingestBody('gw-1', r.slice(25, 30), { firstSeq: 21, gaps: [gap] }))).status).toBe(200);
  await cloud.app.server.ingest.sealNow();
  await (await cloud.app.scheduler().runNow('api')).done;

  const health = { status: 'ok', gatewayId: 'gw-1', outbox: { pending: 12, lastSeq: 30 }, dropped: { queueFull: 2, diskBudget: 5, diskFloor: 4 }, readings: { invalid: 3, duplicates: 7 } };
  const push = await postSpeed(cloud.url, token, pushBody('gw-1', [partial('d1', 'temp', 0, 2)], { health, devices: [{ id: 'd1', connected: true }] }));
  expect(push.body).toMatchObject({ watermark: 1, manifestVersion: 1 });

  expect((await getJson(cloud.url, '/api/v1/gateways', null)).status).toBe(401);
  expect(await getJson(cloud.url, '/api/v1/gateways', token)).toMatchObject({ status: 403, body: { code: 'BRAID_ERR_FORBIDDEN' } });
  const a = await getJson(cloud.url, '/api/v1/gateways', read);
  expect(a.status).toBe(200);
  // An admin key reads the same answer; `online` is left out of the comparison, as it moves with the clock (3 s here).
  const asAdmin = await getJson(cloud.url, '/api/v1/gateways', admin);
  const still = (doc: Record<string, unknown>) => (doc.gateways as GatewayDoc[]).map(({ online: _o, ...g }) => g);
  expect({ status: asAdmin.status, gateways: still(asAdmin.body) }).toEqual({ status: 200, gateways: still(a.body) });
  const [gw1, gw2] = a.body.gateways as GatewayDoc[];
  expect(gw1).toEqual({
    id: 'gw-1', lastContactAt: expect.stringMatching(ISO), online: true, watermark: 1, receivedSeq: 30, outboxPending: 12, health,
    gaps: [{ fromSeq: 21, toSeq: 25, count: 5, reason: 'disk_budget', minTs: '2024-11-24T00:00:00.000Z', maxTs: '2024-11-24T01:00:00.000Z', devices: ['d1'] }],
    seqGaps: [{ fromSeq: 11, toSeq: 15, seenAt: expect.stringMatching(ISO) }], cloudLost: 0,
    // The gateway's disk drops (budget 5 + free-disk floor 4) are ahead of the one gap record (5) it forwarded.
    dropped: { diskBudget: 9, queueFull: 2, invalid: 3, duplicates: 7 },
    // Its requests' sentAt is the test's clock, the cloud's: an offset of a few ms of delay at most.
    clockOffsetMs: expect.any(Number), clockOffsetAt: expect.stringMatching(ISO), futureReadings: 0, lastFutureReading: null,
  });
  expect(Math.abs(gw1.clockOffsetMs as number)).toBeLessThan(1000);
  // Registered, never heard from.
  expect(gw2).toEqual({
    id: 'gw-2', lastContactAt: null, online: false, watermark: 0, receivedSeq: 0, outboxPending: null, health: null, gaps: [], seqGaps: [],
    cloudLost: 0, dropped: { diskBudget: 0, queueFull: 0, invalid: 0, duplicates: 0 },
    clockOffsetMs: null, clockOffsetAt: null, futureReadings: 0, lastFutureReading: null,
  });

  // No push for longer than staleAfterMs: offline, and so are its devices.
  await eventually(async () => ((await getJson(cloud!.url, '/api/v1/gateways', admin)).body.gateways as GatewayDoc[])[0].online === false, 15_000);
  const devices = (await getJson(cloud.url, '/api/v1/devices', admin)).body.devices as DeviceDoc[];
  expect(devices).toMatchObject([{ id: 'd1', online: false }]);
  // A push brings it back.
  await postSpeed(cloud.url, token, pushBody('gw-1', [], { devices: [{ id: 'd1', connected: true }] }));
  expect(((await getJson(cloud.url, '/api/v1/gateways', admin)).body.gateways as GatewayDoc[])[0].online).toBe(true);
  expect(((await getJson(cloud.url, '/api/v1/devices', admin)).body.devices as DeviceDoc[])[0].online).toBe(true);
}, 30_000);

test('GET /api/v1/devices: every device a gateway reported, its gateway and metrics; online when connected to an online gateway; ?gateway=G', async () => {
  const { tokens, admin, read } = await credentials(dir.path, ['gw-1', 'gw-2']);
  cloud = await startSpeedCloud(dir.path);
  const t0 = Date.now();
  await postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', [partial('d1', 'temp', 0, 1), partial('d1', 'hum', 0, 1), partial('d2', 'temp', 0, 1)], {
    devices: [{ id: 'd1', connected: true }, { id: 'd3', connected: true }, { id: 'd4', connected: false }],
  }));
  await postSpeed(cloud.url, tokens['gw-2'], pushBody('gw-2', [partial('d9', 'co2', 0, 1)], { devices: [] }));

  expect((await getJson(cloud.url, '/api/v1/devices', null)).status).toBe(401);
  expect((await getJson(cloud.url, '/api/v1/devices', tokens['gw-1'])).status).toBe(403);
  const asAdmin = await getJson(cloud.url, '/api/v1/devices', admin);
  expect(asAdmin.status).toBe(200);
  let devices = (await getJson(cloud.url, '/api/v1/devices', read)).body.devices as DeviceDoc[];
  expect(devices).toEqual(asAdmin.body.devices);
  expect(devices.map(({ id, gateway, online, metrics }) => ({ id, gateway, online, metrics }))).toEqual([
    { id: 'd1', gateway: 'gw-1', online: true, metrics: ['hum', 'temp'] },
    { id: 'd2', gateway: 'gw-1', online: false, metrics: ['temp'] },
    { id: 'd3', gateway: 'gw-1', online: true, metrics: [] },
    { id: 'd4', gateway: 'gw-1', online: false, metrics: [] },
    { id: 'd9', gateway: 'gw-2', online: false, metrics: ['co2'] },
  ]);
  for (const d of devices) {
    expect(d.firstSeenAt).toMatch(ISO);
    expect(Date.parse(d.lastSeenAt)).toBeGreaterThanOrEqual(Date.parse(d.firstSeenAt));
    expect(Date.parse(d.firstSeenAt)).toBeGreaterThanOrEqual(t0 - 1);
  }

  // A new metric is added at once; a device that moved shows its new gateway.
  await postSpeed(cloud.url, tokens['gw-1'], pushBody('gw-1', [partial('d1', 'co2', 1, 2)], { devices: [{ id: 'd1', connected: true }] }));
  await postSpeed(cloud.url, tokens['gw-2'], pushBody('gw-2', [partial('d2', 'temp', 1, 2)], { devices: [{ id: 'd2', connected: true }] }));
  devices = (await getJson(cloud.url, '/api/v1/devices?gateway=gw-2', admin)).body.devices as DeviceDoc[];
  expect(devices.map(({ id, online, metrics }) => ({ id, online, metrics }))).toEqual([
    { id: 'd2', online: true, metrics: ['temp'] },
    { id: 'd9', online: false, metrics: ['co2'] },
  ]);
  devices = (await getJson(cloud.url, '/api/v1/devices?gateway=gw-1', admin)).body.devices as DeviceDoc[];
  expect(devices.find((d) => d.id === 'd1')?.metrics).toEqual(['co2', 'hum', 'temp']);
  expect(devices.find((d) => d.id === 'd3')?.online).toBe(false); // not in gw-1's latest connected list
  expect((await getJson(cloud.url, '/api/v1/devices?gateway=', admin))).toMatchObject({ status: 400, body: { code: 'BRAID_ERR_BAD_REQUEST' } });
});
