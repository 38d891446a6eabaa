/**
 * Who owns a staging dir (`staging/<procId>/`), and when another process may adopt it: pluggable,
 * one of two.
 *
 * - `LockOwnership` (the embedded cloud, SQLite; the default): an fcntl lock on `owner.lock` held
 *   for the process's life (shared/owner-lock.ts; the kernel drops it when the process dies, kill -9
 *   included) and `owner.json` (pid, host, start time) for a dir without a lock. One host only: a
 *   dir of another host is never adopted, its pid means nothing here.
 * - `LeaseOwnership` (cluster mode, PostgreSQL): a lease in the store (cloud/store/nodes.ts), the
 *   node id being the dir's name, renewed every third of `leaseMs`. A dir is adopted once its node
 *   is claimed for us (its lease ran out by the database's clock, or it ended); a dir no node row
 *   names (its creator died between mkdir and registering, or the row was collected) once it is
 *   older than the unowned grace. No pid or hostname decides anything.
 */
import { readFileSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../../shared/logger.js';
import { OWNER_LOCK_FILE, type OwnerLock, acquireOwnerLock } from '../../shared/owner-lock.js';
import type { NodeRegistry } from '../store/nodes.js';

/** The lock ownership's owner file, beside shared/owner-lock.ts's owner.lock. */
export const OWNER_FILE = 'owner.json';
/** A directory without an owner (owner.json; a nodes row) is being created by someone; after this long, its creator died. */
export const UNOWNED_GRACE_MS = 60_000;

export interface StagingOwnership {
  readonly kind: 'lock' | 'lease';
  /** Take our freshly made dir for this process (named `procId`): from now on others leave it alone. */
  acquire(dir: string, procId: string): Promise<void>;
  /** Called before a scan of the other dirs. */
  beginScan(): Promise<void>;
  /** Whether the dir `name` (another process's) is ours to adopt now: its owner is gone, and for a lease, claimed for us. */
  mayAdopt(dir: string, name: string): Promise<boolean>;
  /** Let go at a clean close. */
  release(): Promise<void>;
  /** Whether release() comes before our dir is cleaned up at close (the lock) or after (the lease). */
  readonly releaseFirst: boolean;
  /** Stop holding without ending (fenced: what is left is another node's now). */
  abandon(): void;
}

interface Owner { pid: number; host: string; startTime: string | null; startedAt: number }

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot): tells a reused pid apart. */
function procStartTime(pid: number): string | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function isAlive(owner: Owner): boolean {
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    // EPERM: the pid exists but belongs to another user, so it is alive.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const now = procStartTime(owner.pid);
  return owner.startTime === null || now === null || now === owner.startTime;
}

/** Whether `dir` is a directory older than the unowned grace (by its mtime). */
async function unownedLongEnough(dir: string): Promise<boolean> {
  try {
    const s = await stat(dir);
    return s.isDirectory() && Date.now() - s.mtimeMs > UNOWNED_GRACE_MS;
  } catch {
    return false;
  }
}

/** Whether a live process holds the lock of a staging dir; null where it has no lock file (or it cannot be tried). */
async function lockHeld(dir: string): Promise<boolean | null> {
  try {
    await stat(join(dir, OWNER_LOCK_FILE));
  } catch {
    return null;
  }
  try {
    const probe = await acquireOwnerLock(dir, 'braid cloud ingest (adopting)', { infoFile: false, attempts: 1 });
    await probe.release();
    return false;
  } catch (err) {
    return (err as { code?: string }).code === 'BRAID_ERR_DATA_DIR_IN_USE' ? true : null;
  }
}

/** The embedded cloud's ownership: an fcntl lock and owner.json, on one host. */
export class LockOwnership implements StagingOwnership {
  readonly kind = 'lock' as const;
  /** Released first: a process started next (in this process too, in tests) may adopt what is left. */
  readonly releaseFirst = true;
  /** Held while this process lives: the liveness test others use on our dir. */
  private lock: OwnerLock | null = null;

  async acquire(dir: string): Promise<void> {
    this.lock = await acquireOwnerLock(dir, 'braid cloud ingest', { infoFile: false });
    const owner: Owner = { pid: process.pid, host: hostname(), startTime: procStartTime(process.pid), startedAt: Date.now() };
    await writeFile(join(dir, OWNER_FILE), JSON.stringify(owner), { flag: 'wx' });
  }

