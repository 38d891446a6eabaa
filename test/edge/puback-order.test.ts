/**
 * Out-of-band acknowledgement (edge/broker/telemetry.ts): the gateway reads a device's socket on
 * while its QoS 1 messages wait for their group commit, and writes their PUBACKs itself once the
 * commit returned [INV-1], in the order the PUBLISHes arrived [MQTT-4.6.0-2]; past
 * mqtt.maxUnackedPerDevice it holds the socket; a failed commit answers no PUBACK, for it or
 * anything after it, and closes the connection. Real aedes, raw MQTT 3.1.1 packets (a window sent
 * in one write, as mosquitto_pub does), real SQLite; the write queue is held to stand for a slow
 * commit.
 */
import { execFile } from 'node:child_process';
import type { Socket } from 'node:net';
import { metricValue } from '../../shared/metrics.js';
import type { GatewayConfig } from '../../edge/config.js';
import { collectPackets, connectPacket, openSocket, publishPacket, type Incoming } from '../support/mqtt-raw.js';
import { type DeepPartial, type TestGateway, connectDevice, endClient, eventually, gatewayDbGet, publish, requireBinary, startTestGateway } from '../support/gateway.js';

let tg: TestGateway | null = null;
let sockets: Socket[] = [];

afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets = [];
  await tg?.close();
  tg = null;
});

const T = Date.UTC(2024, 10, 24, 0, 0, 0);
const metric = (name: string, labels: Record<string, string> = {}) => metricValue(tg!.gateway.registry, name, labels);
const rowCount = async () => (await gatewayDbGet<{ n: number }>(tg!.gateway.outbox, 'SELECT COUNT(*) AS n FROM outbox'))!.n;
const pubackIds = (packets: Incoming[]) => packets.filter((p) => p.type === 4).map((p) => p.body.readUInt16BE(0));

/** Out of band is opt-in: mqtt.maxUnackedPerDevice 0 (the default) keeps aedes' path. */
const OUT_OF_BAND = { mqtt: { maxUnackedPerDevice: 256 } };

/** A gateway acknowledging out of band and a raw, connected device `d1`. */
async function device(overrides: DeepPartial<GatewayConfig> = OUT_OF_BAND): Promise<{ s: Socket; packets: Incoming[] }> {
  tg = await startTestGateway(overrides);
  const secret = await tg.addDevice('d1');
  const s = await openSocket(tg.mqttUrl, sockets);
  const packets = collectPackets(s);
  s.write(connectPacket('d1', 'd1', secret, 30));
  await eventually(() => packets.some((p) => p.type === 2));
  return { s, packets };
}

/** QoS 1 PUBLISHes with packet ids `ids`, one reading each, in one write. */
function window(ids: number[], offset = 0): Buffer {
  return Buffer.concat(ids.map((id, i) => publishPacket('devices/d1/telemetry', JSON.stringify({ ts: T + offset + i, temp: id }), 1, id)));
}

/** Hold the gateway's write queue (no commit can run) until the returned function is called. */
async function holdCommits(): Promise<() => void> {
  let release!: () => void;
  let held!: () => void;
  const started = new Promise<void>((r) => { held = r; });
  void tg!.gateway.outbox.writes.run(() => new Promise<void>((r) => { release = r; held(); }));
  await started;
  return release;
}

const messages = () => metric('braid_mqtt_telemetry_messages_total', { qos: '1' });

describe('in-band PUBACKs (the default): written by the gateway, one write per connection per commit', () => {
  it('answers a window only after its commit, once each, in arrival order, and reads the next chunk only then [INV-1] [MQTT-4.6.0-2]', async () => {
    const { s, packets } = await device({});
    const release = await holdCommits();
    const first = [7, 3, 65535, 1, 200];
    s.write(window(first));
    await eventually(async () => (await messages()) === 5);
    // In-band, aedes reads no more of the socket until the chunk's messages are answered.
    s.write(window([9, 8], 100));
    await new Promise((r) => setTimeout(r, 50));
    expect(await messages()).toBe(5);
    expect(pubackIds(packets)).toEqual([]);
    expect(await rowCount()).toBe(0);
    release();
    await eventually(() => pubackIds(packets).length >= 7);
    await new Promise((r) => setTimeout(r, 50));
    // Once each (aedes, handed the message as QoS 0, writes none of its own), 4-byte PUBACKs.
    expect(pubackIds(packets)).toEqual([...first, 9, 8]);
    expect(packets.filter((p) => p.type === 4).every((p) => p.body.length === 2)).toBe(true);
    expect(await rowCount()).toBe(7);
    expect(await messages()).toBe(7);
  });
});

