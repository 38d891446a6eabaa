/**
 * Test support for cluster mode (issue 10): N `braid cloud` child processes on one PostgreSQL
 * database and one shared data dir, each with a cache dir of its own; nodes killed (-9), stopped
 * (SIGTERM, which seals) and started again on the same port (their URLs stay valid); credentials
 * written through PgCredentialStore as `braid cloud gateway|key add --store` writes them; a load
 * client that behaves like a gateway's forwarder; and the checker of the contract:
 *
 *   a 2xx is durable: after everything is sealed, every acknowledged (gateway, seq) is in master/
 *   exactly once, with its value, and the received ranges in PostgreSQL are exactly the
 *   acknowledged seqs (merged).
 *
 * The checker holds for the contract, not for how a dead node's staging gets sealed (today: the
 * node restarted on the same host adopts it; later: a live node claims it after its lease).
 *
 * One PostgreSQL per test file (startPostgres in beforeAll), a database per cluster (createDatabase).
 *
 * Debugging: BRAID_TEST_CLUSTER_LOG=info|debug gives the nodes that log level (their output is in a
 * failing test's message); BRAID_TEST_CLUSTER_REPORT=<dir> writes a node's diagnostic report (its
 * open handles) there when it does not exit within 30 s of SIGTERM.
 */
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { addApiKey, addGateway } from '../../cloud/store/credentials.js';
import { PgCredentialStore, createPgPool, migrate } from '../../cloud/store/pg/index.js';
import { type ChildCloud, type Reading, T0, ingestBody, postIngest, readMaster, spawnCloud } from './cloud.js';
import { tempDir } from './gateway.js';
import type { TestPostgres } from './postgres.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The value the load client sends for (gateway, seq): the checker compares master's with it. */
export const valueOf = (gateway: string, seq: number): number => seq / 8 + gateway.length;

/** Readings seq from..to of `gateway`, all of `epoch`: 3 devices, 2 metrics, over two UTC days. */
export function clusterReadings(gateway: string, from: number, to: number, epoch: number): Reading[] {
  const out: Reading[] = [];
  for (let seq = from; seq <= to; seq++) {
    out.push([seq, epoch, `${gateway}-d${seq % 3}`, seq % 2 ? 'temp' : 'hum', T0 + (seq % 2) * 86_400_000 + seq * 1000, valueOf(gateway, seq)]);
  }
  return out;
}

/** An ingest body whose readings make one closed epoch (the batch's index), as a forwarder would send it. */
export function epochBody(gateway: string, from: number, to: number, epoch: number): ReturnType<typeof ingestBody> {
  return ingestBody(gateway, clusterReadings(gateway, from, to, epoch), { epochs: [{ epoch, firstSeq: from, lastSeq: to }] });
}

/** A node given SIGTERM must have exited by then (it commits, seals and closes). */
const STOP_TIMEOUT_MS = 30_000;

export interface ClusterNode {
  index: number;
  /** Fixed once the node first started: restarts bind the same port. */
  port: number;
  url: string;
  cacheDir: string;
  child: ChildCloud | null;
  /** Every run's output, for a failing test's message. */
  outputs: string[];
}

export interface ClusterOptions {
  nodes: number;
  gateways?: string[];
  /** The nodes' config file (ingest.*, batch.*); cron is always off unless given. */
  config?: Record<string, unknown>;
}

export interface Cluster {
  dbUrl: string;
  dataDir: string;
  nodes: ClusterNode[];
  /** A pool on the cluster's database (checks, the outage probe). */
  admin: pg.Pool;
  tokens: Record<string, string>;
  readKey: string;
  adminKey: string;
  urls: () => string[];
  start: (i: number) => Promise<ClusterNode>;
  /** SIGTERM (a clean stop: the node seals what it staged) or SIGKILL. */
  stop: (i: number, signal: NodeJS.Signals) => Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Stop with `signal`, then start again on the same port. */
  restart: (i: number, signal: NodeJS.Signals) => Promise<ClusterNode>;
  /** SIGTERM every running node, one by one: each seals what it staged (and what it adopted); throws unless each exits 0. */
  sealAll: () => Promise<void>;
  /** Every node's output so far. */
  output: () => string;
  close: () => Promise<void>;
}

