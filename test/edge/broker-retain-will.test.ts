/**
 * Retained messages, wills and QoS 2 at the gateway's broker, with real MQTT.js clients, raw MQTT
 * 3.1.1 packets and Debian's mosquitto clients:
 * - telemetry is not state: a retain flag is cleared (counted), the reading kept, nothing replayed;
 * - a CONNECT with a will is refused with CONNACK 5 (counted): the gateway would publish it for a
 *   device that is gone, after a revocation too;
 * - QoS 2 works: PUBREC after the commit, a resent PUBLISH stored once [INV-1, INV-2].
 * Also: close() ends sockets that never sent CONNECT instead of waiting for their timeout.
 */
import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { connect as netConnect, type Socket } from 'node:net';
import type { MqttClient } from 'mqtt';
import { metricValue } from '../../shared/metrics.js';
import { PUBCOMP, PUBREC, collectPackets, connectPacket, openSocket, publishPacket, pubrelPacket } from '../support/mqtt-raw.js';
import { type TestGateway, connectDevice, endClient, eventually, publish, requireBinary, startTestGateway, tempDir, gatewayDbAll } from '../support/gateway.js';

let tg: TestGateway;
let clients: MqttClient[] = [];
let sockets: Socket[] = [];

beforeEach(async () => {
  tg = await startTestGateway();
});

afterEach(async () => {
  for (const c of clients) await endClient(c);
  clients = [];
  for (const s of sockets) s.destroy();
  sockets = [];
  await tg.close();
});

const metric = (name: string, labels: Record<string, string> = {}) => metricValue(tg.gateway.registry, name, labels);
const rows = () => gatewayDbAll<{ device: string; metric: string; ts: number; value: number }>(tg.gateway.outbox, 'SELECT device, metric, ts, value FROM outbox ORDER BY seq');
const port = () => new URL(tg.mqttUrl).port;

async function connect(id: string, secret: string, extra: Parameters<typeof connectDevice>[3] = {}): Promise<MqttClient> {
  const c = await connectDevice(tg.mqttUrl, id, secret, extra);
  clients.push(c);
  return c;
}

/**
 * The messages a fresh subscription to `filter` gets before a marker published after the SUBACK:
 * retained messages are sent right after the SUBACK [MQTT-3.3.1-6], so any would come first.
 */
async function replayed(c: MqttClient, filter: string, markerTopic: string): Promise<string[]> {
  const got: string[] = [];
  let marker = false;
  c.on('message', (topic, payload) => {
    if (topic === markerTopic && payload.toString() === 'marker') marker = true;
    else if (!marker) got.push(`${topic} ${payload.toString()}`);
  });
  await new Promise<void>((resolve, reject) => c.subscribe(filter, { qos: 1 }, (err) => (err ? reject(err) : resolve())));
  await new Promise<void>((resolve, reject) => c.publish(markerTopic, 'marker', { qos: 1 }, (err) => (err ? reject(err) : resolve())));
  await eventually(() => marker, 10_000);
  return got;
}

