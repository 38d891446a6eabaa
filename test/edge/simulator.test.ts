/**
 * The simulator against a real gateway (aedes broker, outbox, speed layer): what it says it
 * injected is what the gateway counts (duplicates dropped, malformed payloads rejected and
 * quarantined), late readings land in the minute they were stamped with, SenML is accepted, an
 * offline device delivers its buffer after reconnecting; and `braid simulate` as users run it.
 */
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { DeviceRegistry } from '../../edge/registry/index.js';
import { type SentMessage, type SimDevice, Simulator, type SimulatorOptions, resolveOptions } from '../../edge/simulator/index.js';
import { minuteOf } from '../../shared/time.js';
import { type TestGateway, eventually, startTestGateway, gatewayDbAll } from '../support/gateway.js';

const ROOT = resolve(import.meta.dirname, '../..');
const BRAID = join(ROOT, 'bin/braid.js');

interface Health { readings: { accepted: number; duplicates: number; invalid: number }; quarantined: number; devices: { connected: number } }

let gw: TestGateway;
let sims: Simulator[] = [];

beforeEach(async () => {
  gw = await startTestGateway();
});

afterEach(async () => {
  await Promise.all(sims.map((s) => s.stop()));
  sims = [];
  await gw.close();
});

async function devices(n: number, prefix = 'sim', profile?: SimDevice['profile']): Promise<SimDevice[]> {
  const out: SimDevice[] = [];
  for (let i = 1; i <= n; i++) {
    const id = `${prefix}-${i}`;
    out.push({ id, secret: await gw.addDevice(id), profile });
  }
  return out;
}

async function health(): Promise<Health> {
  const res = await fetch(`${gw.httpUrl}/api/v1/health`);
  return (await res.json()) as Health;
}

/** Run a fleet for `ms`, then stop it; returns its stats and every message it sent. */
async function run(opts: Partial<SimulatorOptions> & Pick<SimulatorOptions, 'devices'>, ms: number) {
  const sent: SentMessage[] = [];
  const sim = new Simulator({ url: gw.mqttUrl, onMessage: (m) => sent.push(m), ...opts });
  sims.push(sim);
  await sim.start();
  await new Promise((r) => setTimeout(r, ms));
  const stats = await sim.stop();
  return { stats, sent };
}

/** Wait until the gateway has handled every reading the fleet sent (accepted, dropped as duplicates, or rejected). */
async function settled(readings: number, malformed: number): Promise<Health> {
  const h = await eventually(async () => {
    const x = await health();
    return x.readings.accepted + x.readings.duplicates === readings && x.readings.invalid === malformed ? x : null;
  }, 10_000);
  return h!;
}