export async function startCluster(server: TestPostgres, name: string, o: ClusterOptions): Promise<Cluster> {
  const dbUrl = await server.createDatabase(name);
  const dirs = [tempDir('braid-cluster-data-')];
  const dataDir = dirs[0].path;
  const admin = createPgPool({ url: dbUrl, poolMax: 3 });
  // Migrated once here, so credentials can be written before any node starts (the nodes migrate too: a no-op).
  await migrate(admin);
  const creds = new PgCredentialStore(admin);
  const tokens: Record<string, string> = {};
  for (const g of o.gateways ?? []) tokens[g] = await addGateway(creds, g);
  const readKey = await addApiKey(creds, 'reader', 'read');
  const adminKey = await addApiKey(creds, 'ops', 'admin');
  const cfgDir = tempDir('braid-cluster-cfg-');
  dirs.push(cfgDir);
  const cfgPath = join(cfgDir.path, 'cloud.json');
  writeFileSync(cfgPath, JSON.stringify({ ...o.config, batch: { cron: null, threads: 1, memoryLimit: '256MB', ...(o.config?.batch as object | undefined) } }));

  const nodes: ClusterNode[] = [];
  for (let i = 0; i < o.nodes; i++) {
    const cache = tempDir(`braid-cluster-cache${i}-`);
    dirs.push(cache);
    nodes.push({ index: i, port: 0, url: '', cacheDir: cache.path, child: null, outputs: [] });
  }
  const start = async (i: number) => {
    const n = nodes[i];
    if (n.child) throw new Error(`node ${i} is running`);
    const child = await spawnCloud(dataDir, { port: n.port, args: ['--store', dbUrl, '--cache-dir', n.cacheDir, '--config', cfgPath, ...(process.env.BRAID_TEST_CLUSTER_LOG ? ['--log-level', process.env.BRAID_TEST_CLUSTER_LOG] : [])], readyTimeoutMs: 30_000,
      env: process.env.BRAID_TEST_CLUSTER_REPORT ? { NODE_OPTIONS: `--report-on-signal --report-signal=SIGUSR2 --report-directory=${process.env.BRAID_TEST_CLUSTER_REPORT}` } : {} });
    n.child = child;
    n.url = child.url;
    n.port = Number(new URL(child.url).port);
    n.outputs.push('');
    const run = n.outputs.length - 1;
    void child.exited.then(() => { n.outputs[run] = child.output(); });
    return n;
  };
  const stop = async (i: number, signal: NodeJS.Signals) => {
    const n = nodes[i];
    const child = n.child;
    if (!child) return { code: null, signal: null };
    // A clean stop that hangs is a finding: its output says where (then it is killed).
    let timer: NodeJS.Timeout | undefined;
    const hung = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`node ${i} did not exit within ${STOP_TIMEOUT_MS} ms of ${signal}:\n${child.output().slice(-6000)}`)), STOP_TIMEOUT_MS);
    });
    let r: { code: number | null; signal: NodeJS.Signals | null };
    try {
      r = await Promise.race([child.stop(signal), hung]);
    } catch (err) {
      if (process.env.BRAID_TEST_CLUSTER_REPORT) {
        // A diagnostic report of the hung node (node --report-on-signal), for whoever debugs it.
        child.proc.kill('SIGUSR2');
        await sleep(2_000);
      }
      await child.stop('SIGKILL');
      n.child = null;
      throw err;
    } finally {
      clearTimeout(timer);
    }
    n.outputs[n.outputs.length - 1] = child.output();
    n.child = null;
    return r;
  };
  const c: Cluster = {
    dbUrl, dataDir, nodes, admin, tokens, readKey, adminKey,
    urls: () => nodes.map((n) => n.url),
    start,
    stop,
    restart: async (i, signal) => {
      await stop(i, signal);
      return start(i);
    },
    sealAll: async () => {
      const running = nodes.filter((n) => n.child).map((n) => n.index);
      // A killed node's staging is claimed and sealed by a live node once its lease ran out
      // (store.leaseMs; a restarted node has a new id and is just another live node). Wait for
      // that first: stopped meanwhile, it would stay (durable) until some node starts again.
      if (running.length > 0) {
        const until = Date.now() + 60_000;
        for (;;) {
          // The running nodes' rows, by their pids: a killed node's lease may not have run out yet.
          const pids = nodes.filter((n) => n.child).map((n) => n.child!.proc.pid!);
          const live = new Set((await admin.query<{ node: string }>(
            'SELECT node FROM nodes WHERE ended_at IS NULL AND claimed_by IS NULL AND pid = ANY($1::int[])', [pids])).rows.map((r) => r.node));
          let dirsLeft: string[] = [];
          try { dirsLeft = readdirSync(join(dataDir, 'staging')).filter((d) => !live.has(d)); } catch { /* no staging yet */ }
          if (dirsLeft.length === 0) break;
          if (Date.now() > until) throw new Error(`staging dirs of dead nodes not claimed within 60 s: ${dirsLeft.join(', ')}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      for (const i of running) {
        const r = await stop(i, 'SIGTERM');
        if (r.code !== 0) throw new Error(`node ${i} did not stop cleanly: ${JSON.stringify(r)}\n${nodes[i].outputs.at(-1)}`);
      }
    },
    output: () => nodes.map((n) => n.outputs.map((s, k) => `--- node ${n.index} run ${k + 1}\n${n.child && k === n.outputs.length - 1 ? n.child.output() : s}`).join('\n')).join('\n'),
    close: async () => {
      for (const n of nodes) if (n.child) await stop(n.index, 'SIGKILL');
      await admin.end().catch(() => undefined);
      for (const d of dirs) d.remove();
    },
  };
  // All at once, as a cluster's nodes come up (each a process of its own, ~1-2 s to its ready
  // line): one start failing closes the others, so no node outlives a failed startCluster.
  const started = await Promise.allSettled(nodes.map((n) => start(n.index)));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await c.close();
    throw failed.reason;
  }
  return c;
}

/** GET with a bearer key; the JSON body (or the text) and the status. */
export async function getJson(url: string, key: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${key}` } });
  const text = await res.text();
  try { return { status: res.status, body: JSON.parse(text) as Record<string, unknown> }; } catch { return { status: res.status, body: { text } }; }
}

/** POST /api/v1/batch/run (admin key) on `url`; the 202's body. */
export async function startBatchRun(url: string, adminKey: string, full = false): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${url}/api/v1/batch/run`, {
    method: 'POST', headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' }, body: JSON.stringify({ full }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** Wait until run `id` finished (GET /api/v1/batch on `url`); its history entry. */
export async function waitRun(url: string, readKey: string, id: number, timeoutMs = 60_000): Promise<Record<string, unknown>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const { body } = await getJson(`${url}/api/v1/batch`, readKey).catch(() => ({ body: {} as Record<string, unknown> }));
    const runs = (body.runs ?? body.history ?? []) as Array<Record<string, unknown>>;
    const run = runs.find((r) => r.id === id);
    if (run && run.outcome && run.outcome !== 'running') return run;
    if (Date.now() > until) throw new Error(`batch run ${id} did not finish in ${timeoutMs} ms: ${JSON.stringify(body).slice(0, 500)}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------------
// The load client

export interface LoadStats {
  /** Requests by outcome: an HTTP status, or 'network' (refused, reset, timed out). */
  outcomes: Record<string, number>;
  /** Batches acknowledged (2xx). */
  batches: number;
  /** Readings acknowledged (a batch counts once, whatever its resends). */
  readings: number;
  /** Resends (a batch sent again after a non-2xx or a network error). */
  resends: number;
  /** 2xx answers that said the whole batch was a duplicate (stored by an earlier try whose answer was lost). */
  duplicateAnswers: number;
}

/**
 * Gateways' forwarders against the cluster: per gateway one request at a time, seqs increasing,
 * each batch a closed epoch of its own; on any non-2xx or network error the same batch goes to the
 * next node URL of the list (after `retryMs`), on a 2xx the gateway stays on that node. Records
 * which seqs got a 2xx. stop() lets every gateway finish the batch it holds (resent until a 2xx),
 * so no batch is left in doubt.
 */
export class LoadClient {
  /** gateway -> acknowledged [from, to] ranges, in order. */
  readonly acked = new Map<string, Array<[number, number]>>();
  readonly stats: LoadStats = { outcomes: {}, batches: 0, readings: 0, resends: 0, duplicateAnswers: 0 };
  /** Called after each answer (tests wait for a count of them, or for a 503). */
  onAnswer: ((status: number | 'network', gateway: string) => void) | null = null;
  private stopping = false;
  private workers: Array<Promise<void>> = [];
  private readonly next = new Map<string, number>();

  constructor(private readonly urls: () => string[], private readonly tokens: Record<string, string>,
    private readonly o: { batchSize?: number; retryMs?: number; paceMs?: number; requestTimeoutMs?: number; giveUpMs?: number } = {}) {}

  /** Start one worker per gateway (gateway i first tries node i mod N). */
  start(): this {
    Object.keys(this.tokens).forEach((g, i) => { this.workers.push(this.run(g, i)); });
    return this;
  }

  /** Finish the batches in hand and stop; rejects if a batch could not be acknowledged within giveUpMs. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.workers);
  }

  private count(k: string): void {
    this.stats.outcomes[k] = (this.stats.outcomes[k] ?? 0) + 1;
  }

  private async run(gateway: string, offset: number): Promise<void> {
    const size = this.o.batchSize ?? 50;
    let node = offset;
    let epoch = 0;
    let from = this.next.get(gateway) ?? 1;
    const ranges: Array<[number, number]> = [];
    this.acked.set(gateway, ranges);
    while (!this.stopping) {
      epoch++;
      const to = from + size - 1;
      const body = epochBody(gateway, from, to, epoch);
      const since = Date.now();
      for (let attempt = 0; ; attempt++) {
        const urls = this.urls();
        const url = urls[node % urls.length];
        let status: number | 'network';
        let answer: Record<string, unknown> = {};
        try {
          const r = await postIngestWithTimeout(url, this.tokens[gateway], body, this.o.requestTimeoutMs ?? 30_000);
          status = r.status;
          answer = r.body;
        } catch {
          status = 'network';
        }
        this.count(String(status));
        this.onAnswer?.(status, gateway);
        if (typeof status === 'number' && status >= 200 && status < 300) {
          if (answer.ackSeq !== to) throw new Error(`${gateway} batch ${from}..${to}: 2xx with ackSeq ${String(answer.ackSeq)}: ${JSON.stringify(answer)}`);
          if (answer.stored === 0 && answer.duplicates === size) this.stats.duplicateAnswers++;
          ranges.push([from, to]);
          this.stats.batches++;
          this.stats.readings += size;
          break;
        }
        if (typeof status === 'number' && status !== 503 && status !== 429 && status < 500) {
          // 4xx other than 429: the cloud refused a good batch (a seq skip would mean it lost an acknowledged one).
          throw new Error(`${gateway} batch ${from}..${to}: ${status} ${JSON.stringify(answer)}`);
        }
        this.stats.resends++;
        node++;
        if (Date.now() - since > (this.o.giveUpMs ?? 90_000)) throw new Error(`${gateway} batch ${from}..${to}: no 2xx in ${this.o.giveUpMs ?? 90_000} ms (last ${status})`);
        await sleep(this.o.retryMs ?? 50);
      }
      from = to + 1;
      if (this.o.paceMs) await sleep(this.o.paceMs);
    }
    this.next.set(gateway, from);
  }
}

async function postIngestWithTimeout(url: string, token: string, body: unknown, timeoutMs: number) {
  // postIngest has no timeout of its own: a node stopped under a request must not hang the client.
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error('timeout')), timeoutMs); });
  try {
    return await Promise.race([postIngest(url, token, body), limit]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// The checker

export interface ExactlyOnceReport {
  /** (gateway, seq) acknowledged but not in master/. */
  lost: string[];
  /** (gateway, seq) in master/ more than once. */
  twice: string[];
  /** (gateway, seq) in master/ that no 2xx acknowledged (the load client leaves no batch in doubt). */
  unacked: string[];
  /** Rows whose value is not the one sent. */
  wrongValue: string[];
  /** received in PostgreSQL, per gateway, against the acknowledged seqs merged. */
  received: Record<string, { store: Array<[number, number]>; acked: Array<[number, number]> }>;
  /** Staging segment files left on the shared dir (everything sealed: none). */
  stagingLeft: string[];
}

/** Merge sorted-or-not [from, to] ranges into the fewest ranges covering the same seqs. */
export function mergeRanges(ranges: ReadonlyArray<readonly [number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const [a, b] of [...ranges].sort((x, y) => x[0] - y[0])) {
    const last = out.at(-1);
    if (last && a <= last[1] + 1) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

function stagingSegments(dataDir: string): string[] {
  const root = join(dataDir, 'staging');
  let procs: string[] = [];
  try { procs = readdirSync(root); } catch { return []; }
  return procs.flatMap((p) => {
    try { return readdirSync(join(root, p)).filter((f) => f.endsWith('.ndjson')).map((f) => `${p}/${f}`); } catch { return []; }
  });
}

/**
 * After everything is sealed: every acknowledged (gateway, seq) in master/ exactly once with the
 * value sent, nothing unacknowledged, received ranges = the acknowledged set merged, no staging left.
 * `expect(report).toEqual(cleanReport(acked))` is the assertion.
 */
export async function checkExactlyOnce(c: Pick<Cluster, 'dataDir' | 'admin'>, acked: ReadonlyMap<string, ReadonlyArray<readonly [number, number]>>): Promise<ExactlyOnceReport> {
  const rows = await readMaster(c.dataDir);
  const seen = new Map<string, number>();
  const wrongValue: string[] = [];
  for (const r of rows) {
    const k = `${r.gateway}|${r.seq}`;
    seen.set(k, (seen.get(k) ?? 0) + 1);
    if (r.value !== valueOf(r.gateway, r.seq)) wrongValue.push(`${k}=${r.value}`);
  }
  const ackedKeys = new Set<string>();
  for (const [g, ranges] of acked) for (const [a, b] of ranges) for (let s = a; s <= b; s++) ackedKeys.add(`${g}|${s}`);
  const lost = [...ackedKeys].filter((k) => !seen.has(k));
  const twice = [...seen].filter(([, n]) => n > 1).map(([k, n]) => `${k} x${n}`);
  const unacked = [...seen.keys()].filter((k) => !ackedKeys.has(k));
  const { rows: rec } = await c.admin.query<{ gateway: string; from_seq: number; to_seq: number }>('SELECT gateway, from_seq, to_seq FROM received ORDER BY gateway, from_seq');
  const received: ExactlyOnceReport['received'] = {};
  for (const [g, ranges] of acked) received[g] = { store: [], acked: mergeRanges(ranges) };
  for (const r of rec) (received[r.gateway] ??= { store: [], acked: [] }).store.push([Number(r.from_seq), Number(r.to_seq)]);
  for (const v of Object.values(received)) v.store = mergeRanges(v.store);
  return { lost: lost.slice(0, 20), twice: twice.slice(0, 20), unacked: unacked.slice(0, 20), wrongValue: wrongValue.slice(0, 20), received, stagingLeft: stagingSegments(c.dataDir) };
}

/** What checkExactlyOnce answers when the contract holds. */
export function cleanReport(acked: ReadonlyMap<string, ReadonlyArray<readonly [number, number]>>): ExactlyOnceReport {
  const received: ExactlyOnceReport['received'] = {};
  for (const [g, ranges] of acked) received[g] = { store: mergeRanges(ranges), acked: mergeRanges(ranges) };
  return { lost: [], twice: [], unacked: [], wrongValue: [], received, stagingLeft: [] };
}
