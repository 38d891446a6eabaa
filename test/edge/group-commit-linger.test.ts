/**
 * The group commit's linger (outbox.groupCommitMs, edge/outbox/committer.ts) through real MQTT:
 * devices that each send one QoS 1 message at a time share one commit, their PUBACKs after it
 * [INV-1]; a device keeping a window of messages in flight is never held by the linger. Real
 * aedes, MQTT.js devices, real SQLite.
 */
import { type TestGateway, commitCount, connectDevice, endClient, publish, startTestGateway, gatewayDbGet } from '../support/gateway.js';
import type { MqttClient } from 'mqtt';

let tg: TestGateway | null = null;
let clients: MqttClient[] = [];

afterEach(async () => {
  for (const c of clients) await endClient(c);
  clients = [];
  await tg?.close();
  tg = null;
});

const T = Date.UTC(2026, 11, 6, 0, 0, 0);
const commits = () => commitCount(tg!.gateway.registry);
const rows = async () => (await gatewayDbGet<{ n: number }>(tg!.gateway.outbox, 'SELECT COUNT(*) AS n FROM outbox'))!.n;

async function device(id: string): Promise<MqttClient> {
  const c = await connectDevice(tg!.mqttUrl, id, await tg!.addDevice(id));
  clients.push(c);
  return c;
}

test('single-message devices arriving within the linger share one commit; each PUBACK comes after it', async () => {
  tg = await startTestGateway({ outbox: { groupCommitMs: 3000 } });
  const [a, b] = [await device('fleet-a'), await device('fleet-b')];
  const before = await commits();
  const t0 = performance.now();
  const acked: number[] = [];
  const first = publish(a, 'devices/fleet-a/telemetry', JSON.stringify({ ts: T, temp: 20.5, hum: 40 })).then(() => acked.push(performance.now() - t0));
  await new Promise((r) => setTimeout(r, 100));
  expect(await rows()).toBe(0);
  const second = publish(b, 'devices/fleet-b/telemetry', JSON.stringify({ ts: T + 50, temp: 21.5 })).then(() => acked.push(performance.now() - t0));
  await Promise.all([first, second]);
  expect(await commits()).toBe(before + 1);
  expect(await rows()).toBe(3);
  // Both waited for the oldest reading's linger, from a's publish.
  expect(Math.min(...acked)).toBeGreaterThanOrEqual(3000 - 50);
});

test('a device with a window in flight is not held by the linger: its messages commit at once', async () => {
  // A linger longer than the test's timeout: only the window can end it.
  tg = await startTestGateway({ outbox: { groupCommitMs: 120_000 } });
  const w = await device('windowed');
  const sent = Array.from({ length: 50 }, (_, i) => publish(w, 'devices/windowed/telemetry', JSON.stringify({ ts: T + i * 1000, temp: i })));
  await Promise.all(sent);
  expect(await rows()).toBe(50);
  // Its next message alone: its last commit held several of its messages, so it keeps its window.
  await publish(w, 'devices/windowed/telemetry', JSON.stringify({ ts: T + 60_000, temp: 60 }));
  expect(await rows()).toBe(51);
});
