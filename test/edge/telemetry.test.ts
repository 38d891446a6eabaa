/**
 * The telemetry path end to end: real gateway (aedes + SQLite outbox), real MQTT.js devices and
 * raw MQTT packets where a retransmit must be exact. DESIGN.md, MQTT contract; [INV-1] ack only
 * after durable, [INV-2] counted once, [INV-5] bad input costs only itself, [INV-6] bounded.
 */
import { connect as netConnect, type Socket } from 'node:net';
import type { MqttClient } from 'mqtt';
import { metricValue, scrapedValue } from '../../shared/metrics.js';
import { collectPackets, connectPacket, publishPacket } from '../support/mqtt-raw.js';
import type { Client, PublishPacket } from 'aedes';
import { Registry } from 'prom-client';
import { isTelemetryOf, telemetryTopic, topicAllowed } from '../../edge/broker/acl.js';
import { RateLimiter } from '../../edge/broker/limits.js';
import { createBrokerMetrics } from '../../edge/broker/metrics.js';
import { RetransmitStamps } from '../../edge/broker/retransmit.js';
import { handleTelemetry } from '../../edge/broker/telemetry.js';
import type { GatewayConfig } from '../../edge/config.js';
import { Outbox } from '../../edge/outbox/index.js';
import { nullLogger } from '../../shared/logger.js';
import type { PayloadLimits } from '../../shared/payload.js';
import { type DeepPartial, type TestGateway, connectDevice, endClient, eventually, publish, startTestGateway, tempDir, gatewayDbAll } from '../support/gateway.js';

const TOPIC = 'devices/d1/telemetry';

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

interface Device { client: MqttClient; secret: string; errors: Array<Record<string, unknown>> }

/** A gateway and device d1, subscribed to its own error topic. */
async function setup(overrides: DeepPartial<GatewayConfig> = {}): Promise<Device> {
  tg = await startTestGateway(overrides);
  const secret = await tg.addDevice('d1');
  const client = await connectDevice(tg.mqttUrl, 'd1', secret);
  clients.push(client);
  const errors: Array<Record<string, unknown>> = [];
  client.on('message', (topic, payload) => {
    if (topic === 'devices/d1/errors') errors.push(JSON.parse(payload.toString('utf8')) as Record<string, unknown>);
  });
  await new Promise<void>((resolve, reject) => client.subscribe('devices/d1/errors', { qos: 1 }, (err) => (err ? reject(err) : resolve())));
  return { client, secret, errors };
}

const metric = (name: string, labels: Record<string, string> = {}) => metricValue(tg!.gateway.registry, name, labels);

async function scraped(name: string, labels: Record<string, string> = {}): Promise<number> {
  return scrapedValue(await (await fetch(`${tg!.httpUrl}/metrics`)).text(), name, labels);
}

interface Row { seq: number; epoch: number; device: string; metric: string; ts: number; value: number }
const rows = () => gatewayDbAll<Row>(tg!.gateway.outbox, 'SELECT * FROM outbox ORDER BY seq');
const quarantine = () => gatewayDbAll<{ id: number; device: string; topic: string; reason: string; message: string; payload: Buffer }>(tg!.gateway.outbox, 'SELECT * FROM quarantine ORDER BY id');

const T = Date.UTC(2024, 10, 24, 0, 0, 0); // within the accepted range, well in the past

