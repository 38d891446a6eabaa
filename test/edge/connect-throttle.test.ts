/**
 * What unauthenticated CONNECTs may cost: secret checks (scrypt) run a few at a time behind a
 * bounded queue, a client id or address that keeps failing is refused without a check for a while,
 * and none of it slows an honest fleet reconnecting (remembered credentials cost no hash).
 * Real gateway, raw MQTT 3.1.1 sockets (hundreds of them) and MQTT.js; AuthThrottle's own rules
 * with an injected clock.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { AuthThrottle, type AuthThrottleOptions } from '../../edge/broker/auth-throttle.js';
import type { GatewayConfig } from '../../edge/config.js';
import { DeviceRegistry, hashSecret } from '../../edge/registry/index.js';
import { metricValue } from '../../shared/metrics.js';
import { Db, chunkRows, placeholders } from '../../shared/sqlite.js';
import { CONNACK, PacketReader, connectPacket } from '../support/mqtt-raw.js';
import {
  type DeepPartial, type TestGateway, connectDevice, endClient, startTestGateway, tempDir,
} from '../support/gateway.js';

let tg: TestGateway | null = null;
let sockets: Socket[] = [];
let clients: MqttClient[] = [];
let dirs: Array<{ remove: () => void }> = [];

afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets = [];
  for (const c of clients) await endClient(c);
  clients = [];
  await tg?.close();
  tg = null;
  for (const d of dirs) d.remove();
  dirs = [];
});

const metric = (name: string, labels: Record<string, string> = {}) => metricValue(tg!.gateway.registry, name, labels);

/**
 * Register `ids` with one secret, hashed once (as bench/gateway.ts does: 500 hashes of the same
 * secret would only slow the test); each device still costs the gateway one scrypt at its first CONNECT.
 */
async function registerBulk(dataDir: string, ids: string[], secret: string): Promise<void> {
  await (await DeviceRegistry.open(dataDir)).close();
  const hash = await hashSecret(secret);
  const db = await Db.open(join(dataDir, 'registry.db'));
  try {
    const now = Date.now();
    await db.exec('BEGIN IMMEDIATE');
    for (const chunk of chunkRows(ids, 4, 4000)) {
      await db.run(`INSERT INTO devices (id, secret, created_at, updated_at) VALUES ${placeholders(chunk.length, 4)}`, chunk.flatMap((id) => [id, hash, now, now]));
    }
    await db.exec('COMMIT');
  } finally {
    await db.close();
  }
}

async function start(overrides: DeepPartial<GatewayConfig> = {}, devices: string[] = [], secret = 'fleet-secret'): Promise<TestGateway> {
  const dir = tempDir();
  dirs.push(dir);
  if (devices.length) await registerBulk(dir.path, devices, secret);
  tg = await startTestGateway(overrides, dir.path);
  return tg;
}

/** A raw CONNECT; resolves with the CONNACK return code and the socket (kept open when accepted). */
function rawConnect(id: string, password: string): Promise<{ code: number; socket: Socket }> {
  const port = Number(new URL(tg!.mqttUrl).port);
  return new Promise((resolve, reject) => {
    const socket = netConnect(port, '127.0.0.1');
    sockets.push(socket);
    const reader = new PacketReader();
    socket.once('error', reject);
    socket.once('close', () => reject(new Error(`${id}: closed before CONNACK`)));
    socket.on('data', (d: Buffer) => {
      for (const p of reader.push(d)) if (p.type === CONNACK) resolve({ code: p.body[1], socket });
    });
    socket.write(connectPacket(id, id, password, 60));
  });
}

