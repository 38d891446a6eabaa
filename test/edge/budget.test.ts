/**
 * [INV-6] Bounded: an outbox over its disk budget drops its oldest unsent readings, counts them,
 * and records one gap record per drop with the exact seq range, count, time range and devices.
 * The speed layer keeps every reading; the newest readings stay in the outbox.
 */
import type { MqttClient } from 'mqtt';
import { outboxRowBytes } from '../../edge/store/schema.js';
import { queryGatewayDb } from '../support/child-gateway.js';
import { type TestGateway, connectDevice, endClient, eventually, publish, startTestGateway } from '../support/gateway.js';
import { scrapedValue } from '../../shared/metrics.js';

const MAX_BYTES = 20 * 1024;
const DEVICES = ['bud-a', 'bud-bb', 'bud-ccc'];
const METRICS = ['temp', 'hum', 'co2', 'pm25', 'volt', 'rssi'];

interface Reading { device: string; metric: string; ts: number; value: number }
interface OutboxRow { seq: number; device: string; metric: string; ts: number; value: number }
interface GapRow { from_seq: number; to_seq: number; count: number; min_ts: number; max_ts: number; devices: string; reason: string; sent: number }

let gw: TestGateway;
let clients: MqttClient[] = [];

beforeEach(async () => {
  gw = await startTestGateway({
    outbox: { maxBytes: MAX_BYTES },
    mqtt: { ratePerDevice: 100_000, rateBurst: 100_000 },
  });
});

afterEach(async () => {
  await Promise.all(clients.map((c) => endClient(c)));
  clients = [];
  await gw.close();
});

async function metricValue(name: string, labels: Record<string, string> = {}): Promise<number> {
  return scrapedValue(await (await fetch(`${gw.httpUrl}/metrics`)).text(), name, labels);
}

async function health(): Promise<{ outbox: { bytes: number; maxBytes: number; pending: number; lastSeq: number }; dropped: { diskBudget: number } }> {
  return (await fetch(`${gw.httpUrl}/api/v1/health`)).json();
}

