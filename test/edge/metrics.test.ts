/**
 * The gateway's backlog metrics move with reality: a gateway with no cloud counts every reading
 * it buffers (braid_outbox_pending_readings, braid_outbox_bytes, the age of the oldest), a gateway
 * with a cloud drains to zero and shows when the forwarder and the speed push last succeeded.
 * The host gauges (CPU, memory, the data dir's disk) agree with what the kernel says, and the
 * process metrics come under their standard names (process_*, nodejs_*).
 * Real gateway, real MQTT.js device, real cloud (createCloud), scraped over HTTP.
 */
import { statfsSync } from 'node:fs';
import { totalmem } from 'node:os';
import { resolve } from 'node:path';
import type { MqttClient } from 'mqtt';
import { createCloud, type CloudApp } from '../../cloud/app.js';
import { outboxRowBytes } from '../../edge/store/schema.js';
import { scrapedValue } from '../../shared/metrics.js';
import { addGatewayToken, testCloudConfig } from '../support/cloud.js';
import { type TestGateway, connectDevice, endClient, eventually, publish, startTestGateway, tempDir, gatewayDbAll } from '../support/gateway.js';

let tg: TestGateway | null = null;
let client: MqttClient | null = null;
let cloud: CloudApp | null = null;
let dir: { path: string; remove: () => void } | null = null;

afterEach(async () => {
  if (client) await endClient(client);
  client = null;
  await tg?.close();
  tg = null;
  await cloud?.server.close();
  cloud = null;
  dir?.remove();
  dir = null;
});

const T = Date.UTC(2024, 10, 24, 0, 0, 0);
const DEVICE = 'sensor-0001';

