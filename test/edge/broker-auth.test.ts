/**
 * Broker auth and ACL against a real gateway (aedes, device registry, SQLite outbox) with real
 * MQTT.js clients and Debian's mosquitto clients (DESIGN.md, MQTT contract: client id = username =
 * device id, password = secret; a device uses only `devices/{its id}/`).
 */
import { execFile } from 'node:child_process';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { metricValue, scrapedValue } from '../../shared/metrics.js';
import { DeviceRegistry, hashSecret, verifySecret } from '../../edge/registry/index.js';
import { Db } from '../../shared/sqlite.js';
import { type TestGateway, connectDevice, endClient, eventually, publish, requireBinary, startTestGateway, gatewayDbAll } from '../support/gateway.js';
import { CONNACK, collectPackets, connectPacket, openSocket } from '../support/mqtt-raw.js';

const MAX_CLIENT_ID = 16;

let tg: TestGateway;
let clients: MqttClient[] = [];
let registries: DeviceRegistry[] = [];
let sockets: Socket[] = [];

/** CONNACK return code 5 [MQTT-3.2.2-3]. */
const NOT_AUTHORIZED = 5;

beforeEach(async () => {
  tg = await startTestGateway({ mqtt: { maxClientIdLength: MAX_CLIENT_ID } });
});

afterEach(async () => {
  // Clients first, then the gateway (reverse start order).
  for (const c of clients) await endClient(c);
  clients = [];
  for (const s of sockets) s.destroy();
  sockets = [];
  for (const r of registries) await r.close();
  registries = [];
  await tg.close();
});

async function connect(id: string, secret: string | undefined, extra: Parameters<typeof connectDevice>[3] = {}): Promise<MqttClient> {
  const c = await connectDevice(tg.mqttUrl, id, secret, extra);
  clients.push(c);
  return c;
}

/** Connect and expect a refusal; resolves with the MQTT.js error (its `code` is the CONNACK return code). */
async function refused(id: string, secret: string | undefined, extra: Parameters<typeof connectDevice>[3] = {}): Promise<{ code?: number; message: string }> {
  try {
    const c = await connectDevice(tg.mqttUrl, id, secret, extra);
    clients.push(c);
  } catch (err) {
    return err as { code?: number; message: string };
  }
  throw new Error(`${id} connected, expected a refusal`);
}

const rawSocket = () => openSocket(tg.mqttUrl, sockets);

/** One sample of a metric from the gateway's registry (0 when absent). */
const metric = (name: string, labels: Record<string, string> = {}) => metricValue(tg.gateway.registry, name, labels);

/** The same sample as GET /metrics serves it (Prometheus text). */
async function scraped(name: string, labels: Record<string, string> = {}): Promise<number> {
  return scrapedValue(await (await fetch(`${tg.httpUrl}/metrics`)).text(), name, labels);
}

const outboxRows = () => gatewayDbAll<{ seq: number; device: string; metric: string; ts: number; value: number }>(tg.gateway.outbox, 'SELECT * FROM outbox ORDER BY seq');

function waitClose(c: MqttClient, timeoutMs = 3000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!c.connected && c.disconnected) return resolve();
    const t = setTimeout(() => reject(new Error('connection not closed')), timeoutMs);
    c.once('close', () => { clearTimeout(t); resolve(); });
  });
}

