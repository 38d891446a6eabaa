/**
 * batch.lock: one batch run at a time per data dir, across processes (`braid batch run` beside the
 * cloud's cron). Created with O_EXCL holding {pid, startedAt}; a lock whose pid is gone is stale
 * and taken over. The pid check is per machine: the data dir is local to one.
 */
import { open, readFile, rename, unlink, link, stat } from 'node:fs/promises';
import { BatchRunningError } from './errors.js';

interface LockBody {
  pid: number;
  startedAt: number;
}

/** A lock file just created by another process may be empty for a moment: not stale before this. */
const FRESH_LOCK_MS = 10_000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but is not ours to signal.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readBody(path: string): Promise<LockBody | null> {
  try {
    const body = JSON.parse(await readFile(path, 'utf8')) as LockBody;
    return Number.isInteger(body.pid) ? body : null;
  } catch {
    return null;
  }
}

export class BatchLock {
  private released = false;
  private constructor(readonly path: string, readonly tookOver: LockBody | null) {}

  /** Take the lock or throw BatchRunningError (409) naming the holder. */
  static async acquire(path: string, now: () => number = Date.now): Promise<BatchLock> {
    let tookOver: LockBody | null = null;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fh = await open(path, 'wx');
        try {
          await fh.writeFile(JSON.stringify({ pid: process.pid, startedAt: now() }));
          await fh.sync();
        } finally {
          await fh.close();
        }
        return new BatchLock(path, tookOver);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const body = await readBody(path);
      if (body && alive(body.pid)) {
        throw new BatchRunningError(`a batch run is in progress (pid ${body.pid}, since ${new Date(body.startedAt).toISOString()}; ${path})`, body.pid);
      }
      if (!body) {
        const st = await stat(path).catch(() => null);
        if (st && now() - st.mtimeMs < FRESH_LOCK_MS) throw new BatchRunningError(`a batch run is starting (${path})`);
      }
      // Stale: move it aside under a name of our own, then check we moved the stale one and not a
      // lock another process created since we read it.
      const aside = `${path}.stale-${process.pid}-${now()}`;
      try {
        await rename(path, aside);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      const moved = await readBody(aside);
      if (moved && body && moved.pid !== body.pid && alive(moved.pid)) {
        await link(aside, path).catch(() => undefined);
        await unlink(aside).catch(() => undefined);
        throw new BatchRunningError(`a batch run is in progress (pid ${moved.pid}; ${path})`, moved.pid);
      }
      await unlink(aside).catch(() => undefined);
      tookOver = body;
    }
    throw new BatchRunningError(`could not take ${path}`);
  }

  /** Remove the lock; idempotent. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await unlink(this.path).catch(() => undefined);
  }
}
