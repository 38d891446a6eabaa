/**
 * `npm run bench:freshness`: how long after a device publishes a reading the cloud's merged query
 * shows it, at a steady fleet load, on 127.0.0.1.
 *
 * For each gateway configuration measured (the shipped defaults first): a fresh `braid cloud` and
 * `braid gateway --cloud-url ... --token ...` as child processes, each with its own data dir and
 * free ports; a simulated fleet (edge/simulator, its own process: 200 devices x 1 msg/s x 4
 * metrics, QoS 1) for the whole run; after a warm-up, a probe device publishes a numbered reading
 * every 250 ms on average (random gaps) for 60 s while two pollers ask, every 50 ms, the cloud's `GET /api/v1/query` and the
 * gateway's `GET /api/v1/windows` how many probe readings they hold. Freshness of a reading = the
 * arrival of the first answer that holds it - its publish. Reported: p50/p95/p99/max per observer,
 * the PUBACK, the push cadence seen from outside and from the gateway's counters, CPU per process.
 *
 * The outage scenario (bench/lib/freshness-outage.ts), with the same fleet on the shipped
 * defaults: the cloud killed (-9) for 10, 60 and 120 s in turn, twice over, and started again on
 * its port and data dir; the time from its return to the first new probe reading in the merged
 * query, and the freshness of the probe readings while the gateway catches up.
 *
 * Prints a markdown report and, at full scale with the default configurations, writes it into
 * docs/benchmarks.md between the bench:freshness (and bench:freshness-outage) markers. Knobs:
 * `npm run bench:freshness -- --help`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { gatewayConfigSchema } from '../edge/config.js';
import { DEFAULT_FORWARDER_OPTIONS } from '../edge/forwarder/options.js';
import { DeviceRegistry } from '../edge/registry/index.js';
import { cloudConfigSchema } from '../cloud/config.js';
import { type OutageResult, type OutageRound, outageReport } from './lib/freshness-outage.js';
import { Probe, pollVisibility, promValue, type ObserverStats, type ProbeReading } from './lib/freshness-probe.js';
import { machineInfo, type MachineInfo } from './lib/machine.js';
import { HOST, sleep } from './lib/net.js';
import { ROOT, TSX, childEnv, startBraid, type Broker } from './lib/peers.js';
import { cpuSecondsOf, startProc, stopAll, type Proc } from './lib/procs.js';
import { OUT, publishReport } from './lib/report.js';
import { isStopping, logger, runBench, workDir } from './lib/run.js';
import { envChoices, envJson, envNumber as num, envScale, envTimeoutMs, envWriteDocs, exitOnHelp, mergeDeep } from './lib/settings.js';
import { int, ms, quantile } from './lib/stats.js';

/** Gateway configurations the benchmark knows by name (merged into loopback-only defaults). */
const VARIANTS: Record<string, Record<string, unknown>> = {
  defaults: {},
  'push-1s': { speed: { pushIntervalMs: 1000 } },
  'push-500ms': { speed: { pushIntervalMs: 500 } },
};
const DEFAULT_VARIANTS = ['defaults', 'push-1s', 'push-500ms'];

const usage = `npm run bench:freshness   (node --import tsx bench/freshness.ts)
Environment:
  BENCH_SCALE=1              scale the fleet and the probe time (0.1 for a quick run: 20 devices, 10 s of probes)
  BENCH_VARIANTS=${DEFAULT_VARIANTS.join(',')}   gateway configurations, one run each (${Object.entries(VARIANTS).map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join('; ')})
  BENCH_DEVICES=200          simulated devices (x scale), BENCH_RATE=1 msg/s each, BENCH_METRICS=temp,hum,co2,battery
  BENCH_PROBE_MS=250         one probe reading every this many ms on average (gaps uniform in 0.5-1.5x), for BENCH_PROBE_S=60 s (x scale)
  BENCH_POLL_MS=50           each poller asks this often (less the time the answer took)
  BENCH_WARMUP_S=5           fleet running before the first probe
  BENCH_SCENARIOS=steady,outage   steady: the variants above; outage: the cloud killed and started again (shipped gateway defaults)
  BENCH_OUTAGE_S=10,60,120   outage lengths, seconds (x scale), interleaved, BENCH_OUTAGE_REPEATS=2 times each
  BENCH_RECOVERY_S=10        after each return, probe readings (one every BENCH_PROBE_MS on average) for this long
  BENCH_GATEWAY_CONFIG='{"speed":{"pushIntervalMs":1500}}'   merged into every variant's gateway config
  BENCH_CLOUD_CONFIG='{"ingest":{"groupCommitMs":0}}'        merged into the cloud's config
  BENCH_WRITE_DOCS=1|0       write docs/benchmarks.md (default: only a full-scale run of the default variants)
  BENCH_KEEP=1               keep the temp dir (data dirs)
  BENCH_TIMEOUT_S=1500       stop everything and fail after this long
Output: bench/.out/freshness-latest.md and freshness-latest.json (freshness-outage-latest.* for the outages).`;

exitOnHelp(usage);

// ---------------------------------------------------------------------------------------------
// Settings

