/**
 * The batch layer's state behind one interface (docs/cluster-store.md): `BatchStore` (the lock, the
 * cron slot, the snapshot, batch_runs, meta) and `ViewPointer` (the live manifest). Two
 * implementations: SQLite here (the embedded cloud, today's code: cloud.db, the O_EXCL batch.lock
 * file, views/manifest.json replaced by rename) and PostgreSQL (cloud/store/pg/batch.ts, cluster
 * mode). One conformance suite holds them equal (test/support/store-conformance/batch.ts).
 */
import { stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Db } from '../../shared/sqlite.js';
import { openCloudDb } from '../store/schema.js';
import { ManifestInvalidError } from './errors.js';
import { BatchLock } from './lock.js';
import { MANIFEST_FILE, readManifest, writeManifest, type Manifest } from './manifest.js';
import {
  closeInterruptedRuns, deleteMeta, finishRun, getMeta, insertRun, lastSuccessAt, listRuns, setMeta, takeSnapshot, updateRunProgress,
  type RunKind, type RunRow, type RunTrigger, type Snapshot,
} from './state.js';
import type { SinkOutcome } from './sink.js';

/** A held batch lock; `release` is idempotent. */
export interface BatchLockHandle {
  release(): Promise<void>;
}

export interface FinishedRun {
  endedAt: number; outcome: 'ok' | 'failed'; rowsRead: number; partitions: number; version: number | null;
  watermark: Record<string, number> | null; sinks: Record<string, SinkOutcome> | null; error: string | null; kind?: RunKind;
}

export interface BatchStore {
  readonly kind: 'sqlite' | 'postgres';
  /**
   * Mutual exclusion of batch runs across processes (and nodes); released by `release()` or when
   * the holder dies. Rejects with BatchRunningError (BRAID_ERR_BATCH_RUNNING, 409) naming the
   * holder when another one holds it. `holder` names this process in that message (PostgreSQL).
   */
  tryLock(holder: string): Promise<BatchLockHandle>;
  /** One run per cron slot (the scheduled time, ms): true for exactly one caller per slot. */
  claimSlot(slotMs: number, node: string): Promise<boolean>;
  /** E and the days and files to rebuild, in one consistent read (state.ts's takeSnapshot). */
  snapshot(prev: Record<string, number> | null): Promise<Snapshot>;
  insertRun(kind: RunKind, trigger: RunTrigger, startedAt: number): Promise<number>;
  updateRunProgress(id: number, rowsRead: number, partitions: number): Promise<void>;
  finishRun(id: number, r: FinishedRun): Promise<void>;
  /** Rows left 'running' by a process that died: whoever holds the lock may close them. */
  closeInterruptedRuns(now: number): Promise<void>;
  /** The newest runs first. */
  listRuns(limit?: number): Promise<RunRow[]>;
  lastSuccessAt(): Promise<number | null>;
  /** A JSON value; null when absent (or unreadable). */
  getMeta<T>(key: string): Promise<T | null>;
  setMeta(key: string, value: unknown): Promise<void>;
  deleteMeta(key: string): Promise<void>;
}

/** The live manifest. */
export interface ViewPointer {
  /**
   * Compare-and-set from the version `expected` (null: no manifest, or one that cannot be read) to
   * `next`, every file it names durable first; false when the live version is not `expected`
   * (another run published).
   */
  publish(expected: number | null, next: Manifest): Promise<boolean>;
  /** The live manifest, null before the first; ManifestInvalidError when it cannot be read. */
  current(): Promise<Manifest | null>;
  /** `cb(version)` once per newly seen live version, whoever published it; returns the unsubscribe. */
  onPublished(cb: (version: number) => void): () => void;
}

/** What a batch run and the scheduler use. */
export interface BatchStores {
  batch: BatchStore;
  views: ViewPointer;
}

/** This process, as named in a batch lock holder or a slot claim. */
export const processName = (): string => `${hostname()}:${process.pid}`;

/** meta key of the newest cron slot claimed (SQLite: slots only go forward). */
export const SLOT_KEY = 'batch.slot';

/** cloud.db and the batch.lock file of one data dir (today's code). */
export class SqliteBatchStore implements BatchStore {
  readonly kind = 'sqlite' as const;
  constructor(readonly db: Db, private readonly lockPath: string, private readonly now: () => number = Date.now) {}

  /** batch.lock: O_EXCL with {pid, startedAt}, a dead pid's lock taken over (lock.ts). */
  async tryLock(_holder: string): Promise<BatchLockHandle> {
    return BatchLock.acquire(this.lockPath, this.now);
  }

