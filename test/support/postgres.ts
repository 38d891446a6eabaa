/**
 * Test support: a throwaway PostgreSQL 15 server (Debian package postgresql-15) in a temp dir on a
 * free 127.0.0.1 port, one per test file; each test takes a database of its own from it.
 *
 * initdb and the server refuse to run as root, so as root they run as the `postgres` user
 * (`runuser -u postgres --`) on a temp dir it owns; as any other user they run as that user. The
 * cluster trusts loopback connections (a test server: no password), keeps its socket in its own dir
 * (not /var/run/postgresql), and runs with fsync=off. A packaged cluster (port 5432) plays no part.
 *
 * Missing binaries skip with a visible message, but fail under CI=true (as requireBinary does).
 */
import { execFile } from 'node:child_process';
import { chownSync, existsSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type pg from 'pg';
import { createPgPool, migrate } from '../../cloud/store/pg/index.js';
import { tempDir } from './gateway.js';
import { freePort } from './influx.js';

const run = promisify(execFile);

/** Where Debian's postgresql-15 puts its binaries (not on PATH). */
export const PG_BIN = '/usr/lib/postgresql/15/bin';
const PG_USER = 'braid';

export interface TestPostgres {
  /** A URL of the server's first database (`postgres://braid@127.0.0.1:PORT/braid`). */
  url: string;
  port: number;
  /** The server's log, for a failing test's message. */
  log: () => string;
  /** A fresh, empty database; returns its URL. Names: lowercase letters, digits, `_`. */
  createDatabase: (name: string) => Promise<string>;
  /**
   * Restart the server on the same port and data (fast shutdown: open sessions are ended, as a
   * failover or a crash ends them), staying down `downMs` in between (default 0).
   */
  restart: (o?: { downMs?: number }) => Promise<void>;
  /** Stop the server (fast shutdown) and remove its dir; idempotent. */
  stop: () => Promise<void>;
}

/** Whether postgresql-15 is installed (skip with a message otherwise; under CI=true, throw). */
export function havePostgres(): boolean {
  if (existsSync(join(PG_BIN, 'initdb')) && existsSync(join(PG_BIN, 'pg_ctl'))) return true;
  const msg = `${PG_BIN}/initdb is not installed (apt-get install postgresql-15)`;
  if (process.env.CI === 'true') throw new Error(`${msg}: required under CI`);
  // eslint-disable-next-line no-console
  console.warn(`SKIPPED: ${msg}`);
  return false;
}

const INITDB_ARGS = ['-U', PG_USER, '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync'];

/**
 * The data dir `initdb INITDB_ARGS` makes, kept in the temp dir for every later server of this
 * machine (keyed by the user, the initdb binary and the arguments): each server starts from a copy.
 * Made at most once even with several jest workers: each makes its own and renames it into place;
 * whoever comes second keeps the first one's.
 */
async function initdbTemplate(asRoot: boolean): Promise<string> {
  const initdb = join(PG_BIN, 'initdb');
  const key = `${userInfo().uid}-${Math.trunc(statSync(initdb).mtimeMs)}-${INITDB_ARGS.join(' ').replace(/[^A-Za-z0-9=]+/g, '_')}`;
  const template = join(tmpdir(), `braid-pg-template-${key}`);
  if (existsSync(join(template, 'PG_VERSION'))) return template;
  const dir = tempDir('braid-pg-initdb-');
  try {
    if (asRoot) {
      const { stdout } = await run('id', ['-u', 'postgres']);
      const { stdout: gid } = await run('id', ['-g', 'postgres']);
      chownSync(dir.path, Number(stdout.trim()), Number(gid.trim()));
    }
    const data = join(dir.path, 'data');
    await (asRoot ? run('runuser', ['-u', 'postgres', '--', initdb, '-D', data, ...INITDB_ARGS], { cwd: dir.path }) : run(initdb, ['-D', data, ...INITDB_ARGS], { cwd: dir.path }));
    try {
      renameSync(data, template);
    } catch (err) {
      // Another worker's template got there first (a non-empty dir is not replaced).
      if (!existsSync(join(template, 'PG_VERSION'))) throw err;
    }
  } finally {
    rmSync(dir.path, { recursive: true, force: true });
  }
  return template;
}

/** Start a server; `stop()` it in afterAll. */
export async function startPostgres(): Promise<TestPostgres> {
  const dir = tempDir('braid-pg-');
  const data = join(dir.path, 'data');
  const logFile = join(dir.path, 'server.log');
  const asRoot = userInfo().uid === 0;
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const { stdout: gid } = await run('id', ['-g', 'postgres']);
    chownSync(dir.path, Number(stdout.trim()), Number(gid.trim()));
  }
  /** Run a PostgreSQL binary as the user that owns the cluster. */
  const pg = (bin: string, args: string[]) => (asRoot
    ? run('runuser', ['-u', 'postgres', '--', join(PG_BIN, bin), ...args], { cwd: dir.path })
    : run(join(PG_BIN, bin), args, { cwd: dir.path }));
  const log = () => { try { return readFileSync(logFile, 'utf8').slice(-8000); } catch { return ''; } };

  let started = false;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (started) {
      try { await pg('pg_ctl', ['-D', data, '-m', 'fast', '-w', '-t', '30', 'stop']); } catch { /* already down */ }
    }
    dir.remove();
  };

  try {
    // A copy of the machine's initdb template (made once: initdb is ~1-2 s of a file's start, a copy under 1 s).
    await run('cp', ['-a', await initdbTemplate(asRoot), data]);
    // A free port can be taken between freePort() and the server's bind: try a few.
    let port = 0;
    let opts = '';
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      opts = [
        `-p ${port}`, '-c listen_addresses=127.0.0.1', `-c unix_socket_directories=${dir.path}`,
        '-c fsync=off', '-c synchronous_commit=off', '-c full_page_writes=off', '-c max_connections=100',
      ].join(' ');
      try {
        await pg('pg_ctl', ['-D', data, '-l', logFile, '-o', opts, '-w', '-t', '30', 'start']);
        started = true;
        break;
      } catch (err) {
        if (attempt >= 3) throw new Error(`postgres did not start: ${(err as Error).message}\n${log()}`);
      }
    }
    const createDatabase = async (name: string) => {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`);
      await run(join(PG_BIN, 'createdb'), ['-h', '127.0.0.1', '-p', String(port), '-U', PG_USER, name]);
      return `postgres://${PG_USER}@127.0.0.1:${port}/${name}`;
    };
    const url = await createDatabase(PG_USER);
    const restart = async (o: { downMs?: number } = {}) => {
      if (stopped) throw new Error('postgres was stopped');
      await pg('pg_ctl', ['-D', data, '-m', 'fast', '-w', '-t', '30', 'stop']);
      if (o.downMs) await new Promise((r) => setTimeout(r, o.downMs));
      // The same options, so the same port: clients' URLs stay valid.
      await pg('pg_ctl', ['-D', data, '-l', logFile, '-o', opts, '-w', '-t', '30', 'start']);
    };
    return { url, port, log, createDatabase, restart, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** A fresh database of a test server, migrated, with pools on it: what a store's conformance harness starts from. */
export interface MigratedDatabase {
  url: string;
  /** The first pool (migrated through it): the store under test and the harness's own reads. */
  first: pg.Pool;
  /** Another pool on the same database: a second process or node. */
  open: () => pg.Pool;
  /** End every pool opened. */
  close: () => Promise<void>;
}

export async function migratedDatabase(server: TestPostgres, name: string, poolMax = 4): Promise<MigratedDatabase> {
  const url = await server.createDatabase(name);
  const pools: pg.Pool[] = [];
  const open = () => {
    const pool = createPgPool({ url, poolMax });
    pools.push(pool);
    return pool;
  };
  const first = open();
  await migrate(first);
  return { url, first, open, close: async () => { await Promise.all(pools.splice(0).map((p) => p.end())); } };
}
