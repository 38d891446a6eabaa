/**
 * The outbox: the gateway's durable log of accepted readings, with the speed partials, dedup
 * identities, epochs, quarantine and gap records beside it in `gateway.db`, and the commit log
 * (`commit.log`, commit-log.ts) holding the newest small groups until they are in gateway.db. The
 * only door to edge/outbox/.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import cron, { type ScheduledTask } from 'node-cron';
import type { Registry } from 'prom-client';
import type { Logger } from '../../shared/logger.js';
import { type Db, WriteQueue } from '../../shared/sqlite.js';
import { openGatewayDb, openGatewayReader } from '../store/schema.js';
import { DiskFloor, type DropReason, dropOldest } from './budget.js';
import { CommitLog, replayable } from './commit-log.js';
import { Committer, loadCommitterState, loadDedupHi, loadLastSeq, loadUnflushedIdentities, replayCommitLog, type CommitResult, type CommitSink, type QuarantineEntry, type Reading } from './committer.js';
import { createOutboxMetrics, type OutboxBacklogSource, type OutboxMetrics } from './metrics.js';
import { pruneBookkeeping, pruneDedupChunk, prunePartialsChunk, pruneSeries, RETENTION_CHUNK_ROWS } from './retention.js';

export type { CommitResult, CommitSink, QuarantineEntry, Reading } from './committer.js';
export type { GapRecord } from './budget.js';

export interface OutboxOptions {
  /** Readings arriving within this many ms share one transaction. */
  groupCommitMs: number;
  /** Longest wait for the devices the last commit acknowledged several messages of to send again, in ms (committer.ts); 0: none. */
  refillWaitMs: number;
  /** Most readings in one transaction. */
  maxBatchReadings: number;
  /** Readings waiting for a commit before new ones are refused. */
  maxQueuedReadings: number;
  /** An epoch closes after this long, in ms. */
  epochMs: number;
  /** An epoch closes once no reading has arrived for this long, in ms. */
  epochIdleMs: number;
  /** Disk budget for unsent readings, in bytes. */
  maxBytes: number;
  /** Free space to keep on the data dir's filesystem, in bytes (the disk floor, budget.ts); 0 turns it off. */
  minFreeBytes: number;
  /** How long an identity is remembered for dedup, in ms. */
  dedupWindowMs: number;
  /** Most quarantined payloads kept. */
  quarantineMaxRows: number;
  /** Speed partials older than this (event minute) are pruned, in minutes. */
  retentionMinutes: number;
  /** node-cron schedule of the retention jobs; null runs none. */
  pruneCron: string | null;
  /**
   * A cloud takes the speed partials (cloud.url is set): retention keeps old ones until pushed or
   * covered by the cloud's views, so late readings reach the cloud's speed side [INV-3].
   */
  keepUnpushedPartials: boolean;
  /**
   * Groups of fresh readings are durable once written to the commit log (`commit.log` in the data
   * dir, commit-log.ts) and go into gateway.db afterwards, many in one transaction; false: every
   * group commits in gateway.db before its PUBACKs.
   */
  commitLog: boolean;
}

export const DEFAULT_OUTBOX_OPTIONS: OutboxOptions = {
  groupCommitMs: 0, // the next turn of the event loop
  refillWaitMs: 1,
  maxBatchReadings: 20_000,
  maxQueuedReadings: 200_000,
  epochMs: 60_000, // 1 minute
  epochIdleMs: 2_000,
  maxBytes: 1024 * 1024 * 1024, // 1 GiB
  minFreeBytes: 256 * 1024 * 1024, // 256 MiB: room for the WAL, a checkpoint and the speed layer's growth
  dedupWindowMs: 24 * 3600_000, // 24 hours
  quarantineMaxRows: 10_000,
  retentionMinutes: 25 * 60,
  pruneCron: '*/5 * * * *',
  keepUnpushedPartials: false,
  commitLog: true,
};