async function scrape(): Promise<string> {
  const res = await fetch(`${tg!.httpUrl}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

/** Scrape until `ok` holds for the exposition, and return it. */
async function scrapeWhen(ok: (text: string) => boolean, timeoutMs = 5000): Promise<string> {
  const text = await eventually(async () => {
    const t = await scrape();
    return ok(t) ? t : null;
  }, timeoutMs);
  return text!;
}

/** Whether the exposition has a sample of `name` (a gauge with no value shows only its # HELP and # TYPE). */
const hasSample = (text: string, name: string) => new RegExp(`^${name}(\\{[^}]*\\})? `, 'm').test(text);

/** `n` QoS 1 readings of two metrics, each acknowledged (committed) before the next goes. */
async function publishReadings(n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await publish(client!, `devices/${DEVICE}/telemetry`, JSON.stringify({ ts: T + i * 1000, temp: 20 + i, hum: 40 }), 1);
  }
}

test('with no cloud, the backlog gauges count what is buffered and the oldest reading ages', async () => {
  tg = await startTestGateway({ outbox: { maxBytes: 50_000_000 } });
  client = await connectDevice(tg.mqttUrl, DEVICE, await tg.addDevice(DEVICE));
  let text = await scrape();
  expect(scrapedValue(text, 'braid_outbox_pending_readings')).toBe(0);
  expect(scrapedValue(text, 'braid_outbox_bytes')).toBe(0);
  expect(scrapedValue(text, 'braid_outbox_oldest_pending_age_seconds')).toBe(0);
  expect(scrapedValue(text, 'braid_outbox_max_bytes')).toBe(50_000_000);

  const before = Date.now();
  await publishReadings(12);
  text = await scrape();
  const scrapedAt = Date.now();
  // 12 messages x 2 metrics, all acknowledged by PUBACK, so all committed.
  expect(scrapedValue(text, 'braid_outbox_pending_readings')).toBe(24);
  expect(scrapedValue(text, 'braid_outbox_bytes')).toBe(12 * (outboxRowBytes(DEVICE, 'temp') + outboxRowBytes(DEVICE, 'hum')));
  // The same numbers as the health document.
  const health = await (await fetch(`${tg.httpUrl}/api/v1/health`)).json() as { outbox: { pending: number; bytes: number } };
  expect(health.outbox).toMatchObject({ pending: 24, bytes: scrapedValue(text, 'braid_outbox_bytes') });
  // Its epoch opened at the first commit, after `before`: the age cannot exceed the time since.
  const age1 = scrapedValue(text, 'braid_outbox_oldest_pending_age_seconds');
  expect(age1).toBeGreaterThanOrEqual(0);
  expect(age1).toBeLessThanOrEqual((scrapedAt - before) / 1000);

  // Nothing drains it: the oldest reading keeps ageing with the clock.
  await new Promise((r) => setTimeout(r, 1100));
  text = await scrape();
  expect(scrapedValue(text, 'braid_outbox_pending_readings')).toBe(24);
  expect(scrapedValue(text, 'braid_outbox_oldest_pending_age_seconds')).toBeGreaterThanOrEqual(age1 + 1);
  // No cloud, so no success to report: no sample rather than a 0 that reads as 1970.
  expect(hasSample(text, 'braid_forward_last_success_timestamp_seconds')).toBe(false);
  expect(hasSample(text, 'braid_speedpush_last_success_timestamp_seconds')).toBe(false);
  expect(text).toContain('# TYPE braid_forward_last_success_timestamp_seconds gauge');
});

test('at the disk budget the gauges follow the drops: bytes back under the budget, pending = accepted - dropped', async () => {
  // Room for ~30 of these readings (63 + 62 B per message): 40 messages overflow it.
  const maxBytes = 30 * (outboxRowBytes(DEVICE, 'temp') + outboxRowBytes(DEVICE, 'hum')) / 2;
  tg = await startTestGateway({ outbox: { maxBytes } });
  client = await connectDevice(tg.mqttUrl, DEVICE, await tg.addDevice(DEVICE));
  await publishReadings(40);
  const text = await scrapeWhen((t) => scrapedValue(t, 'braid_outbox_bytes') <= maxBytes);
  const dropped = scrapedValue(text, 'braid_readings_dropped_total', { reason: 'disk_budget' });
  expect(dropped).toBeGreaterThan(0);
  expect(scrapedValue(text, 'braid_outbox_pending_readings')).toBe(80 - dropped);
  expect(scrapedValue(text, 'braid_outbox_max_bytes')).toBe(maxBytes);
  const [{ n }] = await gatewayDbAll<{ n: number }>(tg.gateway.outbox, 'SELECT COUNT(*) AS n FROM outbox');
  expect(n).toBe(80 - dropped);
});

test('the backlog survives a restart in the gauges: pending and the age come from gateway.db', async () => {
  dir = tempDir('braid-gw-metrics-');
  tg = await startTestGateway({}, dir.path);
  client = await connectDevice(tg.mqttUrl, DEVICE, await tg.addDevice(DEVICE));
  const before = Date.now();
  await publishReadings(5);
  await endClient(client);
  client = null;
  await tg.close();
  await new Promise((r) => setTimeout(r, 1100));

  tg = await startTestGateway({}, dir.path);
  const text = await scrape();
  expect(scrapedValue(text, 'braid_outbox_pending_readings')).toBe(10);
  // Committed before the restart, more than a second ago: the age counts from then, not from the start.
  const age = scrapedValue(text, 'braid_outbox_oldest_pending_age_seconds');
  expect(age).toBeGreaterThanOrEqual(1);
  expect(age).toBeLessThanOrEqual((Date.now() - before) / 1000);
});

test('with a cloud, the backlog drains to zero and the last successes are stamped', async () => {
  dir = tempDir('braid-gw-metrics-cloud-');
  const token = await addGatewayToken(dir.path, 'gw-test');
  cloud = createCloud(testCloudConfig(dir.path));
  const { url } = await cloud.server.start();
  const started = Date.now();
  tg = await startTestGateway({ cloud: { url, token }, speed: { pushIntervalMs: 100 } });
  client = await connectDevice(tg.mqttUrl, DEVICE, await tg.addDevice(DEVICE));
  await publishReadings(10);

  const text = await scrapeWhen((t) => scrapedValue(t, 'braid_outbox_pending_readings') === 0
    && hasSample(t, 'braid_speedpush_last_success_timestamp_seconds'), 10_000);
  expect(scrapedValue(text, 'braid_outbox_bytes')).toBe(0);
  expect(scrapedValue(text, 'braid_outbox_oldest_pending_age_seconds')).toBe(0);
  expect(scrapedValue(text, 'braid_forward_acked_seq')).toBe(20);
  for (const name of ['braid_forward_last_success_timestamp_seconds', 'braid_speedpush_last_success_timestamp_seconds']) {
    const at = scrapedValue(text, name);
    expect({ name, inRange: at >= started / 1000 && at <= Date.now() / 1000 }).toEqual({ name, inRange: true });
  }
});

/** The labels of the first sample of `name` in an exposition, or null when it has none. */
function sampleLabels(text: string, name: string): Record<string, string> | null {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
  if (!line) return null;
  const inner = /^[^{ ]+\{(.*)\} /.exec(line)?.[1] ?? '';
  return Object.fromEntries([...inner.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
}

test('the host gauges show the CPU, the memory and the data dir\'s file system as the kernel reports them', async () => {
  dir = tempDir('braid-gw-host-');
  tg = await startTestGateway({}, dir.path);
  // The first sample runs in the background at start (df, /proc): wait for it rather than a fixed time.
  const text = await scrapeWhen((t) => hasSample(t, 'braid_host_disk_total_bytes') && hasSample(t, 'braid_host_cpu_usage_ratio'), 10_000);
  const fs = statfsSync(dir.path);
  const total = scrapedValue(text, 'braid_host_disk_total_bytes');
  expect(total).toBe(fs.blocks * fs.bsize);
  const available = scrapedValue(text, 'braid_host_disk_available_bytes');
  // Others write to this disk meanwhile: the same figure as statfs' bavail within 5% of the disk.
  expect(Math.abs(available - fs.bavail * fs.bsize)).toBeLessThan(total * 0.05);
  expect(available).toBeLessThanOrEqual(total);
  // Labelled with the mount point holding the data dir, and both disk gauges with the same one.
  const { mount } = sampleLabels(text, 'braid_host_disk_total_bytes')!;
  expect(resolve(dir.path) === mount || resolve(dir.path).startsWith(mount.endsWith('/') ? mount : `${mount}/`)).toBe(true);
  expect(sampleLabels(text, 'braid_host_disk_available_bytes')).toEqual({ mount });

  expect(scrapedValue(text, 'braid_host_memory_total_bytes')).toBe(totalmem());
  const used = scrapedValue(text, 'braid_host_memory_used_bytes');
  expect(used).toBeGreaterThan(0);
  expect(used).toBeLessThanOrEqual(totalmem());
  const cpu = scrapedValue(text, 'braid_host_cpu_usage_ratio');
  expect(cpu).toBeGreaterThanOrEqual(0);
  expect(cpu).toBeLessThanOrEqual(1);

  // The same sample as the health document's host section (percent there, a ratio here).
  const health = await (await fetch(`${tg.httpUrl}/api/v1/health`)).json() as { host: { memTotalBytes: number; diskTotalBytes: number; diskPath: string } };
  expect(health.host).toMatchObject({ memTotalBytes: totalmem(), diskTotalBytes: total, diskPath: mount });
});

test('the process metrics have the standard names of the Prometheus client libraries, no braid_ prefix', async () => {
  tg = await startTestGateway();
  const text = await scrape();
  for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_heap_size_used_bytes']) {
    expect({ name, sample: hasSample(text, name) }).toEqual({ name, sample: true });
  }
  expect(text).toContain('# TYPE process_cpu_seconds_total counter');
  expect(text).not.toMatch(/^braid_process_/m);
  // The process started before this scrape: its start time is the real one, not a placeholder.
  expect(scrapedValue(text, 'process_start_time_seconds')).toBeLessThanOrEqual(Date.now() / 1000);
  expect(scrapedValue(text, 'process_start_time_seconds')).toBeGreaterThan(Date.now() / 1000 - 24 * 3600);
});
