/**
 * The three brokers measured side by side, each as its own process on 127.0.0.1:
 * the Braid gateway (`node bin/braid.js gateway`), stock aedes in memory (bench/peers/aedes-stock.mjs, bare node)
 * and Debian's mosquitto (generated config, anonymous).
 */
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HOST, freePort, waitForPort } from './net.js';
import { startProc, type Proc } from './procs.js';

export type PeerKind = 'braid' | 'braid-alt' | 'aedes' | 'mosquitto';
/** The peers of a default run ('braid-alt' joins when BENCH_ALT_ROOT names another checkout). */
export const PEER_KINDS: PeerKind[] = ['braid', 'aedes', 'mosquitto'];
export const isBraid = (k: PeerKind) => k === 'braid' || k === 'braid-alt';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const MOSQUITTO = '/usr/sbin/mosquitto';

export interface Broker {
  kind: PeerKind;
  port: number;
  pid: number;
  proc: Proc;
  /** The gateway's local REST API (Braid only). */
  httpUrl: string | null;
  /** performance.now() when it said it was ready. */
  readyAt: number;
  stop: () => Promise<void>;
}

/** Node flags for TypeScript children: tsx, as `npm run bench:gateway` itself runs. */
export const TSX = ['--import', 'tsx'];

/** The environment for children: BRAID_* overrides of the caller's shell are not wanted here. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BRAID_')) env[k] = v;
  return { ...env, ...extra };
}

export interface BraidOptions {
  dataDir: string;
  configFile: string;
  cloudUrl?: string;
  /**
   * Write V8 CPU profiles into this dir when it exits. One file per thread (tsx's loader hooks run
   * on a worker thread): the gateway's own is the main thread's, `CPU.*.<pid>.0.*.cpuprofile`.
   */
  profileDir?: string;
  /** The CLI script to run instead of bin/braid.js (the bundled build). */
  entry?: string;
  /** The checkout to run it from (default: this one). */
  root?: string;
  kind?: PeerKind;
  /** The gateway token for `cloudUrl` (default 'bench-token', what bench/peers/ingest-sink.ts accepts). */
  token?: string;
  /** Gateway id (default 'bench-gw'). */
  id?: string;
  /** Environment for the gateway beside BENCH_GATEWAY_ENV's (which it overrides). */
  env?: Record<string, string>;
}

/** Extra node flags for the gateway (experiments), e.g. BENCH_GATEWAY_NODE_OPTIONS=--max-semi-space-size=2 */
export const GATEWAY_NODE_FLAGS = (process.env.BENCH_GATEWAY_NODE_OPTIONS ?? '').split(/\s+/).filter(Boolean);
/** Extra environment for the gateway (experiments), JSON, e.g. BENCH_GATEWAY_ENV='{"MALLOC_ARENA_MAX":"2"}' */
export const GATEWAY_ENV = JSON.parse(process.env.BENCH_GATEWAY_ENV || '{}') as Record<string, string>;

export async function startBraid(o: BraidOptions): Promise<Broker> {
  const node: string[] = [...GATEWAY_NODE_FLAGS];
  if (o.profileDir) node.push('--cpu-prof', '--cpu-prof-dir', o.profileDir);
  // Sub-millisecond gaps (a commit's wait for the disk) need a finer interval than the default 1 ms.
  if (o.profileDir && process.env.BENCH_PROFILE_INTERVAL_US) node.push('--cpu-prof-interval', process.env.BENCH_PROFILE_INTERVAL_US);
  const root = o.root ?? ROOT;
  const args = [...node, o.entry ?? join(root, 'bin/braid.js'), 'gateway', '--config', o.configFile, '--data-dir', o.dataDir,
    '--mqtt-port', '0', '--http-port', '0', '--id', o.id ?? 'bench-gw', '--log-level', 'warn'];
  if (o.cloudUrl) args.push('--cloud-url', o.cloudUrl, '--token', o.token ?? 'bench-token');
  const proc = startProc(`braid gateway (${root})`, process.execPath, args, { cwd: root, env: childEnv({ ...GATEWAY_ENV, ...o.env }) });
  const m = await proc.waitLine(/^gateway \S+ ready: mqtt:\/\/([^:]+):(\d+) http:\/\/([^:]+):(\d+)/, 60_000);
  return { kind: o.kind ?? 'braid', port: Number(m[2]), pid: proc.pid, proc, httpUrl: `http://${HOST}:${m[4]}`, readyAt: performance.now(), stop: () => proc.stop(15_000) };
}

