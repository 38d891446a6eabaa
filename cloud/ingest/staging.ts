/**
 * The staging area (docs/cloud-storage.md): `staging/<procId>/<segment>.ndjson`, one directory per
 * ingest process. A segment file holds lines `{"g": gateway, "r": [[seq, epoch, device, metric,
 * ts, value], ...]}\n`, appended and fsynced before the 2xx [INV-1]. Who owns a directory is
 * pluggable (staging-owner.ts): the embedded cloud's fcntl lock on `owner.lock` plus `owner.json`
 * (one host), or in cluster mode a lease in the store (the node id is the directory's name),
 * renewed on a timer. Directories of dead owners are adopted (their segment files renamed into
 * ours, atomically, so two adopters never both take one) and sealed.
 */
import { randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, open, readFile, readdir, rename, rmdir, truncate, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from '../../shared/logger.js';
import { OWNER_LOCK_FILE } from '../../shared/owner-lock.js';
import type { SegmentImage } from './segment-image.js';
import { LeaseOwnership, LockOwnership, OWNER_FILE, type StagingLease, type StagingOwnership } from './staging-owner.js';
import { type ReadingColumns, columnsJson } from './columns.js';
import type { ReadingTuple } from './validate.js';

export type { StagingLease } from './staging-owner.js';
export const SEGMENT_EXT = '.ndjson';
/** readSegment gives the event loop a turn after about this many rows. */
const YIELD_EVERY_ROWS = 20_000;

/** fsync a directory: makes a new, renamed or deleted entry in it durable. */
export async function fsyncDir(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try { await fh.sync(); } finally { await fh.close(); }
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
  /** The lines appended so far, parsed (the committer's, for the seal); null when the file must be read. */
  image: SegmentImage | null = null;
  private readonly fh: FileHandle;
  private closed = false;

  private constructor(id: string, path: string, fh: FileHandle, createdAt: number) {
    this.id = id;
    this.path = path;
    this.fh = fh;
    this.createdAt = createdAt;
  }

  /** Create the file (never an existing one) and fsync its directory, so the entry survives a crash [INV-1]. */
  static async create(dir: string, now: number, id = newSegmentId(now)): Promise<OpenSegment> {
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

  /** Append several buffers in order, in one writev when it takes them all. */
  async appendAll(bufs: Buffer[]): Promise<void> {
    if (bufs.length === 1) return this.append(bufs[0]);
    const total = bufs.reduce((n, b) => n + b.length, 0);
    const { bytesWritten } = await this.fh.writev(bufs);
    if (bytesWritten < total) await this.append(Buffer.concat(bufs, total).subarray(bytesWritten));
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
export function segmentLine(gateway: string, rows: ReadingColumns): Buffer {
  return Buffer.from(`{"g":${JSON.stringify(gateway)},"r":${columnsJson(rows)}}\n`, 'utf8');
}

const LINE_END = Buffer.from('}\n', 'utf8');

/**
 * The same line with `json`, the rows' JSON as a request held it (a JSON array without a newline
 * byte), taken as it is: no serialization. readSegment reads it back to the same rows. In
 * three parts, for a writev: the request's bytes are not copied either.
 */
export function segmentLineOf(gateway: string, json: Buffer): Buffer[] {
  return [Buffer.from(`{"g":${JSON.stringify(gateway)},"r":`, 'utf8'), json, LINE_END];
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

/** This process's staging directory, and the adoption of dead owners' ones. */
export class StagingArea {
  readonly root: string;
  readonly procId: string;
  readonly dir: string;
  private readonly log: Logger;
  private readonly owner: StagingOwnership;

  /** `lease`: cluster mode's ownership (a lease in the store); absent, the fcntl owner lock of one host. */
  constructor(dataDir: string, log: Logger, now = Date.now(), lease: StagingLease | null = null) {
    this.root = join(dataDir, 'staging');
    this.procId = `${now}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.dir = join(this.root, this.procId);
    this.log = log;
    this.owner = lease ? new LeaseOwnership(lease, log) : new LockOwnership();
  }

  /** Which ownership this area uses. */
  get ownership(): 'lock' | 'lease' {
    return this.owner.kind;
  }

  /** Create our directory and take it (the owner lock and file, or a registered lease). */
  async open(): Promise<void> {
    // The process's own state (readings not yet in master/): its user only.
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    await mkdir(this.dir, { mode: 0o700 });
    await this.owner.acquire(this.dir, this.procId);
    await fsyncDir(this.dir);
    await fsyncDir(this.root);
  }

  /** Segment files in our directory (adopted ones included), oldest first. */
  async segments(): Promise<Array<{ id: string; path: string }>> {
    const names = (await readdir(this.dir)).filter((n) => n.endsWith(SEGMENT_EXT)).sort();
    return names.map((n) => ({ id: n.slice(0, -SEGMENT_EXT.length), path: join(this.dir, n) }));
  }

  /**
   * Move the segment files of dead owners into our directory and drop their directories. Returns
   * how many were adopted. With the lock, a directory of another host is left alone (its pid means
   * nothing here); with a lease, a directory is adopted once its node is claimed for us.
   */
  async adoptOrphans(): Promise<number> {
    let adopted = 0;
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch {
      return 0;
    }
    const others = names.filter((n) => n !== this.procId);
    if (others.length === 0) return 0;
    await this.owner.beginScan();
    for (const name of others) {
      const dir = join(this.root, name);
      if (!(await this.owner.mayAdopt(dir, name))) continue;
      let files: string[];
      try {
        files = await readdir(dir);
      } catch {
        continue;
      }
      let moved = 0;
      for (const f of files.filter((n) => n.endsWith(SEGMENT_EXT))) {
        try {
          // rename is atomic: of two processes adopting at once, one gets the file, the other ENOENT.
          await rename(join(dir, f), join(this.dir, f));
          moved++;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
      if (moved > 0) await fsyncDir(this.dir);
      adopted += moved;
      await unlink(join(dir, OWNER_FILE)).catch(() => undefined);
      await unlink(join(dir, OWNER_LOCK_FILE)).catch(() => undefined);
      await rmdir(dir).catch(() => undefined);
      this.log.info({ from: name, segments: moved, ownership: this.owner.kind }, 'adopted the staging segments of a dead ingest process');
    }
    if (adopted > 0) await fsyncDir(this.root).catch(() => undefined);
    return adopted;
  }

  async removeSegment(path: string): Promise<void> {
    await unlink(path).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err; });
    // Its own dir: a segment of a dir given up after a lease takeover may be removed too (the dir gone with it).
    await fsyncDir(dirname(path)).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err; });
  }

  /** Remove our directory if no segment is left in it (a clean close), and let go of it. */
  async close(): Promise<void> {
    if (this.owner.releaseFirst) await this.owner.release();
    const left = await this.segments().catch(() => []);
    if (left.length > 0) {
      this.log.warn({ segments: left.length, dir: this.dir }, 'staging segments left unsealed; the next ingest process to start adopts them');
    } else {
      await unlink(join(this.dir, OWNER_FILE)).catch(() => undefined);
      await unlink(join(this.dir, OWNER_LOCK_FILE)).catch(() => undefined);
      await rmdir(this.dir).catch(() => undefined);
      await fsyncDir(this.root).catch(() => undefined);
    }
    // A lease ends last: others may claim what is left at once.
    if (!this.owner.releaseFirst) await this.owner.release();
  }

  /**
   * Stop owning this directory without a clean close (the lease was taken over): no renewal, no
   * end, nothing removed; its files are the claimant's.
   */
  abandon(): void {
    this.owner.abandon();
  }
}