describe('bad payloads', () => {
  it.each([
    ['invalid JSON', 'json', '{"temp": 21.5'],
    ['a string value', 'not_numeric', '{"temp":"21.5"}'],
    ['a boolean value', 'not_numeric', '{"on":true}'],
    ['a nested object', 'nested', '{"temp":{"value":21.5}}'],
    ['an empty object', 'empty', '{}'],
    ['an empty payload', 'empty', ''],
    ['only a ts', 'empty', `{"ts":${T}}`],
    ['a ts that is not a time', 'bad_ts', '{"ts":"yesterday","temp":1}'],
    ['a ts in seconds', 'bad_ts', `{"ts":${Math.floor(T / 1000)},"temp":1}`],
    ['a ts days in the future', 'bad_ts', `{"ts":${Date.now() + 3 * 86_400_000},"temp":1}`],
    ['a non-finite number', 'non_finite', '{"temp":1e400}'],
    ['a bad metric name', 'bad_metric', '{"temp erature":1}'],
    // U+0000 (as firmware's JSON encoder writes it) never reaches the outbox: the cloud would refuse it.
    ['a NUL in a flat metric name', 'bad_metric', '{"te\\u0000mp":1}'],
    ['a NUL in a SenML name', 'bad_metric', '[{"n":"te\\u0000mp","v":1}]'],
    ['a NUL in a SenML base name', 'bad_metric', '[{"bn":"dev\\u0000","n":"temp","v":1}]'],
    ['a raw NUL byte in a metric name', 'json', '{"te\u0000mp":1}'],
    ['an oversized payload', 'too_large', `{"ts":${T},"temp":1,"pad":${'1'.repeat(300)}}`],
    ['SenML with no value', 'senml', '[{"n":"temp","u":"Cel"}]'],
    ['SenML with a must-understand field', 'senml', '[{"n":"temp","v":1,"ex_":1}]'],
    ['a JSON array of numbers', 'senml', '[1,2,3]'],
  ])('%s: acknowledged, counted, quarantined, reported, and the next good reading is stored', async (_name, reason, payload) => {
    const d = await setup({ mqtt: { maxPayloadBytes: 256 } });
    await publish(d.client, TOPIC, JSON.stringify({ ts: T, temp: 1 }));
    // The PUBACK arrives: firmware must not resend a payload that can never be stored.
    await publish(d.client, TOPIC, payload, 1);
    await publish(d.client, TOPIC, JSON.stringify({ ts: T + 1000, temp: 2 }));
    expect((await rows()).map((r) => [r.seq, r.device, r.metric, r.ts, r.value])).toEqual([
      [1, 'd1', 'temp', T, 1],
      [2, 'd1', 'temp', T + 1000, 2],
    ]);
    expect(await metric('braid_payload_invalid_total', { reason })).toBe(1);
    expect(await scraped('braid_payload_invalid_total', { reason })).toBe(1);
    const q = (await eventually(async () => { const r = await quarantine(); return r.length ? r : null; }))!;
    expect(q).toHaveLength(1);
    expect(q[0]).toMatchObject({ device: 'd1', topic: TOPIC, reason });
    expect(q[0].message.length).toBeGreaterThan(0);
    expect(Buffer.from(q[0].payload ?? []).toString('utf8')).toBe(payload.slice(0, 1024));
    await eventually(() => d.errors.length === 1);
    expect(d.errors[0]).toMatchObject({ code: 'BRAID_ERR_PAYLOAD_INVALID', reason, topic: TOPIC, message: q[0].message });
    expect(d.client.connected).toBe(true);
    expect(await metric('braid_readings_accepted_total')).toBe(2);
  });

  it('keeps the quarantine within quarantineMaxRows, deleting the oldest and counting them', async () => {
    const d = await setup({ outbox: { quarantineMaxRows: 3 } });
    for (let i = 0; i < 5; i++) await publish(d.client, TOPIC, `bad ${i}`);
    await eventually(async () => (await metric('braid_quarantine_dropped_total')) === 2);
    const q = await quarantine();
    expect(q.map((r) => Buffer.from(r.payload).toString('utf8'))).toEqual(['bad 2', 'bad 3', 'bad 4']);
    expect(await metric('braid_payload_invalid_total', { reason: 'json' })).toBe(5);
    const health = await (await fetch(`${tg!.httpUrl}/api/v1/health`)).json() as { quarantined: number; dropped: { quarantineOverflow: number } };
    expect(health).toMatchObject({ quarantined: 3, dropped: { quarantineOverflow: 2 } });
    await publish(d.client, TOPIC, '{"temp":1}');
    expect(await rows()).toHaveLength(1);
  });
});

