/**
 * A throwaway PostgreSQL 15 (Debian's postgresql-15) for the cluster phase of bench:cloud, and the
 * server-side counters that say what the nodes cost it.
 *
 * Unlike test/support/postgres.ts (fsync off: tests want speed, not durability) this server keeps
 * PostgreSQL's durable defaults (fsync, synchronous_commit, full_page_writes on), so the WAL bytes
 * and WAL syncs per reading are what a production server pays, and it preloads
 * pg_stat_statements (the contrib module ships in the postgresql-15 package) to count statements.
 * It runs in the foreground as a tracked child process (bench/lib/procs.ts), so every way out of
 * the benchmark stops it; as root, initdb and the server run as the `postgres` user (they refuse
 * root), on a temp dir it owns, on a free 127.0.0.1 port, its socket in that dir.
 */
import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { userInfo, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort, sleep } from './net.js';
import { cpuSecondsOf, startProc, type Proc } from './procs.js';

const run = promisify(execFile);

/** Where Debian's postgresql-15 puts its binaries (not on PATH). */
export const PG_BIN = '/usr/lib/postgresql/15/bin';
const PG_USER = 'braid';

export interface BenchPostgres {
  /** The admin database's URL (`postgres://braid@127.0.0.1:PORT/postgres`): pg_stat_statements lives there. */
  adminUrl: string;
  port: number;
  proc: Proc;
  /** `SHOW server_version`. */
  version: string;
  /** The settings the server runs with, for the report. */
  settings: string[];
  /** A fresh, empty database; returns its URL. */
  createDatabase: (name: string) => Promise<string>;
  /** One query on the admin database. */
  query: <T extends pg.QueryResultRow>(sql: string, params?: unknown[]) => Promise<T[]>;
  /** CPU seconds of the postmaster and every backend alive now (backends that already exited are not counted). */
  cpuSeconds: () => number;
  /** Fast shutdown, then the dir removed; idempotent. */
  stop: () => Promise<void>;
}

export function havePostgres(): boolean {
  return existsSync(join(PG_BIN, 'initdb')) && existsSync(join(PG_BIN, 'postgres'));
}

