/**
 * bench:cloud's cluster phase, its shapes and its report: the same ingest load on the embedded
 * store, on one node on PostgreSQL and on two nodes on one PostgreSQL and one data dir; what the
 * nodes cost PostgreSQL per 1,000 readings; and where the shared parts would saturate, on paper.
 * The runs themselves are in bench/cloud.ts (they share its load, nodes and checks).
 */
import type { PgCounters } from './postgres.js';
import { int, mb, ms } from './stats.js';

export interface ClusterConfig { name: 'embedded' | 'pg1' | 'pg2'; label: string; store: 'sqlite' | 'postgres'; nodes: number }

export const CLUSTER_CONFIGS: readonly ClusterConfig[] = [
  { name: 'embedded', label: 'embedded (SQLite cloud.db), 1 node', store: 'sqlite', nodes: 1 },
  { name: 'pg1', label: 'PostgreSQL, 1 node', store: 'postgres', nodes: 1 },
  { name: 'pg2', label: 'PostgreSQL, 2 nodes on one data dir', store: 'postgres', nodes: 2 },
];

/** How long the nodes run with no load before each measured window (their background statements). */
export const CLUSTER_IDLE_MS = 5000;

/** What one run cost: the PostgreSQL counters over the window (load + the nodes' SIGTERM seal), the idle rate measured just before. */
export interface ClusterCosts {
  pg?: PgCounters;
  /** All the config's nodes together, no load, over `seconds`. */
  idle?: { calls: number; xact: number; walBytes: number; seconds: number };
  windowSec: number;
  wire?: { toServer: number; toClient: number; connections: number };
  pgCpuSec: number;
  /** braid_ingest_group_commits_total summed over the nodes: one staging append + fdatasync on the data dir each. */
  groupCommits: number;
  /** The nodes' /proc/<pid>/io write_bytes during the load (staging, master Parquet, cloud.db on SQLite). */
  nodeWriteBytes: number;
}

/** The figures of a load run this report reads (bench/cloud.ts LoadRun has them). */
export interface RunFigures { readings: number; requests: number; errors: number; ms: number; perSec: number; p50: number; p90: number; p99: number; max: number; serverCpuSec: number; offeredPerSec?: number }
export interface VerifyFigures { ok: boolean; masterRows: number; distinctIds: number; stagingReadings: number; perGatewayOk: number; gateways: number; sealedOk: number; staged: number; notes: string[] }

export interface ClusterLoad { run: RunFigures; costs?: ClusterCosts; verify?: VerifyFigures }
export interface ClusterResult {
  pgVersion: string;
  pgSettings: string[];
  runs: Array<{ cfg: ClusterConfig; run: ClusterLoad; paced: ClusterLoad }>;
}

/** Costs per 1,000 readings, the idle statements, transactions and WAL of the window taken out. */
export interface Per1000 {
  statements: number; txStatements: number; transactions: number; inserted: number; updated: number; deleted: number;
  walBytes: number; walRecords: number; walFpi: number; walSyncs: number; toServer: number; toClient: number;
  pgCpuMs: number; nodeCpuMs: number; groupCommits: number; nodeWriteBytes: number;
}

export function per1000(l: ClusterLoad): Per1000 | null {
  const c = l.costs;
  if (!c?.pg || !c.idle) return null;
  const k = 1000 / l.run.readings;
  const idleShare = c.windowSec / c.idle.seconds;
  let tx = 0;
  for (const [q, n] of c.pg.byQuery) if (/^(BEGIN|COMMIT|ROLLBACK|START TRANSACTION)\b/i.test(q)) tx += n;
  return {
    statements: Math.max(0, c.pg.calls - c.idle.calls * idleShare) * k,
    txStatements: tx * k,
    transactions: Math.max(0, c.pg.xactCommit + c.pg.xactRollback - c.idle.xact * idleShare) * k,
    inserted: c.pg.tupInserted * k, updated: c.pg.tupUpdated * k, deleted: c.pg.tupDeleted * k,
    walBytes: Math.max(0, c.pg.walLsn - c.idle.walBytes * idleShare) * k,
    walRecords: c.pg.walRecords * k, walFpi: c.pg.walFpi * k, walSyncs: c.pg.walSync * k,
    toServer: (c.wire?.toServer ?? NaN) * k, toClient: (c.wire?.toClient ?? NaN) * k,
    pgCpuMs: c.pgCpuSec * 1000 * k, nodeCpuMs: l.run.serverCpuSec * 1000 * k,
    groupCommits: c.groupCommits * k, nodeWriteBytes: c.nodeWriteBytes * k,
  };
}

