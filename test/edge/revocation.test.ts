/**
 * [INV-7] A removed or rotated credential stops working at once, live sessions included:
 * `braid device remove|rotate` run as processes of their own against the running gateway's
 * registry.db, and the device's open MQTT.js session is closed within 5 s, counted.
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MqttClient } from 'mqtt';
import { metricValue } from '../../shared/metrics.js';
import { type TestGateway, connectDevice, endClient, eventually, publish, startTestGateway, gatewayDbAll } from '../support/gateway.js';

const BIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'braid.js');

let tg: TestGateway;
let clients: MqttClient[] = [];

beforeEach(async () => {
  tg = await startTestGateway();
});

afterEach(async () => {
  for (const c of clients) await endClient(c);
  clients = [];
  await tg.close();
});

async function connect(id: string, secret: string): Promise<MqttClient> {
  const c = await connectDevice(tg.mqttUrl, id, secret);
  clients.push(c);
  return c;
}

/** `braid device <args> --data-dir <the gateway's>` in a process of its own; resolves with its stdout. */
function deviceCli(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [BIN, 'device', ...args, '--data-dir', tg.dir], {
      env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    proc.stdout.setEncoding('utf8').on('data', (s: string) => { out += s; });
    proc.stderr.setEncoding('utf8').on('data', (s: string) => { out += s; });
    proc.once('error', reject);
    proc.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`braid device ${args.join(' ')} exited ${code}:\n${out}`))));
  });
}

/**
 * Watch `c` for its close; `within(ms)`, called once the change is committed (the CLI exited),
 * resolves with the ms from then to the close (negative: it closed first), or rejects after `ms`.
 */
function closedWithin(c: MqttClient): { within: (ms: number) => Promise<number> } {
  let closedAt: number | null = null;
  const closed = new Promise<void>((resolve) => c.once('close', () => { closedAt = Date.now(); resolve(); }));
  return {
    within: async (ms) => {
      const from = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`session still open ${ms} ms after the change`)), ms); });
      try {
        await Promise.race([closed, late]);
      } finally {
        clearTimeout(timer);
      }
      return closedAt! - from;
    },
  };
}

const metric = (name: string, labels: Record<string, string> = {}) => metricValue(tg.gateway.registry, name, labels);
const rows = () => gatewayDbAll<{ device: string; value: number }>(tg.gateway.outbox, 'SELECT device, value FROM outbox ORDER BY seq');

async function refusedCode(id: string, secret: string): Promise<number | undefined> {
  try {
    clients.push(await connectDevice(tg.mqttUrl, id, secret));
  } catch (err) {
    return (err as { code?: number }).code;
  }
  throw new Error(`${id} connected, expected a refusal`);
}

describe('revocation of live sessions [INV-7]', () => {
  it('`braid device remove` in another process closes the device\'s open session within 5 s, and only that one', async () => {
    const s1 = await tg.addDevice('d1');
    const s2 = await tg.addDevice('d2');
    const d1 = await connect('d1', s1);
    const d2 = await connect('d2', s2);
    await publish(d1, 'devices/d1/telemetry', '{"temp":1}');

    const closed = closedWithin(d1);
    await deviceCli('remove', 'd1');
    expect(await closed.within(5000)).toBeLessThan(5000);
    expect(await metric('braid_mqtt_sessions_revoked_total', { reason: 'removed' })).toBe(1);
    expect(await metric('braid_mqtt_sessions_revoked_total', { reason: 'rotated' })).toBe(0);

    // The removed device cannot come back; the other one never noticed.
    expect(await refusedCode('d1', s1)).toBe(5);
    expect(d2.connected).toBe(true);
    await publish(d2, 'devices/d2/telemetry', '{"temp":2}');
    expect(await rows()).toEqual([{ device: 'd1', value: 1 }, { device: 'd2', value: 2 }]);
    expect(tg.gateway.broker.connectedDevices()).toEqual(['d2']);
  }, 60_000); // `braid device ...` processes start slowly on a busy machine

  it('`braid device rotate` closes the session of the old secret; the new secret connects and stays', async () => {
    const old = await tg.addDevice('d1');
    const d1 = await connect('d1', old);
    const closed = closedWithin(d1);
    const out = await deviceCli('rotate', 'd1');
    const fresh = out.trimEnd().split('\n').pop()!;
    expect(fresh).not.toBe(old);
    await closed.within(5000);
    expect(await metric('braid_mqtt_sessions_revoked_total', { reason: 'rotated' })).toBe(1);
    // The old secret verified a moment ago (remembered): refused all the same.
    expect(await refusedCode('d1', old)).toBe(5);

    const again = await connect('d1', fresh);
    await publish(again, 'devices/d1/telemetry', '{"temp":3}');
    // Two more checks of the registry later, the new session is still up: only stale ones go.
    const checks = tg.gateway.devices.generation;
    await deviceCli('add', 'other', '--secret', 'other-secret'); // moves the registry again
    await eventually(() => tg.gateway.devices.generation > checks, 5000);
    expect(again.connected).toBe(true);
    expect(await metric('braid_mqtt_sessions_revoked_total', { reason: 'rotated' })).toBe(1);
    await publish(again, 'devices/d1/telemetry', '{"temp":4}');
    expect((await rows()).map((r) => r.value)).toEqual([3, 4]);
  }, 60_000); // `braid device ...` processes start slowly on a busy machine

  it('ends the session of a device rotated from the gateway\'s own registry connection too', async () => {
    // data_version counts other connections' commits only; the registry marks its own writes.
    const secret = await tg.addDevice('d1');
    const d1 = await connect('d1', secret);
    const closed = closedWithin(d1);
    await tg.gateway.devices.rotate('d1', 'another-secret');
    await closed.within(5000);
    expect(await metric('braid_mqtt_sessions_revoked_total', { reason: 'rotated' })).toBe(1);
  });

  it('keeps no revoked QoS 1 publish after the session is gone', async () => {
    const secret = await tg.addDevice('d1');
    const d1 = await connect('d1', secret);
    const closed = closedWithin(d1);
    await deviceCli('remove', 'd1');
    await closed.within(5000);
    // A device that keeps trying with the removed credential gets CONNACK 5 each time, nothing stored.
    for (let i = 0; i < 3; i++) expect(await refusedCode('d1', secret)).toBe(5);
    expect(await rows()).toEqual([]);
  }, 60_000); // `braid device ...` processes start slowly on a busy machine
});
