/**
 * The broker when the outbox cannot commit: the message that failed gets no PUBACK (counted), new
 * CONNECTs are refused with CONNACK 3 (server unavailable, counted) instead of being taken and
 * dropped at their first publish, and the gateway takes devices again by itself once a probe
 * commit succeeds. The store fails for real: SQLite's own database-full error (PRAGMA
 * max_page_count on the gateway's writer connection), and, where this user may mount one, a full
 * tmpfs under the data dir. Also the commit-queue limit [INV-6].
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { metricValue } from '../../shared/metrics.js';
import { connectDevice, eventually, publish, requireBinary, startTestGateway, tempDir, gatewayDbAll } from '../support/gateway.js';
import { e2eScope } from '../support/scope.js';

const scope = e2eScope();

const metric = (name: string, labels: Record<string, string> = {}) => metricValue(scope.gw!.gateway.registry, name, labels);
const rows = () => gatewayDbAll<{ device: string; metric: string; value: number }>(scope.gw!.gateway.outbox, 'SELECT device, metric, value FROM outbox ORDER BY seq');

/** A SenML pack of `n` readings with fresh identities: enough new rows to need new pages. */
function bigPack(n: number, base: number): string {
  return JSON.stringify(Array.from({ length: n }, (_, i) => ({ n: `m${i % 50}`, t: (base + i) / 1000, v: i })));
}