describe('dedup [INV-2]', () => {
  it('stores an identity published twice once and counts the repeat', async () => {
    const d = await setup();
    await publish(d.client, TOPIC, JSON.stringify({ ts: T, temp: 21.5 }));
    await publish(d.client, TOPIC, JSON.stringify({ ts: T, temp: 99 })); // same identity: the first wins
    await publish(d.client, TOPIC, JSON.stringify({ ts: T, temp: 21.5, hum: 40 })); // only hum is new
    expect((await rows()).map((r) => [r.seq, r.metric, r.ts, r.value])).toEqual([
      [1, 'temp', T, 21.5],
      [2, 'hum', T, 40],
    ]);
    expect(await metric('braid_readings_duplicate_total')).toBe(2);
    expect(await metric('braid_readings_accepted_total')).toBe(2);
    expect(d.errors).toEqual([]);
  });

  it('stores a QoS 1 retransmit (DUP, same packet id) once, acknowledging both', async () => {
    tg = await startTestGateway();
    const secret = await tg.addDevice('raw');
    const s = await rawSocket();
    const packets = collectPackets(s);
    s.write(connectPacket('raw', 'raw', secret, 30));
    await eventually(() => packets.some((p) => p.type === 2));
    const payload = JSON.stringify({ ts: T, temp: 7 });
    s.write(publishPacket('devices/raw/telemetry', payload, 1, 42, false));
    s.write(publishPacket('devices/raw/telemetry', payload, 1, 42, true));
    await eventually(() => packets.filter((p) => p.type === 4).length === 2);
    expect(packets.filter((p) => p.type === 4).map((p) => p.body.readUInt16BE(0))).toEqual([42, 42]);
    expect((await rows()).map((r) => [r.device, r.metric, r.ts, r.value])).toEqual([['raw', 'temp', T, 7]]);
    expect(await metric('braid_readings_duplicate_total')).toBe(1);
  });

  it('stores a retransmit of a message without ts once, even after a reconnect (its PUBACK was lost)', async () => {
    tg = await startTestGateway();
    const secret = await tg.addDevice('raw');
    const first = await rawSocket();
    const seen = collectPackets(first);
    first.write(connectPacket('raw', 'raw', secret, 30));
    await eventually(() => seen.some((p) => p.type === 2));
    const payload = JSON.stringify({ temp: 7, hum: 40 });
    first.write(publishPacket('devices/raw/telemetry', payload, 1, 9, false));
    await eventually(async () => (await rows()).length === 2);
    first.destroy(); // the device never read the PUBACK
    await new Promise((r) => setTimeout(r, 20)); // a later receive time, were it stamped again
    const again = await rawSocket();
    const packets = collectPackets(again);
    again.write(connectPacket('raw', 'raw', secret, 30));
    await eventually(() => packets.some((p) => p.type === 2));
    again.write(publishPacket('devices/raw/telemetry', payload, 1, 9, true));
    await eventually(() => packets.some((p) => p.type === 4));
    const r = await rows();
    expect(r.map((x) => [x.metric, x.value])).toEqual([['temp', 7], ['hum', 40]]);
    expect(await metric('braid_readings_duplicate_total')).toBe(2);
    again.destroy();
  });
});

