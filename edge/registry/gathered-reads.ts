/**
 * The registry rows that CONNECTs ask for, read together: the ids asked for while no read runs go
 * out in one statement at the next turn of the event loop, and those asked for while one runs go in
 * the next one, issued once it has answered. One Statement, prepared once, takes the ids as one
 * JSON array parameter (`json_each`), so a storm of CONNECTs costs one SQLite round trip per group
 * instead of a Statement made, run and finalized per CONNECT on the main thread (17% of the
 * gateway's main thread in a 10k connect storm: docs/benchmarks.md, 2026-12-06 session 9).
 *
 * Not a cache: every id is read by a statement issued after it was asked for, so a device removed
 * or re-keyed by another process (`braid device remove|rotate`, committed before the CONNECT came)
 * is seen as such by that CONNECT [INV-7].
 */
import type sqlite3 from 'sqlite3';

export interface CredentialRow {
  secret: string;
  updated_at: number;
}

const READ_ROWS = 'SELECT id, secret, updated_at FROM devices WHERE id IN (SELECT value FROM json_each(?))';

/** Ids read by one statement at most; the rest wait for the next one (bounds a read's time). */
export const MAX_IDS_PER_READ = 500;

interface Waiter {
  resolve: (row: CredentialRow | undefined) => void;
  reject: (err: unknown) => void;
}

export class GatheredReads {
  private readonly waiting = new Map<string, Waiter[]>();
  /** A read is issued or scheduled: new ids wait for the one after it. */
  private busy = false;
  private closed: Promise<void> | null = null;
  private idle: (() => void) | null = null;
  /** Statements run and ids read (for tests and the benchmark's notes). */
  readonly stats = { statements: 0, ids: 0 };

  private constructor(private readonly stmt: sqlite3.Statement) {}

  static prepare(raw: sqlite3.Database): Promise<GatheredReads> {
    return new Promise((resolve, reject) => {
      const stmt: sqlite3.Statement = raw.prepare(READ_ROWS, (err: Error | null) => (err ? reject(err) : resolve(new GatheredReads(stmt))));
    });
  }

  /** The row of device `id` as a statement issued from now on reads it; undefined if not registered. */
  read(id: string): Promise<CredentialRow | undefined> {
    if (this.closed) return Promise.reject(new Error('the device registry is closed'));
    return new Promise((resolve, reject) => {
      const list = this.waiting.get(id);
      if (list) list.push({ resolve, reject });
      else this.waiting.set(id, [{ resolve, reject }]);
      if (!this.busy) {
        this.busy = true;
        // The CONNECTs parsed in this turn of the event loop go together.
        setImmediate(() => this.next());
      }
    });
  }

  private next(): void {
    if (this.waiting.size === 0) {
      this.busy = false;
      this.idle?.();
      return;
    }
    const batch = new Map<string, Waiter[]>();
    for (const [id, list] of this.waiting) {
      if (batch.size >= MAX_IDS_PER_READ) break;
      batch.set(id, list);
    }
    for (const id of batch.keys()) this.waiting.delete(id);
    this.stats.statements++;
    this.stats.ids += batch.size;
    this.stmt.all(JSON.stringify([...batch.keys()]), (err: Error | null, rows: Array<CredentialRow & { id: string }>) => {
      if (err) {
        for (const list of batch.values()) for (const w of list) w.reject(err);
      } else {
        const byId = new Map<string, CredentialRow>();
        for (const r of rows) byId.set(r.id, r);
        for (const [id, list] of batch) {
          const row = byId.get(id);
          for (const w of list) w.resolve(row);
        }
      }
      // Those that came meanwhile: at once (they waited a whole read already).
      this.next();
    });
  }

  /** Refuse new reads, answer those asked for, finalize the statement (before its connection closes). */
  close(): Promise<void> {
    this.closed ??= (async () => {
      if (this.busy) await new Promise<void>((resolve) => { this.idle = resolve; });
      await new Promise<void>((resolve) => this.stmt.finalize(() => resolve()));
    })();
    return this.closed;
  }
}