/** The commit log's file in the data dir (commit-log.ts). */
export const COMMIT_LOG_FILE = 'commit.log';

/** How often a failing outbox tries a probe commit, in ms. */
const COMMIT_PROBE_MS = 1000;

/** Closed, reported epochs, sent gaps and quarantined payloads are kept this long (7 days). */
const BOOKKEEPING_KEEP_MS = 7 * 24 * 3600_000;

export interface OutboxStatus {
  pending: number;
  bytes: number;
  lastSeq: number;
  epoch: number;
  epochOpen: boolean;
  quarantined: number;
}

export interface OutboxDeps {
  dataDir: string;
  logger: Logger;
  registry: Registry;
  now?: () => number;
  /** Free bytes on the filesystem of a dir (default: statfs); tests pass a smaller disk. */
  freeDiskBytes?: (dir: string) => Promise<number>;
}

export class Outbox implements OutboxBacklogSource {
  readonly writes: WriteQueue;
  readonly reader: Db;
  readonly metrics: OutboxMetrics;
  private readonly committer: Committer;
  private readonly logger: Logger;
  private readonly opts: OutboxOptions;
  private readonly now: () => number;
  private lastStamp = new Map<string, number>();
  private lastActivityAt: number;
  private idleTimer: NodeJS.Timeout | null = null;
  private cronTask: ScheduledTask | null = null;
  private probeTimer: NodeJS.Timeout | null = null;
  private budgetRunning: Promise<void> | null = null;
  private readonly floor: DiskFloor;
  private closed = false;
  /** Highest seq the forwarder has in flight; the disk budget never drops those. */
  inflightUpTo: () => number = () => 0;
  /** Called after a commit assigned seq or an epoch closed: there is something to forward. */
  onWork: () => void = () => {};

  private constructor(writes: WriteQueue, reader: Db, committer: Committer, metrics: OutboxMetrics, deps: OutboxDeps, opts: OutboxOptions) {
    this.writes = writes;
    this.reader = reader;
    this.committer = committer;
    this.metrics = metrics;
    this.logger = deps.logger;
    this.opts = opts;
    this.now = deps.now ?? Date.now;
    this.lastActivityAt = this.now();
    this.floor = new DiskFloor(deps.dataDir, opts.minFreeBytes, deps.freeDiskBytes);
  }

  static async open(deps: OutboxDeps, options: Partial<OutboxOptions> = {}): Promise<Outbox> {
    const opts = { ...DEFAULT_OUTBOX_OPTIONS, ...options };
    const now = deps.now ?? Date.now;
    const file = join(deps.dataDir, 'gateway.db');
    const writer = await openGatewayDb(file, { logger: deps.logger, freeDiskBytes: deps.freeDiskBytes });
    const reader = await openGatewayReader(file);
    // [INV-1] What the commit log holds and gateway.db not (a crash between a group's PUBACKs and
    // its apply) goes in before anything reads the file. Without the log now, a log left by an
    // earlier run is still replayed, then left as it is.
    const logFile = join(deps.dataDir, COMMIT_LOG_FILE);
    let log: CommitLog | null = null;
    if (opts.commitLog || existsSync(logFile)) {
      const opened = CommitLog.open(logFile);
      const replay = replayable(opened.records, await loadLastSeq(writer));
      if (replay.length) {
        await replayCommitLog(writer, replay);
        deps.logger.info({ records: replay.length, readings: replay.reduce((n, r) => n + r.count, 0) }, 'commit log replayed into gateway.db');
      }
      if (opts.commitLog) log = opened.log;
      else opened.log.close();
    }
    const state = await loadCommitterState(writer, now());
    const identities = await loadUnflushedIdentities(writer);
    const dedupHi = log ? await loadDedupHi(writer) : Infinity;
    let outbox: Outbox | null = null;
    const metrics = createOutboxMetrics(deps.registry, () => outbox);
    const writes = new WriteQueue(writer);
    if (log) {
      const [main, pool] = [metrics.logWrites.labels('main'), metrics.logWrites.labels('pool')];
      log.onWrite = (inline) => (inline ? main : pool).inc();
    }
    const committer = new Committer({ writes, logger: deps.logger, metrics, now, log }, {
      groupCommitMs: opts.groupCommitMs,
      refillWaitMs: opts.refillWaitMs,
      maxBatchReadings: opts.maxBatchReadings,
      maxQueuedReadings: opts.maxQueuedReadings,
      epochMs: opts.epochMs,
      quarantineMaxRows: opts.quarantineMaxRows,
      quarantinePayloadBytes: 1024,
    }, state, identities, dedupHi);
    const opened = new Outbox(writes, reader, committer, metrics, deps, opts);
    outbox = opened;
    committer.onCommitted = () => opened.afterCommit();
    committer.onHealth = (failing) => opened.commitHealth(failing);
    deps.logger.info({ lastSeq: state.lastSeq, lastEpoch: state.lastEpoch, pending: state.pendingRows }, 'outbox open');
    return opened;
  }

