/**
 * BatchScheduler: the batch job inside `braid cloud`. Runs it on `batch.cron` (UTC) and on demand
 * (POST /api/v1/batch/run), one at a time (the store's batch lock also keeps out `braid batch run`
 * in another process, or another node), and tells GET /api/v1/batch what is going on. Each cron
 * firing claims its slot in the store first: of several processes (nodes) on one store, one runs it.
 */
import { join } from 'node:path';
import cron, { type ScheduledTask } from 'node-cron';
import type { Registry } from 'prom-client';
import { type CloudConfig, localDirs } from '../config.js';
import { ClosedError, ConfigInvalidError } from '../../shared/errors.js';
import type { Db } from '../../shared/sqlite.js';
import { nullLogger, type Logger } from '../../shared/logger.js';
import { BatchRunningError } from './errors.js';
import { type BatchMetrics, createBatchMetrics } from './metrics.js';
import { startBatchRun, type BatchJobOptions, type BatchRun, type BatchRunDeps } from './job.js';
import { readManifest, type Manifest } from './manifest.js';
import type { BatchProgress } from './progress.js';
import type { ViewSink } from './sink.js';
import type { RunRow, RunTrigger } from './state.js';
import { openSqliteBatchStores, processName, sqliteBatchStores, type BatchStores } from './store.js';

export interface BatchSchedulerOptions extends BatchJobOptions {
  /** node-cron expression, evaluated in UTC; null schedules nothing (runNow still works). */
  cron: string | null;
  /** Runs listed by status(). */
  historyLimit?: number;
}

/** The scheduler's options from the cloud config (dataDir and batch.*). */
export function batchOptionsFrom(config: Pick<CloudConfig, 'dataDir' | 'cacheDir' | 'batch'>): BatchSchedulerOptions {
  return {
    dataDir: config.dataDir, spillDir: localDirs(config).duckdbSpill, cron: config.batch.cron, memoryLimit: config.batch.memoryLimit,
    threads: config.batch.threads, retainVersionsMs: config.batch.retainVersionsMs,
  };
}

export interface BatchSchedulerDeps {
  logger?: Logger;
  /** View sinks (InfluxDB...) called after each published version. */
  sinks?: ViewSink[];
  now?: () => number;
  /** cloud.db to read the run history from; opened (and closed) by the scheduler when absent. */
  db?: Db;
  /** The batch state and live manifest (cluster mode); used, never closed. Default: the data dir's SQLite ones. */
  store?: BatchStores;
  /** Called once a run of this scheduler has published a new manifest (it is live): the speed store prunes behind it. */
  onPublished?: (manifest: Manifest) => void;
  /** Where the braid_batch_* metrics go; none means no metrics. */
  registry?: Registry;
}

export interface BatchStatus {
  /** The run in progress: in this process with live progress, or in another one (from batch_runs). */
  running: {
    id: number; kind: string; trigger: string; startedAt: number;
    /** Live progress when the run is in this process; null when it runs in another one. */
    progress: BatchProgress | null;
    rowsRead: number | null; partitions: number | null;
  } | null;
  /** The live manifest: version, createdAt and watermark E (null before the first run). */
  manifest: { version: number; createdAt: string; watermark: Record<string, number> } | null;
  schedule: { cron: string | null; nextRunAt: string | null };
  /** The newest runs first. */
  runs: RunRow[];
}

export class BatchScheduler {
  private task: ScheduledTask | null = null;
  private current: BatchRun | null = null;
  private starting = false;
  private closed = false;
  private stores: Promise<BatchStores & { close(): Promise<void> }> | null = null;
  private readonly logger: Logger;
  private readonly metrics: BatchMetrics | null;

  constructor(private readonly opts: BatchSchedulerOptions, private readonly deps: BatchSchedulerDeps = {}) {
    if (opts.cron !== null && !cron.validate(opts.cron)) {
      throw new ConfigInvalidError(`config key "batch.cron": '${opts.cron}' is not a cron expression`);
    }
    this.logger = deps.logger ?? nullLogger();
    this.metrics = deps.registry ? createBatchMetrics(deps.registry, async () => (await this.openStores()).batch.lastSuccessAt()) : null;
  }

  /** Schedule the cron runs. */
  start(): void {
    if (this.closed) throw new ClosedError('batch scheduler is closed');
    if (this.task || this.opts.cron === null) return;
    this.task = cron.schedule(this.opts.cron, async (ctx) => {
      try {
        // The scheduled time, equal on every node that fires for it (node-cron's `date`, whole seconds).
        const slot = Math.floor((ctx?.date ?? new Date()).getTime() / 1000) * 1000;
        if (!await (await this.openStores()).batch.claimSlot(slot, processName())) {
          this.logger.info({ slot: new Date(slot).toISOString() }, 'scheduled batch run skipped: another process took this slot');
          return;
        }
        const run = await this.runNow('cron');
        await run.done;
      } catch (err) {
        if ((err as { code?: string }).code === 'BRAID_ERR_BATCH_RUNNING') this.logger.info('scheduled batch run skipped: one is already running');
        else if ((err as { code?: string }).code !== 'BRAID_ERR_BATCH_ABORTED') this.logger.error({ err }, 'scheduled batch run failed');
      }
    }, { timezone: 'UTC', noOverlap: true, name: 'braid-batch' });
  }

