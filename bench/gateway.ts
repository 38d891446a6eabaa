/**
 * `npm run bench:gateway`: the Braid gateway beside stock aedes (in memory) and Debian's mosquitto,
 * in one run, with the same clients, on 127.0.0.1. Prints a markdown report and, at full scale,
 * writes it into docs/benchmarks.md (between the generated-section markers). See docs/benchmarks.md
 * for what each figure means and the knobs (BENCH_* environment variables, listed in `usage`).
 */
import { openSync, closeSync, existsSync, fdatasyncSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import sqlite3 from 'sqlite3';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DeviceRegistry, hashGeneratedSecret, hashSecret } from '../edge/registry/index.js';
import { Db, chunkRows, placeholders } from '../shared/sqlite.js';
import { buildBraidCli, tsxBraidCli } from './lib/bundle.js';
import { fillOutbox } from './lib/fill-outbox.js';
import { fillGatewayPartials } from './lib/fill-partials.js';
import { deviceSecret } from './lib/secrets.js';
import { machineInfo, type MachineInfo } from './lib/machine.js';
import { HOST, bytesInFlightTo, sleep } from './lib/net.js';
import { PEER_KINDS, ROOT, TSX, isBraid, childEnv, commitSummary, gatewayCounters, GATEWAY_ENV, GATEWAY_NODE_FLAGS, health, mainThreadProfile, startAedes, startBraid, startMosquitto, MOSQUITTO, type Broker, type GatewayCounters, type PeerKind } from './lib/peers.js';
import { profileMarkdown, summarizeProfile } from './lib/profile.js';
import { cpuSecondsOf, deviceWrittenBytes, mainThreadCpuSecondsOf, memoryOf, startProc, stopAll, writeBytesOf, writeBytesOfTask, type Proc } from './lib/procs.js';
import { OUT, publishReport } from './lib/report.js';
import { logger, runBench, workDir } from './lib/run.js';
import { envChoices, envJson, envNumber as num, envScale, envWriteDocs, exitOnHelp, mergeDeep } from './lib/settings.js';
import { int, mb, median, ms, quantile, ratio } from './lib/stats.js';

const usage = `npm run bench:gateway   (node --import tsx bench/gateway.ts)
Environment:
  BENCH_SCALE=1          scale every count (0.1 for a quick run; latency load stays 25k msg/s)
  BENCH_REPEAT=3         throughput runs per peer (the median is reported)
  BENCH_PHASES=qos1,qos1-w20,qos0,latency,fleet,rss,drain
  BENCH_PEERS=braid,aedes,mosquitto
  BENCH_ALT_ROOT=DIR     also run the gateway of another checkout (with node_modules) beside this one
  BENCH_INFLIGHT=100     mosquitto_pub -M (QoS 1 messages in flight per client)
  BENCH_PUB_NODELAY=1    mosquitto_pub --nodelay (no Nagle on the publishers' sockets)
  BENCH_PROFILE=1        run each Braid gateway under node --cpu-prof; summaries go in the report
  BENCH_PROFILE_INTERVAL_US=1000   the profiles' sampling interval (node --cpu-prof-interval; 50-200 to see sub-ms gaps)
  BENCH_GATEWAY_CONFIG='{"outbox":{"groupCommitMs":2}}'   merged into the gateway's config
  BENCH_WRITE_DOCS=1|0   write docs/benchmarks.md (default: only a full-scale run of everything)
  BENCH_KEEP=1           keep the temp dir (data dirs, latency samples)
  BENCH_FLEET_WARM_MINUTES=240  fleet: the gateway.db first holds the fleet's partials of this many minutes before (0: empty)
  BENCH_FLEET_CURSOR_INDEX=1    fleet: the gateway.db has the speed push's index on the partials, as with a cloud (0: without)
  BENCH_RSS_BUILT=0      rss: skip the built and as-deployed gateways (the connect storm's CPU beside a checkout)
Output: bench/.out/latest.md and latest.json, profiles in bench/.out/profiles/.`;

exitOnHelp(usage);

// ---------------------------------------------------------------------------------------------
// Settings

const env = process.env;
const SCALE = envScale();
const REPEAT = Math.round(num('BENCH_REPEAT', 3));
const INFLIGHT = Math.round(num('BENCH_INFLIGHT', 100));
/** mosquitto_pub --nodelay (TCP_NODELAY): without it Nagle holds a refill's later PUBLISHes until the broker's ACK. */
const PUB_NODELAY = env.BENCH_PUB_NODELAY === '1';
const ALL_PHASES = ['qos1', 'qos1-w20', 'qos0', 'latency', 'fleet', 'rss', 'drain'] as const;
type Phase = (typeof ALL_PHASES)[number];
const PHASES = new Set<Phase>(envChoices('BENCH_PHASES', ALL_PHASES, 'phase'));
const PEERS: PeerKind[] = envChoices('BENCH_PEERS', PEER_KINDS, 'peer');
/** Another checkout (with node_modules) whose gateway runs beside this one: compare a change in one run. */
const ALT_ROOT = env.BENCH_ALT_ROOT ? resolve(env.BENCH_ALT_ROOT) : null;
if (ALT_ROOT) {
  if (!existsSync(join(ALT_ROOT, 'bin/braid.js'))) throw new Error(`BENCH_ALT_ROOT: no bin/braid.js in ${ALT_ROOT}`);
  if (PEERS.includes('braid') && !PEERS.includes('braid-alt')) PEERS.splice(PEERS.indexOf('braid') + 1, 0, 'braid-alt');
}
const rootOf = (kind: PeerKind) => (kind === 'braid-alt' ? ALT_ROOT! : ROOT);
const PROFILE = env.BENCH_PROFILE === '1';
const FULL = SCALE === 1 && PHASES.size === ALL_PHASES.length && PEER_KINDS.every((k) => PEERS.includes(k)) && !ALT_ROOT;
const WRITE_DOCS = envWriteDocs(FULL);

const TP_CLIENTS = 4;
/**
 * At most 65,000: mosquitto_pub -l (2.0.11) disconnects once the PUBACK of the last line's message
 * id arrives, and ids wrap at 65,535, so past that it leaves early whenever the broker acknowledges
 * slower than it reads its input (BENCH_SCALE=2 against the gateway: 34,465 of 100,000 each).
 */
const TP_PER_CLIENT = Math.min(65_000, Math.max(1000, Math.round(50_000 * SCALE)));
const LAT_CLIENTS = 20;
const LAT_RATE_PER_CLIENT = 1250; // 20 x 1250 = 25k msg/s: the QoS 0 target load
const LAT_WORKERS = 2;
const LAT_WARMUP_MS = 2000;
const LAT_DURATION_MS = Math.max(3000, Math.round(10_000 * SCALE));
/** A fleet: devices each sending one message (4 metrics) a second on its own clock, QoS 1. */
const FLEET_DEVICES = Math.max(100, Math.round(1000 * SCALE));
const FLEET_METRICS = ['temp', 'hum', 'pressure', 'co2'];
const FLEET_WARMUP_MS = 8000;
// Whole minutes: every minute (and every epoch, 60 s) each of the fleet's series starts a new
// partial row, whose key takes a leaf of its own in the unique index, so a window of part of a
// minute read ~350 or ~650 B a reading as it held a minute's start or not.
const FLEET_DURATION_MS = 60_000 * Math.max(1, Math.round(SCALE));
/** The fleet's partials of this many minutes before its runs are in gateway.db first: a gateway in service, not a fresh one. */
const FLEET_WARM_MINUTES = Math.round(num('BENCH_FLEET_WARM_MINUTES', 240, { zeroOk: true }));
const FLEET_CURSOR_INDEX = process.env.BENCH_FLEET_CURSOR_INDEX !== '0';
const RSS_DEVICES = Math.max(100, Math.round(10_000 * SCALE));
const RSS_HOLDERS = 2;
const DRAIN_READINGS = Math.max(20_000, Math.round(500_000 * SCALE));
const DRAIN_BATCH = 5000; // the forwarder's default cloud.batchMaxReadings

const TARGET = { bytesPerReading: 200, qos1VsAedes: 0.5, qos0PerSec: 25_000, pubackP99Ms: 150, rssBytes: 200 * 1024 * 1024, drainPerSec: 100_000 };

const LABEL: Record<PeerKind, string> = { braid: 'Braid gateway', 'braid-alt': `Braid gateway (${ALT_ROOT ?? 'alt'})`, aedes: 'stock aedes (memory)', mosquitto: 'mosquitto' };
/**
 * The RSS phase runs the gateway from its sources through tsx ('braid'), from `npm run build`'s
 * output ('braid-js': no tsx loader thread), and as deployed ('braid-unit': the build, with the
 * environment deploy/braid-gateway.service gives it).
 */
type RssKind = PeerKind | 'braid-js' | 'braid-unit';
/** The `Environment=` lines of the shipped systemd unit. */
const UNIT_ENV: Record<string, string> = Object.fromEntries([...readFileSync(join(ROOT, 'deploy/braid-gateway.service'), 'utf8')
  .matchAll(/^Environment=([A-Z_][A-Z0-9_]*)=(.*)$/gm)].map((m) => [m[1], m[2]]));