  /** Start the idle-epoch timer and the retention schedule. */
  start(): void {
    const tick = Math.max(50, Math.floor(this.opts.epochIdleMs / 2));
    this.idleTimer = setInterval(() => {
      this.committer.closeEpochIfDue(this.opts.epochIdleMs, this.lastActivityAt)
        .then((closed) => { if (closed) this.onWork(); })
        .catch((err) => this.logger.error({ err }, 'closing epoch failed'));
    }, tick);
    this.idleTimer.unref();
    if (this.opts.pruneCron) {
      this.cronTask = cron.schedule(this.opts.pruneCron, () => {
        this.runRetention().catch((err) => this.logger.error({ err }, 'retention failed'));
      }, { timezone: 'UTC', noOverlap: true });
    }
  }

  /**
   * Since when commits fail (ms), or null while they succeed: the broker refuses CONNECT meanwhile.
   * A probe commit every COMMIT_PROBE_MS finds out when they can succeed again.
   */
  commitsFailingSince(): number | null {
    return this.committer.failingSince;
  }

  private commitHealth(failing: boolean): void {
    if (!failing) {
      if (this.probeTimer) clearInterval(this.probeTimer);
      this.probeTimer = null;
      return;
    }
    this.logger.warn('outbox commits fail: devices are refused (CONNACK 3) until a probe commit succeeds');
    if (this.probeTimer || this.closed) return;
    let probing = false;
    this.probeTimer = setInterval(() => {
      if (probing) return;
      probing = true;
      void this.committer.probe().finally(() => { probing = false; });
    }, COMMIT_PROBE_MS);
    this.probeTimer.unref();
  }

  /** Commit readings (group commit); resolves once durable [INV-1]. */
  submit(readings: Reading[]): Promise<CommitResult> {
    this.lastActivityAt = this.now();
    return this.committer.submit(readings);
  }

  /** submit() without a promise: `sink.settled(ctx, ...)` once durable; the error when not queued (committer.ts). */
  submitTo<C>(readings: Reading[], sink: CommitSink<C>, ctx: C): Error | null {
    this.lastActivityAt = this.now();
    return this.committer.submitTo(readings, sink, ctx);
  }

  /**
   * Resolves once gateway.db holds every reading acknowledged so far (the commit log's groups go in
   * within APPLY_MS otherwise): for a read on `reader` that must see them.
   */
  applied(): Promise<void> {
    return this.committer.applied();
  }

  /** Resolves once the commit log's apply running in the background, if any, has ended (Committer.applyIdle). */
  applyIdle(): Promise<void> {
    return this.committer.applyIdle();
  }

  /** Keep an unparseable payload with its reason; resolves once durable. */
  quarantine(entry: QuarantineEntry): Promise<void> {
    return this.committer.quarantine(entry);
  }

