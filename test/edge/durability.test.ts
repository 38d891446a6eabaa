/**
 * [INV-1] Acknowledged means durable: a gateway process killed with SIGKILL at a random moment of
 * a QoS 1 stream, then restarted on the same data dir with no repair, still holds every reading
 * whose PUBACK a device received, in the outbox and in the speed windows, with contiguous seq and
 * the crashed epoch closed. SIGTERM commits what is in flight and exits 0.
 */
import { randomInt } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import {
  type ChildGateway, addDeviceCli, addDevices, killAllChildGateways, queryGatewayDb, spawnGateway,
} from '../support/child-gateway.js';
import { connectDevice, endClient, eventually, publish, tempDir } from '../support/gateway.js';

const DEVICES = ['dur-a', 'dur-b', 'dur-c', 'dur-d'];
const METRICS = ['temp', 'hum'] as const;
const SECRET = 'durability-secret';
/** Lift the per-device rate limit: the test wants as many commits in flight as it can get. */
const CHILD_ENV = { BRAID_MQTT_RATE_PER_DEVICE: '1000000', BRAID_MQTT_RATE_BURST: '1000000' };
/** QoS 1 publishes each device keeps in flight. */
const INFLIGHT = 24;

let dir: ReturnType<typeof tempDir>;
let clients: MqttClient[] = [];

beforeEach(async () => {
  dir = tempDir('braid-durability-');
  // One through `braid device add` (the operator's path), the rest straight into registry.db.
  const [first, ...rest] = DEVICES;
  expect(await addDeviceCli(dir.path, first, SECRET)).toBe(SECRET);
  await addDevices(dir.path, rest.map((d) => [d, SECRET]));
});

afterEach(async () => {
  await Promise.all(clients.map((c) => endClient(c)));
  clients = [];
  await killAllChildGateways();
  dir.remove();
});

const key = (device: string, metric: string) => `${device}|${metric}`;

/** What the devices sent and what the gateway acknowledged, per series; ts are unique per device. */
class Ledger {
  /** device|metric -> ts -> value, for every reading whose PUBACK arrived. */
  readonly acked = new Map<string, Map<number, number>>();
  /** device|metric -> ts -> value, for every reading published. */
  readonly sent = new Map<string, Map<number, number>>();
  private readonly nextTs = new Map<string, number>();
  ackedMessages = 0;

  constructor(private readonly baseTs: number) {}

  /** The next message of `device`: a new ts (1 ms after its previous one), both metrics. */
  next(device: string): { ts: number; values: Record<string, number> } {
    const ts = (this.nextTs.get(device) ?? this.baseTs) + 1;
    this.nextTs.set(device, ts);
    const values: Record<string, number> = {};
    for (const m of METRICS) {
      values[m] = Math.round(Math.random() * 1e6) / 100;
      const s = this.sent.get(key(device, m)) ?? new Map<number, number>();
      s.set(ts, values[m]);
      this.sent.set(key(device, m), s);
    }
    return { ts, values };
  }

  ack(device: string, ts: number): void {
    this.ackedMessages++;
    for (const m of METRICS) {
      const a = this.acked.get(key(device, m)) ?? new Map<number, number>();
      a.set(ts, this.sent.get(key(device, m))!.get(ts)!);
      this.acked.set(key(device, m), a);
    }
  }

  ackedCount(): number {
    let n = 0;
    for (const a of this.acked.values()) n += a.size;
    return n;
  }
}

interface Stream {
  /** Resolves once every device's connection has closed. */
  closed: Promise<void>;
}

/**
 * Connect every device and keep INFLIGHT QoS 1 publishes in flight each, until the connection
 * drops. `onAck` runs after each PUBACK.
 */
async function stream(gw: ChildGateway, ledger: Ledger, onAck: () => void): Promise<Stream> {
  const conns = await Promise.all(DEVICES.map((d) => connectDevice(gw.mqttUrl, d, SECRET, { reconnectPeriod: 0 })));
  clients.push(...conns);
  const closed = conns.map((client, i) => {
    const device = DEVICES[i];
    let open = true;
    const done = new Promise<void>((resolve) => client.once('close', () => { open = false; resolve(); }));
    const sendOne = () => {
      if (!open) return;
      const { ts, values } = ledger.next(device);
      client.publish(`devices/${device}/telemetry`, JSON.stringify({ ts, ...values }), { qos: 1 }, (err) => {
        if (err) return; // connection gone: not acknowledged, and no more sends
        ledger.ack(device, ts);
        onAck();
        sendOne();
      });
    };
    for (let k = 0; k < INFLIGHT; k++) sendOne();
    return done;
  });
  return { closed: Promise.all(closed).then(() => undefined) };
}

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

