/**
 * A small fleet for the console tests, all real: a cloud (createCloud: batch, speed store,
 * registry, merged query, console) in a temp dir on 127.0.0.1:0, with
 * - gw-hist: history sealed into master/ by the fixture (test/support/master-fixture.ts) and
 *   turned into views by the real batch job before the cloud starts, plus a gap record;
 * - gw-gone: one speed push (through POST /api/v1/speed), then silence: once `staleAfterMs` has
 *   passed its partials are provisional;
 * - gw-live: a real gateway (edge/gateway.ts) forwarding to the cloud and pushing its speed
 *   partials, with MQTT devices publishing recent and late readings.
 *
 * dev-1 (temp) ends up with every kind of hourly bucket in the last 24 h:
 *   H-8 speed only (gw-live, late), H-6..H-2 batch only (gw-hist), H-3 batch + a provisional speed
 *   partial (gw-gone), H-1 batch + speed (gw-live, late), H speed only (gw-live, now).
 */
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { MqttClient } from 'mqtt';
import type { Page } from 'playwright-core';
import { type CloudApp, createCloud } from '../../cloud/app.js';
import { batchOptionsFrom, startBatchRun } from '../../cloud/batch/index.js';
import type { CloudConfig } from '../../cloud/config.js';
import { addApiKey, addGateway } from '../../cloud/store/credentials.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { DAY_MS, HOUR_MS, MINUTE_MS, bucketStart } from '../../shared/time.js';
import { apiCall, fmtInt, fmtTime } from '../support/browser.js';
import { testCloudConfig } from '../support/cloud.js';
import { type TestGateway, connectDevice, endClient, eventually, publish, startTestGateway, tempDir } from '../support/gateway.js';
import { type FixtureReading, GatewaySim, MasterFixture } from '../support/master-fixture.js';

/** A gateway is offline (its speed parts provisional) after this long without a push. */
export const STALE_AFTER_MS = 3_000;

export interface World {
  cloud: CloudApp;
  url: string;
  dir: string;
  admin: string;
  read: string;
  gateway: TestGateway;
  /** Start of the current hour when the world was made. */
  h0: number;
  /** Connected MQTT devices of gw-live by id. */
  devices: Record<string, MqttClient>;
  /** Publish `n` readings of `metric` from a gw-live device, `spacingMs` apart in event time ending now. */
  publishNow: (device: string, n: number, metric?: string) => Promise<void>;
  /** Wait until gw-live's outbox is drained and the cloud holds its last push. */
  settle: () => Promise<void>;
  close: () => Promise<void>;
}

/** The history of gw-hist: dev-1 and dev-2 (temp, hum) every 10 minutes over hours H-6..H-1, and daily readings for two weeks before yesterday. */
function history(g: GatewaySim, h0: number): FixtureReading[] {
  const rows: FixtureReading[] = [];
  for (let h = 6; h >= 1; h--) {
    for (let m = 0; m < 60; m += 10) {
      const ts = h0 - h * HOUR_MS + m * MINUTE_MS + 5_000;
      rows.push(g.reading('dev-1', 'temp', ts, 20 + h + m / 100));
      rows.push(g.reading('dev-1', 'hum', ts, 40 + m / 10));
      rows.push(g.reading('dev-2', 'temp', ts, 18 + h / 2));
    }
  }
  // One a day, 36 h to 14.5 days before hour H: never within the last 24 h, whatever the time of
  // day (yesterday's noon would be, in the morning, and add a ninth hourly bucket to the device page).
  for (let d = 14; d >= 1; d--) {
    const daily = h0 - d * DAY_MS - 12 * HOUR_MS;
    for (let i = 0; i < 4; i++) rows.push(g.reading(`dev-${1 + (i % 2)}`, 'temp', daily + i * 61_000, 15 + d + i));
  }
  return rows.sort((a, b) => a.seq - b.seq);
}

async function credentials(dir: string): Promise<{ admin: string; read: string; tokens: Record<string, string> }> {
  const db = await openCloudDb(join(dir, 'cloud.db'));
  try {
    const tokens: Record<string, string> = {};
    for (const g of ['gw-hist', 'gw-gone', 'gw-live']) tokens[g] = await addGateway(db, g);
    return { admin: await addApiKey(db, 'ops', 'admin'), read: await addApiKey(db, 'app', 'read'), tokens };
  } finally {
    await db.close();
  }
}

/** POST /api/v1/speed as a gateway's pusher does. */
async function pushSpeed(url: string, token: string, body: unknown): Promise<void> {
  const res = await fetch(`${url}/api/v1/speed`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-encoding': 'gzip' },
    body: new Uint8Array(gzipSync(JSON.stringify(body))),
  });
  if (res.status !== 200) throw new Error(`speed push: ${res.status} ${await res.text()}`);
}