  /**
   * The receive time for a reading without `ts`: strictly increasing per device, so two such
   * readings of one device never share an identity.
   */
  stamp(device: string): number {
    const now = this.now();
    const prev = this.lastStamp.get(device) ?? 0;
    const t = now > prev ? now : prev + 1;
    this.lastStamp.set(device, t);
    return t;
  }

  /** The forwarder's report that the cloud acknowledged and the rows were deleted. */
  acked(info: { rows: number; bytes: number }): void {
    this.committer.state.pendingRows = Math.max(0, this.committer.state.pendingRows - info.rows);
    this.committer.state.pendingBytes = Math.max(0, this.committer.state.pendingBytes - info.bytes);
  }

  status(): OutboxStatus {
    const s = this.committer.state;
    return {
      pending: s.pendingRows,
      bytes: s.pendingBytes,
      lastSeq: s.lastSeq,
      epoch: s.open?.epoch ?? s.lastEpoch,
      epochOpen: s.open !== null,
      quarantined: s.quarantineRows,
    };
  }

  /** The backlog gauges' view of status(), with the budget it is held to. */
  backlog(): { pending: number; bytes: number; maxBytes: number } {
    const s = this.committer.state;
    return { pending: s.pendingRows, bytes: s.pendingBytes, maxBytes: this.opts.maxBytes };
  }

  /**
   * Commit time of the oldest reading the cloud has not acknowledged, as the opening of its epoch
   * (outbox rows carry no time of their own but their epoch; an epoch spans at most epochMs), or
   * null when none waits. Event time would not do: a late or clock-skewed device would look like
   * a stuck forwarder. Two index seeks on the reader connection (committed rows only).
   */
  async oldestPendingAt(): Promise<number | null> {
    // `epoch >= ...`: should that epoch's row be gone, the next one's opening is the best bound left.
    const row = await this.reader.get<{ at: number | null }>(
      `SELECT (SELECT opened_at FROM epochs WHERE epoch >= o.epoch ORDER BY epoch LIMIT 1) AS at
       FROM outbox_rows o ORDER BY o.seq LIMIT 1`);
    return row?.at ?? null;
  }

  async oldestPendingAgeSeconds(): Promise<number> {
    const at = await this.oldestPendingAt();
    return at === null ? 0 : Math.max(0, this.now() - at) / 1000;
  }

  private afterCommit(): void {
    this.onWork();
    this.kickBudget();
  }

  /** Enforce the budget and the disk floor in the background, one run at a time; again while a run dropped and the budget is still passed (commits during it). */
  private kickBudget(): void {
    if (this.budgetRunning || this.closed || !(this.committer.state.pendingBytes > this.opts.maxBytes || this.floor.due())) return;
    this.budgetRunning = this.enforceBudget().then((dropped) => {
      this.budgetRunning = null;
      if (dropped && this.committer.state.pendingBytes > this.opts.maxBytes) this.kickBudget();
    }, () => { this.budgetRunning = null; });
  }