/** Assumptions of the saturation math (stated in the report). */
export const CAPACITY = {
  /** Simple write transactions/s of one dedicated PostgreSQL on NVMe (a few statements each, synchronous_commit on). */
  pgTxPerSec: [20_000, 50_000],
  /** fsyncs/s of the shared data dir: network storage (NFS/EFS, ~1-2 ms each) and a fast one (NVMe-backed NFS, a SAN). */
  sharedFsyncPerSec: [1_000, 20_000],
  /** Write bandwidth of the shared data dir, bytes/s. */
  sharedBytesPerSec: [100e6, 1000e6],
  /** Cores of the PostgreSQL server. */
  pgCores: 16,
  /** max_connections: the default, and a server raised for many nodes (or PgBouncer in front). */
  pgConnections: [100, 500],
} as const;

const f1 = (x: number) => (Number.isFinite(x) ? (x >= 100 ? int(x) : x >= 10 ? x.toFixed(1) : x.toFixed(2)) : 'n/a');
const bytes = (x: number) => (Number.isFinite(x) ? (x >= 1e6 ? mb(x) : `${f1(x / 1024)} KiB`) : 'n/a');
const kIt = (x: number) => (x >= 1e6 ? `${(x / 1e6).toFixed(1)}M` : `${int(x / 1000)}k`);