interface OutboxRow { seq: number; epoch: number; device: string; metric: string; ts: number; value: number }
interface EpochRow { epoch: number; first_seq: number; last_seq: number; opened_at: number; closed_at: number | null }

/**
 * What a restarted gateway must show: every acknowledged reading in the outbox (with its value)
 * and in the 24h window; seq contiguous from 1 with no duplicate identity; epochs closed, contiguous
 * and holding their rows.
 */
async function checkRestarted(gw: ChildGateway, ledger: Ledger): Promise<{ rows: OutboxRow[]; epochs: EpochRow[] }> {
  const rows = await queryGatewayDb<OutboxRow>(gw.dataDir, 'SELECT seq, epoch, device, metric, ts, value FROM outbox ORDER BY seq');
  const epochs = await queryGatewayDb<EpochRow>(gw.dataDir, 'SELECT epoch, first_seq, last_seq, opened_at, closed_at FROM epochs ORDER BY epoch');

  // Contiguous seq from 1, no hole and no repeat (no cloud and no budget: nothing left the outbox).
  expect(rows.map((r) => r.seq)).toEqual(rows.map((_, i) => i + 1));
  const identities = new Set(rows.map((r) => `${r.device}|${r.metric}|${r.ts}`));
  expect(identities.size).toBe(rows.length);

  const stored = new Map<string, Map<number, number>>();
  for (const r of rows) {
    const s = stored.get(key(r.device, r.metric)) ?? new Map<number, number>();
    s.set(r.ts, r.value);
    stored.set(key(r.device, r.metric), s);
    // Whatever is stored was sent, with the value sent.
    expect(ledger.sent.get(key(r.device, r.metric))?.get(r.ts)).toBe(r.value);
  }
  const missing: string[] = [];
  for (const [k, acked] of ledger.acked) {
    for (const [ts, value] of acked) if (stored.get(k)?.get(ts) !== value) missing.push(`${k}@${ts}`);
  }
  expect({ missing: missing.length, some: missing.slice(0, 10) }).toEqual({ missing: 0, some: [] });

  for (const device of DEVICES) {
    for (const metric of METRICS) {
      const w = await getJson<{ windows: Record<string, { count: number }> }>(`${gw.httpUrl}/api/v1/windows?device=${device}&metric=${metric}`);
      const ackedN = ledger.acked.get(key(device, metric))?.size ?? 0;
      const storedN = stored.get(key(device, metric))?.size ?? 0;
      expect({ series: key(device, metric), count: w.windows['24h'].count }).toEqual({ series: key(device, metric), count: storedN });
      expect(storedN).toBeGreaterThanOrEqual(ackedN);
    }
  }

  // Epochs: all closed (nothing arrived since the restart), contiguous in seq, holding their rows.
  expect(epochs.filter((e) => e.closed_at === null)).toEqual([]);
  for (let i = 1; i < epochs.length; i++) {
    expect(epochs[i].epoch).toBe(epochs[i - 1].epoch + 1);
    expect(epochs[i].first_seq).toBe(epochs[i - 1].last_seq + 1);
  }
  if (rows.length) {
    expect(epochs[0].first_seq).toBe(1);
    expect(epochs[epochs.length - 1].last_seq).toBe(rows[rows.length - 1].seq);
  }
  const byEpoch = new Map(epochs.map((e) => [e.epoch, e]));
  for (const r of rows) {
    const e = byEpoch.get(r.epoch);
    if (!e || r.seq < e.first_seq || r.seq > e.last_seq) throw new Error(`seq ${r.seq} is outside its epoch ${r.epoch} (${JSON.stringify(e)})`);
  }
  const health = await getJson<{ outbox: { lastSeq: number; epochOpen: boolean; pending: number } }>(`${gw.httpUrl}/api/v1/health`);
  expect(health.outbox).toMatchObject({ lastSeq: rows.length, epochOpen: false, pending: rows.length });
  return { rows, epochs };
}