describe('receive-time stamps', () => {
  it('gives readings without ts strictly increasing receive times per device, losing none', async () => {
    const d = await setup();
    const N = 60;
    const t0 = Date.now();
    await Promise.all(Array.from({ length: N }, (_, i) => publish(d.client, TOPIC, JSON.stringify({ n: i }))));
    const t1 = Date.now();
    const r = await rows();
    expect(r.map((x) => x.value)).toEqual(Array.from({ length: N }, (_, i) => i));
    const ts = r.map((x) => x.ts);
    for (let i = 1; i < N; i++) expect(ts[i]).toBeGreaterThan(ts[i - 1]);
    expect(ts[0]).toBeGreaterThanOrEqual(t0);
    expect(ts[N - 1]).toBeLessThanOrEqual(t1 + N);
    expect(await metric('braid_readings_duplicate_total')).toBe(0);
  });

  it('stamps the metrics of one message with one receive time', async () => {
    const d = await setup();
    await Promise.all([
      publish(d.client, TOPIC, '{"temp":21.5,"hum":40}'),
      publish(d.client, TOPIC, '{"temp":21.6,"hum":41}'),
    ]);
    const r = await rows();
    expect(r.map((x) => [x.metric, x.value])).toEqual([['temp', 21.5], ['hum', 40], ['temp', 21.6], ['hum', 41]]);
    expect(r[0].ts).toBe(r[1].ts);
    expect(r[2].ts).toBe(r[3].ts);
    expect(r[2].ts).toBeGreaterThan(r[0].ts);
  });

  it('keeps a device\'s stamps increasing across devices publishing at once', async () => {
    tg = await startTestGateway();
    const devs = await Promise.all(['a', 'b'].map(async (id) => {
      const c = await connectDevice(tg!.mqttUrl, id, await tg!.addDevice(id));
      clients.push(c);
      return c;
    }));
    await Promise.all(devs.flatMap((c, k) => Array.from({ length: 20 }, (_, i) => publish(c, `devices/${['a', 'b'][k]}/telemetry`, `{"v":${i}}`))));
    const r = await rows();
    for (const id of ['a', 'b']) {
      const mine = r.filter((x) => x.device === id);
      expect(mine.map((x) => x.value)).toEqual(Array.from({ length: 20 }, (_, i) => i));
      expect(new Set(mine.map((x) => x.ts)).size).toBe(20);
    }
  });
});

describe('SenML (RFC 8428)', () => {
  it('accepts a pack with a device base name, base time and relative times', async () => {
    const d = await setup();
    const bt = T / 1000;
    const pack = [
      { bn: 'urn:dev:ow:10e2073a01080063:', bt, bu: 'V', n: 'voltage', v: 120.1 },
      { n: 'current', t: -5, u: 'A', v: 1.2 },
      { n: 'current', t: -4, v: 1.3 },
    ];
    await publish(d.client, TOPIC, JSON.stringify(pack));
    expect((await rows()).map((r) => [r.metric, r.ts, r.value])).toEqual([
      ['voltage', T, 120.1],
      ['current', T - 5000, 1.2],
      ['current', T - 4000, 1.3],
    ]);
    expect(d.errors).toEqual([]);
  });

  it('joins a base name without separator to the name, applies bv and bs, and stamps records without time', async () => {
    const d = await setup();
    const before = Date.now();
    await publish(d.client, TOPIC, JSON.stringify([
      { bn: 'boiler_', n: 'temp', bv: 10, v: 1.5 },
      { n: 'temp', v: 2.5 },
      { bn: 'meter.', n: 'kwh', bs: 100, s: 5 },
    ]));
    const r = await rows();
    expect(r.map((x) => [x.metric, x.value])).toEqual([['boiler_temp', 11.5], ['boiler_temp', 12.5], ['kwh', 105]]);
    // Two records of one name with no time are two readings: they must not share an identity.
    expect(r[0].ts).not.toBe(r[1].ts);
    for (const x of r) expect(x.ts).toBeGreaterThanOrEqual(before);
    expect(await metric('braid_readings_duplicate_total')).toBe(0);
  });
});