describe('Simulator against a real gateway', () => {
  it('injected duplicates are the gateway\'s duplicates; the rest is accepted once', async () => {
    const { stats } = await run({ devices: await devices(3), ratePerDevice: 20, duplicateShare: 0.3, metrics: ['temp', 'hum'] }, 1500);
    expect(stats.duplicates).toBeGreaterThan(0);
    expect(stats.acked).toBe(stats.sent);
    expect(stats.qos1).toBe(stats.sent);
    expect(stats.duplicateReadings).toBe(stats.duplicates * 2);
    const h = await settled(stats.readings, 0);
    expect(h.readings.duplicates).toBe(stats.duplicateReadings);
    expect(h.readings.accepted).toBe(stats.readings - stats.duplicateReadings);
    expect(stats.p99Ms).not.toBeNull();
    expect(stats.p50Ms!).toBeLessThanOrEqual(stats.p99Ms!);
  });

  it('malformed payloads are the gateway\'s rejects, quarantined with their reason; good readings still count', async () => {
    const { stats, sent } = await run({ devices: await devices(2), ratePerDevice: 20, malformedShare: 0.4 }, 1500);
    expect(stats.malformed).toBeGreaterThanOrEqual(6); // every kind of mistake at least once across the run
    const h = await settled(stats.readings, stats.malformed);
    expect(h.readings.invalid).toBe(stats.malformed);
    expect(h.quarantined).toBe(stats.malformed);
    expect(h.readings.accepted).toBe(stats.readings);
    // Rejections are reported to the device on its errors topic; the quarantine keeps each payload.
    const rows = await gatewayDbAll<{ device: string; reason: string }>(gw.gateway.outbox, 'SELECT device, reason FROM quarantine');
    expect(rows).toHaveLength(stats.malformed);
    expect(new Set(rows.map((r) => r.reason)).size).toBeGreaterThanOrEqual(4);
    expect(sent.filter((m) => m.kind === 'malformed').every((m) => m.ts === null && m.values === null)).toBe(true);
  });

  it('late readings land in the minute they were stamped with, hours back, and only there', async () => {
    const lateByMs = 3 * 3600_000;
    const [late] = await devices(1, 'late', { lateShare: 1, lateByMs });
    const [onTime] = await devices(1, 'ontime');
    const { stats, sent } = await run({ devices: [late, onTime], ratePerDevice: 10, metrics: ['temp'] }, 1500);
    expect(stats.late).toBe(sent.filter((m) => m.device === late.id).length);
    await settled(stats.readings, 0);
    const expected = new Map<number, number>();
    for (const m of sent.filter((x) => x.device === late.id)) {
      expect(m.kind).toBe('late');
      expect(Math.abs(m.ts! - (Date.now() - lateByMs))).toBeLessThan(60_000);
      expected.set(minuteOf(m.ts!), (expected.get(minuteOf(m.ts!)) ?? 0) + 1);
    }
    const rows = await gatewayDbAll<{ minute: number; n: number }>(gw.gateway.outbox, 
      'SELECT minute, SUM(count) AS n FROM partials WHERE device = ? GROUP BY minute ORDER BY minute', [late.id]);
    expect(new Map(rows.map((r) => [r.minute, r.n]))).toEqual(expected);
    // The outbox holds the very timestamps that were sent.
    const ts = await gatewayDbAll<{ ts: number }>(gw.gateway.outbox, 'SELECT ts FROM outbox WHERE device = ? ORDER BY ts', [late.id]);
    expect(ts.map((r) => r.ts)).toEqual(sent.filter((m) => m.device === late.id).map((m) => m.ts).sort((a, b) => a! - b!));
    // Not in the last hour's window; in the 24 h one.
    const w = await (await fetch(`${gw.httpUrl}/api/v1/windows?device=${late.id}&metric=temp`)).json() as { windows: Record<string, { count: number }> };
    expect(w.windows['1h'].count).toBe(0);
    expect(w.windows['24h'].count).toBe(stats.late);
  });

  it('no reading repeats another by accident: late ones a second late interleave with on-time ones, and none is a duplicate', async () => {
    const { stats, sent } = await run({ devices: await devices(2), ratePerDevice: 50, lateShare: 0.5, lateByMs: 1000, metrics: ['temp'] }, 1500);
    const h = await settled(stats.readings, 0);
    expect(h.readings.duplicates).toBe(0);
    expect(h.readings.accepted).toBe(stats.readings);
    for (const id of ['sim-1', 'sim-2']) {
      const mine = sent.filter((m) => m.device === id);
      expect(new Set(mine.map((m) => m.ts)).size).toBe(mine.length);
      // On-time readings at even, late ones at odd milliseconds.
      expect(mine.every((m) => m.ts! % 2 === (m.kind === 'late' ? 1 : 0))).toBe(true);
    }
  });

  it('SenML payloads are accepted with their times and values', async () => {
    const { stats, sent } = await run({ devices: await devices(2), ratePerDevice: 10, format: 'senml', metrics: ['temp', 'hum', 'co2'] }, 1200);
    expect(JSON.parse(sent[0].payload)).toEqual([
      { bn: `${sent[0].device}:`, bt: sent[0].ts! / 1000, n: 'temp', v: sent[0].values!.temp },
      { n: 'hum', v: sent[0].values!.hum },
      { n: 'co2', v: sent[0].values!.co2 },
    ]);
    const h = await settled(stats.readings, 0);
    expect(h.readings.accepted).toBe(stats.readings);
    const rows = await gatewayDbAll<{ device: string; metric: string; ts: number; value: number }>(gw.gateway.outbox, 'SELECT device, metric, ts, value FROM outbox');
    const want = sent.flatMap((m) => Object.entries(m.values!).map(([metric, value]) => ({ device: m.device, metric, ts: m.ts, value })));
    const key = (r: { device: string; metric: string; ts: number | null }) => `${r.device}/${r.metric}/${r.ts}`;
    expect(rows.map(key).sort()).toEqual(want.map(key).sort());
  });

  it('an offline device disconnects on schedule, comes back and publishes what it buffered with the original times', async () => {
    const [dev] = await devices(1, 'flaky', { offline: { afterMs: 400, forMs: 800, everyMs: 0, bufferWhileOffline: true } });
    const seen: Array<SentMessage & { at: number }> = [];
    const sim = new Simulator({ url: gw.mqttUrl, devices: [dev], ratePerDevice: 10, onMessage: (m) => seen.push({ ...m, at: Date.now() }) });
    sims.push(sim);
    await sim.start();
    await eventually(async () => sim.snapshot().offlinePeriods === 1 && (await health()).devices.connected === 0, 10_000);
    await eventually(() => sim.snapshot().buffered > 0, 5000);
    await new Promise((r) => setTimeout(r, 300));
    const stats = await sim.stop();
    expect(stats.reconnects).toBe(1);
    expect(stats.buffered).toBeGreaterThanOrEqual(5);
    expect(stats.bufferDropped).toBe(0);
    const h = await settled(stats.readings, 0);
    expect(h.readings.accepted).toBe(stats.readings);
    // The buffered readings went out after the outage, stamped with when they were made.
    const buffered = seen.filter((m) => m.kind === 'buffered');
    expect(buffered).toHaveLength(stats.buffered);
    expect(buffered[0].at - buffered[0].ts!).toBeGreaterThanOrEqual(500);
    const ts = new Set((await gatewayDbAll<{ ts: number }>(gw.gateway.outbox, 'SELECT DISTINCT ts FROM outbox')).map((r) => r.ts));
    expect(buffered.every((m) => ts.has(m.ts!))).toBe(true);
  });

  it('per-device profiles mix QoS levels in one fleet', async () => {
    const fleet = [...await devices(2, 'q1'), ...await devices(2, 'q0', { qos: 0 })];
    const { stats, sent } = await run({ devices: fleet, ratePerDevice: 10 }, 1200);
    expect(stats.qos0).toBe(sent.filter((m) => m.device.startsWith('q0')).length);
    expect(stats.qos1).toBe(sent.filter((m) => m.device.startsWith('q1')).length);
    expect(sent.every((m) => m.qos === (m.device.startsWith('q0') ? 0 : 1))).toBe(true);
    // On loopback nothing is lost, QoS 0 included.
    await settled(stats.readings, 0);
  });

  it('a device the broker refuses rejects start() naming it, and nothing stays connected', async () => {
    const good = await devices(1);
    const sim = new Simulator({ url: gw.mqttUrl, devices: [...good, { id: 'nobody', secret: 'x' }] });
    sims.push(sim);
    await expect(sim.start()).rejects.toThrow(/nobody.*Not authorized/);
    expect(sim.snapshot().connected).toBe(0);
  });

  it('bad options are refused with the option named', () => {
    const d = [{ id: 'a', secret: 's' }];
    const bad: Array<[Partial<SimulatorOptions>, RegExp]> = [
      [{ duplicateShare: 1.5 }, /^duplicateShare must be within 0\.\.1/],
      [{ ratePerDevice: 0 }, /^ratePerDevice must be a positive number/],
      [{ metrics: ['ts'] }, /^metrics has "ts"/],
      [{ lateShare: 0.7, malformedShare: 0.7 }, /^lateShare plus malformedShare/],
      [{ devices: [{ id: 'a', secret: 's', profile: { qos: 2 as 0 } }] }, /^device a: qos must be 0 or 1/],
      [{ devices: [{ id: 'a/b', secret: 's' }] }, /^devices\[0\]\.id "a\/b"/],
      [{ offline: { afterMs: 0, forMs: 10, everyMs: 5, bufferWhileOffline: true } }, /^offline\.everyMs must be 0 \(once\) or longer/],
    ];
    for (const [o, msg] of bad) {
      expect(() => resolveOptions({ url: 'mqtt://127.0.0.1:1', devices: d, ...o })).toThrow(expect.objectContaining({ code: 'BRAID_ERR_CONFIG_INVALID', message: expect.stringMatching(msg) }));
    }
  });
});

