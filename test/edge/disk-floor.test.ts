/**
 * [INV-6] The disk floor (outbox.minFreeBytes, edge/outbox/budget.ts): below that much free on the
 * data dir's filesystem, the oldest unsent readings are dropped as at the disk budget, counted with
 * reason disk_floor and recorded as gap records; the newest stay, the speed layer keeps them all.
 * On a real outbox whose free space is given (a disk filling up), and on a real gateway reading the
 * real filesystem's statfs with a floor no disk meets.
 */
import type { MqttClient } from 'mqtt';
import { Registry } from 'prom-client';
import { FLOOR_CHECK_MS, freePageBytes } from '../../edge/outbox/budget.js';
import { Outbox, type Reading } from '../../edge/outbox/index.js';
import { outboxRowBytes } from '../../edge/store/schema.js';
import { nullLogger } from '../../shared/logger.js';
import { metricValue, scrapedValue } from '../../shared/metrics.js';
import { queryGatewayDb } from '../support/child-gateway.js';
import { type TestGateway, connectDevice, endClient, eventually, publish, startTestGateway, tempDir } from '../support/gateway.js';

interface GapRow { from_seq: number; to_seq: number; count: number; min_ts: number; max_ts: number; devices: string; reason: string }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('an outbox whose disk fills up', () => {
  let dir: { path: string; remove: () => void };
  let outbox: Outbox;
  let registry: Registry;
  /** What the filesystem reports free, as the test sets it. */
  let free: number;

  const FLOOR = 200_000;
  const N = 10_000;
  const reading = (i: number): Reading => ({ device: `dev-${i % 7}`, metric: i % 2 ? 'temp' : 'hum', ts: 1_700_000_000_000 + i, value: i });

  beforeEach(async () => {
    dir = tempDir('braid-floor-');
    registry = new Registry();
    free = 1 << 30;
    outbox = await Outbox.open({ dataDir: dir.path, logger: nullLogger(), registry, freeDiskBytes: async () => free }, { minFreeBytes: FLOOR, pruneCron: null });
  });
  afterEach(async () => {
    await outbox.close();
    dir.remove();
  });

  test('below the floor the oldest unsent readings go, enough to be 10% above it, counted and in a gap; the freed pages count as free after', async () => {
    await outbox.submit(Array.from({ length: N }, (_, i) => reading(i)));
    await sleep(FLOOR_CHECK_MS + 100);
    await outbox.submit([reading(N)]);
    // Plenty free: nothing dropped.
    await sleep(200);
    expect(outbox.status().pending).toBe(N + 1);

    // The disk fills up (another process): 50 kB free, 200 kB the floor.
    free = 50_000;
    const pagesBefore = await freePageBytes(outbox.reader);
    await sleep(FLOOR_CHECK_MS + 100);
    await outbox.submit([reading(N + 1)]);
    await eventually(async () => (await metricValue(registry, 'braid_readings_dropped_total', { reason: 'disk_floor' })) > 0, 10_000);
    const dropped = await metricValue(registry, 'braid_readings_dropped_total', { reason: 'disk_floor' });
    const deficit = FLOOR + FLOOR / 10 - free - pagesBefore;
    const droppedBytes = Array.from({ length: dropped }, (_, i) => outboxRowBytes(reading(i).device, reading(i).metric)).reduce((a, b) => a + b, 0);
    expect(droppedBytes).toBeGreaterThanOrEqual(deficit);
    // Enough that the pages it freed bring the free space to 10% above the floor (within a page), and no more than that needs.
    const freeAfter = free + (await freePageBytes(outbox.reader));
    expect(freeAfter).toBeGreaterThanOrEqual(FLOOR + FLOOR / 10 - 4096);
    expect(freeAfter).toBeLessThan(FLOOR + FLOOR / 10 + 32_768);

    // The oldest went, in one gap record with reason disk_floor; the newest stay (every one acknowledged in gateway.db first).
    await outbox.applied();
    const gaps = await queryGatewayDb<GapRow>(dir.path, 'SELECT from_seq, to_seq, count, min_ts, max_ts, devices, reason FROM gaps');
    expect(gaps).toEqual([{
      from_seq: 1, to_seq: dropped, count: dropped, min_ts: reading(0).ts, max_ts: reading(dropped - 1).ts,
      devices: JSON.stringify([...new Set(Array.from({ length: dropped }, (_, i) => reading(i).device))].sort()), reason: 'disk_floor',
    }]);
    const seqs = await queryGatewayDb<{ lo: number; hi: number; n: number }>(dir.path, 'SELECT MIN(seq) AS lo, MAX(seq) AS hi, COUNT(*) AS n FROM outbox');
    expect(seqs).toEqual([{ lo: dropped + 1, hi: N + 2, n: N + 2 - dropped }]);
    expect(outbox.status().pending).toBe(N + 2 - dropped);
    expect(await metricValue(registry, 'braid_gap_records_total')).toBe(1);
    expect(await metricValue(registry, 'braid_readings_dropped_total', { reason: 'disk_budget' })).toBe(0);
    // The speed layer keeps every reading.
    const counted = await queryGatewayDb<{ n: number }>(dir.path, 'SELECT SUM(count) AS n FROM partials');
    expect(counted[0].n).toBe(N + 2);

    // The dropped rows' pages are free space the file reuses: the next look finds the floor kept and drops nothing.
    await sleep(FLOOR_CHECK_MS + 100);
    await outbox.submit([reading(N + 2)]);
    await sleep(300);
    expect(await metricValue(registry, 'braid_readings_dropped_total', { reason: 'disk_floor' })).toBe(dropped);
    expect(outbox.status().pending).toBe(N + 3 - dropped);
  }, 20_000);

  test('minFreeBytes 0 turns the floor off', async () => {
    await outbox.close();
    outbox = await Outbox.open({ dataDir: dir.path, logger: nullLogger(), registry: new Registry(), freeDiskBytes: async () => 0 }, { minFreeBytes: 0, pruneCron: null });
    await outbox.submit(Array.from({ length: 100 }, (_, i) => reading(i)));
    await sleep(200);
    expect(outbox.status().pending).toBe(100);
    expect(await queryGatewayDb(dir.path, 'SELECT * FROM gaps')).toEqual([]);
  });
});