export async function startBenchPostgres(): Promise<BenchPostgres> {
  if (!havePostgres()) throw new Error(`${PG_BIN}/initdb is not installed (apt-get install postgresql-15)`);
  const dir = mkdtempSync(join(tmpdir(), 'braid-bench-pg-'));
  const data = join(dir, 'data');
  const asRoot = userInfo().uid === 0;
  let ids: { uid: number; gid: number } | undefined;
  if (asRoot) {
    ids = { uid: Number((await run('id', ['-u', 'postgres'])).stdout.trim()), gid: Number((await run('id', ['-g', 'postgres'])).stdout.trim()) };
    chownSync(dir, ids.uid, ids.gid);
  }
  await run(join(PG_BIN, 'initdb'), ['-D', data, '-U', PG_USER, '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync'], { cwd: dir, ...ids });
  const port = await freePort();
  const settings = [
    'listen_addresses=127.0.0.1', `unix_socket_directories=${dir}`, 'max_connections=200',
    'shared_preload_libraries=pg_stat_statements', 'pg_stat_statements.track=all', 'pg_stat_statements.max=10000',
    // Durable, as in production (the defaults, written out): what a commit costs includes its WAL flush.
    'fsync=on', 'synchronous_commit=on', 'full_page_writes=on',
  ];
  const proc = startProc('postgres', join(PG_BIN, 'postgres'), ['-D', data, '-p', String(port), ...settings.flatMap((s) => ['-c', s])], { cwd: dir, ...ids });
  const adminUrl = `postgres://${PG_USER}@127.0.0.1:${port}/postgres`;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    proc.child.kill('SIGINT'); // fast shutdown: sessions are ended, no wait for clients
    await Promise.race([proc.exited, sleep(30_000)]);
    await proc.stop(1000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const client = await connectWithin(adminUrl, 30_000, proc);
    await client.end();
    const query = async <T extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<T[]> => {
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      try { return (await c.query<T>(sql, params)).rows; } finally { await c.end(); }
    };
    await query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    const version = (await query<{ server_version: string }>('SHOW server_version'))[0].server_version;
    const createDatabase = async (name: string) => {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`);
      await query(`CREATE DATABASE ${name}`);
      return `postgres://${PG_USER}@127.0.0.1:${port}/${name}`;
    };
    const cpuSeconds = () => {
      let s = 0;
      for (const pid of [proc.pid, ...childrenOf(proc.pid)]) {
        try { s += cpuSecondsOf(pid); } catch { /* exited */ }
      }
      return s;
    };
    return { adminUrl, port, proc, version, settings, createDatabase, query, cpuSeconds, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function connectWithin(url: string, ms: number, proc: Proc): Promise<pg.Client> {
  const until = Date.now() + ms;
  for (;;) {
    const c = new pg.Client({ connectionString: url });
    try {
      await c.connect();
      return c;
    } catch (err) {
      await c.end().catch(() => {});
      if (Date.now() > until) throw new Error(`postgres did not accept connections within ${ms} ms: ${(err as Error).message}\n${proc.stderrTail()}`);
      await sleep(200);
    }
  }
}

/** Pids whose parent is `ppid` (/proc/<pid>/stat field 4). */
function childrenOf(ppid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid) out.push(Number(name));
    } catch { /* gone */ }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// What the nodes cost the server

/** Cumulative server-side counters of one database (and the cluster's WAL) at one moment. */
export interface PgCounters {
  /** pg_stat_statements: calls of the database's statements (BEGIN and COMMIT included), rows they returned or touched. */
  calls: number;
  rows: number;
  /** Per statement text: calls (the report's top list). */
  byQuery: Map<string, number>;
  /** pg_stat_database. */
  xactCommit: number;
  xactRollback: number;
  tupInserted: number;
  tupUpdated: number;
  tupDeleted: number;
  /** pg_current_wal_lsn() as a byte position. */
  walLsn: number;
  /** pg_stat_wal. */
  walRecords: number;
  walFpi: number;
  walSync: number;
  walWrite: number;
}

export async function pgCounters(server: BenchPostgres, db: string): Promise<PgCounters> {
  const st = await server.query<{ query: string; calls: string; rows: string }>(
    'SELECT s.query, s.calls::text, s.rows::text FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1', [db]);
  const byQuery = new Map<string, number>();
  let calls = 0;
  let rows = 0;
  for (const s of st) {
    const q = s.query.replace(/\s+/g, ' ').trim();
    byQuery.set(q, (byQuery.get(q) ?? 0) + Number(s.calls));
    calls += Number(s.calls);
    rows += Number(s.rows);
  }
  const [d] = await server.query<Record<string, string>>(
    `SELECT xact_commit::text, xact_rollback::text, tup_inserted::text, tup_updated::text, tup_deleted::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::text AS lsn FROM pg_stat_database WHERE datname = $1`, [db]);
  const [w] = await server.query<Record<string, string>>('SELECT wal_records::text, wal_fpi::text, wal_sync::text, wal_write::text FROM pg_stat_wal');
  return {
    calls, rows, byQuery,
    xactCommit: Number(d.xact_commit), xactRollback: Number(d.xact_rollback),
    tupInserted: Number(d.tup_inserted), tupUpdated: Number(d.tup_updated), tupDeleted: Number(d.tup_deleted),
    walLsn: Number(d.lsn), walRecords: Number(w.wal_records), walFpi: Number(w.wal_fpi), walSync: Number(w.wal_sync), walWrite: Number(w.wal_write),
  };
}

/** b - a, counter by counter (byQuery too). */
export function pgDelta(a: PgCounters, b: PgCounters): PgCounters {
  const byQuery = new Map<string, number>();
  for (const [q, n] of b.byQuery) {
    const d = n - (a.byQuery.get(q) ?? 0);
    if (d > 0) byQuery.set(q, d);
  }
  const keys = ['calls', 'rows', 'xactCommit', 'xactRollback', 'tupInserted', 'tupUpdated', 'tupDeleted', 'walLsn', 'walRecords', 'walFpi', 'walSync', 'walWrite'] as const;
  const out = { byQuery } as PgCounters;
  for (const k of keys) out[k] = b[k] - a[k];
  return out;
}

/**
 * Bytes over the wire between the nodes and the server, from the server side's TCP sockets
 * (`ss -ti`: tcp_info bytes_received = client to server, bytes_sent = server to client). Sampled
 * while the nodes run; a connection seen at the first sample counts from there, one opened later
 * from 0. What a connection carried after the last sample before it closed is missed.
 */
export class WireBytes {
  private first = new Map<string, { sent: number; received: number }>();
  private last = new Map<string, { sent: number; received: number }>();
  private started = false;
  constructor(private readonly port: number) {}

  async sample(): Promise<void> {
    let out = '';
    try {
      out = (await run('ss', ['-tinH', 'state', 'established', 'sport', '=', `:${this.port}`])).stdout;
    } catch { return; }
    // ss prints each socket as an address line, then an indented line of tcp_info.
    const lines = out.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const addr = lines[i].trim().split(/\s+/);
      if (addr.length < 4 || lines[i].startsWith('\t') || lines[i].startsWith(' ')) continue;
      const info = lines[i + 1] ?? '';
      const key = `${addr[addr.length - 2]}>${addr[addr.length - 1]}`;
      const sent = Number(info.match(/bytes_sent:(\d+)/)?.[1] ?? NaN);
      const received = Number(info.match(/bytes_received:(\d+)/)?.[1] ?? NaN);
      if (!Number.isFinite(sent) || !Number.isFinite(received)) continue;
      const v = { sent, received };
      if (!this.started) this.first.set(key, v);
      this.last.set(key, v);
    }
    this.started = true;
  }

  /** Client to server and server to client, in bytes, since the first sample. */
  totals(): { toServer: number; toClient: number; connections: number } {
    let toServer = 0;
    let toClient = 0;
    for (const [k, v] of this.last) {
      const f = this.first.get(k) ?? { sent: 0, received: 0 };
      toServer += v.received - f.received;
      toClient += v.sent - f.sent;
    }
    return { toServer, toClient, connections: this.last.size };
  }
}