test('[INV-1] SIGKILL at random moments of a QoS 1 stream loses no acknowledged reading', async () => {
  const ledger = new Ledger(Date.now() - 2 * 3600_000);
  let gw = await spawnGateway({ dataDir: dir.path, id: 'gw-dur', env: CHILD_ENV });
  const KILLS = 3;
  for (let round = 0; round < KILLS; round++) {
    const before = ledger.ackedMessages;
    const threshold = before + randomInt(300, 1200);
    let killing = false;
    const s = await stream(gw, ledger, () => {
      if (killing || ledger.ackedMessages < threshold) return;
      killing = true;
      // A random moment just after the threshold, with commits in flight.
      const victim = gw.proc;
      setTimeout(() => victim.kill('SIGKILL'), randomInt(0, 30));
    });
    const exit = await gw.exited;
    expect(exit.signal).toBe('SIGKILL');
    await s.closed;
    await Promise.all(clients.map((c) => endClient(c)));
    clients = [];
    expect(ledger.ackedMessages).toBeGreaterThanOrEqual(threshold);

    const restartAt = Date.now();
    gw = await spawnGateway({ dataDir: dir.path, id: 'gw-dur', env: CHILD_ENV });
    const { rows, epochs } = await checkRestarted(gw, ledger);
    // The epoch the crash left open (it holds the newest seq) was closed by the restart.
    const crashed = epochs[epochs.length - 1];
    expect(crashed.last_seq).toBe(rows[rows.length - 1].seq);
    expect(crashed.closed_at!).toBeGreaterThanOrEqual(restartAt);
  }
  expect(ledger.ackedCount()).toBeGreaterThanOrEqual(KILLS * 300 * METRICS.length);

  // [INV-2] The devices resend what was never acknowledged (and some of what was, as after a lost
  // PUBACK): every reading sent is then stored exactly once, in the outbox and in the windows.
  const conns = await Promise.all(DEVICES.map((d) => connectDevice(gw.mqttUrl, d, SECRET)));
  clients.push(...conns);
  let resent = 0;
  await Promise.all(DEVICES.map(async (device, i) => {
    const sentTs = [...ledger.sent.get(key(device, METRICS[0]))!.keys()];
    const acked = ledger.acked.get(key(device, METRICS[0]));
    const again = sentTs.filter((ts) => !acked?.has(ts) || Math.random() < 0.05);
    resent += again.length;
    await Promise.all(again.map((ts) => publish(conns[i], `devices/${device}/telemetry`,
      JSON.stringify({ ts, ...Object.fromEntries(METRICS.map((m) => [m, ledger.sent.get(key(device, m))!.get(ts)])) }))));
  }));
  expect(resent).toBeGreaterThan(0);
  // The last of them reach gateway.db from the commit log within its apply interval (250 ms).
  let total = 0;
  for (const device of DEVICES) for (const metric of METRICS) total += ledger.sent.get(key(device, metric))!.size;
  await eventually(async () => (await queryGatewayDb<{ n: number }>(gw.dataDir, 'SELECT COUNT(*) AS n FROM outbox'))[0].n >= total, 5000);
  const rows = await queryGatewayDb<OutboxRow>(gw.dataDir, 'SELECT seq, epoch, device, metric, ts, value FROM outbox ORDER BY seq');
  expect(rows.map((r) => r.seq)).toEqual(rows.map((_, i) => i + 1));
  let sentN = 0;
  for (const device of DEVICES) {
    for (const metric of METRICS) {
      const sent = ledger.sent.get(key(device, metric))!;
      sentN += sent.size;
      const mine = rows.filter((r) => r.device === device && r.metric === metric);
      expect(mine.length).toBe(sent.size);
      for (const r of mine) expect(sent.get(r.ts)).toBe(r.value);
      const w = await getJson<{ windows: Record<string, { count: number }> }>(`${gw.httpUrl}/api/v1/windows?device=${device}&metric=${metric}`);
      expect(w.windows['24h'].count).toBe(sent.size);
    }
  }
  expect(rows.length).toBe(sentN);
  await gw.stop('SIGTERM');
}, 120_000); // four child gateways started and killed: ~5 s in CI, past jest's 30 s on a loaded machine

test('[INV-1] SIGTERM mid-stream: every acknowledged reading is stored, the process exits 0', async () => {
  const ledger = new Ledger(Date.now() - 3600_000);
  let gw = await spawnGateway({ dataDir: dir.path, id: 'gw-term', env: CHILD_ENV });
  const threshold = randomInt(300, 900);
  let stopping: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | null = null;
  let ackedAtSignal = 0;
  const s = await stream(gw, ledger, () => {
    if (stopping || ledger.ackedMessages < threshold) return;
    ackedAtSignal = ledger.ackedMessages;
    stopping = gw.stop('SIGTERM');
  });
  await s.closed;
  const exit = await gw.exited;
  expect(exit).toEqual({ code: 0, signal: null });
  expect(stopping).not.toBeNull();
  expect(ackedAtSignal).toBeGreaterThanOrEqual(threshold);
  await Promise.all(clients.map((c) => endClient(c)));
  clients = [];

  gw = await spawnGateway({ dataDir: dir.path, id: 'gw-term', env: CHILD_ENV });
  const { rows } = await checkRestarted(gw, ledger);
  expect(rows.length).toBeGreaterThanOrEqual(ledger.ackedCount());
  await gw.stop('SIGTERM');
}, 120_000);