describe('out-of-band PUBACKs', () => {
  it('reads on while a window waits for its commit, and answers it in arrival order only after the commit [INV-1] [MQTT-4.6.0-2]', async () => {
    const { s, packets } = await device();
    const release = await holdCommits();
    // Packet ids not in numeric order: the answer must follow arrival, not the id.
    const first = [7, 3, 65535, 1, 200];
    s.write(window(first));
    await eventually(async () => (await messages()) === 5);
    // aedes read the next socket chunk although nothing of the first is committed.
    s.write(window([9, 8], 100));
    await eventually(async () => (await messages()) === 7);
    await new Promise((r) => setTimeout(r, 50));
    expect(pubackIds(packets)).toEqual([]);
    expect(await rowCount()).toBe(0);
    release();
    await eventually(() => pubackIds(packets).length === 7);
    expect(pubackIds(packets)).toEqual([...first, 9, 8]);
    expect(await rowCount()).toBe(7);
  });

  it('holds the socket of a device past mqtt.maxUnackedPerDevice until its oldest message is committed', async () => {
    const { s, packets } = await device({ mqtt: { maxUnackedPerDevice: 2 } });
    const release = await holdCommits();
    s.write(window([1, 2, 3]));
    await eventually(async () => (await messages()) === 3);
    // The third is over the cap: aedes reads nothing more of this socket meanwhile.
    s.write(window([4], 10));
    await new Promise((r) => setTimeout(r, 200));
    expect(await messages()).toBe(3);
    expect(pubackIds(packets)).toEqual([]);
    release();
    await eventually(() => pubackIds(packets).length === 4);
    expect(pubackIds(packets)).toEqual([1, 2, 3, 4]);
    expect(await rowCount()).toBe(4);
  });

  it('answers a failed commit with no PUBACK for it or anything after it, and closes the connection', async () => {
    const { s, packets } = await device();
    s.write(window([1]));
    await eventually(() => pubackIds(packets).length === 1);
    const release = await holdCommits();
    // SQLITE_FULL for the next commit, queued behind the held job and ahead of it: gateway.db may
    // not grow past the pages it has, and a pack of 1,000 new readings needs new ones.
    void tg!.gateway.outbox.writes.run(async (db) => {
      const n = (await db.get<{ page_count: number }>('PRAGMA page_count'))!.page_count;
      await db.exec(`PRAGMA max_page_count = ${n}`);
    });
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    s.write(Buffer.concat([window([2, 3], 10), publishPacket('devices/d1/telemetry', JSON.stringify(
      Array.from({ length: 1000 }, (_, i) => ({ n: `m${i % 50}`, t: (T + 1000 + i) / 1000, v: i }))), 1, 4)]));
    await eventually(async () => (await messages()) === 4);
    release();
    await closed;
    expect(pubackIds(packets)).toEqual([1]);
    expect(await metric('braid_mqtt_telemetry_unacked_total', { reason: 'commit_failed' })).toBe(3);
    expect(await rowCount()).toBe(1);
  });

  const haveMosquitto = requireBinary('mosquitto_pub', 'mosquitto-clients');
  (haveMosquitto ? it : it.skip)('mosquitto_pub -l -q 1 with its default window: every line acknowledged and in the outbox when it exits', async () => {
    tg = await startTestGateway(OUT_OF_BAND);
    const secret = await tg.addDevice('m1');
    const lines = Array.from({ length: 500 }, (_, i) => JSON.stringify({ ts: T + i, temp: i })).join('\n') + '\n';
    const code = await new Promise<number>((resolve) => {
      const p = execFile('mosquitto_pub', ['-h', '127.0.0.1', '-p', new URL(tg!.mqttUrl).port, '-V', 'mqttv311', '-i', 'm1', '-u', 'm1', '-P', secret,
        '-q', '1', '-l', '-t', 'devices/m1/telemetry'], { timeout: 20_000 }, (err) => resolve(err ? -1 : 0));
      p.stdin!.end(lines);
    });
    expect(code).toBe(0);
    // No polling: mosquitto_pub exits once every PUBACK came, each after its commit.
    expect(await rowCount()).toBe(500);
  });

  it.each([['out of band', OUT_OF_BAND], ['through aedes', {}]])('%s: telemetry is not forwarded to subscribers, the device itself included; its other topics are', async (_name, overrides) => {
    tg = await startTestGateway(overrides);
    const secret = await tg.addDevice('d1');
    const c = await connectDevice(tg.mqttUrl, 'd1', secret);
    try {
      const got: string[] = [];
      c.on('message', (topic) => got.push(topic));
      await new Promise<void>((resolve, reject) => c.subscribe('devices/d1/#', { qos: 1 }, (err) => (err ? reject(err) : resolve())));
      await publish(c, 'devices/d1/telemetry', JSON.stringify({ ts: T, temp: 1 }));
      await publish(c, 'devices/d1/state', 'on');
      await eventually(() => got.includes('devices/d1/state'));
      expect(got).toEqual(['devices/d1/state']);
      expect(await rowCount()).toBe(1);
    } finally {
      await endClient(c);
    }
  });
});