export function clusterReport(c: ClusterResult, o: { gateways: number; perGateway: number; batchReadings: number; pacedRate: number }): string[] {
  const L: string[] = [];
  const total = o.gateways * o.perGateway;
  L.push(`### Cluster mode: embedded vs one and two nodes on PostgreSQL (the same run)`, '');
  L.push(`The same ${o.gateways} gateways and bodies (${int(total)} readings in gzip batches of ${o.batchReadings}) posted to each configuration in turn, as fast as the acks and then paced at ${int(o.pacedRate)} readings/s (a fresh data dir and database each time); two nodes share one data dir and get the requests round-robin (a gateway's batch b to node (gateway + b) mod 2, as a load balancer would spread them). PostgreSQL ${c.pgVersion} on this machine, durable settings (fsync, synchronous_commit, full_page_writes on), \`shared_preload_libraries=pg_stat_statements\`. **This 2-core machine cannot show scaling**: the nodes, PostgreSQL and the load clients share its 2 cores (and other sessions' test runs), so two nodes only split the same CPU; read the ratios and the per-reading costs, not the rates.`, '');
  L.push('| configuration | readings/s (as fast as the acks) | p50 / p99 | paced: readings/s acknowledged | paced p50 / p99 | node CPU per 1,000 readings | PostgreSQL CPU per 1,000 readings | master + staging = sent, once each |', '|---|---:|---:|---:|---:|---:|---:|---|');
  const embedded = c.runs.find((r) => r.cfg.name === 'embedded');
  for (const r of c.runs) {
    const rel = embedded && r !== embedded ? ` (${(r.run.run.perSec / embedded.run.run.perSec).toFixed(2)}x)` : '';
    const pg = r.run.costs?.pgCpuSec ? `${f1((r.run.costs.pgCpuSec * 1e6) / r.run.run.readings)} ms` : '-';
    const v = r.run.verify;
    L.push(`| ${r.cfg.label} | ${int(r.run.run.perSec)}${rel} | ${ms(r.run.run.p50)} / ${ms(r.run.run.p99)} | ${int(r.paced.run.perSec)} | ${ms(r.paced.run.p50)} / ${ms(r.paced.run.p99)} | ${f1((r.run.run.serverCpuSec * 1e6) / r.run.run.readings)} ms | ${pg} | ${v ? (v.ok ? `**met** (${int(v.masterRows + v.stagingReadings)})` : `**failed** (${int(v.masterRows + v.stagingReadings)} of ${int(total)})`) : '-'} |`);
  }
  L.push('');

  const cols: Array<{ name: string; p: Per1000 }> = [];
  for (const r of c.runs) {
    for (const [kind, l] of [['as fast as the acks', r.run], [`paced ${kIt(o.pacedRate)}/s`, r.paced]] as const) {
      const p = per1000(l);
      if (p) cols.push({ name: `${r.cfg.nodes} node${r.cfg.nodes > 1 ? 's' : ''}, ${kind}`, p });
    }
  }
  if (cols.length) {
    L.push(`#### What the nodes cost PostgreSQL per 1,000 readings (batches of ${o.batchReadings})`, '');
    L.push('Counted on the server over each load window, the nodes\' SIGTERM (commit what is queued, seal the open segment) included; statements, transactions and WAL bytes net of the idle rate measured just before (below). Round trips: node-postgres sends each statement as one round trip (Parse/Bind/Execute/Sync), so statements = round trips.', '');
    L.push(`| per 1,000 readings | ${cols.map((x) => x.name).join(' | ')} |`, `|---|${cols.map(() => '---:').join('|')}|`);
    const row = (label: string, get: (p: Per1000) => string) => L.push(`| ${label} | ${cols.map((x) => get(x.p)).join(' | ')} |`);
    row('statements = round trips (pg_stat_statements calls)', (p) => f1(p.statements));
    row('of which BEGIN / COMMIT / ROLLBACK', (p) => f1(p.txStatements));
    row('transactions (pg_stat_database xact_commit + xact_rollback)', (p) => f1(p.transactions));
    row('rows inserted / updated / deleted', (p) => `${f1(p.inserted)} / ${f1(p.updated)} / ${f1(p.deleted)}`);
    row('WAL bytes (pg_current_wal_lsn() difference)', (p) => bytes(p.walBytes));
    row('WAL records / full-page images', (p) => `${f1(p.walRecords)} / ${f1(p.walFpi)}`);
    row('WAL fsyncs (pg_stat_wal wal_sync)', (p) => f1(p.walSyncs));
    row('bytes node to PostgreSQL / back (server sockets, ss tcp_info)', (p) => `${bytes(p.toServer)} / ${bytes(p.toClient)}`);
    row('PostgreSQL CPU (postmaster + backends)', (p) => `${f1(p.pgCpuMs)} ms`);
    row('node CPU (braid cloud processes)', (p) => `${f1(p.nodeCpuMs)} ms`);
    row('group commits = staging fdatasyncs on the shared data dir', (p) => f1(p.groupCommits));
    row('bytes the nodes wrote to the data dir (staging + master, /proc/pid/io)', (p) => bytes(p.nodeWriteBytes));
    L.push('');

    const idle = c.runs.filter((r) => r.run.costs?.idle).map((r) => {
      const i = r.run.costs!.idle!;
      const per = (x: number) => x / i.seconds / r.cfg.nodes;
      return `${r.cfg.label}: ${f1(per(i.calls))} statements, ${f1(per(i.xact))} transactions, ${bytes(per(i.walBytes))} of WAL per node per second`;
    });
    if (idle.length) L.push(`Idle (no load, ${CLUSTER_IDLE_MS / 1000} s before each run; the live manifest's poll every second and the store health probe): ${idle.join('; ')}.`, '');

    const pg1 = c.runs.find((r) => r.cfg.name === 'pg1');
    if (pg1?.run.costs?.pg) {
      const k = 1000 / pg1.run.run.readings;
      const top = [...pg1.run.costs.pg.byQuery].sort((a, b) => b[1] - a[1]).slice(0, 12);
      L.push('<details><summary>Statements of one node, as fast as the acks (pg_stat_statements, calls per 1,000 readings)</summary>', '');
      L.push('| calls per 1,000 readings | statement |', '|---:|---|');
      for (const [q, n] of top) L.push(`| ${f1(n * k)} | \`${q.slice(0, 160).replace(/\|/g, '\\|').replace(/`/g, "'")}${q.length > 160 ? '...' : ''}\` |`);
      L.push('', '</details>', '');
    }

    L.push(...saturation(c, cols, o), '');
  }
  const detail = c.runs.flatMap((x) => [[x.cfg.label, x.run], [`${x.cfg.label}, paced`, x.paced]] as const).map(([label, l]) => {
    const r = l.run;
    return `- ${label}: ${int(r.readings)} readings in ${ms(r.ms)} = ${int(r.perSec)}/s, ${int(r.requests)} requests, ${r.errors} non-2xx; p50 ${ms(r.p50)}, p90 ${ms(r.p90)}, p99 ${ms(r.p99)}, max ${ms(r.max)}; nodes' CPU ${r.serverCpuSec.toFixed(1)} s${l.costs?.pgCpuSec ? `, PostgreSQL's ${l.costs.pgCpuSec.toFixed(1)} s` : ''}${l.costs ? `; ${int(l.costs.groupCommits)} group commits` : ''}${l.costs?.wire ? `; ${l.costs.wire.connections} connections to PostgreSQL` : ''}${l.verify && !l.verify.ok ? `; MISMATCH ${l.verify.notes.join('; ')}` : ''}`;
  });
  L.push('<details><summary>Details of the cluster runs</summary>', '', ...detail, `- PostgreSQL settings: ${c.pgSettings.filter((s) => !/^(listen_addresses|unix_socket_directories)=/.test(s)).map((s) => `\`${s}\``).join(', ')}; everything else initdb's default (shared_buffers 128 MB)`, '', '</details>');
  return L;
}