describe('a gateway on the real filesystem', () => {
  let gw: TestGateway;
  let client: MqttClient;
  afterEach(async () => {
    await endClient(client);
    await gw.close();
  });

  test('with a floor no disk meets, every unsent reading is dropped with reason disk_floor, yet PUBACKed, counted in health and kept by the speed layer', async () => {
    gw = await startTestGateway({ outbox: { minFreeBytes: 2 ** 50 }, mqtt: { ratePerDevice: 100_000, rateBurst: 100_000 } });
    client = await connectDevice(gw.mqttUrl, 'dev-f', await gw.addDevice('dev-f'));
    const start = Date.now() - 60_000;
    // The floor is looked at after a commit, once a second at most: two rounds, then one reading that finds the second.
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 50; i++) await publish(client, 'devices/dev-f/telemetry', JSON.stringify({ ts: start + round * 100 + i, temp: i }), 1);
      await sleep(FLOOR_CHECK_MS + 100);
    }
    await publish(client, 'devices/dev-f/telemetry', JSON.stringify({ ts: start + 1000, temp: 0 }), 1);
    const health = async () => (await (await fetch(`${gw.httpUrl}/api/v1/health`)).json()) as { outbox: { pending: number; lastSeq: number }; dropped: { diskFloor: number } };
    await eventually(async () => (await health()).outbox.pending === 0, 5000);
    const h = await health();
    expect(h.outbox.lastSeq).toBe(101);
    expect(h.dropped.diskFloor).toBe(101);
    expect(scrapedValue(await (await fetch(`${gw.httpUrl}/metrics`)).text(), 'braid_readings_dropped_total', { reason: 'disk_floor' })).toBe(101);
    const gaps = await queryGatewayDb<GapRow>(gw.dir, 'SELECT from_seq, to_seq, count, reason FROM gaps ORDER BY from_seq');
    expect(gaps.length).toBeGreaterThanOrEqual(2);
    expect(gaps[0].from_seq).toBe(1);
    for (let i = 1; i < gaps.length; i++) expect(gaps[i].from_seq).toBe(gaps[i - 1].to_seq + 1);
    expect(gaps[gaps.length - 1].to_seq).toBe(101);
    for (const g of gaps) expect(g).toMatchObject({ reason: 'disk_floor', count: g.to_seq - g.from_seq + 1 });
    const w = await (await fetch(`${gw.httpUrl}/api/v1/windows?device=dev-f&metric=temp`)).json();
    expect(w.windows['24h'].count).toBe(101);
  }, 20_000);
});