describe('braid simulate (the command)', () => {
  function braid(args: string[], timeoutMs = 20_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BRAID_') && k !== 'NODE_OPTIONS') env[k] = v;
    const child = spawn(process.execPath, [BRAID, 'simulate', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString('utf8'); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString('utf8'); });
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    return new Promise((res) => child.once('close', (code) => { clearTimeout(t); res({ code, stdout, stderr }); }));
  }

  it('bad flags exit 2 with a message naming the flag', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--rate', 'fast', '--secret', 's'], /--rate must be a positive number/],
      [['--duplicate-share', '2', '--secret', 's'], /--duplicate-share must be a share within 0\.\.1/],
      [['--late-share', 'x', '--secret', 's'], /--late-share must be a share/],
      [['--late-by', '3 weeks', '--secret', 's'], /--late-by must be a duration/],
      [['--malformed-share', '-0.1', '--secret', 's'], /--malformed-share must be a share/],
      [['--qos', '2', '--secret', 's'], /--qos/],
      [['--format', 'xml', '--secret', 's'], /--format/],
      [['--metrics', 'temp,ts', '--secret', 's'], /--metrics must be a comma-separated list/],
      [['--offline', '10s', '--secret', 's'], /--offline must be <after>\/<for>/],
      [['--devices', '2.5', '--secret', 's'], /--devices must be a whole number/],
      [['--late-share', '0.6', '--malformed-share', '0.6', '--secret', 's'], /--late-share plus --malformed-share/],
      [['--url', 'not a url', '--secret', 's'], /--url must be a URL/],
      [[], /give --secret .* or --register/],
    ];
    // Four at a time: each is a node process loading the CLI.
    const runs: Array<Awaited<ReturnType<typeof braid>>> = [];
    for (let i = 0; i < cases.length; i += 4) runs.push(...await Promise.all(cases.slice(i, i + 4).map(([args]) => braid(args))));
    runs.forEach((r, i) => {
      expect({ args: cases[i][0], code: r.code }).toEqual({ args: cases[i][0], code: 2 });
      expect(r.stderr).toMatch(cases[i][1]);
    });
  }, 60_000);

  it('registers its devices, runs for --duration, and its --json summary reconciles with the gateway', async () => {
    const r = await braid(['--url', gw.mqttUrl, '--register', gw.dir, '--devices', '3', '--rate', '10', '--duration', '2',
      '--duplicate-share', '0.2', '--malformed-share', '0.2', '--late-share', '0.2', '--late-by', '2h', '--metrics', 'temp,hum,co2', '--json']);
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout.trim()) as Record<string, number>;
    expect(s).toMatchObject({ devices: 3, qos: 1, lateByMs: 7_200_000, errors: 0 });
    expect(s.sent).toBeGreaterThan(30);
    expect(s.acked).toBe(s.sent);
    const h = await settled(s.readings, s.malformed);
    expect(h.readings.duplicates).toBe(s.duplicateReadings);
    expect(h.readings.accepted).toBe(s.readings - s.duplicateReadings);
    const reg = await DeviceRegistry.open(gw.dir);
    try {
      expect((await reg.list()).map((d) => d.id)).toEqual(['sim-0001', 'sim-0002', 'sim-0003']);
    } finally { await reg.close(); }
  }, 60_000);

  it('prints a human summary, and exits 1 naming the device when the broker refuses it', async () => {
    await gw.addDevice('sim-0001', 'pw');
    const ok = await braid(['--url', gw.mqttUrl, '--secret', 'pw', '--devices', '1', '--rate', '5', '--duration', '3', '--live-every', '1']);
    expect(ok.code).toBe(0);
    // Not a terminal: the live line is a whole line each time (on a terminal it is rewritten in place).
    const live = ok.stderr.split('\n').filter((s) => s.startsWith('sent '));
    expect(live.length).toBeGreaterThanOrEqual(2);
    for (const s of live) expect(s).toMatch(/^sent \d+ {2}acked \d+ {2}rate [\d.]+\/s {2}p99 PUBACK ([\d.]+|-) ms {2}connected [01] {2}errors 0$/);
    expect(Number(/acked (\d+)/.exec(live.at(-1)!)![1])).toBeGreaterThan(0);
    expect(ok.stderr).toMatch(/^1 devices connected to mqtt:/m);
    expect(ok.stdout).toMatch(/^braid simulate: 1 devices on mqtt:\/\/127\.0\.0\.1:\d+ for [\d.]+ s\n {2}messages {3}sent \d+ \(QoS 1: \d+, QoS 0: 0\), acked \d+, errors 0\n/);
    expect(ok.stdout).toMatch(/PUBACK {5}p50 [\d.]+ ms, p99 [\d.]+ ms/);
    const refused = await braid(['--url', gw.mqttUrl, '--secret', 'wrong', '--devices', '1', '--duration', '1']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/cannot connect to mqtt:\/\/127\.0\.0\.1:\d+: device sim-0001: .*Not authorized/);
  }, 60_000);
});