test('[INV-6] over the disk budget: the oldest readings are dropped, counted and recorded as gaps', async () => {
  const secret = 'budget-secret';
  for (const d of DEVICES) await gw.addDevice(d, secret);
  for (const d of DEVICES) clients.push(await connectDevice(gw.mqttUrl, d, secret));

  // One message at a time, each awaited: seq order is publish order (metrics in payload order).
  const sent: Reading[] = [];
  const start = Date.now() - 20 * 60_000;
  const MESSAGES = 210;
  for (let i = 0; i < MESSAGES; i++) {
    const device = DEVICES[i % DEVICES.length];
    const ts = start + i * 1000 + (i % 7);
    const readings = METRICS.map((metric, k) => ({ device, metric, ts, value: i * 10 + k + 0.5 }));
    sent.push(...readings);
    await publish(clients[i % DEVICES.length], `devices/${device}/telemetry`, JSON.stringify({ ts, ...Object.fromEntries(readings.map((r) => [r.metric, r.value])) }));
  }
  const totalBytes = sent.reduce((a, r) => a + outboxRowBytes(r.device, r.metric), 0);
  expect(totalBytes).toBeGreaterThan(3 * MAX_BYTES);

  // Every reading got a seq; the budget enforcement runs after the commits.
  await eventually(async () => (await health()).outbox.bytes <= MAX_BYTES, 5000);
  const h = await health();
  expect(h.outbox.lastSeq).toBe(sent.length);

  // Every acknowledged reading in gateway.db first (the commit log's groups go in within a second).
  await gw.gateway.outbox.applied();
  const rows = await queryGatewayDb<OutboxRow>(gw.dir, 'SELECT seq, device, metric, ts, value FROM outbox ORDER BY seq');
  const gaps = await queryGatewayDb<GapRow>(gw.dir, 'SELECT from_seq, to_seq, count, min_ts, max_ts, devices, reason, sent FROM gaps ORDER BY from_seq');
  const dropped = sent.length - rows.length;
  expect(dropped).toBeGreaterThan(0);

  // The newest readings are kept: the outbox holds exactly seq dropped+1..N, each with its reading.
  expect(rows.map((r) => r.seq)).toEqual(sent.slice(dropped).map((_, i) => dropped + 1 + i));
  rows.forEach((r, i) => expect(r).toEqual({ seq: dropped + 1 + i, ...sent[dropped + i] }));

  // Gap records tile exactly the dropped seqs 1..dropped, oldest first, each describing its rows.
  expect(gaps.length).toBeGreaterThan(0);
  expect(gaps[0].from_seq).toBe(1);
  for (let i = 1; i < gaps.length; i++) expect(gaps[i].from_seq).toBe(gaps[i - 1].to_seq + 1);
  expect(gaps[gaps.length - 1].to_seq).toBe(dropped);
  for (const g of gaps) {
    const of = sent.slice(g.from_seq - 1, g.to_seq);
    expect(g).toEqual({
      from_seq: g.from_seq,
      to_seq: g.to_seq,
      count: of.length,
      min_ts: Math.min(...of.map((r) => r.ts)),
      max_ts: Math.max(...of.map((r) => r.ts)),
      devices: JSON.stringify([...new Set(of.map((r) => r.device))].sort()),
      reason: 'disk_budget',
      sent: 0,
    });
  }

  // Counted: the metric, the health document, and the outbox bytes back under the budget.
  expect(await metricValue('braid_readings_dropped_total', { reason: 'disk_budget' })).toBe(dropped);
  expect(await metricValue('braid_gap_records_total')).toBe(gaps.length);
  expect(h.dropped.diskBudget).toBe(dropped);
  expect(h.outbox.pending).toBe(rows.length);
  expect(h.outbox.bytes).toBe(rows.reduce((a, r) => a + outboxRowBytes(r.device, r.metric), 0));
  expect(h.outbox.bytes).toBeLessThanOrEqual(MAX_BYTES);
  expect(h.outbox.maxBytes).toBe(MAX_BYTES);

  // The speed layer keeps every reading, dropped from the outbox or not.
  for (const device of DEVICES) {
    for (const metric of METRICS) {
      const w = await (await fetch(`${gw.httpUrl}/api/v1/windows?device=${device}&metric=${metric}`)).json();
      const series = sent.filter((r) => r.device === device && r.metric === metric);
      expect({ device, metric, count: w.windows['24h'].count, last: w.windows['24h'].last })
        .toEqual({ device, metric, count: series.length, last: series[series.length - 1].value });
      expect(w.windows['24h'].first).toBe(series[0].value);
    }
  }
});

