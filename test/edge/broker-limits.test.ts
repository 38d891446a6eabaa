/**
 * Broker limits against a real gateway (aedes + SQLite outbox) with real MQTT.js clients and raw
 * TCP sockets: packet size, topic depth, per-device rate, CONNECT timeout, keepalive ceiling.
 * [INV-5] bad input costs only itself; [INV-6] what a limit refuses is counted.
 */
import type { Socket } from 'node:net';
import type { MqttClient } from 'mqtt';
import { metricValue } from '../../shared/metrics.js';
import { CONNACK, PUBACK, PUBREC, collectPackets, connectPacket, openSocket, publishPacket } from '../support/mqtt-raw.js';
import { type TestGateway, connectDevice, endClient, eventually, publish, startTestGateway, gatewayDbAll } from '../support/gateway.js';
import type { DeepPartial } from '../support/gateway.js';
import type { GatewayConfig } from '../../edge/config.js';

let tg: TestGateway | null = null;
let clients: MqttClient[] = [];
let sockets: Socket[] = [];

afterEach(async () => {
  for (const c of clients) await endClient(c);
  clients = [];
  for (const s of sockets) s.destroy();
  sockets = [];
  await tg?.close();
  tg = null;
});

async function start(overrides: DeepPartial<GatewayConfig>): Promise<TestGateway> {
  tg = await startTestGateway(overrides);
  return tg;
}

async function connect(id: string, extra: Parameters<typeof connectDevice>[3] = {}): Promise<MqttClient> {
  const secret = await tg!.addDevice(id);
  const c = await connectDevice(tg!.mqttUrl, id, secret, extra);
  clients.push(c);
  return c;
}

const metric = (name: string, labels: Record<string, string> = {}) => metricValue(tg!.gateway.registry, name, labels);

const outboxRows = () => gatewayDbAll<{ seq: number; device: string; metric: string; ts: number; value: number }>(tg!.gateway.outbox, 'SELECT * FROM outbox ORDER BY seq');

function waitClose(c: MqttClient, timeoutMs = 3000): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('connection not closed')), timeoutMs);
    c.once('close', () => { clearTimeout(t); resolve(); });
  });
}

const rawSocket = () => openSocket(tg!.mqttUrl, sockets);

describe('packet size', () => {
  const MAX = 1024;

  it('closes the connection on a packet over maxPacketBytes, counts it, and other devices keep working', async () => {
    await start({ mqtt: { maxPacketBytes: MAX } });
    const big = await connect('big');
    const other = await connect('other');
    const closed = waitClose(big);
    big.publish('devices/big/telemetry', JSON.stringify({ temp: 1, pad: 'x'.repeat(MAX) }), { qos: 1 });
    await closed;
    expect(await metric('braid_mqtt_limit_refused_total', { limit: 'packet_size' })).toBe(1);
    expect(other.connected).toBe(true);
    await publish(other, 'devices/other/telemetry', '{"temp":20}');
    expect((await outboxRows()).map((r) => [r.device, r.metric, r.value])).toEqual([['other', 'temp', 20]]);
  });

  it('accepts a packet of exactly maxPacketBytes (remaining length)', async () => {
    await start({ mqtt: { maxPacketBytes: MAX } });
    const c = await connect('d1');
    const topic = 'devices/d1/telemetry';
    // PUBLISH QoS 1 remaining length = 2 + topic + 2 (packet id) + payload.
    const room = MAX - (2 + topic.length + 2);
    const head = '{"temp":1,"pad":';
    const payload = `${head}${' '.repeat(room - head.length - 1)}}`;
    expect(Buffer.byteLength(payload)).toBe(room);
    // The payload is JSON with a string value: acknowledged (quarantined), not refused at the packet limit.
    await publish(c, topic, payload);
    expect(await metric('braid_mqtt_limit_refused_total', { limit: 'packet_size' })).toBe(0);
    expect(c.connected).toBe(true);
    await publish(c, topic, '{"temp":2}');
    expect((await outboxRows()).map((r) => r.value)).toEqual([2]);
  });

  it('refuses a huge declared length before the payload arrives (raw socket)', async () => {
    await start({ mqtt: { maxPacketBytes: MAX } });
    const secret = await tg!.addDevice('raw');
    const s = await rawSocket();
    s.write(connectPacket('raw', 'raw', secret, 30));
    await readConnack(s);
    // PUBLISH QoS 0 announcing 200 MB, then a few bytes: the broker must not wait to buffer it.
    const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
    s.write(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x60, 0x00, 0x01, 0x61]));
    await closed;
    expect(await metric('braid_mqtt_limit_refused_total', { limit: 'packet_size' })).toBe(1);
  });
});