  /**
   * One row in meta, moved forward only: of callers racing for one slot one moves it (changes = 1);
   * a slot at or below the last claimed one is never claimed again.
   */
  async claimSlot(slotMs: number, _node: string): Promise<boolean> {
    const r = await this.db.run(`INSERT INTO meta (key, value) VALUES (?, ?)
      ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE CAST(meta.value AS INTEGER) < CAST(excluded.value AS INTEGER)`,
    [SLOT_KEY, JSON.stringify(slotMs)]);
    return r.changes === 1;
  }

  snapshot(prev: Record<string, number> | null): Promise<Snapshot> { return takeSnapshot(this.db, prev); }
  insertRun(kind: RunKind, trigger: RunTrigger, startedAt: number): Promise<number> { return insertRun(this.db, kind, trigger, startedAt); }
  updateRunProgress(id: number, rowsRead: number, partitions: number): Promise<void> { return updateRunProgress(this.db, id, rowsRead, partitions); }
  finishRun(id: number, r: FinishedRun): Promise<void> { return finishRun(this.db, id, r); }
  closeInterruptedRuns(now: number): Promise<void> { return closeInterruptedRuns(this.db, now); }
  listRuns(limit = 20): Promise<RunRow[]> { return listRuns(this.db, limit); }
  lastSuccessAt(): Promise<number | null> { return lastSuccessAt(this.db); }
  getMeta<T>(key: string): Promise<T | null> { return getMeta<T>(this.db, key); }
  setMeta(key: string, value: unknown): Promise<void> { return setMeta(this.db, key, value); }
  deleteMeta(key: string): Promise<void> { return deleteMeta(this.db, key); }
}

/** How often the SQLite pointer stats views/manifest.json for onPublished. */
const FILE_POLL_MS = 250;

/**
 * views/manifest.json, replaced by rename (manifest.ts). publish's compare and rename run inside a
 * `BEGIN IMMEDIATE` on cloud.db: SQLite's write lock is the mutex between processes (freed when a
 * holder dies), and no row is written.
 */
export class SqliteViewPointer implements ViewPointer {
  constructor(private readonly db: Db, private readonly viewsDir: string) {}

  async publish(expected: number | null, next: Manifest): Promise<boolean> {
    await this.db.exec('BEGIN IMMEDIATE');
    try {
      const live = await this.liveVersion();
      const ok = live === expected;
      if (ok) await writeManifest(this.viewsDir, next);
      await this.db.exec('COMMIT');
      return ok;
    } catch (err) {
      await this.db.exec('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  current(): Promise<Manifest | null> {
    return readManifest(this.viewsDir);
  }

  /** The file's version; null when there is none or it cannot be read (--full rewrites it). */
  private async liveVersion(): Promise<number | null> {
    try {
      return (await readManifest(this.viewsDir))?.version ?? null;
    } catch (err) {
      if (err instanceof ManifestInvalidError) return null;
      throw err;
    }
  }

  onPublished(cb: (version: number) => void): () => void {
    const file = join(this.viewsDir, MANIFEST_FILE);
    let seen: string | null | undefined; // undefined: not looked yet
    let last: number | null = null;
    let busy = false;
    const look = async () => {
      if (busy) return;
      busy = true;
      try {
        const st = await stat(file).catch(() => null);
        const key = st ? `${st.ino}:${st.size}:${st.mtimeMs}` : null;
        if (key === seen) return;
        const first = seen === undefined;
        seen = key;
        const v = await this.liveVersion().catch(() => null);
        if (v !== null && v !== last) {
          const fire = !first;
          last = v;
          if (fire) cb(v);
        }
      } finally {
        busy = false;
      }
    };
    void look();
    const timer = setInterval(() => { void look(); }, FILE_POLL_MS);
    timer.unref();
    return () => clearInterval(timer);
  }
}

/** The SQLite stores of a data dir on a connection of their own; `close` closes it. */
export async function openSqliteBatchStores(dataDir: string, now: () => number = Date.now): Promise<BatchStores & { close(): Promise<void> }> {
  const db = await openCloudDb(join(dataDir, 'cloud.db'));
  return sqliteBatchStores(db, dataDir, now, () => db.close());
}

/** The SQLite stores over an open cloud.db connection (not closed by `close` unless told). */
export function sqliteBatchStores(db: Db, dataDir: string, now: () => number = Date.now, close: () => Promise<void> = async () => undefined): BatchStores & { close(): Promise<void> } {
  return {
    batch: new SqliteBatchStore(db, join(dataDir, 'batch.lock'), now),
    views: new SqliteViewPointer(db, join(dataDir, 'views')),
    close,
  };
}
