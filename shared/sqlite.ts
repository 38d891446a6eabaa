/**
 * A small promise layer over node-sqlite3, plus a write queue.
 *
 * node-sqlite3 runs statements of one connection on its own thread but does not keep a transaction
 * to itself: a statement issued by another caller between BEGIN and COMMIT lands inside it. So every
 * write goes through one `WriteQueue` that runs jobs one at a time; reads use another connection
 * (WAL gives them a consistent snapshot).
 */
import { chmodSync, closeSync, openSync, statSync } from 'node:fs';
import sqlite3 from 'sqlite3';

/** Databases hold device secrets' hashes, tokens and readings: the process's user only. */
export const DB_FILE_MODE = 0o600;

// SQLITE3_VERBOSE=1 (the test runs set it, jest.config.js; BRAID_* names are config keys): an
// SQLite error's stack names the JavaScript call that ran the statement (node-sqlite3's verbose
// mode; a stack captured per call).
if (process.env.SQLITE3_VERBOSE === '1') sqlite3.verbose();

/**
 * Make `file` owner-only before SQLite opens it for writing: created 0600 if missing (SQLite gives
 * its -wal, -shm and -journal files the mode of the database file), and an existing one made by an
 * older version (0644) tightened with its -wal and -shm. Best effort: a file of another user stays
 * as it is (EPERM), and SQLite reports whatever it cannot open.
 */
function restrictDbFile(file: string): void {
  if (file === '' || file === ':memory:' || file.startsWith('file:')) return;
  try {
    statSync(file);
  } catch {
    // Created here, not opened if it exists: closing a descriptor of a file drops every fcntl lock this
    // process holds on it (shared/owner-lock.ts), so an existing database is only stat'ed and chmod'ed.
    try { closeSync(openSync(file, 'wx', DB_FILE_MODE)); } catch { /* SQLite's own error says it better */ }
    return;
  }
  for (const f of [file, `${file}-wal`, `${file}-shm`, `${file}-journal`]) {
    try {
      if ((statSync(f).mode & 0o077) !== 0) chmodSync(f, DB_FILE_MODE);
    } catch { /* gone, or not ours */ }
  }
}

export type Params = unknown[] | Record<string, unknown>;

export class Db {
  readonly raw: sqlite3.Database;
  readonly file: string;
  private closed = false;

  private constructor(raw: sqlite3.Database, file: string) {
    this.raw = raw;
    this.file = file;
  }

  static open(file: string, mode = sqlite3.OPEN_READWRITE | sqlite3.OPEN_CREATE): Promise<Db> {
    if ((mode & sqlite3.OPEN_CREATE) !== 0) restrictDbFile(file);
    return new Promise((resolve, reject) => {
      const raw = new sqlite3.Database(file, mode, (err) => (err ? reject(err) : resolve(new Db(raw, file))));
    });
  }

  run(sql: string, params: Params = []): Promise<{ changes: number; lastID: number }> {
    return new Promise((resolve, reject) => {
      this.raw.run(sql, params, function (this: sqlite3.RunResult, err: Error | null) {
        if (err) reject(err);
        else resolve({ changes: this.changes, lastID: this.lastID });
      });
    });
  }

  all<T = Record<string, unknown>>(sql: string, params: Params = []): Promise<T[]> {
    return new Promise((resolve, reject) => {
      this.raw.all(sql, params, (err, rows) => (err ? reject(err) : resolve(rows as T[])));
    });
  }

  get<T = Record<string, unknown>>(sql: string, params: Params = []): Promise<T | undefined> {
    return new Promise((resolve, reject) => {
      this.raw.get(sql, params, (err, row) => (err ? reject(err) : resolve(row as T | undefined)));
    });
  }

  exec(sql: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.raw.exec(sql, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Close the connection; idempotent. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve, reject) => {
      this.raw.close((err) => (err ? reject(err) : resolve()));
    });
  }
}

/**
 * Runs write jobs on one connection one at a time, in submission order. A job that wants a
 * transaction calls `tx`, which rolls back on a throw.
 */
export class WriteQueue {
  readonly db: Db;
  private tail: Promise<unknown> = Promise.resolve();