const RSS_LABEL: Record<RssKind, string> = { ...LABEL, braid: 'Braid gateway (sources through tsx)', 'braid-js': 'Braid gateway, built (npm run build: no tsx)',
  'braid-unit': `Braid gateway as deployed: built, deploy/braid-gateway.service's environment (${Object.entries(UNIT_ENV).map(([k, v]) => `${k}=${v}`).join(' ')})` };

// ---------------------------------------------------------------------------------------------
// Results

interface CommitStats { commits: number; readingsPerCommit: number; msPerCommit: number; p50Ms: number; p99Ms: number; slowShare: number }
interface TpRun { n: number; done: number; ms: number; perSec: number; publishersMs: number; cpuSec: number; commit?: CommitStats; note?: string;
  /** Braid: write_bytes of the gateway process over the run, and the MQTT payload bytes of its readings. */
  writeBytes?: number; payloadBytes?: number;
  /** Braid: what the data dir's block device wrote over the same span, all writers (deviceWrittenBytes). */
  deviceBytes?: number }
/** Braid: what gateway.db holds per row after a phase (dbstat: pages of each table and its indexes). */
interface DiskHeld { dedupRows: number; dedupBytes: number; outboxRows: number; outboxBytes: number; partialsBytes: number; pageSize: number; walBytes: number }
interface LatRun { p50: number; p90: number; p99: number; p999: number; max: number; samples: number; offeredPerSec: number; unacked: number; errors: number; cpuSec: number; clientCpuSec: number; commit?: CommitStats; loopLagP99Ms?: number; loopLagMaxMs?: number;
  /** Braid, over the measured window: readings committed, write_bytes of the gateway process and the device's writes (deviceWrittenBytes). */
  readings?: number; writeBytes?: number; deviceBytes?: number }
interface RssRun { baseline: number; rss: number; hwm: number; connected: number; failed: number; connectMs: number;
  /** CPU of the broker process (all threads) from the holders' start until every device's PUBACK came. */
  cpuSec: number;
  /** The same for the main thread alone (JavaScript, and the I/O it does itself). */
  mainCpuSec: number;
  /** Braid: the group commits of the devices' first readings (count, readings, seconds). */
  commits?: { commits: number; readings: number; seconds: number };
  /** Braid: V8's collections during the storm by kind (minor, major, incremental, weakcb), their count and pause seconds. */
  gc?: Record<string, { count: number; seconds: number }>; errors: Record<string, number>; heap?: { total: number; used: number; external: number } }
/** What a write-once log's group commit costs on this disk (logCommitProbe). */
interface LogProbe { readings: number; recordBytes: number; msPerCommit: number; readingsPerSec: number; bytesPerReading: number }
interface DrainRun { readings: number; ms: number; perSec: number; sinkPerSec: number; sinkRequests: number; ceilingPerSec: number; ceilingMs: number; fillMs: number; cpuSec: number }

const results = {
  tp: {} as Partial<Record<'qos1' | 'qos1-w20' | 'qos0', Partial<Record<PeerKind, TpRun[]>>>>,
  lat: {} as Partial<Record<PeerKind, LatRun>>,
  latRuns: {} as Partial<Record<PeerKind, LatRun[]>>,
  fleet: {} as Partial<Record<PeerKind, LatRun>>,
  fleetRuns: {} as Partial<Record<PeerKind, LatRun[]>>,
  rss: {} as Partial<Record<RssKind, RssRun>>,
  drain: {} as Partial<Record<PeerKind, DrainRun>>,
  drainRuns: {} as Partial<Record<PeerKind, DrainRun[]>>,
  /** The disk's own cost of the gateway's group commits (logCommitProbe), measured after each QoS 1 phase. */
  disk: {} as Partial<Record<'qos1' | 'qos1-w20', LogProbe>>,
  held: {} as Partial<Record<'qos1' | 'qos1-w20' | 'qos0', Partial<Record<PeerKind, DiskHeld>>>>,
  profiles: [] as Array<{ name: string; dir: string; pid: number }>,
  registerMs: 0,
  braidConfig: {} as Record<string, unknown>,
};

const log = logger('bench');

// ---------------------------------------------------------------------------------------------
// Setup

const work = workDir('braid-bench-');
const PROFILE_DIR = join(OUT, 'profiles');
/** Every device's secret derives from this key (bench/lib/secrets.ts), 32 bytes like a generated one. */
const SECRET_KEY = randomBytes(32).toString('base64url');
/**
 * A checkout from before generated secrets were stored as salted SHA-256 (BENCH_ALT_ROOT) verifies
 * only scrypt: its devices share one chosen secret, hashed once, as this benchmark registered them then.
 */
const ALT_LEGACY = ALT_ROOT !== null && !readFileSync(join(ALT_ROOT, 'edge/registry/index.ts'), 'utf8').includes('hashGeneratedSecret');
const LEGACY_SECRET = `bench-${randomBytes(9).toString('base64url')}`;
const legacy = (kind: PeerKind) => kind === 'braid-alt' && ALT_LEGACY;
/** The password device `id` presents to a broker of this kind (the peers accept any). */
const passwordOf = (kind: PeerKind, id: string) => (legacy(kind) ? LEGACY_SECRET : deviceSecret(SECRET_KEY, id));
const tpDir = join(work, 'gw-traffic');
const rssDir = join(work, 'gw-10k');
const drainDir = join(work, 'gw-drain');
const configFile = join(work, 'gateway.json');
const runStart = Date.now();

const tpDevices = Array.from({ length: TP_CLIENTS }, (_, i) => `tp-${i + 1}`);
const latDevices = Array.from({ length: LAT_CLIENTS }, (_, i) => `lat-${String(i + 1).padStart(2, '0')}`);
const fleetDevices = Array.from({ length: FLEET_DEVICES }, (_, i) => `fleet-${String(i + 1).padStart(4, '0')}`);
const RSS_PREFIX = 'rss-';

function writeGatewayConfig() {
  // Loopback only. The per-device rate limit (default 100 msg/s, burst 200) is lifted: the
  // benchmark drives a few devices hard, where a fleet spreads the same load over many.
  const base = { mqtt: { host: HOST, ratePerDevice: 1_000_000, rateBurst: 1_000_000 }, http: { host: HOST } };
  results.braidConfig = mergeDeep(base, envJson('BENCH_GATEWAY_CONFIG'));
  writeFileSync(configFile, JSON.stringify(results.braidConfig, null, 2));
}

/**
 * Register devices in bulk, as `braid device add` does without --secret: each device has its own
 * generated secret (32 bytes), stored as its salted SHA-256 (hashGeneratedSecret, the registry's
 * own format); `add` would also fsync one INSERT per device, so the rows go in one transaction into
 * the table DeviceRegistry.open created. A legacy checkout (ALT_LEGACY) gets one chosen secret
 * hashed once with scrypt, as this benchmark did before; it then runs one scrypt per device at its
 * first CONNECT.
 */
async function register(dataDir: string, ids: string[], kind: PeerKind): Promise<void> {
  const reg = await DeviceRegistry.open(dataDir);
  await reg.close();
  const shared = legacy(kind) ? await hashSecret(LEGACY_SECRET) : null;
  const db = await Db.open(join(dataDir, 'registry.db'));
  try {
    const now = Date.now();
    await db.exec('BEGIN IMMEDIATE');
    for (const chunk of chunkRows(ids, 4, 4000)) {
      const params: unknown[] = [];
      for (const id of chunk) params.push(id, shared ?? hashGeneratedSecret(passwordOf(kind, id)), now, now);
      await db.run(`INSERT INTO devices (id, secret, created_at, updated_at) VALUES ${placeholders(chunk.length, 4)}`, params);
    }
    await db.exec('COMMIT');
  } finally {
    await db.close();
  }
  const check = await DeviceRegistry.open(dataDir);
  try {
    if (!(await check.verify(ids[0], passwordOf(kind, ids[0])))) throw new Error('bulk registration: the first device does not verify');
    if ((await check.count()) < ids.length) throw new Error('bulk registration: devices missing');
  } finally {
    await check.close();
  }
}

function checkTools() {
  for (const bin of [MOSQUITTO, '/usr/bin/mosquitto_pub']) {
    if (!existsSync(bin)) throw new Error(`${bin} not found: apt-get install mosquitto mosquitto-clients`);
  }
}

// ---------------------------------------------------------------------------------------------
// Brokers

async function startPeer(kind: PeerKind, phase: string, dataDir = tpDir): Promise<Broker> {
  if (isBraid(kind)) {
    const profileDir = PROFILE ? join(PROFILE_DIR, `${kind}-${phase}`) : undefined;
    if (profileDir) { rmSync(profileDir, { recursive: true, force: true }); mkdirSync(profileDir, { recursive: true }); }
    const b = await startBraid({ dataDir: kind === 'braid-alt' ? `${dataDir}-alt` : dataDir, configFile, profileDir, root: rootOf(kind), kind });
    if (profileDir) results.profiles.push({ name: `${LABEL[kind]}, ${phase}`, dir: profileDir, pid: b.pid });
    return b;
  }
  if (kind === 'aedes') return startAedes();
  return startMosquitto(work);
}