/**
 * Run teardown steps in order, each given `limitMs`: one that fails or hangs is named in the error
 * thrown at the end (after the other steps have run), instead of a bare hook timeout.
 */
export async function closeSteps(what: string, steps: Array<[string, () => Promise<unknown>]>, limitMs = 15_000): Promise<void> {
  const problems: string[] = [];
  for (const [name, fn] of steps) {
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`did not finish in ${limitMs} ms`)), limitMs); });
    try {
      await Promise.race([fn(), limit]);
    } catch (err) {
      problems.push(`${name}: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }
  if (problems.length) throw new Error(`closing the ${what}: ${problems.join('; ')}`);
}

/** `alerts`: the cloud's alerts.* keys (an Alertmanager to send to, a shorter evaluation interval). */
export async function makeWorld(o: { alerts?: Partial<CloudConfig['alerts']> } = {}): Promise<World> {
  const tmp = tempDir('braid-console-');
  const dir = tmp.path;
  const now = Date.now();
  const h0 = bucketStart(now, HOUR_MS);
  const { admin, read, tokens } = await credentials(dir);

  // gw-hist: sealed history, its epochs closed, a gap record, then the batch job (run 1, by "cli").
  const fx = await MasterFixture.open(dir);
  const hist = new GatewaySim('gw-hist');
  const rows = history(hist, h0);
  hist.closeEpoch();
  await fx.seal(rows);
  await hist.report(fx);
  // A gap record as gw-hist's outbox would have sent it: 42 readings of dev-2 dropped at its disk budget.
  await fx.db.run(`INSERT INTO gaps (gateway, id, reason, from_seq, to_seq, count, min_ts, max_ts, devices, received_at)
    VALUES ('gw-hist', 1, 'disk_budget', 9001, 9042, 42, ?, ?, '["dev-2"]', ?)`, [h0 - 7 * HOUR_MS, h0 - 7 * HOUR_MS + 41 * 10_000, now]);
  // And one as it sends after a restore of cloud.db lost 100 seqs the cloud had acknowledged: times and devices unknown (-1, []).
  await fx.db.run(`INSERT INTO gaps (gateway, id, reason, from_seq, to_seq, count, min_ts, max_ts, devices, received_at)
    VALUES ('gw-hist', 2, 'cloud_lost', 9501, 9600, 100, -1, -1, '[]', ?)`, [now]);
  // Three readings gw-hist sent stamped a day into the future, as ingest counts them (cloud/ingest/clock.ts).
  await fx.db.run(`INSERT INTO gateway_clock (gateway, future_readings, future_device, future_metric, future_ts, future_at)
    VALUES ('gw-hist', 3, 'dev-2', 'temp', ?, ?)`, [now + DAY_MS, now]);
  await fx.close();
  const config = testCloudConfig(dir, { speed: { staleAfterMs: STALE_AFTER_MS }, ...(o.alerts ? { alerts: o.alerts } : {}) });
  await (await startBatchRun(batchOptionsFrom(config), { trigger: 'cli' })).done;

  const cloud = createCloud(config);
  const { url } = await cloud.server.start();

  // gw-gone: one push holding a dev-1 partial in hour H-3, then nothing.
  const minute = h0 - 3 * HOUR_MS + 30 * MINUTE_MS;
  await pushSpeed(url, tokens['gw-gone'], {
    // Its clock runs 90 s ahead (the console's Clock column).
    v: 1, gateway: 'gw-gone', sentAt: Date.now() + 90_000,
    partials: [['dev-1', 'temp', minute, 1, 2, 50, 24, 26, 2, 24, minute + 1_000, 26, minute + 2_000]],
    health: { status: 'ok', gatewayId: 'gw-gone', outbox: { pending: 5, bytes: 2048 }, readings: { accepted: 7, duplicates: 1, invalid: 2 }, dropped: { queueFull: 3, diskBudget: 0 } },
    devices: [{ id: 'dev-1', connected: true }],
  });

  // gw-live: a real gateway and its devices.
  const gateway = await startTestGateway({ id: 'gw-live', cloud: { url, token: tokens['gw-live'] }, speed: { pushIntervalMs: 300 } });
  const devices: Record<string, MqttClient> = {};
  for (const id of ['dev-1', 'dev-3']) {
    const secret = await gateway.addDevice(id);
    devices[id] = await connectDevice(gateway.mqttUrl, id, secret);
  }
  const late = (h: number, i: number) => h0 - h * HOUR_MS + 45 * MINUTE_MS + i * 1_000;
  for (let i = 0; i < 3; i++) {
    await publish(devices['dev-1'], 'devices/dev-1/telemetry', JSON.stringify({ ts: late(8, i), temp: 30 + i }));
    await publish(devices['dev-1'], 'devices/dev-1/telemetry', JSON.stringify({ ts: late(1, i), temp: 25 + i }));
  }
  let tick = 0;
  let lastTs = 0;
  const publishNow = async (device: string, n: number, metric = 'temp') => {
    for (let i = 0; i < n; i++) {
      tick++;
      // A new time for each reading: a repeat of (device, metric, ts) would be dropped as a duplicate.
      // Within hour H, where the world's buckets are: a test running across the hour's end would
      // otherwise open a ninth hourly bucket (H+1) that the pages' expected answers do not have.
      lastTs = Math.max(lastTs + 1, Math.min(Date.now(), h0 + HOUR_MS - 60_000));
      await publish(devices[device], `devices/${device}/telemetry`, JSON.stringify({ ts: lastTs, [metric]: 20 + (tick % 7) / 2 }));
    }
  };
  await publishNow('dev-1', 3);
  await publishNow('dev-3', 3, 'hum');

  const settle = async () => {
    await eventually(async () => {
      const h = await gateway.gateway.health() as { outbox: { pending: number }; readings: { accepted: number } };
      if (h.outbox.pending !== 0) return false;
      const res = await fetch(`${url}/api/v1/gateways`, { headers: { authorization: `Bearer ${admin}` } });
      const doc = (await res.json()) as { gateways: Array<{ id: string; outboxPending: number | null; health: { readings?: { accepted?: number } } | null }> };
      const live = doc.gateways.find((g) => g.id === 'gw-live');
      return live?.outboxPending === 0 && live.health?.readings?.accepted === h.readings.accepted;
    }, 15_000, 100);
  };
  await settle();

  return {
    cloud, url, dir, admin, read, gateway, h0, devices, publishNow, settle,
    close: () => closeSteps('world', [
      ['devices', () => Promise.all(Object.values(devices).map(endClient))],
      ['gateway gw-live', () => gateway.close()],
      ['cloud', () => cloud.server.close()],
      ['temp dir', async () => tmp.remove()],
    ]),
  };
}

/** What the Fleet overview sums, from GET /api/v1/gateways. */
export interface OverviewGateway {
  id: string; online: boolean; outboxPending: number | null;
  gaps: Array<{ count: number }>; seqGaps: unknown[];
  dropped: { diskBudget: number; queueFull: number; invalid: number; duplicates: number };
}

/**
 * The Fleet overview on `page` shows exactly what the API answers `key` now (gateways, devices,
 * batch); returns those answers for the caller's own checks.
 */
export async function expectOverviewEqualsApi(page: Page, url: string, key: string): Promise<{ gateways: OverviewGateway[]; batch: { manifest: { version: number; createdAt: string } } }> {
  const text = (sel: string) => page.locator(sel).innerText();
  const gw = (await apiCall<{ gateways: OverviewGateway[] }>(url, '/api/v1/gateways', key)).body.gateways;
  const devices = (await apiCall<{ devices: Array<{ online: boolean }> }>(url, '/api/v1/devices', key)).body.devices;
  const batch = (await apiCall<{ manifest: { version: number; createdAt: string } }>(url, '/api/v1/batch', key)).body;
  const sum = (f: (g: OverviewGateway) => number) => gw.reduce((n, g) => n + f(g), 0);
  expect(await text('[data-testid=stat-gateways]')).toBe(fmtInt(gw.length));
  expect(await text('[data-testid=note-gateways]')).toBe(`${fmtInt(gw.filter((g) => g.online).length)} online`);
  expect(await text('[data-testid=stat-outbox]')).toBe(fmtInt(sum((g) => g.outboxPending ?? 0)));
  expect(await text('[data-testid=stat-dropped]')).toBe(fmtInt(sum((g) => g.dropped.diskBudget + g.dropped.queueFull)));
  expect(await text('[data-testid=note-dropped]')).toBe(`disk budget ${fmtInt(sum((g) => g.dropped.diskBudget))}, queue full ${fmtInt(sum((g) => g.dropped.queueFull))}; `
    + `invalid ${fmtInt(sum((g) => g.dropped.invalid))}, duplicates ${fmtInt(sum((g) => g.dropped.duplicates))}`);
  expect(await text('[data-testid=stat-gaps]')).toBe(fmtInt(sum((g) => g.gaps.length)));
  expect(await text('[data-testid=note-gaps]')).toBe(`${fmtInt(sum((g) => g.gaps.reduce((n, r) => n + r.count, 0)))} readings lost; ${fmtInt(sum((g) => g.seqGaps.length))} seq holes`);
  expect(await text('[data-testid=stat-devices-online]')).toBe(fmtInt(devices.filter((d) => d.online).length));
  expect(await text('[data-testid=note-devices-online]')).toBe(`of ${fmtInt(devices.length)} known`);
  expect(await text('[data-testid=note-watermark-age]')).toBe(`manifest v${batch.manifest.version}, created ${fmtTime(batch.manifest.createdAt)}`);
  return { gateways: gw, batch };
}