const env = process.env;
const SCALE = envScale();
const VARIANT_NAMES = envChoices('BENCH_VARIANTS', Object.keys(VARIANTS), 'variant', DEFAULT_VARIANTS);
const SCENARIOS = envChoices('BENCH_SCENARIOS', ['steady', 'outage'], 'scenario');
const OUTAGE_S = (env.BENCH_OUTAGE_S || '10,60,120').split(',').map((v) => {
  const n = Number(v.trim());
  if (!(n > 0)) throw new Error(`BENCH_OUTAGE_S must be positive seconds, comma-separated, got "${env.BENCH_OUTAGE_S}"`);
  return Math.max(1, Math.round(n * SCALE));
});
const OUTAGE_REPEATS = Math.round(num('BENCH_OUTAGE_REPEATS', 2));
const RECOVERY_S = num('BENCH_RECOVERY_S', 10);
const DEVICES = Math.max(2, Math.round(num('BENCH_DEVICES', 200) * SCALE));
const RATE = num('BENCH_RATE', 1);
const METRICS = (env.BENCH_METRICS ?? 'temp,hum,co2,battery').split(',').map((s) => s.trim()).filter(Boolean);
const PROBE_MS = num('BENCH_PROBE_MS', 250);
const PROBE_S = Math.max(10, num('BENCH_PROBE_S', 60) * SCALE);
const PROBES = Math.max(2, Math.round((PROBE_S * 1000) / PROBE_MS));
const POLL_MS = num('BENCH_POLL_MS', 50);
const WARMUP_MS = num('BENCH_WARMUP_S', 5) * 1000;
const GATEWAY_EXTRA = envJson('BENCH_GATEWAY_CONFIG');
const CLOUD_EXTRA = envJson('BENCH_CLOUD_CONFIG');
const CUSTOM = Object.keys(env).some((k) => /^BENCH_(DEVICES|RATE|METRICS|PROBE_MS|PROBE_S|POLL_MS|WARMUP_S|GATEWAY_CONFIG|CLOUD_CONFIG|VARIANTS)$/.test(k));
const FULL = SCALE === 1 && !CUSTOM;
const WRITE_DOCS = envWriteDocs(FULL);
const OUTAGE_CUSTOM = Object.keys(env).some((k) => /^BENCH_(DEVICES|RATE|METRICS|PROBE_MS|POLL_MS|WARMUP_S|GATEWAY_CONFIG|CLOUD_CONFIG|OUTAGE_S|OUTAGE_REPEATS|RECOVERY_S)$/.test(k));
const WRITE_OUTAGE_DOCS = envWriteDocs(SCALE === 1 && !OUTAGE_CUSTOM);
/** A probe reading not visible this long after the last one was published counts as never seen. */
const SETTLE_MS = 30_000;

const TARGET_P99_MS = 2000;
const GW_ID = 'fresh-gw';
const PROBE_DEVICE = 'probe';
const PROBE_METRIC = 'fresh';
const OBSERVERS = ['cloud', 'gateway'] as const;
type Observer = (typeof OBSERVERS)[number];

const log = logger('bench');

// ---------------------------------------------------------------------------------------------
// Results

interface Dist { n: number; unseen: number; mean: number; p50: number; p95: number; p99: number; max: number }
interface ObserverSummary { polls: number; errors: number; lastError: string | null; inconsistent: number; rttP50: number; rttP99: number; stepP50: number; stepP99: number; steps: number }
interface VariantResult {
  name: string;
  /** The gateway config file as written (loopback hosts + the variant + BENCH_GATEWAY_CONFIG). */
  gatewayConfig: Record<string, unknown>;
  pushIntervalMs: number;
  probes: number;
  probeErrors: number;
  pubacked: number;
  windowMs: number;
  fresh: Record<Observer, Dist>;
  puback: Dist;
  /** cloud - gateway, per reading seen by both: the push and the cloud's part. */
  pushPart: Dist;
  observers: Record<Observer, ObserverSummary>;
  fleet: { devices: number; metrics: number; offeredMsgPerSec: number; sentPerSec: number; sent: number; acked: number; errors: number; pubackP50Ms: number | null; pubackP99Ms: number | null; connectMs: number };
  cpu: { cloud: number; gateway: number; fleet: number; bench: number };
  gateway: { pushes: number; pushFailures: number; partialsSent: number; cycleMs: number; partialsPerPush: number; outboxPending: number; accepted: number };
  cloud: { speedPushes: number; speedMeanMs: number; stored: number; queries: number; queryMeanMs: number; ingested: number; ingestRequests: number };
  setupMs: number;
  /** 1-minute load average of the machine at the start and the end of the window (other sessions share it). */
  load: [number, number];
}

const results: VariantResult[] = [];

// ---------------------------------------------------------------------------------------------
// Processes

const work = workDir('braid-bench-fresh-');
const SECRET = `fresh-${Math.random().toString(36).slice(2)}`;

function braid(args: string[], name: string): Proc {
  if (isStopping()) throw new Error('stopping: not starting another process');
  return startProc(name, process.execPath, [join(ROOT, 'bin/braid.js'), ...args], { cwd: ROOT, env: childEnv() });
}

/** Run a `braid` subcommand that prints a secret, token or key as its last stdout line. */
async function braidLastLine(args: string[], expect: RegExp): Promise<string> {
  const p = braid(args, `braid ${args.slice(0, 3).join(' ')}`);
  const { code } = await p.exited;
  const last = p.lines[p.lines.length - 1]?.trim() ?? '';
  if (code !== 0 || !expect.test(last)) throw new Error(`braid ${args.join(' ')} failed (exit ${code}): ${p.stderrTail()}`);
  return last;
}

async function text(url: string, headers: Record<string, string> = {}): Promise<string> {
  const res = await fetch(url, { headers });
  const body = await res.text();
  if (res.status !== 200) throw new Error(`${url.replace(/\?.*/, '')} answered ${res.status}: ${body.slice(0, 200)}`);
  return body;
}

// ---------------------------------------------------------------------------------------------
// One run

