/**
 * The batch layer's state in PostgreSQL (cluster mode, docs/cluster-store.md): the BatchStore and
 * ViewPointer of cloud/batch/store.ts.
 *
 * - The lock is `pg_try_advisory_lock` on a connection of its own, held for the run: the server
 *   frees it when that session ends (release, the process dying, the connection cut; TCP
 *   keepalives on), so no lock outlives its holder. The holder is named by that connection's
 *   application_name, read back from pg_stat_activity by whoever finds the lock taken.
 * - A cron slot is a row of batch_slots (migration 2): of the nodes that fire for one slot, the one
 *   whose INSERT ... ON CONFLICT DO NOTHING inserts runs.
 * - The snapshot is one REPEATABLE READ READ ONLY transaction: E and the catalog agree.
 * - The live manifest is view_pointer's one row: publish is a compare-and-set UPDATE on the version
 *   plus `NOTIFY manifest_published` in the same transaction (delivered on commit), then
 *   views/manifest.json is written for outside readers (DuckDB, Spark). onPublished LISTENs on one
 *   connection and polls the row every second as well (the fallback while LISTEN's connection is
 *   down, or a notification lost with it).
 */
import pg from 'pg';
import type { Logger } from '../../../shared/logger.js';
import { BatchRunningError } from '../../batch/errors.js';
import { changedSpans, epochsFromSql, type MasterFile, type RunKind, type RunRow, type RunTrigger, type Snapshot } from '../../batch/state.js';
import { emptyViews, writeManifest, type Manifest } from '../../batch/manifest.js';
import { VIEW_NAMES, type ViewName } from '../../batch/sink.js';
import type { BatchLockHandle, BatchStore, FinishedRun, ViewPointer } from '../../batch/store.js';
import { watermark, watermarkFrom, type EpochRow } from '../../ingest/watermark.js';
import { pgTransaction } from './pool.js';

/** The batch lock's advisory key: 'braid-bt' as 8 ASCII bytes (the migration lock is 'braid-mg'). */
export const BATCH_LOCK_KEY = '7093839468342108788';
/** The same key as pg_locks shows it: (classid, objid) = its high and low 32 bits, objsubid 1. */
const LOCK_HI = 1651663209;
const LOCK_LO = 1680695924;
/** The NOTIFY channel of a published manifest; the payload is its version. */
export const MANIFEST_CHANNEL = 'manifest_published';
/** application_name of a lock holder's connection: this prefix, then the holder. */
const LOCK_APP = 'braid-batch';
/** Slots older than this are deleted when a new one is claimed. */
const SLOT_RETAIN_MS = 30 * 24 * 3600_000;

export interface PgBatchOptions {
  pool: pg.Pool;
  /** The database's URL: the lock and LISTEN connections are opened apart from the pool. */
  url: string;
  /** For the dedicated connections. Default 5,000 ms. */
  connectionTimeoutMs?: number;
  logger?: Logger;
}

function dedicated(o: PgBatchOptions, applicationName: string): pg.Client {
  return new pg.Client({
    connectionString: o.url,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    connectionTimeoutMillis: o.connectionTimeoutMs ?? 5_000,
    application_name: applicationName.slice(0, 63),
  });
}

interface RawRun {
  id: number; kind: RunKind; trigger: RunTrigger; started_at: number; ended_at: number | null;
  outcome: RunRow['outcome']; rows_read: number | null; partitions: number | null; version: number | null;
  watermark: Record<string, number> | null; sinks: RunRow['sinks']; error: string | null;
}

const json = (v: unknown): string | null => (v === null || v === undefined ? null : JSON.stringify(v));

/** The gateways' epochs from prev[g] on (cloud/batch/state.ts epochsFromSql); $1: prev as JSON. */
const EPOCHS_FROM_SQL = epochsFromSql('SELECT key, value::bigint FROM jsonb_each_text($1::jsonb)');