export async function startAedes(): Promise<Broker> {
  const proc = startProc('stock aedes', process.execPath, [join(ROOT, 'bench/peers/aedes-stock.mjs'), '0'], { cwd: ROOT, env: childEnv() });
  const m = await proc.waitLine(/^aedes ready: mqtt:\/\/[^:]+:(\d+)/, 30_000);
  return { kind: 'aedes', port: Number(m[1]), pid: proc.pid, proc, httpUrl: null, readyAt: performance.now(), stop: () => proc.stop() };
}

/**
 * mosquitto with allow_anonymous true (stock aedes has no auth either; Braid checks a device's
 * secret once per CONNECT, so it costs nothing per message) and no persistence.
 */
export async function startMosquitto(dir: string): Promise<Broker> {
  const port = await freePort();
  const conf = join(dir, `mosquitto-${port}.conf`);
  writeFileSync(conf, [
    `listener ${port} ${HOST}`,
    'allow_anonymous true',
    'persistence false',
    'max_connections -1',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    '',
  ].join('\n'));
  const proc = startProc('mosquitto', MOSQUITTO, ['-c', conf], { cwd: dir });
  await waitForPort(port, 10_000);
  return { kind: 'mosquitto', port, pid: proc.pid, proc, httpUrl: null, readyAt: performance.now(), stop: () => proc.stop() };
}

/** The main thread's profile among those a process wrote into `dir`. */
export function mainThreadProfile(dir: string, pid: number): string | null {
  const f = readdirSync(dir).find((name) => name.endsWith('.cpuprofile') && name.includes(`.${pid}.0.`));
  return f ? join(dir, f) : null;
}

export async function health(broker: Broker): Promise<{ outbox: { pending: number; lastSeq: number }; dropped: { queueFull: number }; readings: { accepted: number; duplicates: number; invalid: number }; devices: { connected: number } }> {
  const res = await fetch(`${broker.httpUrl}/api/v1/health`);
  if (res.status !== 200) throw new Error(`gateway health answered ${res.status}`);
  return res.json() as never;
}

export interface GatewayCounters {
  commits: number;
  commitSeconds: number;
  commitReadings: number;
  /** Event-loop delay since the previous scrape (prom-client resets it per collect), seconds. */
  loopLagP99: number;
  loopLagMax: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  /** Cumulative braid_commit_seconds buckets: [le seconds, count]. */
  commitBuckets: Array<[number, number]>;
}

/** The group-commit histograms and event-loop delay from the gateway's GET /metrics. */
export async function gatewayCounters(broker: Broker): Promise<GatewayCounters> {
  const text = await (await fetch(`${broker.httpUrl}/metrics`)).text();
  const v = (name: string) => {
    const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+|NaN)$`, 'm'));
    return m ? Number(m[1]) : NaN;
  };
  return {
    commits: v('braid_commit_seconds_count'),
    commitSeconds: v('braid_commit_seconds_sum'),
    commitReadings: v('braid_commit_batch_readings_sum'),
    loopLagP99: v('nodejs_eventloop_lag_p99_seconds'),
    loopLagMax: v('nodejs_eventloop_lag_max_seconds'),
    heapTotal: v('nodejs_heap_size_total_bytes'),
    heapUsed: v('nodejs_heap_size_used_bytes'),
    external: v('nodejs_external_memory_bytes'),
    commitBuckets: [...text.matchAll(/^braid_commit_seconds_bucket\{le="([^"]+)"\} ([0-9.eE+-]+)$/gm)].map((m) => [m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2])] as [number, number]),
  };
}

/** "n commits of ~x readings, ~y ms each" between two scrapes. */
export function commitSummary(a: GatewayCounters, b: GatewayCounters): { commits: number; readingsPerCommit: number; msPerCommit: number; p50Ms: number; p99Ms: number; slowShare: number } {
  const commits = b.commits - a.commits;
  // Quantiles from the histogram: the upper bound of the bucket that holds them.
  const delta = b.commitBuckets.map(([le, n], i) => [le, n - (a.commitBuckets[i]?.[1] ?? 0)] as [number, number]);
  const q = (f: number) => delta.find(([, n]) => n >= f * commits)?.[0] ?? NaN;
  // Time share of commits over 25 ms: sum is not per bucket, so estimate with the bucket's upper bound.
  const over = commits - (delta.find(([le]) => le >= 0.025)?.[1] ?? commits);
  return {
    commits, readingsPerCommit: (b.commitReadings - a.commitReadings) / Math.max(1, commits), msPerCommit: (1000 * (b.commitSeconds - a.commitSeconds)) / Math.max(1, commits),
    p50Ms: q(0.5) * 1000, p99Ms: q(0.99) * 1000, slowShare: over / Math.max(1, commits),
  };
}
