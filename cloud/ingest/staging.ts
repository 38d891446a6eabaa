/**
 * The staging area (docs/cloud-storage.md): `staging/<procId>/<segment>.ndjson`, one directory per
 * ingest process, marked by `owner.json` (pid, host, process start time) and locked by `owner.lock`
 * for the process's life (shared/owner-lock.ts: released by the kernel when it dies, so a live lock
 * is the liveness test; pid and start time only for a dir without one). A segment file holds
 * lines `{"g": gateway, "r": [[seq, epoch, device, metric, ts, value], ...]}\n`, appended and
 * fsynced before the 2xx [INV-1]. Directories of dead processes are adopted (their segment files
 * renamed into ours, atomically, so two starting processes never both take one) and sealed.
 */
import { randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, open, readFile, readdir, rename, rmdir, stat, truncate, unlink, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../../shared/logger.js';
import { OWNER_LOCK_FILE, type OwnerLock, acquireOwnerLock } from '../../shared/owner-lock.js';
import type { ReadingTuple } from './validate.js';

export const SEGMENT_EXT = '.ndjson';
const OWNER_FILE = 'owner.json';
/** A directory without owner.json is being created by someone; after this long, its creator died. */
const UNOWNED_GRACE_MS = 60_000;
/** readSegment gives the event loop a turn after about this many rows. */
const YIELD_EVERY_ROWS = 20_000;

interface Owner { pid: number; host: string; startTime: string | null; startedAt: number }

/** fsync a directory: makes a new, renamed or deleted entry in it durable. */
export async function fsyncDir(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try { await fh.sync(); } finally { await fh.close(); }
}

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

/** `<unix ms>-<pid>-<random>`: unique across processes and restarts; names the master files too. */
export function newSegmentId(now = Date.now()): string {
  return `${now}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** A segment being appended to. */
export class OpenSegment {
  readonly id: string;
  readonly path: string;
  readonly createdAt: number;
  readings = 0;
  private readonly fh: FileHandle;
  private closed = false;

  private constructor(id: string, path: string, fh: FileHandle, createdAt: number) {
    this.id = id;
    this.path = path;
    this.fh = fh;
    this.createdAt = createdAt;
  }

  /** Create the file (never an existing one) and fsync its directory, so the entry survives a crash [INV-1]. */
  static async create(dir: string, now: number): Promise<OpenSegment> {
    const id = newSegmentId(now);
    const path = join(dir, id + SEGMENT_EXT);
    const fh = await open(path, 'wx');
    try {
      await fsyncDir(dir);
    } catch (err) {
      await fh.close();
      throw err;
    }
    return new OpenSegment(id, path, fh, now);
  }

  async append(bytes: Buffer): Promise<void> {
    let off = 0;
    while (off < bytes.length) off += (await this.fh.write(bytes, off, bytes.length - off)).bytesWritten;
  }

  /** fdatasync: the appended bytes and the file size, which is what reading them back needs [INV-1]. */
  async sync(): Promise<void> {
    await this.fh.datasync();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

/** One staging line's bytes. */
export function segmentLine(gateway: string, rows: ReadingTuple[]): Buffer {
  return Buffer.from(`${JSON.stringify({ g: gateway, r: rows })}\n`, 'utf8');
}

/**
 * Read a segment file line by line. A torn last line (a crash mid-append: it was never fsynced,
 * so never acknowledged) is cut off the file. A bad line elsewhere is corruption: throws, and the
 * segment stays for the operator rather than being sealed without it.
 */
export async function readSegment(path: string, onLine: (gateway: string, rows: ReadingTuple[]) => void): Promise<{ lines: number; tornBytes: number }> {
  const buf = await readFile(path);
  let start = 0;
  let lines = 0;
  let sinceYield = 0;
  while (start < buf.length) {
    const nl = buf.indexOf(10, start);
    const end = nl === -1 ? buf.length : nl;
    let doc: { g?: unknown; r?: unknown } | null = null;
    try {
      doc = JSON.parse(buf.toString('utf8', start, end)) as { g?: unknown; r?: unknown };
    } catch { /* judged below */ }
    const ok = nl !== -1 && doc !== null && typeof doc.g === 'string' && Array.isArray(doc.r);
    if (!ok) {
      if (nl === -1 || nl + 1 === buf.length) {
        await truncate(path, start);
        return { lines, tornBytes: buf.length - start };
      }
      throw new Error(`staging segment ${path}: line ${lines + 1} (byte ${start}) is not a staging line; leaving the segment unsealed`);
    }
    onLine(doc!.g as string, doc!.r as ReadingTuple[]);
    lines++;
    start = end + 1;
    // Let ingest requests in between: a million-reading segment is most of a second of parsing.
    sinceYield += (doc!.r as unknown[]).length;
    if (sinceYield >= YIELD_EVERY_ROWS) {
      sinceYield = 0;
      await new Promise((r) => setImmediate(r));
    }
  }
  return { lines, tornBytes: 0 };
}

/** This process's staging directory, and the adoption of dead processes' ones. */
export class StagingArea {
  readonly root: string;
  readonly procId: string;
  readonly dir: string;
  private readonly log: Logger;
  /** Held while this process lives (shared/owner-lock.ts): the liveness test others use on our dir. */
  private lock: OwnerLock | null = null;

  constructor(dataDir: string, log: Logger, now = Date.now()) {
    this.root = join(dataDir, 'staging');
    this.procId = `${now}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.dir = join(this.root, this.procId);
    this.log = log;
  }

  /** Create our directory and its owner file. */
  async open(): Promise<void> {
    // The process's own state (readings not yet in master/): its user only.
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    await mkdir(this.dir, { mode: 0o700 });
    this.lock = await acquireOwnerLock(this.dir, 'braid cloud ingest', { infoFile: false });
    const owner: Owner = { pid: process.pid, host: hostname(), startTime: procStartTime(process.pid), startedAt: Date.now() };
    await writeFile(join(this.dir, OWNER_FILE), JSON.stringify(owner), { flag: 'wx' });
    await fsyncDir(this.dir);
    await fsyncDir(this.root);
  }

  /** Segment files in our directory (adopted ones included), oldest first. */
  async segments(): Promise<Array<{ id: string; path: string }>> {
    const names = (await readdir(this.dir)).filter((n) => n.endsWith(SEGMENT_EXT)).sort();
    return names.map((n) => ({ id: n.slice(0, -SEGMENT_EXT.length), path: join(this.dir, n) }));
  }

  /**
   * Move the segment files of dead processes into our directory and drop their directories.
   * Returns how many were adopted. A directory of another host is left alone: its pid means nothing here.
   */
  async adoptOrphans(): Promise<number> {
    let adopted = 0;
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch {
      return 0;
    }
    for (const name of names) {
      if (name === this.procId) continue;
      const dir = join(this.root, name);
      if (!(await this.isOrphan(dir))) continue;
      let files: string[];
      try {
        files = await readdir(dir);
      } catch {
        continue;
      }
      for (const f of files.filter((n) => n.endsWith(SEGMENT_EXT))) {
        try {
          // rename is atomic: of two processes adopting at once, one gets the file, the other ENOENT.
          await rename(join(dir, f), join(this.dir, f));
          adopted++;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
      if (adopted > 0) await fsyncDir(this.dir);
      await unlink(join(dir, OWNER_FILE)).catch(() => undefined);
      await unlink(join(dir, OWNER_LOCK_FILE)).catch(() => undefined);
      await rmdir(dir).catch(() => undefined);
      this.log.info({ from: name, segments: adopted }, 'adopted the staging segments of a dead ingest process');
    }
    if (adopted > 0) await fsyncDir(this.root).catch(() => undefined);
    return adopted;
  }

  private async isOrphan(dir: string): Promise<boolean> {
    let owner: Owner | null = null;
    try {
      owner = JSON.parse(await readFile(join(dir, OWNER_FILE), 'utf8')) as Owner;
    } catch {
      try {
        const s = await stat(dir);
        return s.isDirectory() && Date.now() - s.mtimeMs > UNOWNED_GRACE_MS;
      } catch {
        return false;
      }
    }
    if (!owner || typeof owner.pid !== 'number') return false;
    if (owner.host !== hostname()) return false;
    // The owner's lock, where it has one, is the sure test: the kernel dropped it if the owner died
    // (a reused pid cannot fake it). Without one (a directory of an older version), pid and start time.
    const locked = await lockHeld(dir);
    return locked === null ? !isAlive(owner) : !locked;
  }

  async removeSegment(path: string): Promise<void> {
    await unlink(path).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err; });
    await fsyncDir(this.dir);
  }

  /** Remove our directory if no segment is left in it (a clean close). */
  async close(): Promise<void> {
    // Released first: a process started next (in this process too, in tests) may adopt what is left.
    await this.lock?.release().catch(() => undefined);
    this.lock = null;
    const left = await this.segments().catch(() => []);
    if (left.length > 0) {
      this.log.warn({ segments: left.length, dir: this.dir }, 'staging segments left unsealed; the next ingest process to start adopts them');
      return;
    }
    await unlink(join(this.dir, OWNER_FILE)).catch(() => undefined);
    await unlink(join(this.dir, OWNER_LOCK_FILE)).catch(() => undefined);
    await rmdir(this.dir).catch(() => undefined);
    await fsyncDir(this.root).catch(() => undefined);
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