function run(cmd: string, args: string[], timeoutMs = 10_000): Promise<{ code: number; stdout: string; stderr: string }> {
  // Asynchronous: the gateway under test runs in this very process and must keep serving.
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** Publish QoS 1 and report what came back: the PUBACK, or the connection closing without one. */
function publishOutcome(c: MqttClient, topic: string, payload: string): Promise<'puback' | 'closed'> {
  return new Promise((resolve) => {
    c.once('close', () => resolve('closed'));
    c.publish(topic, payload, { qos: 1 }, (err) => { if (!err) resolve('puback'); });
  });
}

async function connectCode(id: string, secret: string): Promise<number> {
  try {
    scope.clients.push(await connectDevice(scope.gw!.mqttUrl, id, secret));
    return 0;
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
}

/** Cap gateway.db at the pages it has now (SQLITE_FULL past them), or lift the cap (null). */
async function capPages(cap: 'now' | null): Promise<void> {
  await scope.gw!.gateway.outbox.writes.run(async (db) => {
    const n = cap === 'now' ? (await db.get<{ page_count: number }>('PRAGMA page_count'))!.page_count : 1073741823;
    await db.exec(`PRAGMA max_page_count = ${n}`);
  });
}

describe('while the outbox cannot commit', () => {
  it('leaves the failed message without PUBACK, refuses CONNECT with CONNACK 3, and takes devices again by itself', async () => {
    scope.gw = await startTestGateway();
    const secret = await scope.gw.addDevice('d1');
    const other = await scope.gw.addDevice('d2');
    const d1 = await connectDevice(scope.gw.mqttUrl, 'd1', secret);
    scope.clients.push(d1);
    await publish(d1, 'devices/d1/telemetry', '{"temp":1}');

    await capPages('now');
    const base = Date.now() - 3_600_000;
    expect(await publishOutcome(d1, 'devices/d1/telemetry', bigPack(1000, base))).toBe('closed');
    expect(await metric('braid_mqtt_telemetry_unacked_total', { reason: 'commit_failed' })).toBe(1);
    expect(await metric('braid_commit_failures_total')).toBeGreaterThanOrEqual(1);
    expect(scope.gw.gateway.outbox.commitsFailingSince()).not.toBeNull();
    const health = async () => ((await (await fetch(`${scope.gw!.httpUrl}/api/v1/health`)).json()) as { outbox: { commitsFailingSince: string | null } }).outbox;
    expect((await health()).commitsFailingSince).toMatch(/^\d{4}-\d\d-\d\dT/);

    // Refused at CONNECT, before its secret is checked: nothing taken that would be dropped.
    const connectsBefore = await metric('braid_mqtt_connects_total');
    expect(await connectCode('d1', secret)).toBe(3);
    expect(await connectCode('d2', other)).toBe(3);
    expect(await metric('braid_mqtt_connect_refused_total', { reason: 'store_unavailable' })).toBe(2);
    expect(await metric('braid_mqtt_connects_total')).toBe(connectsBefore);

    // A device retrying 10 ms after each refusal (MQTT.js retries after one only with
    // reconnectOnConnackError) is refused each time, and the CONNACK 3 comes after a second, so it
    // tries about once a second, not a hundred times.
    const retrier = mqtt.connect(scope.gw.mqttUrl, {
      clientId: 'd2', username: 'd2', password: other, reconnectPeriod: 10, reconnectOnConnackError: true, connectTimeout: 5000, protocolVersion: 4,
    });
    scope.clients.push(retrier);
    let refusals = 0;
    retrier.on('error', (err) => { if ((err as { code?: number }).code === 3) refusals++; });
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, 3000));
    const perSecond = refusals / ((Date.now() - t0) / 1000);
    expect(refusals).toBeGreaterThanOrEqual(1);
    expect(refusals).toBeLessThanOrEqual(5);
    expect(retrier.connected).toBe(false);
    // eslint-disable-next-line no-console
    console.log(`while commits fail: ${refusals} CONNECT attempts in 3 s (${perSecond.toFixed(1)}/s) from an MQTT.js device, each CONNACK 3`);

    // The disk has room again: a probe commit finds out, and devices are taken with no restart.
    await capPages(null);
    await eventually(() => scope.gw!.gateway.outbox.commitsFailingSince() === null, 5000);
    expect((await health()).commitsFailingSince).toBeNull();
    await eventually(() => retrier.connected, 5000);
    expect(await connectCode('d1', secret)).toBe(0);
    const again = scope.clients[scope.clients.length - 1];
    await publish(again, 'devices/d1/telemetry', bigPack(1000, base));
    await publish(again, 'devices/d1/telemetry', '{"temp":2}');
    const r = await rows();
    expect(r).toHaveLength(1002);
    expect(r[0]).toEqual({ device: 'd1', metric: 'temp', value: 1 });
    expect(r[1001]).toEqual({ device: 'd1', metric: 'temp', value: 2 });
  }, 60_000);

  const haveMosquitto = requireBinary('mosquitto_pub', 'mosquitto-clients');
  (haveMosquitto ? it : it.skip)('mosquitto_pub is refused as broker unavailable, and publishes once the store commits again', async () => {
    scope.gw = await startTestGateway();
    const secret = await scope.gw.addDevice('m1');
    const args = ['-h', '127.0.0.1', '-p', new URL(scope.gw.mqttUrl).port, '-V', 'mqttv311', '-i', 'm1', '-u', 'm1', '-P', secret, '-q', '1', '-t', 'devices/m1/telemetry'];
    await capPages('now');
    // A commit has to fail first: the gateway learns of a failing store from its commits (or probes).
    const d = await connectDevice(scope.gw.mqttUrl, 'm1', secret);
    scope.clients.push(d);
    expect(await publishOutcome(d, 'devices/m1/telemetry', bigPack(1000, Date.now() - 3_600_000))).toBe('closed');
    const r = await run('mosquitto_pub', [...args, '-m', '{"temp":9}']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/unavailable/i);
    expect(await metric('braid_mqtt_connect_refused_total', { reason: 'store_unavailable' })).toBe(1);
    await capPages(null);
    await eventually(() => scope.gw!.gateway.outbox.commitsFailingSince() === null, 5000);
    expect(await run('mosquitto_pub', [...args, '-m', '{"temp":10}'])).toMatchObject({ code: 0 });
    expect(await rows()).toEqual([{ device: 'm1', metric: 'temp', value: 10 }]);
  });

  it('refuses commits past maxQueuedReadings without PUBACK (counted), and the device goes on', async () => {
    scope.gw = await startTestGateway({ outbox: { maxQueuedReadings: 3 } });
    const secret = await scope.gw.addDevice('d1');
    const d1 = await connectDevice(scope.gw.mqttUrl, 'd1', secret);
    scope.clients.push(d1);
    expect(await publishOutcome(d1, 'devices/d1/telemetry', '{"a":1,"b":2,"c":3,"d":4}')).toBe('closed');
    expect(await metric('braid_mqtt_telemetry_unacked_total', { reason: 'queue_full' })).toBe(1);
    expect(await metric('braid_readings_dropped_total', { reason: 'queue_full' })).toBe(4);
    // A full queue is not a failing store: the device is taken again at once.
    expect(scope.gw.gateway.outbox.commitsFailingSince()).toBeNull();
    expect(await connectCode('d1', secret)).toBe(0);
    await publish(scope.clients[scope.clients.length - 1], 'devices/d1/telemetry', '{"a":1,"b":2}');
    expect((await rows()).map((x) => x.metric)).toEqual(['a', 'b']);
  });
});