const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${String(i).padStart(4, '0')}`);

describe('a burst of wrong passwords', () => {
  it('200 wrong passwords for one device cost a handful of hashes, not 200; all are refused and counted', async () => {
    const FREE = 3;
    const CONCURRENCY = 2;
    await start({ mqtt: { authConcurrency: CONCURRENCY, authBackoffAfterFailures: FREE, authBackoffInitialMs: 60_000 } }, ['d1']);
    const t0 = Date.now();
    const answers = await Promise.all(Array.from({ length: 200 }, () => rawConnect('d1', 'wrong-password')));
    const elapsedMs = Date.now() - t0;
    const codes = answers.map((a) => a.code);
    // Every one answered: 5 (checked, wrong) for the few hashed, 3 (come back later) for the rest.
    expect(codes.every((c) => c === 5 || c === 3)).toBe(true);
    const hashed = await metric('braid_mqtt_auth_verifications_total', { result: 'fail' });
    expect(hashed).toBeGreaterThanOrEqual(FREE);
    expect(hashed).toBeLessThanOrEqual(FREE + CONCURRENCY);
    expect(codes.filter((c) => c === 5)).toHaveLength(hashed);
    expect(await metric('braid_mqtt_auth_failures_total', { reason: 'bad_credentials' })).toBe(hashed);
    expect(await metric('braid_mqtt_connect_refused_total', { reason: 'auth_backoff' })).toBe(200 - hashed);
    expect(await metric('braid_mqtt_auth_pending')).toBe(0);
    // eslint-disable-next-line no-console
    console.log(`200 wrong passwords: ${hashed} scrypt hashes, all answered in ${elapsedMs} ms`);
  });

  it('backs a client id off exponentially, and lets its right secret in once the wait is over', async () => {
    // A wait of 2 s: the CONNECTs that must land inside it come right after the failure, but a
    // loaded run can stall past a wait of 300 ms (the right secret is then checked and let in).
    await start({ mqtt: { authBackoffAfterFailures: 1, authBackoffInitialMs: 2_000, authBackoffMaxMs: 4_000 } }, ['d1'], 'right');
    expect((await rawConnect('d1', 'wrong')).code).toBe(5);
    // Within the wait even the right secret is not checked: CONNACK 3, counted, no hash.
    expect((await rawConnect('d1', 'right')).code).toBe(3);
    expect(await metric('braid_mqtt_connect_refused_total', { reason: 'auth_backoff' })).toBe(1);
    expect(await metric('braid_mqtt_auth_verifications_total', { result: 'ok' })).toBe(0);
    await new Promise((r) => setTimeout(r, 2_100));
    const ok = await rawConnect('d1', 'right');
    expect(ok.code).toBe(0);
    ok.socket.destroy();
    // The success forgot d1's failures: one wrong secret now starts again at the first wait.
    expect((await rawConnect('d1', 'wrong')).code).toBe(5);
    expect((await rawConnect('d1', 'wrong')).code).toBe(3);
  });

  it('refuses an address that fails across many client ids, but a device that verified before still gets in from it', async () => {
    const devices = ids('n', 30);
    await start({ mqtt: { authBackoffAfterFailures: 100, authBackoffAfterAddressFailures: 10, authBackoffInitialMs: 60_000 } }, devices, 'right');
    // n0000 connected earlier: its credential is remembered.
    (await rawConnect('n0000', 'right')).socket.destroy();
    for (const id of devices.slice(1, 21)) await rawConnect(id, 'wrong');
    expect(await metric('braid_mqtt_auth_verifications_total', { result: 'fail' })).toBe(10);
    expect(await metric('braid_mqtt_connect_refused_total', { reason: 'auth_backoff' })).toBe(10);
    // A device never seen from this address waits with the address; the remembered one does not.
    expect((await rawConnect('n0025', 'right')).code).toBe(3);
    expect((await rawConnect('n0000', 'right')).code).toBe(0);
    // An unknown client id costs a lookup, never a hash, and is not what fills the books.
    expect((await rawConnect('ghost', 'whatever')).code).toBe(5);
    expect(await metric('braid_mqtt_auth_verifications_total', { result: 'fail' })).toBe(10);
  });
});

describe('the queue of secret checks', () => {
  it('refuses CONNECTs past authQueueMax with CONNACK 3 (counted); they get in when they come back', async () => {
    const devices = ids('q', 40);
    await start({ mqtt: { authConcurrency: 1, authQueueMax: 2 } }, devices);
    const first = await Promise.all(devices.map((id) => rawConnect(id, 'fleet-secret')));
    const busy = devices.filter((_, i) => first[i].code === 3);
    expect(first.every((a) => a.code === 0 || a.code === 3)).toBe(true);
    expect(busy.length).toBeGreaterThan(0);
    expect(await metric('braid_mqtt_connect_refused_total', { reason: 'auth_busy' })).toBe(busy.length);
    // Refused without a hash: only the admitted were checked.
    expect(await metric('braid_mqtt_auth_verifications_total', { result: 'ok' })).toBe(devices.length - busy.length);
    for (const id of busy) expect((await rawConnect(id, 'fleet-secret')).code).toBe(0);
    expect(tg!.gateway.broker.connected).toBe(devices.length);
  });
});

describe('an honest fleet reconnecting', () => {
  it('500 devices get in at once after a gateway start (one hash each) and again after an outage (no hash)', async () => {
    const devices = ids('dev', 500);
    await start({}, devices);
    let t0 = Date.now();
    const cold = await Promise.all(devices.map((id) => rawConnect(id, 'fleet-secret')));
    const coldMs = Date.now() - t0;
    expect(cold.filter((a) => a.code !== 0)).toEqual([]);
    expect(await metric('braid_mqtt_auth_verifications_total', { result: 'ok' })).toBe(500);
    expect(tg!.gateway.broker.connected).toBe(500);

    // The outage: every connection drops at once, and every device comes straight back.
    for (const a of cold) a.socket.destroy();
    sockets = [];
    const deadline = Date.now() + 5000;
    while (tg!.gateway.broker.connected > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(tg!.gateway.broker.connected).toBe(0);
    t0 = Date.now();
    const warm = await Promise.all(devices.map((id) => rawConnect(id, 'fleet-secret')));
    const warmMs = Date.now() - t0;
    expect(warm.filter((a) => a.code !== 0)).toEqual([]);
    expect(await metric('braid_mqtt_auth_verifications_total', { result: 'ok' })).toBe(500);
    expect(await metric('braid_mqtt_connect_refused_total', { reason: 'auth_busy' })).toBe(0);
    expect(await metric('braid_mqtt_connect_refused_total', { reason: 'auth_backoff' })).toBe(0);
    expect(tg!.gateway.broker.connected).toBe(500);
    // eslint-disable-next-line no-console
    console.log(`500 devices: in after a start in ${coldMs} ms (500 hashes), after an outage in ${warmMs} ms (0 hashes)`);
  }, 120_000); // 500 scrypt hashes: ~3 s on a quiet machine, 15 s on a busy one

  it('an MQTT.js device with a remembered secret connects while its client id is in backoff', async () => {
    await start({ mqtt: { authBackoffAfterFailures: 1, authBackoffInitialMs: 60_000 } }, ['d1'], 'right');
    await endClient(await connectDevice(tg!.mqttUrl, 'd1', 'right'));
    // A stranger guessing d1's secret puts d1's client id in backoff...
    expect((await rawConnect('d1', 'guess-1')).code).toBe(5);
    expect((await rawConnect('d1', 'guess-2')).code).toBe(3);
    // ...which does not lock the real device out.
    const c = await connectDevice(tg!.mqttUrl, 'd1', 'right');
    clients.push(c);
    expect(c.connected).toBe(true);
  });
});

describe('AuthThrottle', () => {
  const OPTS: AuthThrottleOptions = { concurrency: 2, queueMax: 3, idFailures: 2, addressFailures: 4, initialMs: 100, maxMs: 1000, trackedMax: 5 };

  function clock() {
    let t = 1_000_000;
    return { now: () => t, advance: (ms: number) => { t += ms; } };
  }

  it('waits initialMs after idFailures failures, doubling per failure up to maxMs, forgotten 2 x maxMs after the last', () => {
    const c = clock();
    const th = new AuthThrottle(OPTS, c.now);
    const waits: number[] = [];
    for (let i = 0; i < 8; i++) {
      th.failed('d', undefined);
      waits.push(th.backoffMs('d', undefined));
    }
    expect(waits).toEqual([0, 100, 200, 400, 800, 1000, 1000, 1000]);
    c.advance(2001);
    expect(th.backoffMs('d', undefined)).toBe(0);
    th.failed('d', undefined);
    c.advance(1); // forgotten: counting starts over
    expect(th.backoffMs('d', undefined)).toBe(0);
  });

  it('counts an address apart from the client ids, with its own count; success forgets the id only', () => {
    const th = new AuthThrottle(OPTS, clock().now);
    for (const id of ['a', 'b', 'c']) th.failed(id, '10.0.0.1');
    expect(th.backoffMs('e', '10.0.0.1')).toBe(0);
    th.failed('d', '10.0.0.1');
    expect(th.backoffMs('f', '10.0.0.1')).toBe(100);
    expect(th.backoffMs('f', '10.0.0.2')).toBe(0);
    th.failed('a', '10.0.0.9');
    expect(th.backoffMs('a', undefined)).toBe(100);
    th.succeeded('a');
    expect(th.backoffMs('a', undefined)).toBe(0);
    expect(th.backoffMs('a', '10.0.0.1')).toBeGreaterThan(0);
  });

  it('remembers at most trackedMax client ids and addresses, the oldest forgotten first', () => {
    const th = new AuthThrottle(OPTS, clock().now);
    for (let i = 0; i < 50; i++) th.failed(`id${i}`, `10.0.0.${i}`);
    expect(th.tracked).toEqual({ ids: 5, addresses: 5 });
    th.failed('id49', undefined);
    expect(th.backoffMs('id49', undefined)).toBe(100);
    expect(th.backoffMs('id0', undefined)).toBe(0);
  });

  it('runs `concurrency` at once, queues `queueMax`, refuses the rest, and skips a turn whose connection is gone', async () => {
    const th = new AuthThrottle(OPTS, clock().now);
    const running = await Promise.all([th.admit('a', undefined, () => false), th.admit('b', undefined, () => false)]);
    expect(running.every((r) => r.ok)).toBe(true);
    let goneC = false;
    const queued = [th.admit('c', undefined, () => goneC), th.admit('d', undefined, () => false), th.admit('e', undefined, () => false)];
    expect(th.pending).toBe(5);
    expect(await th.admit('f', undefined, () => false)).toEqual({ ok: false, reason: 'busy', retryMs: 0 });
    goneC = true;
    (running[0] as { release: () => void }).release();
    (running[0] as { release: () => void }).release(); // twice is once
    expect(await queued[0]).toEqual({ ok: false, reason: 'gone', retryMs: 0 });
    const d = await queued[1];
    expect(d.ok).toBe(true);
    expect(th.pending).toBe(3); // b, d running; e waiting
    (running[1] as { release: () => void }).release();
    (d as { release: () => void }).release();
    const e = await queued[2];
    (e as { release: () => void }).release();
    expect(th.pending).toBe(0);
  });
});