/** SUBSCRIBE and return the SUBACK return codes, failures (0x80) included. */
function subscribeCodes(c: MqttClient, topics: string[], qos: 0 | 1 = 1): Promise<number[]> {
  return new Promise((resolve, reject) => {
    c.subscribe(topics, { qos }, (err, _subs, packet) => {
      const granted = (packet as { granted?: number[] } | undefined)?.granted;
      if (granted) resolve(granted);
      else reject(err ?? new Error('no SUBACK'));
    });
  });
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

describe('authentication', () => {
  it('connects a registered device with its id as client id and username and its secret as password', async () => {
    const secret = await tg.addDevice('d1');
    const before = await metric('braid_mqtt_connects_total');
    const c = await connect('d1', secret);
    expect(c.connected).toBe(true);
    expect(await metric('braid_mqtt_connects_total')).toBe(before + 1);
    await eventually(() => tg.gateway.broker.connected === 1);
  });

  it.each([
    ['a wrong secret', 'd1', { username: 'd1', password: 'not-the-secret' }, 'bad_credentials'],
    ['an unknown device', 'ghost', { username: 'ghost', password: 'whatever' }, 'bad_credentials'],
    ['a username other than the client id', 'd1', { username: 'd2', password: 'SECRET' }, 'username_mismatch'],
    // MQTT 3.1.1 forbids a password without a username [MQTT-3.1.2-22]; MQTT.js will not send one.
    ['no username and no password', 'd1', { username: undefined, password: undefined }, 'no_username'],
    ['no password', 'd1', { username: 'd1', password: undefined }, 'no_password'],
    ['an empty password', 'd1', { username: 'd1', password: '' }, 'no_password'],
  ] as const)('refuses %s with CONNACK 5 (not authorized) and counts it', async (_name, id, creds, reason) => {
    const secret = await tg.addDevice('d1');
    await tg.addDevice('d2');
    const before = await scraped('braid_mqtt_auth_failures_total', { reason });
    const password = creds.password === 'SECRET' ? secret : creds.password;
    const err = await refused(id, undefined, { username: creds.username, password });
    expect(err).toMatchObject({ code: 5 });
    expect(await scraped('braid_mqtt_auth_failures_total', { reason })).toBe(before + 1);
    expect(await metric('braid_mqtt_auth_failures_total', { reason })).toBe(before + 1);
    // The refusal cost only that connection: the right credentials still work.
    const ok = await connect('d1', secret);
    expect(ok.connected).toBe(true);
  });

  it('refuses a client id longer than maxClientIdLength with CONNACK 2 (identifier rejected)', async () => {
    const longId = 'd'.repeat(MAX_CLIENT_ID + 1);
    const secret = await tg.addDevice(longId);
    const err = await refused(longId, secret);
    expect(err).toMatchObject({ code: 2 });
    expect(await metric('braid_mqtt_auth_failures_total', { reason: 'client_id_too_long' })).toBe(1);
    const atLimit = 'e'.repeat(MAX_CLIENT_ID);
    const c = await connect(atLimit, await tg.addDevice(atLimit));
    expect(c.connected).toBe(true);
  });

  it('refuses an MQTT 5 client (aedes speaks 3.1 and 3.1.1) and keeps serving 3.1.1 devices', async () => {
    const secret = await tg.addDevice('d1');
    const err = await refused('d1', secret, { protocolVersion: 5 });
    // aedes answers CONNACK 1 (unacceptable protocol version) before authenticating; the
    // connection is counted as a client error, not an auth failure.
    expect(err).toMatchObject({ code: 1, message: expect.stringMatching(/unacceptable protocol version/i) });
    expect(await metric('braid_mqtt_connects_total')).toBe(0);
    // Counted once aedes has closed the socket, just after the CONNACK went out.
    await eventually(async () => (await metric('braid_mqtt_client_errors_total')) === 1);
    expect(tg.gateway.broker.connected).toBe(0);
    const c = await connect('d1', secret);
    await publish(c, 'devices/d1/telemetry', '{"temp":1}');
    expect(await outboxRows()).toHaveLength(1);
  });

  it('applies `device rotate` and `device remove` from another registry connection at the next connect', async () => {
    const oldSecret = await tg.addDevice('d1');
    await tg.addDevice('d2');
    const c1 = await connect('d1', oldSecret);
    await endClient(c1);
    // A second connection on the running gateway's registry.db, as `braid device ...` opens it.
    const cli = await DeviceRegistry.open(tg.dir);
    registries.push(cli);

    const newSecret = await cli.rotate('d1');
    expect(newSecret).not.toBe(oldSecret);
    // The old secret verified a moment ago (and is cached): it must still be refused now.
    expect(await refused('d1', oldSecret)).toMatchObject({ code: 5 });
    const c2 = await connect('d1', newSecret);
    expect(c2.connected).toBe(true);

    const d2Secret = (await cli.rotate('d2', 'chosen-secret-2'));
    expect(d2Secret).toBe('chosen-secret-2');
    await endClient(await connectDevice(tg.mqttUrl, 'd2', d2Secret));
    await cli.remove('d2');
    expect(await refused('d2', d2Secret)).toMatchObject({ code: 5 });
    expect(await metric('braid_mqtt_auth_failures_total', { reason: 'bad_credentials' })).toBe(2);
  });

  it('reads the rows of concurrent CONNECTs together, and refuses a device rotated or removed by another process just before its CONNECT, amid a burst', async () => {
    const ids = Array.from({ length: 30 }, (_, i) => `b${i}`);
    const secrets = new Map<string, string>();
    for (const id of ids) secrets.set(id, await tg.addDevice(id));
    const cli = await DeviceRegistry.open(tg.dir);
    registries.push(cli);
    // Every device in once: its secret has verified (were it remembered anywhere, it would be now).
    for (const c of await Promise.all(ids.map((id) => connectDevice(tg.mqttUrl, id, secrets.get(id))))) await endClient(c);

    // Concurrent CONNECTs, made so: raw sockets, all accepted by the gateway, then the CONNECTs of
    // a burst written in one turn. The gateway shares this process, so they reach it in one turn
    // of its event loop. (MQTT.js clients started together connect one by one on a busy machine.)
    const burst1 = ids.slice(2, 16);
    const burst2 = ['b0', 'b1', ...ids.slice(16)];
    const socks = new Map<string, Socket>();
    for (const id of [...burst1, ...burst2]) socks.set(id, await rawSocket());
    const ports = new Set([...socks.values()].map((s) => s.localPort));
    const serverSockets = (tg.gateway.broker as unknown as { sockets: Set<Socket> }).sockets;
    await eventually(() => [...serverSockets].filter((s) => !s.destroyed && ports.has(s.remotePort)).length >= socks.size);
    const acks = new Map([...socks].map(([id, s]) => [id, collectPackets(s)]));
    const send = (burst: string[]) => { for (const id of burst) socks.get(id)!.write(connectPacket(id, id, secrets.get(id)!, 30)); };

    const before = tg.gateway.devices.readStats;
    // A burst whose reads may be under way while the other process commits; then b0's old secret
    // and the removed b1 inside a second burst.
    send(burst1);
    const rotated = await cli.rotate('b0');
    await cli.remove('b1');
    send(burst2);
    await eventually(() => [...acks.values()].every((packets) => packets.length > 0));
    const codes = Object.fromEntries([...acks].map(([id, packets]) => [id, packets[0].type === CONNACK ? packets[0].body[1] : -1]));
    expect(codes).toEqual(Object.fromEntries([...burst1, ...burst2].map((id) => [id, id === 'b0' || id === 'b1' ? NOT_AUTHORIZED : 0])));
    expect((await connect('b0', rotated)).connected).toBe(true);
    const after = tg.gateway.devices.readStats;
    const read = after.ids - before.ids;
    expect(read).toBeGreaterThanOrEqual(ids.length + 1);
    expect(after.statements - before.statements).toBeLessThan(read);
  });
});

describe('how secrets are stored', () => {
  const storedSecret = async (id: string) => {
    const db = await Db.open(join(tg.dir, 'registry.db'));
    try {
      return (await db.get<{ secret: string }>('SELECT secret FROM devices WHERE id = ?', [id]))!.secret;
    } finally {
      await db.close();
    }
  };

  it('stores a generated secret as salted SHA-256 and a chosen one as scrypt; both connect, only the chosen one costs a slow hash', async () => {
    const generated = await tg.addDevice('g1');
    await tg.addDevice('c1', 'chosen-secret');
    const g = await storedSecret('g1');
    const c = await storedSecret('c1');
    expect(g).toMatch(/^sha256\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/);
    expect(c).toMatch(/^scrypt\$4096\$8\$1\$/);
    expect(g).not.toContain(generated);
    await endClient(await connect('g1', generated));
    expect(await metric('braid_mqtt_auth_verifications_total', { result: 'ok' })).toBe(0);
    await endClient(await connect('c1', 'chosen-secret'));
    expect(await metric('braid_mqtt_auth_verifications_total', { result: 'ok' })).toBe(1);
    // A wrong secret for a generated one is refused and counted like any other.
    expect(await refused('g1', `${generated.slice(0, -1)}x`)).toMatchObject({ code: 5 });
    expect(await refused('g1', 'chosen-secret')).toMatchObject({ code: 5 });
    expect(await metric('braid_mqtt_auth_failures_total', { reason: 'bad_credentials' })).toBe(2);
    expect(await metric('braid_mqtt_auth_verifications_total', { result: 'fail' })).toBe(2);
    // `rotate` without --secret generates (fast form), with --secret keeps scrypt.
    const rotated = await tg.gateway.devices.rotate('c1');
    expect(await storedSecret('c1')).toMatch(/^sha256\$/);
    await endClient(await connect('c1', rotated));
    await tg.gateway.devices.rotate('g1', 'now-chosen');
    expect(await storedSecret('g1')).toMatch(/^scrypt\$/);
    await endClient(await connect('g1', 'now-chosen'));
    expect(await refused('g1', generated)).toMatchObject({ code: 5 });
  });

  it('keeps verifying scrypt rows an older registry wrote, and refuses malformed stored forms', async () => {
    expect(await verifySecret('s', await hashSecret('s'))).toBe(true);
    for (const bad of ['', 'sha256$', 'sha256$c2FsdA==$', 'sha256$c2FsdA==$YQ==', 'md5$x$y', 'scrypt$1$2$3']) {
      expect(await verifySecret('s', bad)).toBe(false);
    }
    await expect(tg.addDevice('e1', '')).rejects.toMatchObject({ code: 'BRAID_ERR_BAD_REQUEST' });
  });
});

describe('ACL', () => {
  it.each([
    ['another device\'s telemetry topic', 'devices/d2/telemetry'],
    ['a topic outside devices/{id}/', 'fleet/all'],
    ['the bare device prefix', 'devices/d1/'],
    ['a look-alike device id', 'devices/d1x/telemetry'],
  ])('closes the connection on a publish to %s, counts it and stores nothing', async (_name, topic) => {
    const secret = await tg.addDevice('d1');
    await tg.addDevice('d2');
    const c = await connect('d1', secret);
    const closed = waitClose(c);
    c.publish(topic, '{"temp":21.5}', { qos: 1 });
    await closed;
    expect(await metric('braid_mqtt_acl_denied_total', { action: 'publish' })).toBe(1);
    expect(await scraped('braid_mqtt_acl_denied_total', { action: 'publish' })).toBe(1);
    expect(await outboxRows()).toEqual([]);
    // The gateway goes on: the same device reconnects and its own topic works.
    const again = await connect('d1', secret);
    await publish(again, 'devices/d1/telemetry', '{"temp":22}');
    expect((await outboxRows()).map((r) => [r.device, r.metric, r.value])).toEqual([['d1', 'temp', 22]]);
  });

  it('fails a subscription to another device\'s topic (SUBACK 0x80), counts it, and grants its own', async () => {
    const secret = await tg.addDevice('d1');
    const c = await connect('d1', secret);
    const codes = await subscribeCodes(c, ['devices/d1/errors', 'devices/d2/errors', 'devices/+/telemetry', '#']);
    expect(codes).toEqual([1, 128, 128, 128]);
    expect(await metric('braid_mqtt_acl_denied_total', { action: 'subscribe' })).toBe(3);
    // A refused filter leaves the connection up and the granted one working.
    expect(c.connected).toBe(true);
    expect(await subscribeCodes(c, ['devices/d1/#'], 0)).toEqual([0]);
  });

  it('does not deliver another device\'s messages to a wildcard subscriber', async () => {
    const s1 = await tg.addDevice('d1');
    const s2 = await tg.addDevice('d2');
    const spy = await connect('d1', s1);
    const got: string[] = [];
    spy.on('message', (topic) => got.push(topic));
    expect(await subscribeCodes(spy, ['devices/#'])).toEqual([128]);
    const d2 = await connect('d2', s2);
    await publish(d2, 'devices/d2/telemetry', '{"temp":1}');
    await publish(d2, 'devices/d2/telemetry', 'not json'); // its error report goes to devices/d2/errors
    await new Promise((r) => setTimeout(r, 100));
    expect(got).toEqual([]);
  });
});

describe('Debian mosquitto clients', () => {
  const haveMosquitto = requireBinary('mosquitto_pub', 'mosquitto-clients');
  const maybe = haveMosquitto ? it : it.skip;
  const port = () => new URL(tg.mqttUrl).port;

  maybe('mosquitto_pub with the right credentials publishes QoS 1 and the reading is in the outbox when it exits [INV-1]', async () => {
    const secret = await tg.addDevice('m1');
    const r = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', port(), '-V', 'mqttv311', '-i', 'm1', '-u', 'm1', '-P', secret,
      '-q', '1', '-t', 'devices/m1/telemetry', '-m', '{"ts":1732406400000,"temp":21.5,"hum":40}']);
    expect(r).toMatchObject({ code: 0 });
    // No polling: mosquitto_pub exits after the PUBACK, which leaves only after the commit.
    expect((await outboxRows()).map((x) => [x.seq, x.device, x.metric, x.ts, x.value])).toEqual([
      [1, 'm1', 'temp', 1732406400000, 21.5],
      [2, 'm1', 'hum', 1732406400000, 40],
    ]);
  });

  maybe('mosquitto_pub with a wrong secret exits non-zero and nothing is stored', async () => {
    await tg.addDevice('m1');
    const r = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', port(), '-V', 'mqttv311', '-i', 'm1', '-u', 'm1', '-P', 'wrong',
      '-q', '1', '-t', 'devices/m1/telemetry', '-m', '{"temp":21.5}']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/not authori[sz]ed/i);
    expect(await outboxRows()).toEqual([]);
    expect(await metric('braid_mqtt_auth_failures_total', { reason: 'bad_credentials' })).toBe(1);
  });

  maybe('mosquitto_sub is granted its own topics and denied another device\'s', async () => {
    const secret = await tg.addDevice('m1');
    const args = (topic: string) => ['-h', '127.0.0.1', '-p', port(), '-V', 'mqttv311', '-i', 'm1', '-u', 'm1', '-P', secret, '-q', '1', '-E', '-W', '5', '-t', topic];
    const own = await run('mosquitto_sub', args('devices/m1/#'));
    expect(own).toMatchObject({ code: 0, stderr: '' });
    const other = await run('mosquitto_sub', args('devices/m2/telemetry'));
    // mosquitto_sub reads the SUBACK 0x80 as a denial (its exit code stays 0 in 2.0).
    expect(other.stderr).toMatch(/All subscription requests were denied/);
    expect(await metric('braid_mqtt_acl_denied_total', { action: 'subscribe' })).toBe(1);
  });

  maybe('mosquitto_pub speaking MQTT 5 is refused and the gateway stays up', async () => {
    const secret = await tg.addDevice('m1');
    const r = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', port(), '-V', 'mqttv5', '-i', 'm1', '-u', 'm1', '-P', secret,
      '-q', '1', '-t', 'devices/m1/telemetry', '-m', '{"temp":21.5}']);
    expect(r.code).not.toBe(0);
    expect(await outboxRows()).toEqual([]);
    expect((await fetch(`${tg.httpUrl}/healthz`)).status).toBe(200);
    const c = await connect('m1', secret);
    expect(c.connected).toBe(true);
  });
});