export class PgBatchStore implements BatchStore {
  readonly kind = 'postgres' as const;
  private readonly pool: pg.Pool;
  constructor(private readonly o: PgBatchOptions) {
    this.pool = o.pool;
  }

  async tryLock(holder: string): Promise<BatchLockHandle> {
    const client = dedicated(this.o, `${LOCK_APP} ${holder}`);
    let lost = false;
    // The server ending the session (the lock freed with it) must not crash the process.
    client.on('error', (err) => {
      lost = true;
      this.o.logger?.warn({ err: err.message }, 'PostgreSQL: the batch lock\'s connection failed; the lock is freed');
    });
    await client.connect();
    let got = false;
    try {
      got = (await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [BATCH_LOCK_KEY])).rows[0].ok;
    } finally {
      if (!got) await client.end().catch(() => undefined);
    }
    if (!got) {
      const holders = (await this.pool.query<{ app: string; pid: number }>(
        `SELECT a.application_name AS app, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::oid AND l.objid = $2::oid AND l.objsubid = 1`,
        [LOCK_HI, LOCK_LO])).rows;
      const who = holders.map((h) => h.app.replace(`${LOCK_APP} `, '') || `backend ${h.pid}`).join(', ') || 'a holder that just left';
      throw new BatchRunningError(`a batch run is in progress (${who}; PostgreSQL advisory lock)`);
    }
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        if (!lost) await client.query('SELECT pg_advisory_unlock($1::bigint)', [BATCH_LOCK_KEY]).catch(() => undefined);
        // Ending the session frees the lock whatever the unlock did.
        await client.end().catch(() => undefined);
      },
    };
  }

  async claimSlot(slotMs: number, node: string): Promise<boolean> {
    const r = await this.pool.query(
      `INSERT INTO batch_slots (slot, node, claimed_at) VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
       ON CONFLICT (slot) DO NOTHING`, [slotMs, node]);
    if (r.rowCount === 1) await this.pool.query('DELETE FROM batch_slots WHERE slot < $1', [slotMs - SLOT_RETAIN_MS]).catch(() => undefined);
    return r.rowCount === 1;
  }

  snapshot(prev: Record<string, number> | null): Promise<Snapshot> {
    return pgTransaction(this.pool, async (client) => {
      const sealed = (await client.query<{ gateway: string; from: number; to: number }>(
        'SELECT gateway, from_seq AS "from", to_seq AS "to" FROM sealed')).rows;
      const gaps = (await client.query<{ gateway: string; from: number; to: number }>(
        'SELECT gateway, from_seq AS "from", to_seq AS "to" FROM gaps')).rows;
      // Incremental: E from the E before and the epochs since (state.ts takeSnapshot), else from every epoch.
      const since = prev === null ? null : watermarkFrom(prev, (await client.query<EpochRow>(EPOCHS_FROM_SQL, [JSON.stringify(prev)])).rows, sealed, gaps);
      const e = since ?? watermark((await client.query<{ gateway: string; epoch: number; firstSeq: number; lastSeq: number }>(
        'SELECT gateway, epoch, first_seq AS "firstSeq", last_seq AS "lastSeq" FROM epochs')).rows, sealed, gaps);
      let days: string[];
      if (prev === null) {
        days = (await client.query<{ day: string }>('SELECT DISTINCT day COLLATE "C" AS day FROM files ORDER BY 1')).rows.map((r) => r.day);
      } else {
        const set = new Set<string>();
        for (const s of changedSpans(prev, e)) {
          const rows = (await client.query<{ day: string }>(
            `SELECT DISTINCT f.day FROM file_gateways fg JOIN files f ON f.path = fg.path
             WHERE fg.gateway = $1 AND fg.max_epoch > $2 AND fg.min_epoch <= $3`, [s.gateway, s.lo, s.hi])).rows;
          for (const r of rows) set.add(r.day);
        }
        days = [...set].sort();
      }
      // ORDER BY day, path in C collation order, as SQLite's BINARY compare sorts.
      const files = days.length === 0 ? [] : (await client.query<MasterFile>(
        'SELECT path, day, rows FROM files WHERE day = ANY($1::text[]) ORDER BY day COLLATE "C", path COLLATE "C"', [days])).rows;
      return { watermark: e, days, files };
    }, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  }

  async insertRun(kind: RunKind, trigger: RunTrigger, startedAt: number): Promise<number> {
    const r = await this.pool.query<{ id: number }>(
      `INSERT INTO batch_runs (kind, trigger, started_at, outcome) VALUES ($1, $2, $3, 'running') RETURNING id`, [kind, trigger, startedAt]);
    return r.rows[0].id;
  }

  async updateRunProgress(id: number, rowsRead: number, partitions: number): Promise<void> {
    await this.pool.query('UPDATE batch_runs SET rows_read = $1, partitions = $2 WHERE id = $3', [rowsRead, partitions, id]);
  }

  async finishRun(id: number, r: FinishedRun): Promise<void> {
    await this.pool.query(`UPDATE batch_runs SET ended_at = $1, outcome = $2, rows_read = $3, partitions = $4, version = $5,
      watermark = $6::jsonb, sinks = $7::jsonb, error = $8, kind = COALESCE($9, kind) WHERE id = $10`, [
      r.endedAt, r.outcome, r.rowsRead, r.partitions, r.version, json(r.watermark), json(r.sinks), r.error, r.kind ?? null, id]);
  }

  async closeInterruptedRuns(now: number): Promise<void> {
    await this.pool.query(`UPDATE batch_runs SET outcome = 'failed', ended_at = $1, error = 'interrupted: the process running it stopped'
      WHERE outcome = 'running'`, [now]);
  }

  async listRuns(limit = 20): Promise<RunRow[]> {
    const rows = (await this.pool.query<RawRun>('SELECT * FROM batch_runs ORDER BY id DESC LIMIT $1', [limit])).rows;
    return rows.map((r) => ({
      id: r.id, kind: r.kind, trigger: r.trigger, startedAt: r.started_at, endedAt: r.ended_at, outcome: r.outcome,
      rowsRead: r.rows_read, partitions: r.partitions, version: r.version, watermark: r.watermark ?? null, sinks: r.sinks ?? null, error: r.error,
    }));
  }

  async lastSuccessAt(): Promise<number | null> {
    const r = await this.pool.query<{ at: number | null }>(`SELECT ended_at AS at FROM batch_runs WHERE outcome = 'ok' ORDER BY id DESC LIMIT 1`);
    return r.rows[0]?.at ?? null;
  }

  async getMeta<T>(key: string): Promise<T | null> {
    const r = await this.pool.query<{ value: T }>('SELECT value FROM meta WHERE key = $1', [key]);
    return r.rows.length ? (r.rows[0].value ?? null) : null;
  }

  async setMeta(key: string, value: unknown): Promise<void> {
    await this.pool.query('INSERT INTO meta (key, value) VALUES ($1, $2::jsonb) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
      [key, JSON.stringify(value) ?? 'null']);
  }

  async deleteMeta(key: string): Promise<void> {
    await this.pool.query('DELETE FROM meta WHERE key = $1', [key]);
  }
}