/** Where PostgreSQL and the shared data dir would saturate, from the measured costs and CAPACITY. */
function saturation(c: ClusterResult, cols: Array<{ name: string; p: Per1000 }>, o: { batchReadings: number }): string[] {
  const L: string[] = [];
  // The dearest column per figure. A loaded node groups many requests per commit; a lightly loaded
  // one commits each request alone, so transactions and fsyncs are taken at no less than that bound:
  // per request one auth lookup (its own transaction) and at most one group commit.
  const worst = (get: (p: Per1000) => number) => Math.max(...cols.map((x) => get(x.p)).filter(Number.isFinite));
  const perRequest = 1000 / o.batchReadings;
  const tx = Math.max(worst((p) => p.transactions), 2 * perRequest);
  const pgCpu = worst((p) => p.pgCpuMs);
  const fsyncs = Math.max(worst((p) => p.groupCommits), perRequest);
  const wb = worst((p) => p.nodeWriteBytes);
  const wal = worst((p) => p.walBytes);
  const pg1 = c.runs.find((r) => r.cfg.name === 'pg1');
  const node = pg1 ? pg1.run.run.perSec : NaN;
  const nodes = (rate: number) => (Number.isFinite(node) && node > 0 ? f1(rate / node) : 'n/a');
  L.push('#### Where the shared parts would saturate (on paper)', '');
  L.push(`From the dearest column of the table above for each figure, with transactions and fsyncs taken at no less than a lightly loaded node's (each request committed alone: ${f1(2 * perRequest)} transactions, its auth lookup and its group commit, and ${f1(perRequest)} staging fsyncs per 1,000 readings), a node's rate as measured here (${int(node)} readings/s, one node on PostgreSQL as fast as the acks, sharing 2 cores with PostgreSQL and the clients; a node with cores of its own does more) and these assumptions: a dedicated PostgreSQL on NVMe commits ${CAPACITY.pgTxPerSec.map(int).join(' to ')} simple write transactions/s (synchronous_commit on, its WAL flushes grouped); a shared data dir does ${CAPACITY.sharedFsyncPerSec.map(int).join(' (network storage: NFS, EFS at ~1 ms per fsync) or ')} (NVMe behind NFS, a SAN) fsyncs/s and writes ${CAPACITY.sharedBytesPerSec.map((b) => `${b / 1e6} MB/s`).join(' or ')}. A gateway's batch is ${int(o.batchReadings)} readings; speed pushes (POST /api/v1/speed) are not in this load and add their own transactions.`, '');
  L.push('| shared part | cost per 1,000 readings | capacity assumed | readings/s it carries | nodes at the rate measured here |', '|---|---:|---|---:|---:|');
  for (const cap of CAPACITY.pgTxPerSec) {
    const rate = (cap / tx) * 1000;
    L.push(`| PostgreSQL, transactions | ${f1(tx)} | ${int(cap)} tx/s | ${int(rate)} | ${nodes(rate)} |`);
  }
  {
    const rate = ((CAPACITY.pgCores * 1000) / pgCpu) * 1000;
    L.push(`| PostgreSQL, CPU | ${f1(pgCpu)} ms (measured here) | ${CAPACITY.pgCores} cores like these | ${int(rate)} | ${nodes(rate)} |`);
  }
  for (const cap of CAPACITY.sharedFsyncPerSec) {
    const rate = (cap / fsyncs) * 1000;
    L.push(`| shared data dir, fsyncs (one per group commit) | ${f1(fsyncs)} | ${int(cap)} fsync/s | ${int(rate)} | ${nodes(rate)} |`);
  }
  for (const cap of CAPACITY.sharedBytesPerSec) {
    const rate = (cap / wb) * 1000;
    L.push(`| shared data dir, bytes written (staging + master) | ${bytes(wb)} | ${cap / 1e6} MB/s | ${int(rate)} | ${nodes(rate)} |`);
  }
  const conns = Math.max(...c.runs.flatMap((r) => [r.run, r.paced].map((l) => (l.costs?.wire ? l.costs.wire.connections / r.cfg.nodes : NaN))).filter(Number.isFinite));
  for (const cap of CAPACITY.pgConnections) {
    L.push(`| PostgreSQL, connections (each node's pool, store.poolMax 10, plus its LISTEN connection) | ${f1(conns)} per node, not per reading | max_connections ${cap} | - | ${int(Math.floor(cap / conns))} |`);
  }
  L.push('');
  L.push(`PostgreSQL's WAL grows by ${bytes(wal)} per 1,000 readings (${mb((wal * 1e6) / 1000)} per million): readings are not in it (staging and master are files on the data dir), only the decisions and ranges. Group commits are per node and grow with the load, so the transaction and fsync costs per reading fall as a node gets busier; the table takes the lightly loaded bound. Every figure is per request more than per reading: a fleet that sends smaller batches pays ${o.batchReadings} / its batch size times as much per reading.`);
  return L;
}