describe('topic depth', () => {
  it('refuses a publish to a topic with more than maxTopicLevels levels and stores nothing', async () => {
    await start({ mqtt: { maxTopicLevels: 4 } });
    const c = await connect('d1');
    const other = await connect('d2');
    const closed = waitClose(c);
    c.publish('devices/d1/telemetry/a/b', '{"temp":1}', { qos: 1 });
    await closed;
    expect(await outboxRows()).toEqual([]);
    // aedes refuses it before any hook of ours runs: counted with the protocol errors.
    expect(await metric('braid_mqtt_client_errors_total')).toBe(1);
    await publish(other, 'devices/d2/telemetry', '{"temp":2}');
    expect((await outboxRows()).map((r) => r.device)).toEqual(['d2']);
  });

  it('refuses a subscription with more than maxTopicLevels levels', async () => {
    await start({ mqtt: { maxTopicLevels: 4 } });
    const c = await connect('d1');
    const closed = waitClose(c);
    c.subscribe('devices/d1/a/b/c', { qos: 1 }, () => {});
    await closed;
    expect(await metric('braid_mqtt_client_errors_total')).toBe(1);
    expect(await metric('braid_mqtt_acl_denied_total', { action: 'subscribe' })).toBe(0);
  });
});

describe('per-device rate', () => {
  it('throttles a device over its rate and loses none of its QoS 1 readings', async () => {
    const RATE = 10;
    const BURST = 5;
    const N = 20;
    await start({ mqtt: { ratePerDevice: RATE, rateBurst: BURST } });
    const fast = await connect('fast');
    const calm = await connect('calm');
    const t0 = Date.now();
    const base = Date.now() - 60_000;
    const sends = Array.from({ length: N }, (_, i) => publish(fast, 'devices/fast/telemetry', JSON.stringify({ ts: base + i, n: i })));
    const fastDone = Promise.all(sends).then(() => Date.now());
    // Another device is not held up by the first one's bucket: acknowledged while that one waits.
    const calmDone = publish(calm, 'devices/calm/telemetry', '{"temp":1}').then(() => Date.now());
    const [fastAt, calmAt] = await Promise.all([fastDone, calmDone]);
    expect(calmAt).toBeLessThan(fastAt);
    const elapsed = fastAt - t0;
    // N - BURST messages over the bucket at RATE per second: at least that long, minus slack.
    expect(elapsed).toBeGreaterThanOrEqual(((N - BURST) / RATE) * 1000 - 200);
    expect(await metric('braid_mqtt_throttled_total')).toBeGreaterThan(0);
    const rows = (await outboxRows()).filter((r) => r.device === 'fast');
    expect(rows.map((r) => r.value)).toEqual(Array.from({ length: N }, (_, i) => i));
    expect(rows.map((r) => r.ts)).toEqual(Array.from({ length: N }, (_, i) => base + i));
    expect(await metric('braid_readings_dropped_total', { reason: 'rate_limit' })).toBe(0);
  });
});