  /**
   * Start a run now; resolves once it is recorded (with its id), the result in `run.done`.
   * Rejects with BRAID_ERR_BATCH_RUNNING (409) while another run is going on.
   */
  async runNow(trigger: RunTrigger = 'api', opts: { full?: boolean } = {}): Promise<BatchRun> {
    if (this.closed) throw new ClosedError('batch scheduler is closed');
    if (this.current || this.starting) {
      throw new BatchRunningError(`batch run ${this.current?.id ?? ''} is in progress`.replace('  ', ' '), process.pid);
    }
    this.starting = true;
    try {
      const deps: BatchRunDeps = { logger: this.logger, sinks: this.deps.sinks, now: this.deps.now, store: this.deps.store };
      let run: BatchRun;
      try {
        run = await startBatchRun(this.opts, { full: opts.full, trigger }, deps);
      } catch (err) {
        // Another process's run holds the lock: no run of ours, nothing to count. Anything else
        // (cloud.db, the data dir) is a run that failed before it began.
        if (!(err instanceof BatchRunningError)) this.metrics?.runs.inc({ kind: opts.full ? 'full' : 'incremental', result: 'failed' });
        throw err;
      }
      this.current = run;
      this.count(run);
      this.logger.info({ batchRun: run.id, trigger, kind: run.kind }, 'batch run started');
      run.done.then(
        (r) => {
          this.logger.info({ batchRun: r.id, version: r.version, days: r.days.length, rowsRead: r.rowsRead, ms: r.endedAt - r.startedAt }, 'batch run done');
          if (r.published && this.deps.onPublished) this.notifyPublished(this.deps.onPublished);
        },
        () => undefined,
      ).finally(() => { if (this.current === run) this.current = null; });
      return run;
    } finally {
      this.starting = false;
    }
  }

  /** Count a run of this scheduler once it ends. */
  private count(run: BatchRun): void {
    const m = this.metrics;
    if (!m) return;
    run.done.then(
      (r) => {
        m.runs.inc({ kind: r.kind, result: r.published ? 'published' : 'noop' });
        m.runSeconds.observe({ kind: r.kind }, Math.max(0, r.endedAt - r.startedAt) / 1000);
        m.rowsRead.inc(r.rowsRead);
      },
      (err: unknown) => {
        const aborted = (err as { code?: string } | null)?.code === 'BRAID_ERR_BATCH_ABORTED';
        m.runs.inc({ kind: run.kind, result: aborted ? 'aborted' : 'failed' });
      },
    );
  }

  /** The run in progress in this process, if any. */
  get running(): BatchRun | null {
    return this.current;
  }

  async status(): Promise<BatchStatus> {
    const stores = await this.openStores();
    const runs = await stores.batch.listRuns(this.opts.historyLimit ?? 20);
    const manifest = await stores.views.current().catch(() => null);
    const cur = this.current;
    const other = runs.find((r) => r.outcome === 'running');
    const running = cur
      ? { id: cur.id, kind: cur.kind, trigger: cur.trigger, startedAt: cur.startedAt, progress: cur.progress(), rowsRead: cur.progress().rowsRead, partitions: cur.progress().daysDone }
      : other ? { id: other.id, kind: other.kind, trigger: other.trigger, startedAt: other.startedAt, progress: null, rowsRead: other.rowsRead, partitions: other.partitions } : null;
    const next = this.task?.getNextRun() ?? null;
    return {
      running,
      manifest: manifest ? { version: manifest.version, createdAt: manifest.createdAt, watermark: manifest.watermark } : null,
      schedule: { cron: this.opts.cron, nextRunAt: next ? next.toISOString() : null },
      runs,
    };
  }

  /** Stop the schedule, abort the run in progress and wait for it; idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.task) {
      await this.task.destroy();
      this.task = null;
    }
    const run = this.current;
    if (run) {
      run.abort('aborted: the scheduler is closing');
      await run.done.catch(() => undefined);
    }
    await (await this.stores?.catch(() => null))?.close();
    this.stores = null;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private notifyPublished(hook: (m: Manifest) => void): void {
    // Also after close (a run that published as the scheduler closed): no store of ours is needed.
    (this.deps.store ? this.deps.store.views.current() : readManifest(join(this.opts.dataDir, 'views')))
      .then((m) => { if (m) hook(m); })
      .catch((err) => this.logger.error({ err }, 'onPublished hook failed'));
  }

  /** The given store, or the data dir's SQLite one on `deps.db` (not closed here) or on a connection of our own. */
  private async openStores(): Promise<BatchStores> {
    if (this.closed) throw new ClosedError('batch scheduler is closed');
    if (!this.stores) {
      if (this.deps.store) this.stores = Promise.resolve({ ...this.deps.store, close: async () => undefined });
      else if (this.deps.db) this.stores = Promise.resolve(sqliteBatchStores(this.deps.db, this.opts.dataDir, this.deps.now));
      else {
        this.stores = openSqliteBatchStores(this.opts.dataDir, this.deps.now);
        this.stores.catch(() => { this.stores = null; });
      }
    }
    return this.stores;
  }
}