export interface PgViewPointerOptions extends PgBatchOptions {
  /** views/ of the shared data dir: manifest.json is written there after each publish. None: not written. */
  viewsDir?: string;
  /** How often onPublished reads the pointer besides LISTEN. Default 1,000 ms. */
  pollMs?: number;
}

/** The manifest as the pointer row holds it (JSONB: key order not kept), with every view named. */
function fromRow(m: Manifest): Manifest {
  const views = { ...emptyViews(), ...m.views } as Record<ViewName, string[]>;
  const missing = VIEW_NAMES.filter((v) => !Object.hasOwn(m.views, v));
  return { version: m.version, createdAt: m.createdAt, watermark: m.watermark, views, ...(missing.length ? { missing } : {}) };
}

export class PgViewPointer implements ViewPointer {
  private readonly subscribers = new Set<(version: number) => void>();
  private last: number | null | undefined; // undefined: not read yet
  private listener: pg.Client | null = null;
  private listening = false;
  private timer: NodeJS.Timeout | null = null;
  private reading = false;

  constructor(private readonly o: PgViewPointerOptions) {}

  async publish(expected: number | null, next: Manifest): Promise<boolean> {
    const won = await pgTransaction(this.o.pool, async (client) => {
      const row = { version: next.version, createdAt: next.createdAt, watermark: next.watermark, views: next.views };
      const r = await client.query(
        `UPDATE view_pointer SET version = $1, manifest = $2::jsonb, published_at = (extract(epoch FROM clock_timestamp()) * 1000)::bigint
         WHERE id = 1 AND version IS NOT DISTINCT FROM $3`, [next.version, JSON.stringify(row), expected]);
      if (r.rowCount !== 1) return false;
      await client.query('SELECT pg_notify($1, $2)', [MANIFEST_CHANNEL, String(next.version)]);
      return true;
    });
    // Outside readers read the file; the pointer row is what nodes go by.
    if (won && this.o.viewsDir) await writeManifest(this.o.viewsDir, next);
    return won;
  }