test('[INV-6] a restart reads the budget state back: bytes, pending and later drops continue the gaps', async () => {
  const secret = 'budget-secret';
  await gw.addDevice('bud-a', secret);
  let c = await connectDevice(gw.mqttUrl, 'bud-a', secret);
  clients.push(c);
  const start = Date.now() - 10 * 60_000;
  const send = async (i: number) => publish(c, 'devices/bud-a/telemetry', JSON.stringify({ ts: start + i, temp: i, hum: -i, co2: 2 * i, volt: 3 * i }));
  for (let i = 0; i < 150; i++) await send(i);
  await eventually(async () => (await health()).outbox.bytes <= MAX_BYTES, 5000);
  const before = await health();

  // Restart the gateway on the same dir (in-process, same config).
  await endClient(c);
  clients = [];
  const first = gw;
  const dir = first.dir;
  await first.gateway.close();
  const second = await startTestGateway({ outbox: { maxBytes: MAX_BYTES }, mqtt: { ratePerDevice: 100_000, rateBurst: 100_000 } }, dir);
  // afterEach closes the second gateway, then the first one's close() removes the temp dir.
  gw = { ...second, close: async () => { await second.close(); await first.close(); } };
  const after = await health();
  expect(after.outbox).toMatchObject({ bytes: before.outbox.bytes, pending: before.outbox.pending, lastSeq: before.outbox.lastSeq });

  c = await connectDevice(gw.mqttUrl, 'bud-a', secret);
  clients.push(c);
  for (let i = 150; i < 300; i++) await send(i);
  await eventually(async () => (await health()).outbox.bytes <= MAX_BYTES, 5000);
  // Every acknowledged reading in gateway.db first (the commit log's groups go in within a second).
  await gw.gateway.outbox.applied();
  const rows = await queryGatewayDb<{ seq: number }>(dir, 'SELECT seq FROM outbox ORDER BY seq');
  const gaps = await queryGatewayDb<GapRow>(dir, 'SELECT from_seq, to_seq, count FROM gaps ORDER BY from_seq');
  const dropped = 1200 - rows.length;
  expect(before.outbox.lastSeq).toBe(600);
  expect(rows[0].seq).toBe(dropped + 1);
  expect(rows[rows.length - 1].seq).toBe(1200);
  expect(gaps[0].from_seq).toBe(1);
  for (let i = 1; i < gaps.length; i++) expect(gaps[i].from_seq).toBe(gaps[i - 1].to_seq + 1);
  expect(gaps[gaps.length - 1].to_seq).toBe(dropped);
  expect(gaps.reduce((a, g) => a + g.count, 0)).toBe(dropped);
});

test('[INV-6] a concurrent burst far over the budget ends under it, every drop counted and in a gap', async () => {
  const secret = 'budget-secret';
  for (const d of DEVICES) await gw.addDevice(d, secret);
  for (const d of DEVICES) clients.push(await connectDevice(gw.mqttUrl, d, secret));
  const start = Date.now() - 30 * 60_000;
  const PER_DEVICE = 400;
  await Promise.all(DEVICES.map((device, k) => Promise.all(Array.from({ length: PER_DEVICE }, (_, i) =>
    publish(clients[k], `devices/${device}/telemetry`, JSON.stringify({ ts: start + i * 100, temp: i, hum: k }))))));
  const total = DEVICES.length * PER_DEVICE * 2;

  await eventually(async () => (await health()).outbox.bytes <= MAX_BYTES, 5000);
  const h = await health();
  expect(h.outbox.lastSeq).toBe(total);
  // Every acknowledged reading in gateway.db first (the commit log's groups go in within a second).
  await gw.gateway.outbox.applied();
  const rows = await queryGatewayDb<OutboxRow>(gw.dir, 'SELECT seq, device, metric, ts, value FROM outbox ORDER BY seq');
  const gaps = await queryGatewayDb<GapRow>(gw.dir, 'SELECT from_seq, to_seq, count, min_ts, max_ts, devices FROM gaps ORDER BY from_seq');
  const dropped = total - rows.length;
  expect(rows.map((r) => r.seq)).toEqual(rows.map((_, i) => dropped + 1 + i));
  expect(gaps[0].from_seq).toBe(1);
  for (let i = 1; i < gaps.length; i++) expect(gaps[i].from_seq).toBe(gaps[i - 1].to_seq + 1);
  expect(gaps[gaps.length - 1].to_seq).toBe(dropped);
  for (const g of gaps) expect(g.count).toBe(g.to_seq - g.from_seq + 1);
  expect(await metricValue('braid_readings_dropped_total', { reason: 'disk_budget' })).toBe(dropped);
  expect(h.dropped.diskBudget).toBe(dropped);
  expect(h.outbox.bytes).toBe(rows.reduce((a, r) => a + outboxRowBytes(r.device, r.metric), 0));
  for (const device of DEVICES) {
    const w = await (await fetch(`${gw.httpUrl}/api/v1/windows?device=${device}&metric=temp`)).json();
    expect(w.windows['24h'].count).toBe(PER_DEVICE);
  }
});