  async beginScan(): Promise<void> { /* nothing to prefetch */ }

  async mayAdopt(dir: string): Promise<boolean> {
    let owner: Owner | null = null;
    try {
      owner = JSON.parse(await readFile(join(dir, OWNER_FILE), 'utf8')) as Owner;
    } catch {
      return unownedLongEnough(dir);
    }
    if (!owner || typeof owner.pid !== 'number') return false;
    if (owner.host !== hostname()) return false;
    // The owner's lock, where it has one, is the sure test: the kernel dropped it if the owner died
    // (a reused pid cannot fake it). Without one (a directory of an older version), pid and start time.
    const locked = await lockHeld(dir);
    return locked === null ? !isAlive(owner) : !locked;
  }

  async release(): Promise<void> {
    await this.lock?.release().catch(() => undefined);
    this.lock = null;
  }

  abandon(): void {
    void this.release();
  }
}

export interface StagingLease {
  /** The store's node registry (CloudStore.nodes). */
  registry: NodeRegistry;
  /** The lease's length, ms; renewed every third of it. */
  leaseMs: number;
  /** The manifest version this node serves, reported with each renewal (null: none yet). */
  servedVersion?: () => number | null;
  /** A renewal found the lease taken over (claimed by another node, or ended): the owner stops using this dir. */
  onFenced?: (node: string) => void;
}

/** Cluster mode's ownership: a lease in the store, renewed on a timer; adoption by claim. */
export class LeaseOwnership implements StagingOwnership {
  readonly kind = 'lease' as const;
  /** Ended only after our dir is sealed and cleaned up: ending lets others claim at once. */
  readonly releaseFirst = false;
  private readonly l: StagingLease;
  private readonly log: Logger;
  private node: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private renewing: Promise<void> | null = null;
  private stopped = false;
  /** The live nodes as the scan began: their dirs are not tried. */
  private liveNow = new Set<string>();

  constructor(lease: StagingLease, log: Logger) {
    this.l = lease;
    this.log = log;
  }

  async acquire(_dir: string, procId: string): Promise<void> {
    await this.l.registry.register({ node: procId, host: hostname(), pid: process.pid, startedAt: Date.now() }, this.l.leaseMs);
    this.node = procId;
    this.timer = setInterval(() => { this.renewing ??= this.renew().finally(() => { this.renewing = null; }); }, Math.max(1, Math.floor(this.l.leaseMs / 3)));
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    const node = this.node;
    if (!node || this.stopped) return;
    let fenced: boolean;
    try {
      ({ fenced } = await this.l.registry.renew(node, this.l.leaseMs, this.l.servedVersion?.() ?? null));
    } catch (err) {
      // The store out of reach: retried at the next tick. If it stays away the lease runs out, another
      // node may claim our staging, and our commits are refused meanwhile (they need the store too).
      this.log.warn({ err, node }, 'renewing the staging lease failed; retrying');
      return;
    }
    if (!fenced || this.stopped) return;
    this.stopTimer();
    this.log.error({ node }, 'this node\'s staging lease was taken over (it ran out and another node claimed the staging, or it ended)');
    this.l.onFenced?.(node);
  }

  async beginScan(): Promise<void> {
    this.liveNow = new Set((await this.l.registry.live()).map((n) => n.node));
  }

  async mayAdopt(dir: string, name: string): Promise<boolean> {
    if (!this.node || this.stopped || this.liveNow.has(name)) return false;
    if (await this.l.registry.claim(name, this.node)) return true;
    if (await this.l.registry.known(name)) return false;
    // No node row: by its age, unless an embedded cloud of this host holds it (a mix this mode does not support, but not a reason to take its files).
    if (await lockHeld(dir)) return false;
    return unownedLongEnough(dir);
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async release(): Promise<void> {
    this.stopped = true;
    this.stopTimer();
    await this.renewing?.catch(() => undefined);
    if (!this.node) return;
    try {
      await this.l.registry.end(this.node);
    } catch (err) {
      this.log.warn({ err, node: this.node }, 'ending the staging lease failed; it runs out by itself');
    }
  }

  abandon(): void {
    this.stopped = true;
    this.stopTimer();
  }
}
