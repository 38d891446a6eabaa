/**
 * One owner per data dir (DESIGN.md invariant 7): a long-running process (`braid gateway`, each
 * gateway of `braid demo`, the demo's own dir) holds an exclusive lock on `<dir>/owner.lock` for its
 * whole life; a second process on the same dir gets DataDirInUseError naming the first (pid, since
 * when) and the CLI exits 2.
 *
 * The lock is SQLite's: `owner.lock` is a tiny database opened with `locking_mode=EXCLUSIVE`, and a
 * write makes the connection take and keep the EXCLUSIVE lock until it closes. SQLite locks with
 * POSIX fcntl() byte-range locks, which the kernel drops when the process dies, kill -9 included,
 * so there is no stale lock to clean up. Inside one process SQLite tracks the locks of all its
 * connections to a file (unixInodeInfo), so a second Gateway on the same dir in the same process is
 * refused too, and the demo's gateways (each on its own sub-dir) never lock each other or the demo out.
 *
 * Alternatives weighed: a pid/mtime lockfile (proper-lockfile, `wx` + pid) is not released by the
 * kernel, so after a kill -9 it needs a liveness guess (pid reuse, clock skew); fs-ext's flock() is a
 * native addon we would add for this alone; Node has no flock. sqlite3 is already in the tree.
 *
 * Who holds the lock is written to `owner.json` next to it, after the lock is held: the holder's
 * lock forbids others to read `owner.lock` itself. Never read or close `owner.lock` with node:fs in
 * a process that holds it: closing any descriptor of a file drops that process's fcntl locks on it.
 */
import { chmodSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { BraidError, DataDirInUseError } from './errors.js';
import { Db } from './sqlite.js';

export const OWNER_LOCK_FILE = 'owner.lock';
export const OWNER_INFO_FILE = 'owner.json';

/** What `owner.json` says about the process holding the lock. */
export interface OwnerInfo {
  pid: number;
  host: string;
  /** What runs there, e.g. `braid gateway gw-north`. */
  command: string;
  /** When the lock was taken, ISO 8601. */
  since: string;
}

/** A held lock: release() closes the connection (the kernel would do it at exit anyway). */
export interface OwnerLock {
  readonly dir: string;
  readonly info: OwnerInfo;
  release(): Promise<void>;
}

function isBusy(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED';
}

/** Attempts before a busy lock means another owner (about 50 ms apart). */
const LOCK_ATTEMPTS = 5;

/** Open `file` and take its lock for good, or throw (SQLITE_BUSY while another connection holds it). */
async function tryLock(file: string): Promise<Db> {
  const db = await Db.open(file);
  try {
    await db.exec('PRAGMA busy_timeout = 0');
    // Before locking_mode=EXCLUSIVE, so the read it needs does not keep a SHARED lock that would
    // make a concurrent starter's BEGIN EXCLUSIVE (and then ours) fail. No journal file next to
    // the lock: its content does not matter, only that it is held.
    await db.exec('PRAGMA journal_mode = MEMORY');
    await db.exec('PRAGMA locking_mode = EXCLUSIVE');
    await db.exec('BEGIN EXCLUSIVE');
    await db.exec('CREATE TABLE IF NOT EXISTS owner (pid INTEGER NOT NULL, since TEXT NOT NULL)');
    // A write, so that locking_mode=EXCLUSIVE keeps the EXCLUSIVE lock after COMMIT.
    await db.exec('DELETE FROM owner');
    await db.run('INSERT INTO owner (pid, since) VALUES (?, ?)', [process.pid, new Date().toISOString()]);
    await db.exec('COMMIT');
    return db;
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }
}

/** The holder as owner.json says, or null while it is being written (or was never, by an older version). */
export function readOwnerInfo(dir: string): OwnerInfo | null {
  try {
    const o = JSON.parse(readFileSync(join(dir, OWNER_INFO_FILE), 'utf8')) as Partial<OwnerInfo>;
    return typeof o.pid === 'number' && typeof o.since === 'string' ? o as OwnerInfo : null;
  } catch {
    return null;
  }
}

function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  if (s < 172_800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86_400)} days ago`;
}

function inUseMessage(dir: string, holder: OwnerInfo | null, now: number): string {
  if (!holder) return `data dir ${dir} is in use by another process (it is starting; ${OWNER_INFO_FILE} does not name it yet); stop it first or give another data dir`;
  const who = holder.pid === process.pid && holder.host === hostname() ? `this process (pid ${holder.pid})` : `pid ${holder.pid}`;
  const t = Date.parse(holder.since);
  return `data dir ${dir} is in use by ${who}${holder.command ? `, ${holder.command},` : ''} since ${holder.since}`
    + `${Number.isFinite(t) ? ` (${ago(now - t)})` : ''}${holder.host && holder.host !== hostname() ? ` on host ${holder.host}` : ''}; stop it first or give another data dir`;
}

/**
 * Take the lock of `dir` (which must exist) for `command`, or throw DataDirInUseError naming the
 * holder. Waits only long enough to tell a simultaneous start from an owner (a few attempts, about
 * 250 ms): a second owner is a mistake to report, not a turn to wait for. `infoFile:
 * false` writes no owner.json (a caller with an owner file of its own, like a staging dir);
 * `attempts: 1` only probes (is the owner alive?).
 */
export async function acquireOwnerLock(dir: string, command: string, o: { infoFile?: boolean; attempts?: number } = {}): Promise<OwnerLock> {
  const root = resolve(dir);
  // A lock file another user made (a `sudo braid gateway` once) or a read-only dir: say which file.
  const cannot = (err: unknown) => new BraidError('BRAID_ERR_DATA_DIR', `cannot take the lock of data dir ${root} (${join(root, OWNER_LOCK_FILE)}): ${(err as Error).message}`, 500, { cause: err });
  let db: Db | null = null;
  for (let attempt = 1; db === null; attempt++) {
    try {
      db = await tryLock(join(root, OWNER_LOCK_FILE));
    } catch (err) {
      if (!isBusy(err)) throw cannot(err);
      // Two processes starting at the same instant can each make the other's attempt fail; a short
      // random wait lets one of them win. A real owner is still there after the last attempt.
      if (attempt >= (o.attempts ?? LOCK_ATTEMPTS)) throw new DataDirInUseError(inUseMessage(root, readOwnerInfo(root), Date.now()), { cause: err });
      await new Promise((r) => setTimeout(r, 30 + Math.random() * 70));
    }
  }
  const info: OwnerInfo = { pid: process.pid, host: hostname(), command, since: new Date().toISOString() };
  const file = join(root, OWNER_INFO_FILE);
  const withInfo = o.infoFile !== false;
  if (withInfo) {
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(info)}\n`, { mode: 0o600 });
    renameSync(tmp, file);
  }
  let released: Promise<void> | null = null;
  return {
    dir: root,
    info,
    release: () => (released ??= (async () => {
      // owner.json goes first: whoever reads it while we still hold the lock gets "starting", never a dead pid.
      if (withInfo) rmSync(file, { force: true });
      await db!.close();
    })()),
  };
}

/** chmod that ignores a file we do not own (EPERM) or that is gone: tightening is best effort. */
export function tryChmod(path: string, mode: number): void {
  try { chmodSync(path, mode); } catch { /* not ours, or gone */ }
}