  /**
   * Drop the oldest unsent readings down to 90% of the budget, or to 10% above the disk floor, with
   * a gap record [INV-6].
   */
  async enforceBudget(): Promise<boolean> {
    const state = this.committer.state;
    const over = state.pendingBytes > this.opts.maxBytes ? state.pendingBytes - Math.floor(this.opts.maxBytes * 0.9) : 0;
    let floor: Awaited<ReturnType<DiskFloor['deficit']>> = { bytes: 0, freeBytes: NaN, more: async () => 0 };
    if (this.floor.due()) {
      try {
        floor = await this.floor.deficit(this.reader);
      } catch (err) {
        this.logger.warn({ err }, 'could not read the free space of the data dir; the disk floor is not kept meanwhile');
      }
    }
    const excess = Math.max(over, floor.bytes);
    if (excess <= 0) return false;
    const reason: DropReason = floor.bytes > over ? 'disk_floor' : 'disk_budget';
    try {
      const gap = await this.writes.tx((db) => dropOldest(db, this.inflightUpTo(), excess, this.now(), reason, reason === 'disk_floor' ? () => floor.more(db) : undefined));
      if (!gap) {
        if (reason === 'disk_floor') this.logger.warn({ freeBytes: floor.freeBytes, minFreeBytes: this.opts.minFreeBytes }, 'below the disk floor with no unsent reading to drop');
        return false;
      }
      state.pendingRows = Math.max(0, state.pendingRows - gap.count);
      state.pendingBytes = Math.max(0, state.pendingBytes - gap.bytes);
      this.metrics.dropped.inc({ reason }, gap.count);
      this.metrics.gaps.inc();
      this.logger.warn({ reason, fromSeq: gap.fromSeq, toSeq: gap.toSeq, count: gap.count, devices: gap.devices.length, freeBytes: floor.freeBytes },
        reason === 'disk_floor' ? 'less than outbox.minFreeBytes free on the disk: dropped the oldest unsent readings' : 'outbox over its disk budget: dropped the oldest unsent readings');
      this.onWork();
      return true;
    } catch (err) {
      this.logger.error({ err }, 'enforcing the outbox disk budget failed');
      return false;
    }
  }

  /** The retention jobs: dedup identities, speed partials, bookkeeping. Chunked write jobs. */
  async runRetention(): Promise<{ dedup: number; partials: number; bookkeeping: number }> {
    const now = this.now();
    let dedup = 0;
    let fromTs = -Infinity;
    // Every identity in dedup_keys first, none left in the committer's memory past the window.
    await this.committer.flushIdentities();
    for (;;) {
      const from = fromTs;
      const r = await this.writes.run((db) => pruneDedupChunk(db, now, this.opts.dedupWindowMs, from));
      dedup += r.deleted;
      if (r.nextTs === null || this.closed) break;
      fromTs = r.nextTs;
    }
    if (!this.closed) {
      await this.writes.run(async (db) => {
        // In the same write job: no commit runs between the delete and the cache's clearing.
        if (await pruneSeries(db)) this.committer.forgetSeries();
      });
    }
    let partials = 0;
    for (;;) {
      const n = await this.writes.run((db) => prunePartialsChunk(db, now, this.opts.retentionMinutes, RETENTION_CHUNK_ROWS, this.opts.keepUnpushedPartials));
      partials += n;
      if (n < RETENTION_CHUNK_ROWS || this.closed) break;
    }
    const bookkeeping = await this.writes.run(async (db) => {
      const n = await pruneBookkeeping(db, now, BOOKKEEPING_KEEP_MS);
      // The quarantine bound counts the rows left: a stale count would delete new payloads as over it.
      // Inside the write job, so no commit's apply() runs between the count and the assignment.
      const q = await db.get<{ n: number }>('SELECT COUNT(*) AS n FROM quarantine');
      this.committer.state.quarantineRows = q?.n ?? 0;
      return n;
    });
    this.metrics.pruned.inc({ table: 'dedup' }, dedup);
    this.metrics.pruned.inc({ table: 'partials' }, partials);
    this.metrics.pruned.inc({ table: 'bookkeeping' }, bookkeeping);
    return { dedup, partials, bookkeeping };
  }

  /** Commit what is queued, stop the timers, close both connections. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.idleTimer) clearInterval(this.idleTimer);
    if (this.probeTimer) clearInterval(this.probeTimer);
    this.cronTask?.stop();
    await this.committer.close();
    // A clean stop closes the open epoch now: nothing more can join it, and the cloud can judge it
    // complete without waiting for the next start.
    await this.committer.closeEpochIfDue(0, 0).catch((err) => this.logger.error({ err }, 'closing the epoch at shutdown failed'));
    await this.budgetRunning;
    await this.writes.drain();
    await this.reader.close();
    await this.writes.db.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