function run(cmd: string, args: string[], timeoutMs = 10_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

const rawSocket = () => openSocket(tg.mqttUrl, sockets);

describe('retained messages', () => {
  it('clears the retain flag of a telemetry publish (counted), stores the reading, and replays nothing', async () => {
    const secret = await tg.addDevice('d1');
    const c = await connect('d1', secret);
    await new Promise<void>((resolve, reject) => c.publish('devices/d1/telemetry', '{"ts":1732406400000,"temp":21.5}', { qos: 1, retain: true }, (err) => (err ? reject(err) : resolve())));
    await new Promise<void>((resolve, reject) => c.publish('devices/d1/state', 'on', { qos: 0, retain: true }, (err) => (err ? reject(err) : resolve())));
    await eventually(async () => (await metric('braid_mqtt_retain_stripped_total')) === 2);
    expect(await rows()).toEqual([{ device: 'd1', metric: 'temp', ts: 1732406400000, value: 21.5 }]);
    // A new session of the device, subscribed to all it may read: no retained message comes.
    await endClient(c);
    const again = await connect('d1', secret);
    expect(await replayed(again, 'devices/d1/#', 'devices/d1/marker')).toEqual([]);
  });

  const haveMosquitto = requireBinary('mosquitto_pub', 'mosquitto-clients');
  (haveMosquitto ? it : it.skip)('mosquitto_pub -r: the reading is stored, nothing is retained for mosquitto_sub', async () => {
    const secret = await tg.addDevice('m1');
    const auth = ['-h', '127.0.0.1', '-p', port(), '-V', 'mqttv311', '-i', 'm1', '-u', 'm1', '-P', secret];
    const pub = await run('mosquitto_pub', [...auth, '-q', '1', '-r', '-t', 'devices/m1/telemetry', '-m', '{"ts":1732406400000,"hum":40}']);
    expect(pub).toMatchObject({ code: 0 });
    expect(await metric('braid_mqtt_retain_stripped_total')).toBe(1);
    expect(await rows()).toEqual([{ device: 'm1', metric: 'hum', ts: 1732406400000, value: 40 }]);
    // --retained-only prints retained messages only; -W 2 gives up after 2 s with nothing.
    const sub = await run('mosquitto_sub', [...auth, '-t', 'devices/m1/#', '--retained-only', '-W', '2', '-v']);
    expect(sub.stdout).toBe('');
  });
});

describe('wills', () => {
  it('refuses a CONNECT carrying a will with CONNACK 5 (counted); the same device without one connects', async () => {
    const secret = await tg.addDevice('d1');
    const err = await connectDevice(tg.mqttUrl, 'd1', secret, { will: { topic: 'devices/d1/telemetry', payload: Buffer.from('{"online":0}'), qos: 1, retain: false } })
      .then((c) => { clients.push(c); return null; }, (e: { code?: number }) => e);
    expect(err).toMatchObject({ code: 5 });
    expect(await metric('braid_mqtt_connect_refused_total', { reason: 'will' })).toBe(1);
    // Refused before the secret is checked: no hash spent on it.
    expect(await metric('braid_mqtt_auth_verifications_total')).toBe(0);
    const c = await connect('d1', secret);
    expect(c.connected).toBe(true);
  });

  const haveMosquitto = requireBinary('mosquitto_pub', 'mosquitto-clients');
  (haveMosquitto ? it : it.skip)('mosquitto_pub --will-topic is refused as not authorized, and nothing is stored', async () => {
    const secret = await tg.addDevice('m1');
    const r = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', port(), '-V', 'mqttv311', '-i', 'm1', '-u', 'm1', '-P', secret,
      '--will-topic', 'devices/m1/status', '--will-payload', 'offline', '-q', '1', '-t', 'devices/m1/telemetry', '-m', '{"temp":1}']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/not authori[sz]ed/i);
    expect(await rows()).toEqual([]);
  });
});