function dist(xs: number[], unseen = 0): Dist {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  // A reading never seen ranks above every seen one: the quantiles that reach it are Infinity.
  const all = [...s, ...Array.from({ length: unseen }, () => Infinity)];
  return { n: s.length, unseen, mean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length), p50: quantile(all, 0.5), p95: quantile(all, 0.95), p99: quantile(all, 0.99), max: all.length ? all[all.length - 1] : NaN };
}

function summarize(s: ObserverStats): ObserverSummary {
  const rtts = [...s.rtts].sort((a, b) => a - b);
  const gaps = s.steps.slice(1).map((t, i) => t - s.steps[i]).sort((a, b) => a - b);
  return { polls: s.polls, errors: s.errors, lastError: s.lastError, inconsistent: s.inconsistent, rttP50: quantile(rtts, 0.5), rttP99: quantile(rtts, 0.99), stepP50: quantile(gaps, 0.5), stepP99: quantile(gaps, 0.99), steps: s.steps.length };
}

/** A column's processes before the gateway starts: data dirs, config files, the cloud (running), a token, a read key, the devices. */
interface Setup {
  dir: string;
  cloudDir: string;
  gwDir: string;
  cloudConfigFile: string;
  gwConfigFile: string;
  gatewayConfig: Record<string, unknown>;
  pushIntervalMs: number;
  token: string;
  key: string;
  cloud: Proc;
  cloudUrl: string;
  fleetIds: string[];
  probeSecret: string;
}

async function setUp(name: string, variant: Record<string, unknown>): Promise<Setup> {
  const dir = join(work, name);
  const cloudDir = join(dir, 'cloud');
  const gwDir = join(dir, 'gateway');
  mkdirSync(cloudDir, { recursive: true });
  mkdirSync(gwDir, { recursive: true });

  // Loopback only and no nightly batch run during a measurement; everything else as shipped.
  const cloudConfig = mergeDeep({ http: { host: HOST }, batch: { cron: null }, log: { level: 'warn' } }, CLOUD_EXTRA);
  const cloudConfigFile = join(dir, 'cloud.json');
  writeFileSync(cloudConfigFile, JSON.stringify(cloudConfig, null, 2));
  const gatewayConfig = mergeDeep(mergeDeep({ mqtt: { host: HOST }, http: { host: HOST } }, variant), GATEWAY_EXTRA);
  const gwConfigFile = join(dir, 'gateway.json');
  writeFileSync(gwConfigFile, JSON.stringify(gatewayConfig, null, 2));
  const pushIntervalMs = gatewayConfigSchema.parse(gatewayConfig).speed.pushIntervalMs;

  log(`${name}: setting up (cloud, gateway token, read key, ${DEVICES + 1} devices)`);
  const token = await braidLastLine(['cloud', 'gateway', 'add', GW_ID, '--data-dir', cloudDir], /^bgt_/);
  const key = await braidLastLine(['cloud', 'key', 'add', 'freshness-bench', '--role', 'read', '--data-dir', cloudDir], /^brk_/);
  const cloud = braid(['cloud', '--config', cloudConfigFile, '--data-dir', cloudDir, '--http-port', '0'], 'braid cloud');
  const cloudUrl = (await cloud.waitLine(/^cloud ready: (http:\/\/\S+)/, 60_000))[1];

  // The fleet through the registry's own API (one scrypt hash each, ~10 ms); 200 `braid device add`
  // processes would take minutes. The probe device through the CLI, as an operator adds one.
  const reg = await DeviceRegistry.open(gwDir);
  const fleetIds = Array.from({ length: DEVICES }, (_, i) => `fleet-${String(i + 1).padStart(4, '0')}`);
  try {
    for (const id of fleetIds) await reg.add(id, SECRET);
  } finally {
    await reg.close();
  }
  const probeSecret = await braidLastLine(['device', 'add', PROBE_DEVICE, '--data-dir', gwDir], /^\S{8,}$/);
  return { dir, cloudDir, gwDir, cloudConfigFile, gwConfigFile, gatewayConfig, pushIntervalMs, token, key, cloud, cloudUrl, fleetIds, probeSecret };
}