async function withPeers<T>(phase: string, fn: (brokers: Broker[]) => Promise<T>): Promise<T> {
  const brokers: Broker[] = [];
  try {
    for (const kind of PEERS) brokers.push(await startPeer(kind, phase));
    return await fn(brokers);
  } finally {
    for (const b of brokers) await b.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// Throughput: 4 mosquitto_pub -l, one device each

function linesFile(phase: string, rep: number, client: number, tsBase: number): { file: string; payloadBytes: number } {
  const file = join(work, `lines-${phase}-${rep}-${client}.txt`);
  const parts: string[] = [];
  let payloadBytes = 0;
  for (let k = 0; k < TP_PER_CLIENT; k++) {
    const line = `{"ts":${tsBase + k},"temp":${(20 + (k % 100) / 10).toFixed(1)}}`;
    payloadBytes += line.length;
    parts.push(line);
  }
  writeFileSync(file, `${parts.join('\n')}\n`);
  return { file, payloadBytes };
}

async function throughputRun(b: Broker, inputs: Array<{ file: string; payloadBytes: number }>, qos: 0 | 1, inflight: number): Promise<TpRun> {
  const files = inputs.map((x) => x.file);
  const n = files.length * TP_PER_CLIENT;
  const before = isBraid(b.kind) ? (await health(b)).outbox.lastSeq : 0;
  const written0 = isBraid(b.kind) ? writeBytesOf(b.pid) : NaN;
  const device0 = isBraid(b.kind) ? deviceWrittenBytes(work) : NaN;
  const counters0 = isBraid(b.kind) ? await gatewayCounters(b) : null;
  const cpu0 = cpuSecondsOf(b.pid);
  const t0 = performance.now();
  const pubs: Proc[] = [];
  for (let i = 0; i < files.length; i++) {
    const id = tpDevices[i];
    const fd = openSync(files[i], 'r');
    try {
      pubs.push(startProc(`mosquitto_pub ${id}`, 'mosquitto_pub', ['-h', HOST, '-p', String(b.port), '-i', id, '-u', id, '-P', passwordOf(b.kind, id),
        '-t', `devices/${id}/telemetry`, '-q', String(qos), '-M', String(inflight), '-l', ...(PUB_NODELAY ? ['--nodelay'] : [])], { stdio: [fd, 'ignore', 'pipe'] }));
    } finally {
      closeSync(fd);
    }
  }
  const exits = await Promise.all(pubs.map((p) => p.exited));
  const publishersMs = performance.now() - t0;
  exits.forEach((e, i) => {
    if (e.code !== 0) throw new Error(`${pubs[i].name} exited with ${e.code ?? e.signal} against ${LABEL[b.kind]}: ${pubs[i].stderrTail()}`);
  });
  let done = n;
  let note: string | undefined;
  if (isBraid(b.kind)) {
    // Committed = rows in the outbox: lastSeq has moved by n.
    let last = -1;
    let lastChange = performance.now();
    for (;;) {
      const h = await health(b);
      done = h.outbox.lastSeq - before;
      if (done >= n) break;
      if (done !== last) { last = done; lastChange = performance.now(); }
      if (performance.now() - lastChange > 10_000) {
        note = `only ${done} of ${n} committed (dropped at the queue: ${h.dropped.queueFull}, duplicates: ${h.readings.duplicates}, invalid: ${h.readings.invalid})`;
        break;
      }
      await sleep(qos === 0 ? 10 : 5);
    }
  } else {
    // The broker has read every byte the publishers wrote (QoS 0 has no other receipt).
    while (bytesInFlightTo(b.port) > 0) await sleep(2);
  }
  const elapsed = performance.now() - t0;
  const cpuSec = cpuSecondsOf(b.pid) - cpu0;
  const commit = counters0 ? commitSummary(counters0, await gatewayCounters(b)) : undefined;
  // Bytes written: what the commits wrote (WAL appends, fsync'd) and the checkpoints that ran
  // meanwhile; sampled once the last reading is committed.
  const writeBytes = isBraid(b.kind) ? writeBytesOf(b.pid) - written0 : undefined;
  const deviceBytes = isBraid(b.kind) ? deviceWrittenBytes(work) - device0 : undefined;
  const payloadBytes = inputs.reduce((a, x) => a + x.payloadBytes, 0);
  return { n, done, ms: elapsed, perSec: done / (elapsed / 1000), publishersMs, cpuSec, commit, note, writeBytes, payloadBytes, deviceBytes };
}

async function throughputPhase(phase: 'qos1' | 'qos1-w20' | 'qos0', phaseIndex: number) {
  const qos = phase === 'qos0' ? 0 : 1;
  const inflight = phase === 'qos1-w20' ? 20 : INFLIGHT;
  const reps = REPEAT;
  log(`${phase}: ${TP_CLIENTS} x mosquitto_pub -l -q ${qos}${qos ? ` -M ${inflight}` : ''}, ${TP_PER_CLIENT} msgs each, ${reps} run(s) per peer`);
  const out: Partial<Record<PeerKind, TpRun[]>> = {};
  results.tp[phase] = out;
  await withPeers(phase, async (brokers) => {
    for (let rep = 0; rep < reps; rep++) {
      // Distinct event times per run: the gateway would drop repeated identities as duplicates.
      const tsBase = runStart - 20 * 3600_000 + (phaseIndex * 10 + rep) * 600_000;
      const files = tpDevices.map((_, c) => linesFile(phase, rep, c, tsBase));
      // Rotate the order each run so no peer always goes first.
      const order = brokers.map((_, i) => brokers[(i + rep) % brokers.length]);
      for (const b of order) {
        await sleep(500);
        const r = await throughputRun(b, files, qos, inflight);
        (out[b.kind] ??= []).push(r);
        log(`  ${phase} ${LABEL[b.kind]}: ${int(r.perSec)} msg/s (${int(r.done)} in ${ms(r.ms)}; broker CPU ${r.cpuSec.toFixed(2)} s)${r.writeBytes !== undefined ? `; ${int(r.writeBytes / Math.max(1, r.done))} B written per reading${deviceText(r.deviceBytes, r.done)}` : ''}${r.note ? `; ${r.note}` : ''}`);
      }
    }
    const held: Partial<Record<PeerKind, DiskHeld>> = {};
    for (const b of brokers.filter((x) => isBraid(x.kind))) held[b.kind] = await diskHeld(b.kind === 'braid-alt' ? `${tpDir}-alt` : tpDir);
    results.held[phase] = held;
  });
  // The disk's side of the same commits, at the group size the gateway's runs had.
  const braid = out.braid ?? [];
  const group = median(braid.flatMap((r) => (r.commit ? [r.commit.readingsPerCommit] : [])));
  if (phase !== 'qos0' && Number.isFinite(group)) {
    const record = median(braid.map((r) => (r.payloadBytes ?? NaN) / Math.max(1, r.n)));
    const d = logCommitProbe(work, group, Number.isFinite(record) ? record : 32);
    results.disk[phase] = d;
    log(`  the disk: a write-once log's commit of ${int(d.readings)} readings (${int(d.readings * d.recordBytes)} B + fdatasync) ${ms(d.msPerCommit)}, ${int(d.readingsPerSec)} readings/s, ${int(d.bytesPerReading)} B written a reading`);
  }
}

/**
 * The disk's own cost of a durable group commit, with no database: a write-once log's append of
 * `readings` records of `recordBytes` each (one write) and its fdatasync, one after the other for
 * 1 s, in a preallocated file overwritten in place (as SQLite reuses its WAL: no commit changes the
 * file's size, so no journal commit of the filesystem's joins the fsync). At the group size the
 * gateway's runs had, this is what a gateway whose commit cost only the disk's would take a group,
 * and the bytes the kernel counts for it (write_bytes of this thread: every 4 KiB page a commit
 * dirties, the one it shares with the commit before included).
 */
function logCommitProbe(dir: string, readings: number, recordBytes: number): LogProbe {
  const file = join(dir, 'log-probe.bin');
  const len = Math.max(1, Math.round(readings * recordBytes));
  const span = 16 * 1024 * 1024;
  const fd = openSync(file, 'w+');
  try {
    // Made 4 KiB at a time, as a log (or SQLite's WAL) grows: one large write leaves large folios in
    // the page cache, and write_bytes counts a whole folio when one byte of it turns dirty (2 MB a
    // commit on this machine's kernel for a 1 KB append).
    const page = Buffer.alloc(4096);
    for (let at = 0; at < span + len; at += page.length) writeSync(fd, page, 0, page.length, at);
    fdatasyncSync(fd);
    const buf = Buffer.alloc(len, 7);
    let pos = 0;
    let n = 0;
    // This thread's own counter: the process's also takes in the children it reaps (the gateways).
    const self = `${process.pid}/task/${process.pid}`;
    const w0 = writeBytesOfTask(self);
    const t0 = performance.now();
    while (performance.now() - t0 < 1000) {
      writeSync(fd, buf, 0, len, pos);
      fdatasyncSync(fd);
      pos = pos + len > span ? 0 : pos + len;
      n++;
    }
    const elapsed = performance.now() - t0;
    const written = writeBytesOfTask(self) - w0;
    return { readings, recordBytes, msPerCommit: elapsed / n, readingsPerSec: (n * readings) / (elapsed / 1000), bytesPerReading: written / (n * readings) };
  } finally {
    closeSync(fd);
    rmSync(file, { force: true });
  }
}

/** What gateway.db holds per row (dbstat, on a read-only connection beside the running gateway). */
async function diskHeld(dataDir: string): Promise<DiskHeld> {
  const file = join(dataDir, 'gateway.db');
  const db = await Db.open(file, sqlite3.OPEN_READONLY);
  try {
    const bytes = async (names: string) => (await db.get<{ b: number | null }>(`SELECT SUM(pgsize) AS b FROM dbstat WHERE name IN (${names})`))?.b ?? 0;
    const count = async (t: string) => (await db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM ${t}`))?.n ?? 0;
    const pageSize = (await db.get<{ page_size: number }>('PRAGMA page_size'))?.page_size ?? 0;
    let walBytes = 0;
    try { walBytes = statSync(`${file}-wal`).size; } catch { /* none */ }
    return {
      // v1: the table dedup; v2: dedup_keys and its series (dedup is a view there).
      dedupRows: await count('dedup'), dedupBytes: await bytes("'dedup', 'dedup_keys', 'series', 'sqlite_autoindex_series_1'"),
      // v3: outbox_rows (outbox is a view there).
      outboxRows: await count('outbox'), outboxBytes: await bytes("'outbox', 'outbox_rows'"),
      partialsBytes: await bytes("'partials', 'partials_minute'"), pageSize, walBytes,
    };
  } finally {
    await db.close();
  }
}

// ---------------------------------------------------------------------------------------------
// PUBACK latency at 25k msg/s: 20 MQTT.js clients x 1250 msg/s QoS 1, in 2 worker processes

/** A paced load of MQTT.js devices (bench/clients/latency.ts), in `workers` processes. */
interface PacedLoad { name: string; devices: string[]; ratePerClient: number; workers: number; warmupMs: number; durationMs: number; spread?: boolean; metrics?: string[];
  /** Each reading stamped by its device's clock (less the run's offset), as a real fleet's: bench/clients/latency.ts clockTs. */
  clockTs?: boolean }

const LATENCY_LOAD: PacedLoad = { name: 'latency', devices: latDevices, ratePerClient: LAT_RATE_PER_CLIENT, workers: LAT_WORKERS, warmupMs: LAT_WARMUP_MS, durationMs: LAT_DURATION_MS };
const FLEET_LOAD: PacedLoad = { name: 'fleet', devices: fleetDevices, ratePerClient: 1, workers: 2, warmupMs: FLEET_WARMUP_MS, durationMs: FLEET_DURATION_MS, spread: true, metrics: FLEET_METRICS, clockTs: true };

/**
 * One run of a paced load: PUBACK latencies of the measured window (after the warm-up); for Braid
 * also its group commits, readings committed and write_bytes over that window.
 */
async function pacedRun(b: Broker, load: PacedLoad, tsBase: number, rep: number): Promise<LatRun & { all: Float64Array }> {
  const url = `mqtt://${HOST}:${b.port}`;
  const workers: Proc[] = [];
  const files: string[] = [];
  const per = Math.ceil(load.devices.length / load.workers);
  for (let w = 0; w < load.workers; w++) {
    const clients = load.devices.slice(w * per, (w + 1) * per).map((id) => ({ id, secret: passwordOf(b.kind, id) }));
    const out = join(work, `${load.name}-${b.kind}-${rep}-${w}.bin`);
    files.push(out);
    // With clockTs the workers stamp each reading with their clock shifted by tsBase's offset from
    // the bench's start (whole minutes: the readings' minutes begin with the clock's).
    const args = { url, clients, ratePerClient: load.ratePerClient, warmupMs: load.warmupMs, durationMs: load.durationMs, tsBase: load.clockTs ? tsBase - runStart : tsBase, out, spread: load.spread, metrics: load.metrics, clockTs: load.clockTs };
    workers.push(startProc(`${load.name} worker ${w}`, process.execPath, [...TSX, join(ROOT, 'bench/clients/latency.ts'), JSON.stringify(args)],
      { cwd: ROOT, env: childEnv(), stdio: ['pipe', 'pipe', 'pipe'] }));
  }
  await Promise.all(workers.map((w) => w.waitLine(/^\{"ready":true\}/, 120_000)));
  const cpu0 = cpuSecondsOf(b.pid);
  const startAt = Date.now() + 300;
  for (const w of workers) w.child.stdin?.write(`go ${startAt}\n`);
  const done = Promise.all(workers.map((w) => w.waitLine(/^\{"sent"/, load.warmupMs + load.durationMs + 60_000)));
  let window: { counters0: GatewayCounters; counters1: GatewayCounters; readings: number; writeBytes: number; deviceBytes: number } | null = null;
  if (isBraid(b.kind)) {
    await sleep(Math.max(0, startAt + load.warmupMs - Date.now()));
    const seq0 = (await health(b)).outbox.lastSeq;
    const written0 = writeBytesOf(b.pid);
    const device0 = deviceWrittenBytes(work);
    const counters0 = await gatewayCounters(b);
    await sleep(Math.max(0, startAt + load.warmupMs + load.durationMs - Date.now()));
    const writeBytes = writeBytesOf(b.pid) - written0;
    const deviceBytes = deviceWrittenBytes(work) - device0;
    const readings = (await health(b)).outbox.lastSeq - seq0;
    window = { counters0, counters1: await gatewayCounters(b), readings, writeBytes, deviceBytes };
  }
  const lines = await done;
  const cpuSec = cpuSecondsOf(b.pid) - cpu0;
  await Promise.all(workers.map((w) => w.exited));
  const summaries = lines.map((m) => JSON.parse(m.input ?? '{}') as { offeredPerSec: number; unacked: number; errors: number; cpuSec: number });
  const parts = files.map((f) => {
    const buf = readFileSync(f);
    return new Float64Array(buf.buffer, buf.byteOffset, buf.length / 8);
  });
  const all = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) { all.set(p, off); off += p.length; }
  all.sort();
  return {
    all,
    p50: quantile(all, 0.5), p90: quantile(all, 0.9), p99: quantile(all, 0.99), p999: quantile(all, 0.999), max: all.length ? all[all.length - 1] : NaN,
    samples: all.length,
    offeredPerSec: summaries.reduce((a, s) => a + s.offeredPerSec, 0),
    unacked: summaries.reduce((a, s) => a + s.unacked, 0),
    errors: summaries.reduce((a, s) => a + s.errors, 0),
    cpuSec,
    clientCpuSec: summaries.reduce((a, s) => a + s.cpuSec, 0),
    commit: window ? commitSummary(window.counters0, window.counters1) : undefined,
    loopLagP99Ms: window ? window.counters1.loopLagP99 * 1000 : undefined,
    loopLagMaxMs: window ? window.counters1.loopLagMax * 1000 : undefined,
    readings: window?.readings,
    writeBytes: window?.writeBytes,
    deviceBytes: window?.deviceBytes,
  };
}

function pooled(runs: Array<LatRun & { all: Float64Array }>): LatRun {
  const all = new Float64Array(runs.reduce((a, r) => a + r.all.length, 0));
  let off = 0;
  for (const r of runs) { all.set(r.all, off); off += r.all.length; }
  all.sort();
  const sum = (f: (r: LatRun) => number) => runs.reduce((a, r) => a + f(r), 0);
  return {
    p50: quantile(all, 0.5), p90: quantile(all, 0.9), p99: quantile(all, 0.99), p999: quantile(all, 0.999), max: all.length ? all[all.length - 1] : NaN,
    samples: all.length, offeredPerSec: sum((r) => r.offeredPerSec) / runs.length, unacked: sum((r) => r.unacked), errors: sum((r) => r.errors),
    cpuSec: sum((r) => r.cpuSec), clientCpuSec: sum((r) => r.clientCpuSec),
  };
}

async function pacedPhase(load: PacedLoad, into: { pooled: Partial<Record<PeerKind, LatRun>>; runs: Partial<Record<PeerKind, LatRun[]>> }) {
  const runs: Partial<Record<PeerKind, Array<LatRun & { all: Float64Array }>>> = {};
  await withPeers(load.name, async (brokers) => {
    for (let rep = 0; rep < REPEAT; rep++) {
      const order = brokers.map((_, i) => brokers[(i + rep) % brokers.length]);
      for (const b of order) {
        await sleep(500);
        // Distinct event times per run (the gateway drops repeated identities).
        const r = await pacedRun(b, load, runStart - 12 * 3600_000 + rep * 600_000, rep);
        (runs[b.kind] ??= []).push(r);
        log(`  ${load.name} ${LABEL[b.kind]}: p50 ${ms(r.p50)} p99 ${ms(r.p99)} max ${ms(r.max)} at ${int(r.offeredPerSec)} msg/s offered (${r.samples} samples, ${r.unacked} unacked)${r.writeBytes !== undefined ? `; ${int(r.writeBytes / Math.max(1, r.readings ?? 0))} B written a reading${deviceText(r.deviceBytes, r.readings ?? 0)}, ${r.commit ? `${int(r.commit.readingsPerCommit)} readings a commit` : ''}` : ''}`);
      }
    }
  });
  for (const [k, list] of Object.entries(runs)) {
    into.pooled[k as PeerKind] = pooled(list!);
    into.runs[k as PeerKind] = list!.map(({ all: _all, ...rest }) => rest);
  }
}

async function latencyPhase() {
  log(`latency: ${LAT_CLIENTS} MQTT.js clients x ${LAT_RATE_PER_CLIENT} msg/s QoS 1 (${int(LAT_CLIENTS * LAT_RATE_PER_CLIENT)}/s) in ${LAT_WORKERS} processes, ${LAT_WARMUP_MS / 1000} s warm-up + ${LAT_DURATION_MS / 1000} s measured, ${REPEAT} run(s) per peer`);
  await pacedPhase(LATENCY_LOAD, { pooled: results.lat, runs: results.latRuns });
}

async function fleetPhase() {
  log(`fleet: ${int(FLEET_DEVICES)} MQTT.js devices x 1 msg/s QoS 1 (${FLEET_METRICS.length} metrics a message), each on its own clock, in 2 processes, ${FLEET_WARMUP_MS / 1000} s warm-up + ${FLEET_DURATION_MS / 1000} s measured, ${REPEAT} run(s) per peer`);
  if (FLEET_WARM_MINUTES > 0 || FLEET_CURSOR_INDEX) {
    // The runs' event times start 12 h before the bench (pacedPhase); the partials of the hours before them.
    const beforeMinute = Math.floor((runStart - 12 * 3600_000) / 60_000) * 60_000;
    for (const kind of PEERS.filter(isBraid)) {
      const f = await fillGatewayPartials(`${tpDir}${kind === 'braid-alt' ? '-alt' : ''}`, { devices: fleetDevices, metrics: FLEET_METRICS, minutes: FLEET_WARM_MINUTES, beforeMinute, cursorIndex: FLEET_CURSOR_INDEX }, rootOf(kind));
      const held = FLEET_WARM_MINUTES > 0 ? `the fleet's partials of the ${FLEET_WARM_MINUTES} minutes before (${int(f.rows)} rows, written in ${ms(f.ms)})` : 'no partials';
      log(`  ${LABEL[kind]}: gateway.db holds ${held}${FLEET_CURSOR_INDEX ? ", and the speed push's index on the partials (a gateway with a cloud)" : ''}`);
    }
  }
  await pacedPhase(FLEET_LOAD, { pooled: results.fleet, runs: results.fleetRuns });
}

// ---------------------------------------------------------------------------------------------
// RSS with 10k connected devices: raw MQTT connections from 2 light processes

async function rssRun(kind: RssKind, entries: { tsx: string; built: string | null }): Promise<RssRun> {
  const profileDir = PROFILE && kind === 'braid' ? join(PROFILE_DIR, 'braid-rss') : undefined;
  if (profileDir) { rmSync(profileDir, { recursive: true, force: true }); mkdirSync(profileDir, { recursive: true }); }
  const b = kind === 'braid' ? await startBraid({ dataDir: rssDir, configFile, entry: entries.tsx, profileDir })
    : kind === 'braid-js' ? await startBraid({ dataDir: rssDir, configFile, entry: entries.built ?? undefined })
      : kind === 'braid-unit' ? await startBraid({ dataDir: rssDir, configFile, env: UNIT_ENV, entry: entries.built ?? undefined })
        : await startPeer(kind, 'rss', rssDir);
  if (profileDir) results.profiles.push({ name: `${LABEL.braid}, rss`, dir: profileDir, pid: b.pid });
  const holders: Proc[] = [];
  try {
    await sleep(1000);
    const baseline = memoryOf(b.pid).rss;
    const gc0 = b.httpUrl ? await gcPauses(b) : null;
    const cpu0 = cpuSecondsOf(b.pid);
    const main0 = mainThreadCpuSecondsOf(b.pid);
    const per = Math.ceil(RSS_DEVICES / RSS_HOLDERS);
    for (let h = 0; h < RSS_HOLDERS; h++) {
      const from = h * per;
      const count = Math.min(per, RSS_DEVICES - from);
      const args = { host: HOST, port: b.port, prefix: RSS_PREFIX, from, count, secret: LEGACY_SECRET, secretKey: kind === 'braid-alt' && ALT_LEGACY ? undefined : SECRET_KEY, concurrency: 100, keepalive: 600, publish: true, timeoutMs: 120_000 };
      holders.push(startProc(`connection holder ${h}`, process.execPath, [...TSX, join(ROOT, 'bench/clients/connections.ts'), JSON.stringify(args)],
        { cwd: ROOT, env: childEnv(), stdio: ['pipe', 'pipe', 'pipe'] }));
    }
    const reports = (await Promise.all(holders.map((h) => h.waitLine(/^\{"connected"/, 300_000))))
      .map((m) => JSON.parse(m.input ?? '{}') as { connected: number; failed: number; ms: number; errors: Record<string, number> });
    const cpuSec = cpuSecondsOf(b.pid) - cpu0;
    const mainCpuSec = mainThreadCpuSecondsOf(b.pid) - main0;
    const gc1 = gc0 ? await gcPauses(b) : null;
    await sleep(2000);
    const mem = memoryOf(b.pid);
    const c = b.httpUrl ? await gatewayCounters(b) : null;
    const errors: Record<string, number> = {};
    for (const r of reports) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    return {
      baseline, rss: mem.rss, hwm: mem.hwm,
      connected: reports.reduce((a, r) => a + r.connected, 0),
      failed: reports.reduce((a, r) => a + r.failed, 0),
      connectMs: Math.max(...reports.map((r) => r.ms)),
      cpuSec,
      mainCpuSec,
      errors,
      heap: c ? { total: c.heapTotal, used: c.heapUsed, external: c.external } : undefined,
      commits: c ? { commits: c.commits, readings: c.commitReadings, seconds: c.commitSeconds } : undefined,
      gc: gc0 && gc1 ? Object.fromEntries(Object.entries(gc1).map(([k, v]) => [k, { count: v.count - (gc0[k]?.count ?? 0), seconds: v.seconds - (gc0[k]?.seconds ?? 0) }])) : undefined,
    };
  } finally {
    for (const h of holders) h.child.stdin?.end('close\n');
    await Promise.all(holders.map((h) => Promise.race([h.exited, sleep(10_000).then(() => h.stop())])));
    await b.stop();
  }
}

/** V8's collections so far by kind, from the gateway's prom-client default metrics (nodejs_gc_duration_seconds). */
async function gcPauses(b: Broker): Promise<Record<string, { count: number; seconds: number }>> {
  const text = await (await fetch(`${b.httpUrl}/metrics`)).text();
  const out: Record<string, { count: number; seconds: number }> = {};
  for (const m of text.matchAll(/^nodejs_gc_duration_seconds_(sum|count)\{kind="([a-z]+)"\} ([0-9.eE+-]+)$/gm)) {
    const e = (out[m[2]] ??= { count: 0, seconds: 0 });
    if (m[1] === 'sum') e.seconds = Number(m[3]);
    else e.count = Number(m[3]);
  }
  return out;
}

async function rssPhase() {
  log(`rss: ${int(RSS_DEVICES)} devices connected (each publishes one QoS 1 reading), VmRSS of the broker process`);
  const kinds: RssKind[] = [...PEERS];
  const entries = { tsx: tsxBraidCli(ROOT, join(OUT, 'braid-tsx')), built: null as string | null };
  if (PEERS.includes('braid') && env.BENCH_RSS_BUILT !== '0') {
    entries.built = await buildBraidCli(ROOT, join(OUT, 'braid-build')).catch((err: Error) => { log(`  (no build: ${err.message})`); return null; });
    if (entries.built) kinds.splice(1, 0, 'braid-js');
    kinds.splice(1, 0, 'braid-unit');
  }
  for (const kind of kinds) {
    await sleep(1000);
    const r = await rssRun(kind, entries);
    results.rss[kind] = r;
    log(`  rss ${RSS_LABEL[kind]}: ${mb(r.rss)} with ${int(r.connected)} connected (${r.failed} failed; baseline ${mb(r.baseline)}, peak ${mb(r.hwm)}; connects took ${ms(r.connectMs)}, broker CPU ${r.cpuSec.toFixed(1)} s, main thread ${r.mainCpuSec.toFixed(1)} s${r.commits ? `; ${int(r.commits.commits)} group commits` : ''})`);
  }
}

// ---------------------------------------------------------------------------------------------
// Outbox drain to a local ingest sink, beside the sink's own ceiling

async function drainRun(kind: PeerKind): Promise<DrainRun> {
  const dir = kind === 'braid-alt' ? `${drainDir}-alt` : drainDir;
  log(`drain ${LABEL[kind]}: fill an outbox with ${int(DRAIN_READINGS)} readings, restart the gateway with --cloud-url at a local sink`);
  rmSync(dir, { recursive: true, force: true }); // each run drains a gateway.db of its own
  const fill = await fillOutbox(dir, DRAIN_READINGS, rootOf(kind));
  log(`  filled in ${ms(fill.ms)}`);
  const sink = startProc('ingest sink', process.execPath, [...TSX, join(ROOT, 'bench/peers/ingest-sink.ts'), '0'], { cwd: ROOT, env: childEnv() });
  try {
    const sinkUrl = (await sink.waitLine(/^sink ready: (http:\/\/\S+)/, 30_000))[1];
    const profileDir = PROFILE ? join(PROFILE_DIR, `${kind}-drain`) : undefined;
    if (profileDir) { rmSync(profileDir, { recursive: true, force: true }); mkdirSync(profileDir, { recursive: true }); }
    const gw = await startBraid({ dataDir: dir, configFile, cloudUrl: sinkUrl, profileDir, root: rootOf(kind), kind });
    if (profileDir) results.profiles.push({ name: `${LABEL[kind]}, drain`, dir: profileDir, pid: gw.pid });
    const t0 = gw.readyAt;
    const cpu0 = cpuSecondsOf(gw.pid);
    let t1 = 0;
    let cpuSec = 0;
    try {
      for (;;) {
        const h = await health(gw);
        if (h.outbox.pending === 0) { t1 = performance.now(); break; }
        if (performance.now() - t0 > 600_000) throw new Error(`outbox still has ${h.outbox.pending} readings after 10 minutes`);
        await sleep(20);
      }
    } finally {
      cpuSec = cpuSecondsOf(gw.pid) - cpu0;
      await gw.stop();
    }
    const stats = await (await fetch(`${sinkUrl}/stats`)).json() as { requests: number; readings: number; firstAt: number; lastAt: number };
    if (stats.readings < DRAIN_READINGS) throw new Error(`the sink saw ${stats.readings} readings, expected ${DRAIN_READINGS}`);
    const drainMs = t1 - t0;
    log(`  drain: ${int(DRAIN_READINGS / (drainMs / 1000))} readings/s (${ms(drainMs)}, ${stats.requests} requests)`);
    const ceiling = startProc('sink ceiling client', process.execPath, [...TSX, join(ROOT, 'bench/clients/sink-ceiling.ts'),
      JSON.stringify({ url: sinkUrl, batches: Math.ceil(DRAIN_READINGS / DRAIN_BATCH), readingsPerBatch: DRAIN_BATCH })], { cwd: ROOT, env: childEnv() });
    const c = JSON.parse((await ceiling.waitLine(/^\{"readings"/, 300_000)).input ?? '{}') as { readings: number; ms: number; perSec: number };
    await ceiling.exited;
    log(`  sink ceiling: ${int(c.perSec)} readings/s (pre-built gzip batches of ${DRAIN_BATCH}, one request at a time)`);
    return {
      readings: DRAIN_READINGS, ms: drainMs, perSec: DRAIN_READINGS / (drainMs / 1000),
      sinkPerSec: stats.readings / (Math.max(1, stats.lastAt - stats.firstAt) / 1000), sinkRequests: stats.requests,
      ceilingPerSec: c.perSec, ceilingMs: c.ms, fillMs: fill.ms, cpuSec,
    };
  } finally {
    await sink.stop();
  }
}

/** REPEAT drains a gateway, interleaved with the other's; the run of median rate is reported, the range beside it. */
async function drainPhase() {
  for (let rep = 0; rep < REPEAT; rep++) {
    for (const kind of PEERS.filter(isBraid)) (results.drainRuns[kind] ??= []).push(await drainRun(kind));
  }
  for (const [kind, runs] of Object.entries(results.drainRuns) as Array<[PeerKind, DrainRun[]]>) {
    const sorted = [...runs].sort((a, b) => a.perSec - b.perSec);
    results.drain[kind] = sorted[(sorted.length - 1) >> 1];
  }
}

// ---------------------------------------------------------------------------------------------
// Report

function status(ok: boolean | null): string {
  return ok === null ? 'n/a' : ok ? '**met**' : '**short**';
}

/** A table cell's range of several runs' rates, below the median (nothing for one run). */
function rangeBelow(xs: number[]): string {
  return xs.length > 1 ? `<br><sub>${int(Math.min(...xs))}-${int(Math.max(...xs))}</sub>` : '';
}

function commitText(c: CommitStats): string {
  return `${int(c.commits)} group commits of ${int(c.readingsPerCommit)} readings, ${ms(c.msPerCommit)} on average (p50 <= ${ms(c.p50Ms)}, p99 <= ${ms(c.p99Ms)}; ${(100 * c.slowShare).toFixed(1)}% over 25 ms)`;
}

/** The device's writes a reading beside write_bytes (all writers, the filesystem's journal too). */
function deviceText(bytes: number | undefined, readings: number): string {
  return bytes !== undefined && Number.isFinite(bytes) ? ` (the device: ${int(bytes / Math.max(1, readings))} B, all writers)` : '';
}

/** The median over runs of the device's writes a reading (median() leaves out the runs without them: NaN). */
function deviceMedian<R extends { deviceBytes?: number }>(runs: R[], readings: (r: R) => number): number {
  return median(runs.map((x) => (x.deviceBytes ?? NaN) / Math.max(1, readings(x))));
}

function medianRun(runs: TpRun[] | undefined): number {
  return runs?.length ? median(runs.map((r) => r.perSec)) : NaN;
}

function report(machine: MachineInfo, totalMs: number): string {
  const L: string[] = [];
  L.push(`Measured ${machine.date.slice(0, 10)} (${machine.date}), total run time ${(totalMs / 1000).toFixed(0)} s.`, '');
  L.push('| Machine | |', '|---|---|');
  L.push(`| CPU | ${machine.nproc} cores, ${machine.cpu} |`, `| RAM | ${machine.ramGiB} GiB |`, `| Kernel | ${machine.kernel} |`,
    `| Disk (data dirs) | ${machine.disk} |`, `| Node.js | ${machine.node} |`, `| mosquitto | ${machine.mosquitto} (Debian) |`,
    `| SQLite | ${machine.sqlite} |`, `| aedes / MQTT.js | ${machine.aedes} / ${machine.mqttjs} |`, '');
  const cmd = [SCALE !== 1 && `BENCH_SCALE=${SCALE}`, REPEAT !== 3 && `BENCH_REPEAT=${REPEAT}`, PROFILE && 'BENCH_PROFILE=1',
    env.BENCH_PHASES && `BENCH_PHASES=${env.BENCH_PHASES}`, env.BENCH_PEERS && `BENCH_PEERS=${env.BENCH_PEERS}`,
    INFLIGHT !== 100 && `BENCH_INFLIGHT=${INFLIGHT}`, PUB_NODELAY && 'BENCH_PUB_NODELAY=1', env.BENCH_GATEWAY_CONFIG && `BENCH_GATEWAY_CONFIG='${env.BENCH_GATEWAY_CONFIG}'`,
    env.BENCH_GATEWAY_NODE_OPTIONS && `BENCH_GATEWAY_NODE_OPTIONS='${env.BENCH_GATEWAY_NODE_OPTIONS}'`, env.BENCH_GATEWAY_ENV && `BENCH_GATEWAY_ENV='${env.BENCH_GATEWAY_ENV}'`,
    env.BENCH_RSS_BUILT === '0' && 'BENCH_RSS_BUILT=0']
    .filter(Boolean).join(' ');
  L.push(`Command: \`${cmd ? `${cmd} ` : ''}npm run bench:gateway\``, '');
  const cols = PEERS;
  const head = (k: PeerKind) => (k === 'mosquitto' ? `mosquitto ${machine.mosquitto}` : LABEL[k]);
  L.push(`| Figure | ${cols.map(head).join(' | ')} | Target | Result |`, `|---|${cols.map(() => '---:|').join('')}---|---|`);
  const row = (title: string, cell: (k: PeerKind) => string, target = '', result = '') => {
    L.push(`| ${title} | ${cols.map(cell).join(' | ')} | ${target} | ${result} |`);
  };
  const verdict = (ks: PeerKind[], ok: (k: PeerKind) => boolean | null) => {
    const v = ks.filter(isBraid).map((k) => ({ k, ok: ok(k) }));
    if (!v.length) return 'n/a';
    if (v.length === 1) return status(v[0].ok);
    return v.map((x) => `${LABEL[x.k]}: ${status(x.ok)}`).join('<br>');
  };

  const tpRow = (phase: 'qos1' | 'qos1-w20' | 'qos0', title: string, target: string, judge: ((k: PeerKind, v: number, aedes: number) => boolean | null) | null) => {
    const r = results.tp[phase];
    if (!r) return;
    const v = (k: PeerKind) => medianRun(r[k]);
    const aedes = v('aedes');
    row(title, (k) => `${int(v(k))}${isBraid(k) && Number.isFinite(aedes) ? ` (${ratio(v(k), aedes)} aedes)` : ''}${rangeBelow((r[k] ?? []).map((x) => x.perSec))}`,
      target, judge ? verdict(cols, (k) => judge(k, v(k), aedes)) : 'info');
  };
  const reps = REPEAT > 1 ? `, median of ${REPEAT} runs, range below` : '';
  tpRow('qos1', `QoS 1 throughput, msg/s (4 devices x mosquitto_pub -l -M ${INFLIGHT}${reps}; Braid: PUBACK after durable commit)`,
    `>= ${TARGET.qos1VsAedes}x aedes`, (_k, b, a) => (Number.isFinite(b) && Number.isFinite(a) ? b >= TARGET.qos1VsAedes * a : null));
  tpRow('qos1-w20', `QoS 1 throughput, msg/s, mosquitto_pub default window -M 20${reps}`,
    `>= ${TARGET.qos1VsAedes}x aedes`, (_k, b, a) => (Number.isFinite(b) && Number.isFinite(a) ? b >= TARGET.qos1VsAedes * a : null));
  for (const [phase, window] of [['qos1', INFLIGHT], ['qos1-w20', 20]] as const) {
    const d = results.disk[phase];
    const gw = median((results.tp[phase]?.braid ?? []).flatMap((x) => (x.commit ? [x.commit.msPerCommit] : [])));
    if (!d) continue;
    row(`the disk's limit at -M ${window}: a write-once log's group commit of the gateway's ${int(d.readings)} readings (${int(d.readings * d.recordBytes)} B appended in a preallocated file, then fdatasync), one after another: ${ms(d.msPerCommit)} a commit (the gateway's: ${ms(gw)}), in readings/s and bytes written a reading`,
      (k) => (k === 'braid' ? `${int(d.readingsPerSec)}; ${int(d.bytesPerReading)} B` : ''), '', 'info');
  }
  const bytesRow = (phase: 'qos1' | 'qos1-w20', window: number, target: string) => {
    const r = results.tp[phase];
    if (!r || !cols.some((k) => isBraid(k) && r[k]?.some((x) => x.writeBytes !== undefined))) return;
    const per = (k: PeerKind) => median((r[k] ?? []).filter((x) => x.writeBytes !== undefined).map((x) => x.writeBytes! / Math.max(1, x.done)));
    const payload = (k: PeerKind) => median((r[k] ?? []).map((x) => (x.payloadBytes ?? NaN) / Math.max(1, x.n)));
    // The floor: a write-once log dirties at least one 4 KiB filesystem page per fsync'd commit,
    // plus the readings' own bytes, at the readings per commit the clients allowed.
    const perCommit = (k: PeerKind) => median((r[k] ?? []).flatMap((x) => (x.commit ? [x.commit.readingsPerCommit] : [])));
    const floor = (k: PeerKind) => `; floor ${int(4096 / perCommit(k) + payload(k))} B at ${int(perCommit(k))} readings a commit`;
    const device = (k: PeerKind) => deviceMedian(r[k] ?? [], (x) => x.done);
    const deviceCell = (k: PeerKind) => (Number.isFinite(device(k)) ? `; the device ${int(device(k))} B` : '');
    row(`Bytes written to disk per reading at -M ${window} (write_bytes of the gateway process / readings committed${reps}; beside it the MQTT payload per reading, the floor: what a write-once log would write, one 4 KiB filesystem page per fsync'd commit + the payload, at the readings per commit of the run, and what the data dir's block device wrote a reading over the same runs, all writers)`,
      (k) => (isBraid(k) && r[k] ? `${int(per(k))} B (payload ${int(payload(k))} B${Number.isFinite(perCommit(k)) ? floor(k) : ''}${deviceCell(k)})` : ''),
      target, target ? verdict(cols, (k) => (isBraid(k) && r[k] ? per(k) <= TARGET.bytesPerReading : null)) : 'info');
  };
  bytesRow('qos1-w20', 20, `<= ${TARGET.bytesPerReading} B`);
  bytesRow('qos1', INFLIGHT, '');
  const heldPhase = results.held['qos1-w20'] ?? results.held.qos1;
  if (heldPhase && Object.keys(heldPhase).length) {
    row('Disk held per reading in gateway.db (dbstat after the phase: dedup identity for the 24 h window / outbox row until acknowledged)',
      (k) => { const h = heldPhase[k]; return h ? `${(h.dedupBytes / Math.max(1, h.dedupRows)).toFixed(1)} B / ${(h.outboxBytes / Math.max(1, h.outboxRows)).toFixed(1)} B` : ''; }, '', 'info');
  }
  tpRow('qos0', `QoS 0 throughput, readings/s (4 devices x mosquitto_pub -l${reps}; Braid: committed to the outbox; peers: read off the socket)`,
    `>= ${int(TARGET.qos0PerSec)}/s committed`, (_k, b) => (Number.isFinite(b) ? b >= TARGET.qos0PerSec : null));
  if (Object.keys(results.lat).length) {
    const v = (f: (r: LatRun) => string) => (k: PeerKind) => (results.lat[k] ? f(results.lat[k]!) : 'n/a');
    const load = `${LAT_CLIENTS} MQTT.js devices x ${LAT_RATE_PER_CLIENT}/s QoS 1${REPEAT > 1 ? `, ${REPEAT} runs pooled` : ''}`;
    row(`PUBACK latency p50 (${load})`, v((r) => ms(r.p50)));
    row('PUBACK latency p99 (same load)', v((r) => ms(r.p99)), `<= ${TARGET.pubackP99Ms} ms`,
      verdict(cols, (k) => (results.lat[k] ? results.lat[k]!.p99 <= TARGET.pubackP99Ms : null)));
    row('PUBACK latency p99.9 / max', v((r) => `${ms(r.p999)} / ${ms(r.max)}`));
    row('load offered during the measured window, msg/s', v((r) => int(r.offeredPerSec)), int(LAT_CLIENTS * LAT_RATE_PER_CLIENT));
  }
  if (Object.keys(results.fleet).length) {
    const fleet = `${int(FLEET_DEVICES)} MQTT.js devices x 1 msg/s of ${FLEET_METRICS.length} metrics, QoS 1, each on its own clock${FLEET_WARM_MINUTES > 0 ? `, gateway.db holding their partials of the ${FLEET_WARM_MINUTES} minutes before` : ''}${FLEET_CURSOR_INDEX ? ", with the speed push's index on the partials (a gateway with a cloud)" : ''}${REPEAT > 1 ? `, ${REPEAT} runs` : ''}`;
    const runs = (k: PeerKind) => results.fleetRuns[k] ?? [];
    const per = (k: PeerKind) => median(runs(k).filter((x) => x.writeBytes !== undefined).map((x) => x.writeBytes! / Math.max(1, x.readings ?? 0)));
    const perCommit = (k: PeerKind) => median(runs(k).flatMap((x) => (x.commit ? [x.commit.readingsPerCommit] : [])));
    const device = (k: PeerKind) => deviceMedian(runs(k), (x) => x.readings ?? 0);
    row(`A fleet (${fleet}): bytes written to disk per reading (write_bytes of the gateway process over the measured window / readings committed; median; beside it what the data dir's block device wrote a reading, all writers) and readings a commit`,
      (k) => (isBraid(k) && runs(k).length ? `${int(per(k))} B${Number.isFinite(device(k)) ? ` (the device ${int(device(k))} B)` : ''}, ${int(perCommit(k))} readings a commit` : ''), '', 'info');
    const v = (f: (r: LatRun) => string) => (k: PeerKind) => (results.fleet[k] ? f(results.fleet[k]!) : 'n/a');
    row('the same fleet: PUBACK latency p50 / p99 (runs pooled)', v((r) => `${ms(r.p50)} / ${ms(r.p99)}`), `p99 <= ${TARGET.pubackP99Ms} ms`,
      verdict(cols, (k) => (results.fleet[k] ? results.fleet[k]!.p99 <= TARGET.pubackP99Ms : null)));
  }
  if (Object.keys(results.rss).length) {
    const v = (f: (r: RssRun) => string) => (k: PeerKind) => (results.rss[k] ? f(results.rss[k]!) : 'n/a');
    row(`RSS with ${int(RSS_DEVICES)} devices connected (VmRSS)`, v((r) => mb(r.rss)), '<= 200 MB',
      verdict(cols, (k) => (results.rss[k] ? results.rss[k]!.rss <= TARGET.rssBytes : null)));
    row('RSS idle before connects / peak (VmHWM)', v((r) => `${mb(r.baseline)} / ${mb(r.hwm)}`));
    const js = results.rss['braid-js'];
    if (js) row(`RSS with ${int(RSS_DEVICES)} devices, ${RSS_LABEL['braid-js']}`, (k) => (k === 'braid' ? `${mb(js.rss)} (idle ${mb(js.baseline)}; connected in ${(js.connectMs / 1000).toFixed(1)} s)` : ''), '<= 200 MB', `${status(js.rss <= TARGET.rssBytes)} (info)`);
    const unit = results.rss['braid-unit'];
    if (unit) row(`RSS with ${int(RSS_DEVICES)} devices, ${RSS_LABEL['braid-unit']}`, (k) => (k === 'braid' ? `${mb(unit.rss)} (idle ${mb(unit.baseline)}; connected in ${(unit.connectMs / 1000).toFixed(1)} s)` : ''), '<= 200 MB', status(unit.rss <= TARGET.rssBytes));
    row(`time to connect ${int(RSS_DEVICES)} devices (200 CONNECTs in flight)`, v((r) => `${(r.connectMs / 1000).toFixed(1)} s`));
    row('broker CPU for the connect storm: all threads (main thread)', v((r) => `${r.cpuSec.toFixed(1)} s (${r.mainCpuSec.toFixed(1)} s)`));
  }
  if (Object.keys(results.drain).length) {
    const d = results.drain;
    const first = Object.values(d)[0]!;
    row(`Outbox drain, readings/s (${int(first.readings)} buffered, gzip JSON batches of ${DRAIN_BATCH} to a local sink${REPEAT > 1 ? `, median of ${REPEAT} runs, range below` : ''})`,
      (k) => (d[k] ? `${int(d[k]!.perSec)} (${ratio(d[k]!.perSec, d[k]!.ceilingPerSec)} of the sink ceiling)${rangeBelow((results.drainRuns[k] ?? []).map((r) => r.perSec))}` : ''),
      `>= ${int(TARGET.drainPerSec)}/s`, verdict(cols, (k) => (d[k] ? d[k]!.perSec >= TARGET.drainPerSec : null)));
    row('the sink\'s own ceiling (pre-built batches, one request at a time)', (k) => (d[k] ? int(d[k]!.ceilingPerSec) : ''));
  }
  L.push('');

  // Details
  L.push('<details><summary>Details of each measurement</summary>', '');
  for (const [phase, byPeer] of Object.entries(results.tp)) {
    for (const [k, runs] of Object.entries(byPeer ?? {})) {
      for (const r of runs ?? []) {
        L.push(`- ${phase} ${LABEL[k as PeerKind]}: ${int(r.perSec)}/s, ${int(r.done)} of ${int(r.n)} in ${ms(r.ms)} (publishers exited after ${ms(r.publishersMs)}); broker CPU ${r.cpuSec.toFixed(2)} s = ${((r.cpuSec * 1e6) / Math.max(1, r.done)).toFixed(1)} us/msg${r.commit ? `; ${commitText(r.commit)}` : ''}${r.writeBytes !== undefined ? `; written ${mb(r.writeBytes)} = ${int(r.writeBytes / Math.max(1, r.done))} B per reading (payload ${((r.payloadBytes ?? 0) / Math.max(1, r.n)).toFixed(1)} B)${deviceText(r.deviceBytes, r.done)}` : ''}${r.note ? `; ${r.note}` : ''}`);
      }
    }
  }
  for (const [phase, byPeer] of Object.entries(results.held)) {
    for (const [k, h] of Object.entries(byPeer ?? {})) {
      if (!h) continue;
      L.push(`- gateway.db after ${phase}, ${LABEL[k as PeerKind]}: page size ${h.pageSize} B; dedup ${int(h.dedupRows)} identities in ${mb(h.dedupBytes)} = ${(h.dedupBytes / Math.max(1, h.dedupRows)).toFixed(1)} B each (held for the 24 h window: at 1,000 readings/s ${mb((h.dedupBytes / Math.max(1, h.dedupRows)) * 86_400_000)}); outbox ${int(h.outboxRows)} rows in ${mb(h.outboxBytes)} = ${(h.outboxBytes / Math.max(1, h.outboxRows)).toFixed(1)} B each; partials ${mb(h.partialsBytes)}; WAL file ${mb(h.walBytes)}`);
    }
  }
  for (const [k, list] of Object.entries(results.latRuns)) {
    for (const r of list ?? []) {
      L.push(`- latency ${LABEL[k as PeerKind]}: p50 ${ms(r.p50)}, p90 ${ms(r.p90)}, p99 ${ms(r.p99)}, p99.9 ${ms(r.p999)}, max ${ms(r.max)} at ${int(r.offeredPerSec)} msg/s offered; ${int(r.samples)} samples, ${r.unacked} unacked, ${r.errors} errors; CPU over the ${((LAT_DURATION_MS + LAT_WARMUP_MS) / 1000).toFixed(0)} s: broker ${r.cpuSec.toFixed(1)} s, the ${LAT_WORKERS} client processes ${r.clientCpuSec.toFixed(1)} s${r.commit ? `; ${commitText(r.commit)}; event-loop delay p99 ${ms(r.loopLagP99Ms ?? NaN)}, max ${ms(r.loopLagMaxMs ?? NaN)}` : ''}`);
    }
  }
  for (const [k, list] of Object.entries(results.fleetRuns)) {
    for (const r of list ?? []) {
      L.push(`- fleet ${LABEL[k as PeerKind]}: p50 ${ms(r.p50)}, p90 ${ms(r.p90)}, p99 ${ms(r.p99)}, max ${ms(r.max)} at ${int(r.offeredPerSec)} msg/s offered; ${int(r.samples)} samples, ${r.unacked} unacked, ${r.errors} errors${r.writeBytes !== undefined ? `; ${int(r.readings ?? 0)} readings committed in the ${FLEET_DURATION_MS / 1000} s window, written ${mb(r.writeBytes)} = ${int(r.writeBytes / Math.max(1, r.readings ?? 0))} B a reading${deviceText(r.deviceBytes, r.readings ?? 0)}` : ''}${r.commit ? `; ${commitText(r.commit)}` : ''}`);
    }
  }
  for (const [k, r] of Object.entries(results.rss)) {
    if (!r) continue;
    L.push(`- rss ${RSS_LABEL[k as RssKind]}: ${int(r.connected)} connected, ${r.failed} failed${Object.keys(r.errors).length ? ` (${JSON.stringify(r.errors)})` : ''}; VmRSS ${mb(r.rss)}, idle ${mb(r.baseline)}, VmHWM ${mb(r.hwm)}; connected in ${ms(r.connectMs)} with ${r.cpuSec.toFixed(1)} s of broker CPU (main thread ${r.mainCpuSec.toFixed(1)} s); per connection ${((r.rss - r.baseline) / Math.max(1, r.connected) / 1024).toFixed(1)} KB${r.heap ? `; V8 heap ${mb(r.heap.total)} (used ${mb(r.heap.used)}), external ${mb(r.heap.external)}, the rest (native: code, malloc arenas, libuv, SQLite) ${mb(r.rss - r.heap.total - r.heap.external)}` : ''}${r.commits ? `; the first readings in ${int(r.commits.commits)} group commits of ${(r.commits.readings / Math.max(1, r.commits.commits)).toFixed(1)} readings, ${((r.commits.seconds * 1000) / Math.max(1, r.commits.commits)).toFixed(2)} ms each` : ''}${r.gc ? `; V8 collections during the storm (main-thread pauses): ${Object.entries(r.gc).filter(([, g]) => g.count > 0).map(([k, g]) => `${k} ${g.count} (${ms(g.seconds * 1000)})`).join(', ')}` : ''}`);
  }
  for (const [k, d] of Object.entries(results.drainRuns).flatMap(([k, rs]) => (rs ?? []).map((r) => [k, r] as const))) {
    L.push(`- drain ${LABEL[k as PeerKind]}: ${int(d.readings)} readings in ${ms(d.ms)} (from the gateway's ready line to health outbox.pending = 0), ${d.sinkRequests} requests; sink-side ${int(d.sinkPerSec)}/s; gateway CPU ${d.cpuSec.toFixed(1)} s; outbox filled directly in ${ms(d.fillMs)}`);
    L.push(`- sink ceiling: ${int(d.readings)} readings as pre-built gzip batches of ${DRAIN_BATCH}, one request at a time, in ${ms(d.ceilingMs)}`);
  }
  if (results.registerMs) L.push(`- registering ${int(RSS_DEVICES + TP_CLIENTS + LAT_CLIENTS)} devices (each its own generated secret, stored as salted SHA-256, one transaction): ${ms(results.registerMs)}`);
  L.push(`- Braid gateway config: \`${JSON.stringify(results.braidConfig)}\` (everything else default)${GATEWAY_NODE_FLAGS.length ? `; node flags ${GATEWAY_NODE_FLAGS.join(' ')}` : ''}${Object.keys(GATEWAY_ENV).length ? `; env ${JSON.stringify(GATEWAY_ENV)}` : ''}`);
  L.push('', '</details>', '');

  if (results.profiles.length) {
    L.push('### CPU profiles of the Braid gateway (node --cpu-prof)', '');
    for (const p of results.profiles) {
      const file = mainThreadProfile(p.dir, p.pid);
      if (!file) { L.push(`(no profile written for ${p.name})`, ''); continue; }
      L.push(profileMarkdown(`${p.name} (${file.replace(`${ROOT}/`, '')})`, summarizeProfile(file)), '');
    }
  }
  return L.join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main() {
  checkTools();
  const t0 = performance.now();
  mkdirSync(OUT, { recursive: true });
  if (PROFILE) mkdirSync(PROFILE_DIR, { recursive: true });
  writeGatewayConfig();
  const machine = await machineInfo(work);
  log(`scale ${SCALE}, phases ${[...PHASES].join(',')}, peers ${PEERS.join(',')}; work dir ${work}`);

  if (PEERS.some(isBraid)) {
    const r0 = performance.now();
    const jobs: Array<Promise<void>> = [];
    for (const kind of PEERS.filter(isBraid)) {
      const suffix = kind === 'braid-alt' ? '-alt' : '';
      if (PHASES.has('qos1') || PHASES.has('qos1-w20') || PHASES.has('qos0') || PHASES.has('latency') || PHASES.has('fleet')) jobs.push(register(`${tpDir}${suffix}`, [...tpDevices, ...latDevices, ...fleetDevices], kind));
      if (PHASES.has('rss')) jobs.push(register(`${rssDir}${suffix}`, Array.from({ length: RSS_DEVICES }, (_, i) => `${RSS_PREFIX}${i}`), kind));
    }
    await Promise.all(jobs);
    results.registerMs = performance.now() - r0;
    log(`registered devices in ${ms(results.registerMs)}`);
  }

  let phaseIndex = 0;
  for (const phase of ['qos1', 'qos1-w20', 'qos0'] as const) {
    phaseIndex++;
    if (PHASES.has(phase)) await throughputPhase(phase, phaseIndex);
  }
  if (PHASES.has('latency')) await latencyPhase();
  if (PHASES.has('fleet')) await fleetPhase();
  if (PHASES.has('rss')) await rssPhase();
  if (PHASES.has('drain') && PEERS.some(isBraid)) await drainPhase();

  await stopAll();
  const md = report(machine, performance.now() - t0);
  publishReport(md, {
    log, docs: { name: 'gateway', heading: '## Gateway' }, writeDocs: WRITE_DOCS, fullRun: 'a full-scale run of everything',
    files: { 'latest.md': `${md}\n`, 'latest.json': `${JSON.stringify({ machine, scale: SCALE, results }, null, 2)}\n` },
  });
}

await runBench(main, { log, work });