describe('QoS 2', () => {
  const haveMosquitto = requireBinary('mosquitto_pub', 'mosquitto-clients');
  (haveMosquitto ? it : it.skip)('mosquitto_pub -q 2: the reading is in the outbox once when it exits', async () => {
    const secret = await tg.addDevice('m1');
    const r = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', port(), '-V', 'mqttv311', '-i', 'm1', '-u', 'm1', '-P', secret,
      '-q', '2', '-t', 'devices/m1/telemetry', '-m', '{"ts":1732406400000,"temp":21.5,"hum":40}']);
    expect(r).toMatchObject({ code: 0 });
    // No polling: PUBREC (and so PUBCOMP, and the exit) only after the commit.
    expect(await rows()).toEqual([
      { device: 'm1', metric: 'temp', ts: 1732406400000, value: 21.5 },
      { device: 'm1', metric: 'hum', ts: 1732406400000, value: 40 },
    ]);
    expect(await metric('braid_mqtt_telemetry_messages_total', { qos: '2' })).toBe(1);
  });

  it('MQTT.js QoS 2: each message stored once', async () => {
    const c = await connect('d1', await tg.addDevice('d1'));
    for (let i = 0; i < 5; i++) {
      await new Promise<void>((resolve, reject) => c.publish('devices/d1/telemetry', JSON.stringify({ n: i }), { qos: 2 }, (err) => (err ? reject(err) : resolve())));
    }
    expect((await rows()).map((r) => r.value)).toEqual([0, 1, 2, 3, 4]);
  });

  it('a PUBLISH resent before its PUBREC (DUP, same id, no ts) is stored once, and the exchange completes', async () => {
    const secret = await tg.addDevice('raw');
    const s = await rawSocket();
    const packets = collectPackets(s);
    s.write(connectPacket('raw', 'raw', secret, 30));
    await eventually(() => packets.some((p) => p.type === 2));
    const payload = JSON.stringify({ temp: 7 });
    s.write(publishPacket('devices/raw/telemetry', payload, 2, 11, false));
    s.write(publishPacket('devices/raw/telemetry', payload, 2, 11, true));
    await eventually(() => packets.filter((p) => p.type === PUBREC).length === 2);
    s.write(pubrelPacket(11));
    await eventually(() => packets.some((p) => p.type === PUBCOMP));
    expect(packets.filter((p) => p.type === PUBCOMP).map((p) => p.body.readUInt16BE(0))).toEqual([11]);
    expect((await rows()).map((r) => [r.device, r.metric, r.value])).toEqual([['raw', 'temp', 7]]);
    expect(await metric('braid_readings_duplicate_total')).toBe(1);
  });
});

describe('close', () => {
  const haveOpenssl = requireBinary('openssl', 'openssl');
  (haveOpenssl ? it : it.skip)('closes TCP, WebSocket and TLS listeners with their devices on them, and resolves once they are closed', async () => {
    await tg.close();
    const dir = tempDir();
    try {
      const cert = join(dir.path, 'gw.crt');
      const key = join(dir.path, 'gw.key');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=127.0.0.1',
        '-days', '1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
      tg = await startTestGateway({ mqtt: { wsPort: 0, tlsPort: 0, tlsCert: cert, tlsKey: key } });
      const { wsPort, tlsPort } = tg.gateway.addresses;
      const secret = await tg.addDevice('d1');
      await tg.addDevice('d2', secret);
      await tg.addDevice('d3', secret);
      const overTcp = await connect('d1', secret);
      const overWs = await connectDevice(`ws://127.0.0.1:${wsPort}/mqtt`, 'd2', secret);
      const overTls = await connectDevice(`mqtts://127.0.0.1:${tlsPort}`, 'd3', secret, { rejectUnauthorized: false });
      clients.push(overWs, overTls);
      for (const [c, id] of [[overTcp, 'd1'], [overWs, 'd2'], [overTls, 'd3']] as const) await publish(c, `devices/${id}/telemetry`, '{"temp":1}');
      expect((await rows()).map((r) => r.device)).toEqual(['d1', 'd2', 'd3']);
      const allClosed = Promise.all([overTcp, overWs, overTls].map((c) => new Promise<void>((resolve) => c.once('close', () => resolve()))));
      await tg.gateway.broker.close();
      await allClosed;
      // Every port is free again once close() resolved.
      for (const p of [Number(port()), wsPort!, tlsPort!]) {
        const refused = await new Promise<boolean>((resolve) => {
          const s = netConnect(p, '127.0.0.1');
          s.once('connect', () => { s.destroy(); resolve(false); });
          s.once('error', () => resolve(true));
        });
        expect({ port: p, refused }).toEqual({ port: p, refused: true });
      }
    } finally {
      dir.remove();
    }
  });

  it('ends a connection that never sent CONNECT at once, not at its connect timeout', async () => {
    await tg.close();
    tg = await startTestGateway({ mqtt: { connectTimeoutMs: 60_000 } });
    const s = await rawSocket();
    const ended = new Promise<number>((resolve) => { const t0 = Date.now(); s.once('close', () => resolve(Date.now() - t0)); });
    const t0 = Date.now();
    await tg.gateway.broker.close();
    const closeMs = Date.now() - t0;
    expect(await ended).toBeLessThan(5000);
    expect(closeMs).toBeLessThan(5000);
  });
});