  constructor(db: Db) {
    this.db = db;
  }

  /**
   * Runs at the start of every job queued with `run` or `tx` (not `runBare`'s): the edge's
   * committer applies the group commits its log holds and gateway.db not yet, so every other writer
   * sees them (committer.ts applyPending). A throw fails the job.
   */
  before: ((db: Db) => Promise<void>) | null = null;

  run<T>(job: (db: Db) => Promise<T>): Promise<T> {
    return this.runBare(async (db) => {
      if (this.before) await this.before(db);
      return job(db);
    });
  }

  /** Queue `job` like `run`, without the `before` hook (the hook's own owner's jobs). */
  runBare<T>(job: (db: Db) => Promise<T>): Promise<T> {
    const next = this.tail.then(() => job(this.db));
    this.tail = next.catch(() => undefined);
    return next;
  }

  /** Run `job` inside BEGIN IMMEDIATE ... COMMIT, queued behind other writes. */
  tx<T>(job: (db: Db) => Promise<T>): Promise<T> {
    return this.run((db) => transaction(db, job));
  }

  /** Resolves when every job queued so far has finished. */
  drain(): Promise<void> {
    return this.tail.then(() => undefined);
  }
}

/**
 * `busy_timeout` and WAL mode on a connection. Switching a new file to WAL takes a lock that another
 * process opening the same file at that moment may hold (a CLI command beside a starting service),
 * and SQLite answers that SQLITE_BUSY at once, busy handler or not: the switch is retried until
 * `busyMs` has passed. A file already in WAL mode needs no lock for it.
 */
export async function useWal(db: Db, busyMs: number): Promise<void> {
  await db.exec(`PRAGMA busy_timeout = ${busyMs}`);
  const until = Date.now() + busyMs;
  for (let wait = 2; ; wait = Math.min(wait * 2, 100)) {
    try {
      await db.exec('PRAGMA journal_mode = WAL');
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() >= until) throw err;
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

/** Run `job` inside BEGIN IMMEDIATE ... COMMIT on `db`; ROLLBACK and rethrow if it throws. */
export async function transaction<T>(db: Db, job: (db: Db) => Promise<T>): Promise<T> {
  await db.exec('BEGIN IMMEDIATE');
  try {
    const out = await job(db);
    await db.exec('COMMIT');
    return out;
  } catch (err) {
    await db.exec('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** SQLite's limit on bound parameters per statement (SQLITE_MAX_VARIABLE_NUMBER, 32766 since 3.32). */
export const MAX_SQL_PARAMS = 32766;

/** Split rows into chunks so that each multi-row statement stays under the parameter limit. */
export function chunkRows<T>(rows: T[], paramsPerRow: number, maxParams = MAX_SQL_PARAMS): T[][] {
  const per = Math.max(1, Math.floor(maxParams / paramsPerRow));
  const out: T[][] = [];
  for (let i = 0; i < rows.length; i += per) out.push(rows.slice(i, i + per));
  return out;
}

/** `(?,?,?),(?,?,?)...` for a multi-row VALUES clause. */
export function placeholders(rows: number, perRow: number): string {
  const one = `(${new Array(perRow).fill('?').join(',')})`;
  return new Array(rows).fill(one).join(',');
}

/**
 * The columns of a speed partial in SQLite, the gateway's `partials` and the cloud's
 * `speed_partials` alike: one device's metric in one minute of event time, for the readings of one
 * epoch, and their summary (shared/summary.ts). Each table puts its own columns around them.
 */
export const PARTIAL_COLUMNS_DDL = `device    TEXT    NOT NULL,
  metric    TEXT    NOT NULL,
  minute    INTEGER NOT NULL,
  epoch     INTEGER NOT NULL,
  count     INTEGER NOT NULL,
  sum       REAL    NOT NULL,
  min       REAL    NOT NULL,
  max       REAL    NOT NULL,
  m2        REAL    NOT NULL,
  first     REAL    NOT NULL,
  first_ts  INTEGER NOT NULL,
  last      REAL    NOT NULL,
  last_ts   INTEGER NOT NULL`;