function mountTmpfs(dir: string, bytes: number): void {
  mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir], { stdio: 'pipe' });
}

/** Whether this user may mount a tmpfs (root, with the capability); if not, a visible skip. */
function canMountTmpfs(): boolean {
  const tmp = tempDir();
  try {
    mountTmpfs(tmp.path, 64 * 1024);
    execFileSync('umount', [tmp.path]);
    return true;
  } catch (err) {
    // eslint-disable-next-line no-console
    console.warn(`SKIPPED: cannot mount a tmpfs here (${String((err as Error).message).split('\n')[0]}); the max_page_count tests cover the path`);
    return false;
  } finally {
    tmp.remove();
  }
}

describe('a full disk', () => {
  (canMountTmpfs() ? it : it.skip)('ENOSPC on a full tmpfs: CONNACK 3 while full, devices taken again once space is freed', async () => {
    const tmp = tempDir();
    const dir = join(tmp.path, 'mnt');
    mountTmpfs(dir, 8 * 1024 * 1024);
    try {
      scope.gw = await startTestGateway({}, join(dir, 'gw'));
      const secret = await scope.gw.addDevice('d1');
      const d1 = await connectDevice(scope.gw.mqttUrl, 'd1', secret);
      scope.clients.push(d1);
      await publish(d1, 'devices/d1/telemetry', '{"temp":1}');
      // Fill the file system: what is left goes to a filler file.
      const filler = join(dir, 'filler');
      try { execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k'], { stdio: 'pipe' }); } catch { /* stops at ENOSPC */ }
      const base = Date.now() - 3_600_000;
      let outcome: 'puback' | 'closed' = 'puback';
      for (let i = 0; i < 20 && outcome === 'puback'; i++) outcome = await publishOutcome(d1, 'devices/d1/telemetry', bigPack(1000, base + i * 1000));
      expect(outcome).toBe('closed');
      expect(scope.gw.gateway.outbox.commitsFailingSince()).not.toBeNull();
      expect(await connectCode('d1', secret)).toBe(3);
      expect(await metric('braid_mqtt_connect_refused_total', { reason: 'store_unavailable' })).toBeGreaterThanOrEqual(1);

      rmSync(filler);
      writeFileSync(join(dir, 'note'), 'space freed');
      await eventually(() => scope.gw!.gateway.outbox.commitsFailingSince() === null, 5000);
      expect(await connectCode('d1', secret)).toBe(0);
      await publish(scope.clients[scope.clients.length - 1], 'devices/d1/telemetry', '{"temp":2}');
      expect((await rows()).slice(-1)).toEqual([{ device: 'd1', metric: 'temp', value: 2 }]);
    } finally {
      await scope.close(); // before the umount: the gateway's files are under it
      execFileSync('umount', ['-l', dir]);
      tmp.remove();
    }
  });
});