/** The simulated fleet against the gateway's MQTT port; resolves once every device is connected. */
async function startFleet(port: number, fleetIds: string[]): Promise<{ fleet: Proc; connectMs: number; readyAt: number }> {
  const fleet = startProc('fleet (edge/simulator)', process.execPath, [...TSX, join(ROOT, 'bench/lib/freshness-fleet.ts'),
    JSON.stringify({ url: `mqtt://${HOST}:${port}`, devices: fleetIds, secret: SECRET, rate: RATE, metrics: METRICS, qos: 1 })], { cwd: ROOT, env: childEnv() });
  const ready = JSON.parse((await fleet.waitLine(/^\{"ready":true/, 120_000)).input ?? '{}') as { connectMs: number };
  return { fleet, connectMs: ready.connectMs, readyAt: performance.now() };
}

async function runVariant(name: string): Promise<VariantResult> {
  const t0 = performance.now();
  const { gwDir, gwConfigFile, gatewayConfig, pushIntervalMs, token, key, cloud, cloudUrl, fleetIds, probeSecret } = await setUp(name, VARIANTS[name]);

  let gw: Broker | null = null;
  let fleet: Proc | null = null;
  let probe: Probe | null = null;
  try {
    gw = await startBraid({ dataDir: gwDir, configFile: gwConfigFile, cloudUrl, token, id: GW_ID });
    const gwUrl = gw.httpUrl!;
    const started = await startFleet(gw.port, fleetIds);
    fleet = started.fleet;
    const ready = { connectMs: started.connectMs };
    const fleetReadyAt = started.readyAt;
    log(`${name}: fleet of ${DEVICES} connected in ${ms(ready.connectMs)}; warming up ${WARMUP_MS / 1000} s`);
    await sleep(WARMUP_MS);

    probe = new Probe({ url: `mqtt://${HOST}:${gw.port}`, device: PROBE_DEVICE, secret: probeSecret, metric: PROBE_METRIC, observers: [...OBSERVERS] });
    await probe.connect();
    const readings = probe.readings;
    const setupMs = performance.now() - t0;

    // The query covers every minute the probes can fall in: from the minute before now to well after the end.
    const from = Math.floor(Date.now() / 60_000) * 60_000 - 60_000;
    const to = from + Math.ceil((PROBE_S * 1000 + SETTLE_MS) / 60_000 + 3) * 60_000;
    const queryUrl = `${cloudUrl}/api/v1/query?metric=${PROBE_METRIC}&device=${PROBE_DEVICE}&from=${from}&to=${to}&step=1m&agg=last`;
    const auth = { authorization: `Bearer ${key}` };
    const windowsUrl = `${gwUrl}/api/v1/windows?device=${PROBE_DEVICE}&metric=${PROBE_METRIC}`;

    const observe: Record<Observer, () => Promise<{ count: number; last: number | null }>> = {
      cloud: async () => {
        const a = JSON.parse(await text(queryUrl, auth)) as { points: Array<{ t: string; value: number | null; count: number }> };
        const points = [...a.points].sort((x, y) => Date.parse(x.t) - Date.parse(y.t));
        return { count: points.reduce((s, p) => s + p.count, 0), last: points.length ? points[points.length - 1].value : null };
      },
      gateway: async () => {
        const a = JSON.parse(await text(windowsUrl)) as { windows: Record<string, { count: number; last: number | null }> };
        const w = a.windows['24h'];
        return { count: w?.count ?? 0, last: w?.count ? w.last : null };
      },
    };

    const [gwM0, cloudM0] = await Promise.all([text(`${gwUrl}/metrics`), text(`${cloudUrl}/metrics`, auth)]);
    const cpu0 = { cloud: cpuSecondsOf(cloud.pid), gateway: cpuSecondsOf(gw.pid), fleet: cpuSecondsOf(fleet.pid), bench: process.cpuUsage() };
    const w0 = performance.now();
    const load0 = loadavg()[0];

    let published = false;
    let lastSentAt = Infinity;
    const allSeen = () => published && readings.every((r) => OBSERVERS.every((o) => r.seenAt[o] !== null));
    const done = () => isStopping() || allSeen() || performance.now() - lastSentAt > SETTLE_MS;
    const pollers = OBSERVERS.map((o) => pollVisibility(o, readings, observe[o], POLL_MS, done));
    log(`${name}: ${PROBES} probe readings, one every ${PROBE_MS} ms on average (${(PROBES * PROBE_MS / 1000).toFixed(0)} s); polling every ${POLL_MS} ms`);
    await probe.run(PROBES, PROBE_MS);
    published = true;
    lastSentAt = readings[readings.length - 1].sentAt;
    const stats = await Promise.all(pollers);
    const windowMs = performance.now() - w0;

    const benchCpu = process.cpuUsage(cpu0.bench);
    const cpu = {
      cloud: cpuSecondsOf(cloud.pid) - cpu0.cloud, gateway: cpuSecondsOf(gw.pid) - cpu0.gateway, fleet: cpuSecondsOf(fleet.pid) - cpu0.fleet,
      bench: (benchCpu.user + benchCpu.system) / 1e6,
    };
    const [gwM1, cloudM1, health] = await Promise.all([text(`${gwUrl}/metrics`), text(`${cloudUrl}/metrics`, auth), text(`${gwUrl}/api/v1/health`)]);
    const h = JSON.parse(health) as { outbox: { pending: number }; readings: { accepted: number } };
    const d = (a: string, b: string, metric: string, labels?: Record<string, string>) => (promValue(b, metric, labels) || 0) - (promValue(a, metric, labels) || 0);

    const probeErrors = probe.publishErrors();
    await probe.close();
    probe = null;
    const fleetStopAt = performance.now();
    await fleet.stop(10_000);
    const fin = JSON.parse(fleet.lines.find((l) => l.startsWith('{"final":true')) ?? '{}') as { sent?: number; acked?: number; errors?: number; p50Ms?: number | null; p99Ms?: number | null };
    fleet = null;

    const seen = (o: Observer) => readings.filter((r) => r.seenAt[o] !== null);
    const fresh = Object.fromEntries(OBSERVERS.map((o) => [o, dist(seen(o).map((r) => r.seenAt[o]! - r.sentAt), readings.length - seen(o).length)])) as Record<Observer, Dist>;
    const both = readings.filter((r) => r.seenAt.cloud !== null && r.seenAt.gateway !== null);
    const pushes = d(gwM0, gwM1, 'braid_speedpush_requests_total', { outcome: 'ok' });
    const partialsSent = d(gwM0, gwM1, 'braid_speedpush_partials_sent_total');
    const speedCount = d(cloudM0, cloudM1, 'braid_speed_request_seconds_count');
    const queryCount = d(cloudM0, cloudM1, 'braid_query_seconds_count');
    const r: VariantResult = {
      name, gatewayConfig, pushIntervalMs, probes: readings.length, probeErrors, windowMs, setupMs, load: [load0, loadavg()[0]],
      pubacked: readings.filter((x) => x.pubackAt !== null).length,
      fresh,
      puback: dist(readings.filter((x) => x.pubackAt !== null).map((x) => x.pubackAt! - x.sentAt), readings.length - readings.filter((x) => x.pubackAt !== null).length),
      pushPart: dist(both.map((x) => x.seenAt.cloud! - x.seenAt.gateway!)),
      observers: { cloud: summarize(stats[0]), gateway: summarize(stats[1]) },
      fleet: {
        devices: DEVICES, metrics: METRICS.length, offeredMsgPerSec: DEVICES * RATE, sent: fin.sent ?? NaN, acked: fin.acked ?? NaN, errors: fin.errors ?? NaN,
        sentPerSec: (fin.sent ?? NaN) / ((fleetStopAt - fleetReadyAt) / 1000), pubackP50Ms: fin.p50Ms ?? null, pubackP99Ms: fin.p99Ms ?? null, connectMs: ready.connectMs,
      },
      cpu,
      gateway: {
        pushes, pushFailures: d(gwM0, gwM1, 'braid_speedpush_requests_total') - pushes, partialsSent, cycleMs: windowMs / Math.max(1, pushes),
        partialsPerPush: partialsSent / Math.max(1, pushes), outboxPending: h.outbox.pending, accepted: h.readings.accepted,
      },
      cloud: {
        speedPushes: speedCount, speedMeanMs: (1000 * d(cloudM0, cloudM1, 'braid_speed_request_seconds_sum')) / Math.max(1, speedCount),
        stored: d(cloudM0, cloudM1, 'braid_speed_partials_stored_total'),
        queries: queryCount, queryMeanMs: (1000 * d(cloudM0, cloudM1, 'braid_query_seconds_sum')) / Math.max(1, queryCount),
        ingested: d(cloudM0, cloudM1, 'braid_ingest_readings_total'), ingestRequests: d(cloudM0, cloudM1, 'braid_ingest_request_seconds_count'),
      },
    };
    log(`${name}: cloud query p50 ${ms(r.fresh.cloud.p50)} p99 ${ms(r.fresh.cloud.p99)} max ${ms(r.fresh.cloud.max)}; gateway windows p50 ${ms(r.fresh.gateway.p50)} p99 ${ms(r.fresh.gateway.p99)}; ${int(pushes)} pushes (one per ${ms(r.gateway.cycleMs)})`);
    return r;
  } finally {
    await probe?.close().catch(() => undefined);
    await fleet?.stop(10_000);
    await gw?.stop();
    await cloud.stop(15_000);
  }
}

// ---------------------------------------------------------------------------------------------
// The outage scenario

interface GatewayHealth {
  outbox: { pending: number; lastSeq: number; ackedSeq: number };
  forwarder: { consecutiveFailures: number };
  speedPush: { consecutiveFailures: number };
}

/** The cloud killed for each of OUTAGE_S in turn, OUTAGE_REPEATS times, and started again on its port and data dir. */
async function runOutages(): Promise<OutageResult> {
  const s = await setUp('outage', {});
  let cloud = s.cloud;
  const port = new URL(s.cloudUrl).port;
  let gw: Broker | null = null;
  let fleet: Proc | null = null;
  let probe: Probe | null = null;
  const rounds: OutageRound[] = [];
  try {
    gw = await startBraid({ dataDir: s.gwDir, configFile: s.gwConfigFile, cloudUrl: s.cloudUrl, token: s.token, id: GW_ID });
    const gwUrl = gw.httpUrl!;
    fleet = (await startFleet(gw.port, s.fleetIds)).fleet;
    await sleep(WARMUP_MS);
    probe = new Probe({ url: `mqtt://${HOST}:${gw.port}`, device: PROBE_DEVICE, secret: s.probeSecret, metric: PROBE_METRIC, observers: ['cloud'] });
    await probe.connect();
    const readings = probe.readings;

    const total = OUTAGE_REPEATS * OUTAGE_S.reduce((a, b) => a + b + RECOVERY_S + 30, 0);
    const from = Math.floor(Date.now() / 60_000) * 60_000 - 60_000;
    const to = from + Math.ceil(total / 60 + 5) * 60_000;
    const queryUrl = `${s.cloudUrl}/api/v1/query?metric=${PROBE_METRIC}&device=${PROBE_DEVICE}&from=${from}&to=${to}&step=1m&agg=last`;
    const auth = { authorization: `Bearer ${s.key}` };
    const observe = async () => {
      const a = JSON.parse(await text(queryUrl, auth)) as { points: Array<{ t: string; value: number | null; count: number }> };
      const points = [...a.points].sort((x, y) => Date.parse(x.t) - Date.parse(y.t));
      return { count: points.reduce((n, p) => n + p.count, 0), last: points.length ? points[points.length - 1].value : null };
    };
    const health = async () => JSON.parse(await text(`${gwUrl}/api/v1/health`)) as GatewayHealth;
    const recoveryProbes = Math.max(1, Math.round((RECOVERY_S * 1000) / PROBE_MS));

    for (let repeat = 1; repeat <= OUTAGE_REPEATS; repeat++) {
      for (const lengthS of OUTAGE_S) {
        if (isStopping()) break;
        log(`outage: ${lengthS} s (repeat ${repeat}/${OUTAGE_REPEATS}): killing the cloud`);
        const killed = performance.now();
        cloud.child.kill('SIGKILL');
        await cloud.exited;
        await sleep(Math.max(0, lengthS * 1000 - (performance.now() - killed)));
        const before = await health();
        const restartAt = performance.now();
        cloud = braid(['cloud', '--config', s.cloudConfigFile, '--data-dir', s.cloudDir, '--http-port', port], 'braid cloud');
        await cloud.waitLine(/^cloud ready: /, 60_000);
        const returnedAt = performance.now();
        const load = loadavg()[0];

        // The gateway's ingest progress, sampled every 200 ms until the backlog is acknowledged (2 min
        // at most): when ingest resumed, the catch-up, and what was unacknowledged when the first new reading showed.
        const acked: Array<[number, number]> = [];
        const sampler = (async () => {
          while (!isStopping() && performance.now() - returnedAt < 120_000) {
            const t = performance.now();
            try {
              const seq = (await health()).outbox.ackedSeq;
              acked.push([t, seq]);
              if (seq >= before.outbox.lastSeq) return t;
            } catch { /* the next sample */ }
            await sleep(Math.max(0, 200 - (performance.now() - t)));
          }
          return Infinity;
        })();
        const first = readings.length;
        let published = false;
        const done = () => isStopping() || (published && (readings.slice(first).every((r) => r.seenAt.cloud !== null) || performance.now() - readings[readings.length - 1].sentAt > SETTLE_MS));
        const poller = pollVisibility('cloud', readings, observe, POLL_MS, done);
        await probe.run(recoveryProbes, PROBE_MS);
        published = true;
        const stats = await poller;
        if (stats.inconsistent) throw new Error(`outage ${lengthS} s: ${stats.inconsistent} inconsistent answers of the merged query`);
        const caughtUp = await sampler;

        const mine = readings.slice(first);
        const seen = mine.filter((r) => r.seenAt.cloud !== null);
        const visibleAt = mine[0].seenAt.cloud ?? Infinity;
        const ackedThen = acked.filter(([t]) => t <= visibleAt).pop()?.[1] ?? before.outbox.ackedSeq;
        const round: OutageRound = {
          lengthS, repeat, restartMs: returnedAt - restartAt, load,
          ingestFailures: before.forwarder.consecutiveFailures, speedFailures: before.speedPush.consecutiveFailures,
          backlog: before.outbox.lastSeq - before.outbox.ackedSeq,
          returnToVisibleMs: visibleAt - returnedAt,
          freshMs: seen.map((r) => r.seenAt.cloud! - r.sentAt), unseen: mine.length - seen.length,
          pendingWhenVisible: Number.isFinite(visibleAt) ? Math.max(0, before.outbox.lastSeq - ackedThen) : NaN,
          catchUpMs: caughtUp - returnedAt,
          ingestResumedMs: (acked.find(([, seq]) => seq > before.outbox.ackedSeq)?.[0] ?? Infinity) - returnedAt,
        };
        rounds.push(round);
        log(`outage: ${lengthS} s: new reading visible ${ms(round.returnToVisibleMs)} after the return (${int(round.pendingWhenVisible)} of ${int(round.backlog)} backlog readings unacknowledged then); caught up in ${ms(round.catchUpMs)}`);
        await sleep(3000);
      }
    }
    const g = gatewayConfigSchema.parse(s.gatewayConfig);
    return {
      rounds, probeMs: PROBE_MS, recoveryS: RECOVERY_S, devices: DEVICES, readingsPerSec: DEVICES * RATE * METRICS.length,
      gatewayConfig: s.gatewayConfig, speedRetryMaxMs: Math.min(g.speed.retryMaxMs, g.cloud.retryMaxMs), ingestRetryMaxMs: g.cloud.retryMaxMs,
    };
  } finally {
    await probe?.close().catch(() => undefined);
    await fleet?.stop(10_000);
    await gw?.stop();
    await cloud.stop(15_000);
  }
}

// ---------------------------------------------------------------------------------------------
// Report

const pct = (cpuSec: number, windowMs: number) => `${((100 * cpuSec) / (windowMs / 1000)).toFixed(0)}%`;
const msOrNever = (x: number) => (x === Infinity ? `> ${SETTLE_MS / 1000} s (not seen)` : ms(x));

function shippedDefaults(): string[] {
  const g = gatewayConfigSchema.parse({});
  const c = cloudConfigSchema.parse({});
  return [
    `| gateway \`speed.pushIntervalMs\` | ${g.speed.pushIntervalMs} ms | time from the start of one speed push to the start of the next (a slow push is followed at once): a reading waits up to one cycle for its push |`,
    `| gateway \`speed.pushMaxPartials\` | ${int(g.speed.pushMaxPartials)} | partials per push (a full page is followed at once by the next) |`,
    `| gateway \`outbox.groupCommitMs\` | ${g.outbox.groupCommitMs} ms | a reading of a device sending one message at a time waits at most this long for others to share its transaction (outbox row + speed partial); then PUBACK |`,
    `| gateway \`outbox.epochMs\` / \`epochIdleMs\` | ${int(g.outbox.epochMs)} / ${int(g.outbox.epochIdleMs)} ms | epoch length (partials are per epoch; not on the freshness path) |`,
    `| gateway forwarder \`idlePollMs\` (not a config key) | ${DEFAULT_FORWARDER_OPTIONS.idlePollMs} ms | the raw readings' way to the master dataset; the query's speed side does not wait for it |`,
    `| cloud \`ingest.groupCommitMs\` | ${c.ingest.groupCommitMs} ms | ingest (master dataset) only |`,
    `| cloud \`speed.staleAfterMs\` | ${int(c.speed.staleAfterMs)} ms | marks answers provisional, does not delay them |`,
  ];
}

function report(machine: MachineInfo, totalMs: number): string {
  const L: string[] = [];
  L.push(`Measured ${machine.date.slice(0, 10)} (${machine.date}), total run time ${(totalMs / 1000).toFixed(0)} s.`, '');
  L.push('| Machine | |', '|---|---|');
  L.push(`| CPU | ${machine.nproc} cores, ${machine.cpu} |`, `| RAM | ${machine.ramGiB} GiB |`, `| Kernel | ${machine.kernel} |`,
    `| Disk (data dirs) | ${machine.disk} |`, `| Node.js | ${machine.node} |`, `| SQLite | ${machine.sqlite} |`, `| MQTT.js | ${machine.mqttjs} |`, '');
  const cmd = [SCALE !== 1 && `BENCH_SCALE=${SCALE}`, ...Object.keys(env).filter((k) => /^BENCH_(DEVICES|RATE|METRICS|PROBE_MS|PROBE_S|POLL_MS|WARMUP_S|VARIANTS|GATEWAY_CONFIG|CLOUD_CONFIG)$/.test(k)).map((k) => `${k}='${env[k]}'`)]
    .filter(Boolean).join(' ');
  L.push(`Command: \`${cmd ? `${cmd} ` : ''}npm run bench:freshness\``, '');
  const first = results[0];
  if (first) {
    L.push(`Load, the same in every column: ${int(first.fleet.devices)} simulated devices (edge/simulator, one process) x ${RATE} msg/s x ${first.fleet.metrics} metrics, QoS 1 = ${int(first.fleet.offeredMsgPerSec)} msg/s, ${int(first.fleet.offeredMsgPerSec * first.fleet.metrics)} readings/s offered, for the whole run; ` +
      `one probe device publishing a numbered reading every ${PROBE_MS} ms on average (gaps uniform in ${PROBE_MS / 2}-${PROBE_MS * 1.5} ms; ${first.probes} readings); the cloud's \`GET /api/v1/query?device=${PROBE_DEVICE}&metric=${PROBE_METRIC}&step=1m&agg=last\` and the gateway's \`GET /api/v1/windows\` polled every ${POLL_MS} ms each.`, '');
  }
  const cols = results;
  const head = (r: VariantResult) => (r.name === 'defaults' ? `defaults (push every ${int(r.pushIntervalMs)} ms)` : `${r.name}: \`${JSON.stringify(VARIANTS[r.name])}\``);
  L.push(`| Figure | ${cols.map(head).join(' | ')} | Target |`, `|---|${cols.map(() => '---:|').join('')}---|`);
  const row = (title: string, cell: (r: VariantResult) => string, target = '') => L.push(`| ${title} | ${cols.map(cell).join(' | ')} | ${target} |`);
  row('**publish → visible in the cloud\'s merged query, p50**', (r) => msOrNever(r.fresh.cloud.p50));
  row('p95', (r) => msOrNever(r.fresh.cloud.p95));
  row('**p99**', (r) => `**${msOrNever(r.fresh.cloud.p99)}** ${r.fresh.cloud.p99 <= TARGET_P99_MS ? '(met)' : '(short)'}`, `p99 <= ${int(TARGET_P99_MS)} ms`);
  row('max', (r) => msOrNever(r.fresh.cloud.max));
  row('publish → visible in the gateway\'s windows, p50 / p99 / max', (r) => `${msOrNever(r.fresh.gateway.p50)} / ${msOrNever(r.fresh.gateway.p99)} / ${msOrNever(r.fresh.gateway.max)}`);
  row('publish → PUBACK (committed to outbox + speed layer), p50 / p99', (r) => `${ms(r.puback.p50)} / ${ms(r.puback.p99)}`);
  row('gateway-visible → cloud-visible (push wait + push + cloud), p50 / p99 / max', (r) => `${ms(r.pushPart.p50)} / ${ms(r.pushPart.p99)} / ${ms(r.pushPart.max)}`);
  row('speed pushes: one every (gateway counter) / partials per push', (r) => `${ms(r.gateway.cycleMs)} / ${int(r.gateway.partialsPerPush)}`);
  // The pusher sleeps pushIntervalMs after each push ends, so the cycle is the interval plus the push itself.
  row('the push itself: cycle − interval (poller intervals p50 − interval)', (r) => ms(r.observers.cloud.stepP50 - r.pushIntervalMs));
  row('cloud answer grew: interval p50 / p99 (seen by the poller)', (r) => `${ms(r.observers.cloud.stepP50)} / ${ms(r.observers.cloud.stepP99)}`);
  row('cloud: speed push handled, mean (braid_speed_request_seconds)', (r) => ms(r.cloud.speedMeanMs));
  row('poll round trip p50 / p99: cloud query / gateway windows', (r) => `${ms(r.observers.cloud.rttP50)} / ${ms(r.observers.cloud.rttP99)}; ${ms(r.observers.gateway.rttP50)} / ${ms(r.observers.gateway.rttP99)}`);
  row('probe readings seen: cloud / gateway (of published)', (r) => `${r.fresh.cloud.n} / ${r.fresh.gateway.n} (of ${r.probes})`);
  row('inconsistent answers (count went back, or last ≠ count)', (r) => `${r.observers.cloud.inconsistent} / ${r.observers.gateway.inconsistent}`, '0');
  row('background load sent, msg/s (fleet PUBACK p50 / p99)', (r) => `${int(r.fleet.sentPerSec)} (${ms(r.fleet.pubackP50Ms ?? NaN)} / ${ms(r.fleet.pubackP99Ms ?? NaN)})`);
  row('CPU, % of one core over the window: cloud / gateway / fleet / bench', (r) => `${pct(r.cpu.cloud, r.windowMs)} / ${pct(r.cpu.gateway, r.windowMs)} / ${pct(r.cpu.fleet, r.windowMs)} / ${pct(r.cpu.bench, r.windowMs)}`);
  row('machine load average (1 min) at the start / end of the window', (r) => `${r.load[0].toFixed(1)} / ${r.load[1].toFixed(1)}`);
  row('forwarder keeping up: readings ingested in the window, outbox pending at the end', (r) => `${int(r.cloud.ingested)} in ${int(r.cloud.ingestRequests)} requests; ${int(r.gateway.outboxPending)} pending`);
  L.push('');

  L.push('<details><summary>Details of each run, and the shipped defaults on the freshness path</summary>', '');
  for (const r of results) {
    L.push(`- ${r.name}: gateway config \`${JSON.stringify(r.gatewayConfig)}\` (everything else default); window ${(r.windowMs / 1000).toFixed(1)} s after ${(r.setupMs / 1000).toFixed(1)} s of setup; ` +
      `cloud query: mean ${ms(r.fresh.cloud.mean)}, ${r.observers.cloud.polls} polls, ${r.observers.cloud.errors} errors${r.observers.cloud.lastError ? ` (${r.observers.cloud.lastError})` : ''}, answer grew ${r.observers.cloud.steps} times; ` +
      `gateway windows: mean ${ms(r.fresh.gateway.mean)}, ${r.observers.gateway.polls} polls, ${r.observers.gateway.errors} errors; ` +
      `${int(r.gateway.pushes)} speed pushes (${int(r.gateway.pushFailures)} not ok), ${int(r.gateway.partialsSent)} partials sent, cloud stored ${int(r.cloud.stored)} (a push in flight at a scrape counts on one side only); ` +
      `cloud answered ${int(r.cloud.queries)} queries, ${ms(r.cloud.queryMeanMs)} each in process; fleet ${int(r.fleet.sent)} sent, ${int(r.fleet.acked)} acked, ${r.fleet.errors} errors, connected in ${ms(r.fleet.connectMs)}; ` +
      `CPU seconds: cloud ${r.cpu.cloud.toFixed(1)}, gateway ${r.cpu.gateway.toFixed(1)}, fleet ${r.cpu.fleet.toFixed(1)}, bench ${r.cpu.bench.toFixed(1)}; probe publish errors ${r.probeErrors}`);
  }
  L.push('', '| Shipped default | Value | Role on the freshness path |', '|---|---:|---|', ...shippedDefaults(), '', '</details>', '');
  return L.join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const t0 = performance.now();
  mkdirSync(OUT, { recursive: true });
  const machine = await machineInfo(work);
  log(`scale ${SCALE}: ${DEVICES} devices x ${RATE} msg/s x ${METRICS.length} metrics; scenarios ${SCENARIOS.join(',')}; variants ${VARIANT_NAMES.join(',')}; work dir ${work}`);
  if (SCENARIOS.includes('steady')) {
    for (const v of VARIANT_NAMES) {
      if (isStopping()) break;
      results.push(await runVariant(v));
    }
    await stopAll();
    const md = report(machine, performance.now() - t0);
    publishReport(md, {
      log, docs: { name: 'freshness', heading: '## Freshness: `npm run bench:freshness`\n\n### Results' }, writeDocs: WRITE_DOCS, fullRun: 'a full-scale run of the default variants',
      files: { 'freshness-latest.md': `${md}\n`, 'freshness-latest.json': `${JSON.stringify({ machine, scale: SCALE, results }, null, 2)}\n` },
    });
    const bad = results.filter((r) => r.observers.cloud.inconsistent || r.observers.gateway.inconsistent || r.fresh.cloud.unseen || r.fresh.gateway.unseen);
    if (bad.length) {
      log(`FAILED: ${bad.map((r) => r.name).join(', ')}: a probe reading was never seen, or an answer was inconsistent`);
      process.exitCode = 1;
    }
  }
  if (SCENARIOS.includes('outage') && !isStopping()) {
    const t1 = performance.now();
    const outage = await runOutages();
    await stopAll();
    const cmd = [SCALE !== 1 && `BENCH_SCALE=${SCALE}`, ...Object.keys(env).filter((k) => /^BENCH_(DEVICES|RATE|METRICS|PROBE_MS|POLL_MS|WARMUP_S|SCENARIOS|OUTAGE_S|OUTAGE_REPEATS|RECOVERY_S|GATEWAY_CONFIG|CLOUD_CONFIG)$/.test(k)).map((k) => `${k}='${env[k]}'`)]
      .filter(Boolean).join(' ');
    const md = `Measured ${machine.date.slice(0, 10)} (${machine.date}) on the machine above, run time ${((performance.now() - t1) / 1000).toFixed(0)} s. ` +
      `Command: \`${cmd ? `${cmd} ` : ''}npm run bench:freshness\`\n\n${outageReport(outage)}`;
    publishReport(md, {
      log, docs: { name: 'freshness-outage', heading: '### After an outage' }, writeDocs: WRITE_OUTAGE_DOCS, fullRun: 'a full-scale run of the default outages',
      files: { 'freshness-outage-latest.md': `${md}\n`, 'freshness-outage-latest.json': `${JSON.stringify({ machine, scale: SCALE, outage }, null, 2)}\n` },
    });
    if (outage.rounds.some((r) => r.unseen > 0 || !Number.isFinite(r.returnToVisibleMs))) {
      log('FAILED: after an outage a probe reading was never seen');
      process.exitCode = 1;
    }
  }
}

await runBench(main, { log, work, timeoutMs: envTimeoutMs(1500) });