describe('seq', () => {
  it('is contiguous 1..N across good, bad and duplicate messages', async () => {
    const d = await setup();
    const sends: Array<Promise<void>> = [];
    for (let i = 0; i < 30; i++) {
      sends.push(publish(d.client, TOPIC, JSON.stringify({ ts: T + i * 1000, temp: i, hum: i })));
      if (i % 5 === 0) sends.push(publish(d.client, TOPIC, 'garbage'));
      if (i % 7 === 0) sends.push(publish(d.client, TOPIC, JSON.stringify({ ts: T + i * 1000, temp: i })));
    }
    await Promise.all(sends);
    const r = await rows();
    expect(r).toHaveLength(60);
    expect(r.map((x) => x.seq)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    const health = await (await fetch(`${tg!.httpUrl}/api/v1/health`)).json() as { outbox: { lastSeq: number; pending: number } };
    expect(health.outbox).toMatchObject({ lastSeq: 60, pending: 60 });
  });
});

// ---------------------------------------------------------------------------------------------
// Raw MQTT 3.1.1, for a retransmit MQTT.js would not make on demand.

function rawSocket(): Promise<Socket> {
  const port = Number(new URL(tg!.mqttUrl).port);
  return new Promise((resolve, reject) => {
    const s = netConnect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
    sockets.push(s);
  });
}


describe('errors that are not about the payload', () => {
  /**
   * handleTelemetry with a real outbox and broker metrics, but limits it cannot read (null): the
   * parser's TypeError stands for any failure that is not the device's payload. It must come back
   * through aedes' `done(err)` (connection closed, nothing acknowledged, counted), from the direct
   * path and from the throttle's timer alike, never as a throw that would end the gateway.
   */
  async function harness(rate: RateLimiter) {
    const dir = tempDir();
    const registry = new Registry();
    const outbox = await Outbox.open({ dataDir: dir.path, logger: nullLogger(), registry });
    const metrics = createBrokerMetrics(registry);
    const deps = {
      outbox, metrics, logger: nullLogger(), rate, report: () => {}, now: Date.now, retransmits: new RetransmitStamps(), maxUnacked: 256,
      limits: null as unknown as PayloadLimits,
    };
    const packet = { cmd: 'publish', topic: TOPIC, payload: Buffer.from('{"temp":1}'), qos: 1, dup: false, retain: false, messageId: 1 } as PublishPacket;
    const send = () => new Promise<Error | null | undefined>((resolve) => handleTelemetry(deps, { id: 'd1' } as Client, packet, resolve));
    const close = async () => { await outbox.close(); dir.remove(); };
    return { send, close, unacked: () => metricValue(registry, 'braid_mqtt_telemetry_unacked_total', { reason: 'internal' }), rows: () => outbox.reader.all('SELECT * FROM outbox') };
  }

  it('answers done(err) on the direct path and counts it', async () => {
    const h = await harness(new RateLimiter(1000, 1000));
    try {
      const err = await h.send();
      expect(err).toBeInstanceOf(TypeError);
      expect(await h.unacked()).toBe(1);
      expect(await h.rows()).toEqual([]);
    } finally {
      await h.close();
    }
  });

  it('answers done(err) from the throttle\'s timer too', async () => {
    const h = await harness(new RateLimiter(100, 1)); // the second message waits ~10 ms
    try {
      expect(await h.send()).toBeInstanceOf(TypeError);
      expect(await h.send()).toBeInstanceOf(TypeError);
      expect(await h.unacked()).toBe(2);
    } finally {
      await h.close();
    }
  });
});

describe('the ACL helpers, compared in place', () => {
  it('answer what the prefix and topic strings they no longer build would', () => {
    const ids = ['', 'a', 'd1', 'a/b', 'devices', 'x/'];
    const topics = ['', 'devices/', 'devices/a', 'devices/a/', 'devices/a/telemetry', 'devices/a/b/telemetry', 'devices/d1/telemetry', 'devices/d1/x',
      'devices/d1', 'devices//', 'devices///', 'devices/x//', 'devices/x/telemetry', 'devices/devices/telemetry', 'Devices/a/x', 'devices/a/#', 'devices/x/'];
    for (const id of ids) {
      for (const topic of topics) {
        const prefix = `devices/${id}/`;
        expect([id, topic, topicAllowed(id, topic)]).toEqual([id, topic, topic.startsWith(prefix) && topic.length !== prefix.length]);
        expect([id, topic, isTelemetryOf(id, topic)]).toEqual([id, topic, topic === telemetryTopic(id)]);
      }
    }
  });
});