  async current(): Promise<Manifest | null> {
    const r = await this.o.pool.query<{ manifest: Manifest | null }>('SELECT manifest FROM view_pointer WHERE id = 1');
    const m = r.rows[0]?.manifest ?? null;
    return m ? fromRow(m) : null;
  }

  onPublished(cb: (version: number) => void): () => void {
    this.subscribers.add(cb);
    if (!this.timer) {
      void this.poll();
      this.timer = setInterval(() => { void this.poll(); }, this.o.pollMs ?? 1000);
      this.timer.unref();
    }
    return () => {
      this.subscribers.delete(cb);
      if (this.subscribers.size === 0) this.stop();
    };
  }

  /** Stop listening and polling (every subscriber dropped). */
  stop(): void {
    this.subscribers.clear();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const l = this.listener;
    this.listener = null;
    this.listening = false;
    void l?.end().catch(() => undefined);
  }

  /** A version seen (notified or read): subscribers hear of each new one once. */
  private seen(version: number | null): void {
    if (this.last === undefined) { this.last = version; return; }
    if (version === null || (this.last !== null && version <= this.last)) return;
    this.last = version;
    for (const cb of [...this.subscribers]) {
      try { cb(version); } catch (err) { this.o.logger?.error({ err }, 'onPublished callback failed'); }
    }
  }

  private async poll(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      if (!this.listening) await this.listen();
      const r = await this.o.pool.query<{ version: number | null }>('SELECT version FROM view_pointer WHERE id = 1');
      this.seen(r.rows[0]?.version ?? null);
    } catch (err) {
      this.o.logger?.warn({ err: (err as Error).message }, 'PostgreSQL: could not read the manifest pointer');
    } finally {
      this.reading = false;
    }
  }

  private async listen(): Promise<void> {
    const client = dedicated(this.o, 'braid-listen');
    this.listener = client;
    client.on('error', (err) => {
      this.o.logger?.warn({ err: err.message }, 'PostgreSQL: the LISTEN connection failed; polling until it is back');
      if (this.listener === client) { this.listener = null; this.listening = false; }
      void client.end().catch(() => undefined);
    });
    client.on('notification', (n) => {
      if (n.channel !== MANIFEST_CHANNEL) return;
      const v = Number(n.payload);
      if (Number.isSafeInteger(v) && this.last !== undefined) this.seen(v);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${MANIFEST_CHANNEL}`);
      if (this.listener === client) this.listening = true;
      else await client.end();
    } catch (err) {
      if (this.listener === client) this.listener = null;
      await client.end().catch(() => undefined);
      throw err;
    }
  }
}