describe('connection limits', () => {
  it('closes a TCP connection that never sends CONNECT after connectTimeoutMs', async () => {
    await start({ mqtt: { connectTimeoutMs: 300 } });
    const s = await rawSocket();
    const t0 = Date.now();
    await new Promise<void>((resolve) => s.once('close', () => resolve()));
    const waited = Date.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(250);
    expect(waited).toBeLessThan(3000);
    expect(await metric('braid_mqtt_client_errors_total')).toBe(1);
    // Devices that do connect in time are unaffected.
    const c = await connect('d1');
    expect(c.connected).toBe(true);
  });

  it('close() ends connections that never sent CONNECT, and the broker forgets those that went away', async () => {
    await start({ mqtt: { connectTimeoutMs: 60_000 } });
    const pending = (tg!.gateway.broker as unknown as { sockets: Set<Socket> }).sockets;
    // 300 connections gone before CONNECT: swept out as new ones arrive, not kept until close().
    for (let i = 0; i < 300; i++) {
      const s = await rawSocket();
      await new Promise<void>((resolve) => { s.once('close', () => resolve()); s.destroy(); });
    }
    const silent = await Promise.all(Array.from({ length: 10 }, () => rawSocket()));
    expect(pending.size).toBeLessThan(150);
    // A connected device left the set when aedes took it.
    const c = await connect('d1');
    expect([...pending].some((s) => s.remotePort === (c.stream as Socket).localPort)).toBe(false);
    const closed = silent.map((s) => new Promise<void>((resolve) => s.once('close', () => resolve())));
    const t0 = Date.now();
    await tg!.close();
    tg = null;
    await Promise.all(closed);
    expect(Date.now() - t0).toBeLessThan(10_000); // not the 60 s connect timeout
  }, 30_000);

  it('keeps no copy of a CONNECT after it (the password gone from the parser), parses packets in pieces and answers every packet id, 65535 included', async () => {
    await start({});
    const secret = await tg!.addDevice('raw-1');
    const s = await rawSocket();
    const got = collectPackets(s);
    s.write(connectPacket('raw-1', 'raw-1', secret, 30));
    await eventually(() => got.some((p) => p.type === CONNACK));
    expect(got[0].body[1]).toBe(0);
    // aedes emits clientReady (where the broker lets the CONNECT go) once its CONNACK is written.
    const clients = (tg!.gateway.broker.aedes as unknown as { clients: Record<string, { connected: boolean; _parser: { settings: Record<string, unknown> } }> }).clients;
    await eventually(() => clients['raw-1']?.connected);
    expect(clients['raw-1']._parser.settings).toEqual({ protocolVersion: 4 });
    // The parser's byte list is a plain BufferList, not a stream.
    expect((clients['raw-1']._parser as unknown as { _list: object })._list).not.toHaveProperty('pipe');
    // Packet ids in PUBACKs are written without mqtt-packet's number cache: both bytes, every id.
    const ids = [1, 255, 256, 300, 65535];
    ids.forEach((id, i) => s.write(publishPacket('devices/raw-1/telemetry', `{"ts":${1732406400000 + i},"temp":${i}}`, 1, id)));
    await eventually(() => got.filter((p) => p.type === PUBACK).length === ids.length);
    expect(got.filter((p) => p.type === PUBACK).map((p) => p.body.readUInt16BE(0))).toEqual(ids);
    // One packet in three pieces (header, then the topic's length byte by byte): parsed whole.
    const split = publishPacket('devices/raw-1/telemetry', '{"ts":1732406400009,"temp":9}', 1, 7);
    for (const part of [split.subarray(0, 2), split.subarray(2, 3), split.subarray(3)]) {
      s.write(part);
      await new Promise((r) => setTimeout(r, 20));
    }
    await eventually(() => got.filter((p) => p.type === PUBACK).length === ids.length + 1);
    expect((await outboxRows()).map((r) => r.value)).toEqual([0, 1, 2, 3, 4, 9]);
  });

  it.each([
    ['above keepaliveMaxSeconds', 61],
    ['of 0 (never)', 0],
  ])('refuses a keepalive %s with CONNACK 2, as mosquitto does for MQTT < 5, and counts it', async (_name, keepalive) => {
    await start({ mqtt: { keepaliveMaxSeconds: 60 } });
    const secret = await tg!.addDevice('d1');
    const err = await connectDevice(tg!.mqttUrl, 'd1', secret, { keepalive }).then(
      (c) => { clients.push(c); return null; },
      (e: { code?: number; message: string }) => e,
    );
    // MQTT 3.1.1 CONNACK return codes end at 5 [MQTT-3.2.2.3]; aedes' own check answered 6.
    expect(err).toMatchObject({ code: 2 });
    expect(await metric('braid_mqtt_limit_refused_total', { limit: 'keepalive_max' })).toBe(1);
    expect(await metric('braid_mqtt_auth_failures_total')).toBe(0);
    expect(await metric('braid_mqtt_connects_total')).toBe(0);
    const ok = await connectDevice(tg!.mqttUrl, 'd1', secret, { keepalive: 60 });
    clients.push(ok);
    expect(ok.connected).toBe(true);
  });

  it('telemetry taken straight from the parser keeps the connection alive and is answered as aedes answers it; QoS 2 still takes aedes\' path', async () => {
    await start({});
    const secret = await tg!.addDevice('ka-1');
    const s = await rawSocket();
    const got = collectPackets(s);
    let closed = false;
    s.on('close', () => { closed = true; });
    s.write(connectPacket('ka-1', 'ka-1', secret, 1)); // aedes closes a silent connection after 1.5 s
    await eventually(() => got.some((p) => p.type === CONNACK));
    // Only telemetry for 2.4 s, no PINGREQ: each PUBLISH refreshes the keepalive.
    for (let i = 0; i < 8; i++) {
      s.write(publishPacket('devices/ka-1/telemetry', `{"ts":${1732406400000 + i},"temp":${i}}`, i % 2 === 0 ? 1 : 0, 10 + i));
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(closed).toBe(false);
    expect(await metric('braid_mqtt_limit_refused_total', { limit: 'keepalive' })).toBe(0);
    expect(got.filter((p) => p.type === PUBACK).map((p) => p.body.readUInt16BE(0))).toEqual([10, 12, 14, 16]);
    expect(await metric('braid_mqtt_telemetry_messages_total', { qos: '1' })).toBe(4);
    expect(await metric('braid_mqtt_telemetry_messages_total', { qos: '0' })).toBe(4);
    s.write(publishPacket('devices/ka-1/telemetry', '{"ts":1732406400100,"temp":100}', 2, 99));
    await eventually(() => got.some((p) => p.type === PUBREC));
    expect((await outboxRows()).map((r) => r.value)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 100]);
  });

  it('takes any keepalive, 0 included, when keepaliveMaxSeconds is 0', async () => {
    await start({ mqtt: { keepaliveMaxSeconds: 0 } });
    const c = await connect('d1', { keepalive: 0 });
    expect(c.connected).toBe(true);
    const d = await connect('d2', { keepalive: 65535 });
    expect(d.connected).toBe(true);
    expect(await metric('braid_mqtt_limit_refused_total', { limit: 'keepalive_max' })).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// Raw MQTT 3.1.1 packets, for what MQTT.js will not send.

function readConnack(s: Socket): Promise<number> {
  return new Promise((resolve, reject) => {
    s.once('data', (d: Buffer) => (d[0] === 0x20 ? resolve(d[3]) : reject(new Error(`expected CONNACK, got ${d.toString('hex')}`))));
  });
}


