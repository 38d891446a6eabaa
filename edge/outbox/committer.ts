/**
 * Durable ingest: group commit of readings into the outbox, the epoch bookkeeping, the speed
 * partials and the dedup identities, all in one SQLite transaction [INV-2]. A submit resolves only
 * once its group is durable, which is what releases a QoS 1 PUBACK [INV-1]: after COMMIT returned
 * (synchronous=FULL), or, for a group of fresh readings (LOG_MAX_READINGS), after its record (that
 * same transaction's statement; a replay makes its partials again, withPartials) is written to the
 * commit log (commit-log.ts), whose records go into gateway.db later, in order, many in one
 * transaction (applyPending).
 */
import { LimitExceededError, ClosedError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { fromColumns, merge, of, type Summary, type SummaryColumns } from '../../shared/summary.js';
import { minuteOf } from '../../shared/time.js';
import { type Db, type WriteQueue, chunkRows, placeholders, transaction } from '../../shared/sqlite.js';
import { ACKED_SEQ_KEY, DEDUP_FLUSHED_SQL, DEDUP_TS_LIMIT, dedupKeySeriesSql, dedupKeySql, dedupKeyTsSql, flushDedupKeys, flushDedupKeysSql, outboxRowBytes, outboxRowBytesSql, PARTIALS_KEY, SERIES_MAX } from '../store/schema.js';
import type { OutboxMetrics } from './metrics.js';
import { CommitLog, LOG_PAGE, PARAM, type LogRecord } from './commit-log.js';
import type sqlite3 from 'sqlite3';

/** A reading with its event time resolved. */
export interface Reading {
  device: string;
  metric: string;
  ts: number;
  value: number;
}

export interface CommitResult {
  /** Readings given a seq. */
  accepted: number;
  /** Readings dropped as repeats of an identity in the dedup window. */
  duplicates: number;
}

export interface QuarantineEntry {
  device: string;
  topic: string;
  reason: string;
  message: string;
  payload: Buffer;
}

export interface CommitterOptions {
  /**
   * Longest wait, in ms, for more readings to share a group commit (the linger): taken only while
   * no queued submit comes from a device keeping a window in flight (another of its messages not yet
   * settled, or several in its last commit: such a publisher sends more only after its PUBACKs, so
   * waiting would only hold it up) and fewer than LINGER_FULL_READINGS readings are queued; measured
   * from the oldest queued submit. 0: commit on the next turn of the event loop.
   */
  groupCommitMs: number;
  /**
   * Longest wait, in ms, before the next group commit for the devices the last one acknowledged
   * with several messages (publishers keeping a window in flight) to send their next ones; 0: none.
   */
  refillWaitMs: number;
  /** Most readings in one transaction. */
  maxBatchReadings: number;
  /** Readings waiting for a commit before new ones are refused. */
  maxQueuedReadings: number;
  /**
   * Epochs close on the clock's multiples of this many ms (every minute by default): an epoch spans
   * at most epochMs (epochDue).
   */
  epochMs: number;
  /** Most quarantined payloads kept; older ones are deleted (counted). */
  quarantineMaxRows: number;
  /** Bytes of a quarantined payload kept. */
  quarantinePayloadBytes: number;
}

/**
 * Who hears of a submit's commit: `settled` is called once per submit, after COMMIT returned (or
 * failed: `err` set), synchronously and in submit order for every submit of a group, then
 * `groupSettled` once. A long-lived object with a context per submit: no promise and no closure per
 * message on the MQTT path (docs/benchmarks.md, 2026-12-06 session 7).
 */
export interface CommitSink<C> {
  settled(ctx: C, err: Error | null, result: CommitResult | null): void;
  /** After the `settled` calls of one group (those of a failed group too). */
  groupSettled?(): void;
}

interface Pending {
  readings: Reading[];
  /** Who submitted it (a device), for the refill wait. */
  source?: string;
  /** A payload to quarantine instead of readings. */
  quarantine?: QuarantineEntry;
  sink: CommitSink<unknown>;
  ctx: unknown;
}

/** The promise form of submit: the context is the promise's settle functions. */
const PROMISE_SINK: CommitSink<{ resolve: (r: CommitResult) => void; reject: (e: Error) => void }> = {
  settled(ctx, err, result) {
    if (err) ctx.reject(err);
    else ctx.resolve(result!);
  },
};

export interface OpenEpoch {
  epoch: number;
  firstSeq: number;
  lastSeq: number;
  openedAt: number;
}

export interface CommitterState {
  lastSeq: number;
  lastEpoch: number;
  open: OpenEpoch | null;
  quarantineRows: number;
  pendingRows: number;
  pendingBytes: number;
}

const SEP = '\u0000';
/** The group commit's error when an identity of the group is in dedup_keys (isDedupConflict). */
const REPEAT_MESSAGE = 'a repeat of an identity in dedup_keys';
/**
 * Readings whose identities the committer keeps in memory (`unflushed`) before a group commit
 * copies them into dedup_keys (schema.ts DEDUP_FLUSHED_KEY): thousands sorted in one statement
 * write each leaf they land in once, where each group's own would write it again every commit.
 */
export const DEDUP_FLUSH_READINGS = 4096;
/**
 * Readings queued that end the linger (groupCommitMs) at once: past it a larger commit saves
 * little a reading (the commit path with a fleet's readings: 423 B written a reading at 256, 371 B
 * at 1,024; docs/benchmarks.md, gateway, session 12: a fleet), and the PUBACKs wait no longer.
 */
export const LINGER_FULL_READINGS = 256;
/**
 * The commit log's groups go into gateway.db together (applyPending) once this many readings wait,
 * or APPLY_MS after the first of them, or before any other write job (WriteQueue.before), or when a
 * reader asks (applied): a transaction of many groups writes each page it touches once and syncs
 * once, where a commit per group wrote page 1, the outbox's last leaf and its parent and the
 * partials' leaf every time (docs/benchmarks.md, gateway, session 18).
 */
export const APPLY_READINGS = 4096;
export const APPLY_MS = 250;
/**
 * The most a record of the commit log takes: a group whose record is larger commits in gateway.db
 * at once (commitLogged). Records hold the readings, not their partials (commit-log.ts 'BRL2'):
 * ~40 B a reading, so a group of ~180 (bench:gateway at -M 100) is two pages and a fleet's ~110
 * readings of ~110 series two, where their partials made six.
 */
export const LOG_MAX_RECORD_BYTES = 4 * LOG_PAGE;
/**
 * Groups of more readings than this commit in gateway.db at once, not through the commit log: a
 * cheap test before the group is prepared (no reading's row is under 32 B, so more would not fit
 * LOG_MAX_RECORD_BYTES). Through the log, with records of readings only (session 23, against
 * groups of at most 128 and a page before, 3 runs each): at -M 100 (groups of ~180) 67.6-79.7k
 * against 60.8-64.4k msg/s and the same bytes (147-166 against 161-164 B a reading); a fleet of
 * 1,000 devices (groups of ~110 readings of ~110 series) 421-425 against 428-446 B a reading, its
 * commits 1.2-1.5 against 3.2-3.4 ms and PUBACK p99 30 against 35 ms (docs/benchmarks.md, gateway,
 * session 23).
 */
export const LOG_MAX_READINGS = LOG_MAX_RECORD_BYTES / 32;
/** Devices remembered as windowed at most (then forgotten, and learnt again from their next commit). */
const WINDOWED_MAX = 100_000;
/**
 * Whether an epoch opened at `openedAt` is due to close at `now`: the clock has passed a multiple of
 * `epochMs` since it opened (12:01:00.000 with the default minute), so it spans at most epochMs.
 * Aligned with the clock rather than epochMs from each opening: a fleet's readings carry the time
 * they were taken, so their minutes begin when the clock's do, and each series starts one partial
 * row a minute (for its new minute and the new epoch at once) where an epoch closing mid-minute
 * gave it two, each a key in a leaf of its own of the unique index, written to the WAL and again by
 * the checkpoint (docs/benchmarks.md, gateway session 15).
 */
export function epochDue(openedAt: number, now: number, epochMs: number): boolean {
  return Math.floor(now / epochMs) > Math.floor(openedAt / epochMs);
}

/**
 * A partial row already written in this epoch is updated in place, not replaced: an UPDATE leaves
 * the partials_minute index alone (minute does not change), where REPLACE deletes and inserts its
 * entry, one more page per commit to the WAL.
 */
const PARTIALS_UPSERT = `ON CONFLICT (${PARTIALS_KEY}) DO UPDATE SET count = excluded.count, sum = excluded.sum, min = excluded.min, max = excluded.max, m2 = excluded.m2, first = excluded.first, first_ts = excluded.first_ts, last = excluded.last, last_ts = excluded.last_ts, updated_at = excluded.updated_at`;
/**
 * The usual group commit as one statement: an INSERT into this temp view runs the trigger, every
 * step of it inside the statement's own transaction. Parameters (the view's columns): `rows` the
 * readings' JSON ([ts, mantissa, exponent, series number] each; every series numbered already),
 * `now`, `epoch` the open epoch after the commit, `first` the group's first seq, `open_last` the
 * last seq of an epoch this commit opens (else NULL), `close_epoch` and `close_last` an epoch this
 * commit closes (else NULL), `prows` the partials' JSON, `flush` the seq up to which the outbox
 * rows' identities are copied into dedup_keys in this commit (else NULL; schema.ts
 * DEDUP_FLUSHED_KEY). Columns of a partials row: 0 device, 1 metric, 2 minute, 3 count, then
 * (mantissa, exponent) pairs of sum 4-5, min 6-7, max 8-9, m2 10-11, first 12-13, last 14-15, and
 * 16 first_ts, 17 last_ts. A reading whose identity is in dedup_keys fails the statement (RAISE):
 * the committer has already held the group against the identities not copied there yet (its
 * `unflushed`) and against itself. jsonb_each, not json_each: the text is parsed into SQLite's
 * binary JSON once and each row's fields read from that, where json_each hands each row back as
 * JSON text that every `->>` parses again (15-19% less CPU per commit, bench/outbox-commit.ts).
 */
const groupCommitTrigger = (view: string, checkRepeats: boolean) => `
CREATE TEMP VIEW IF NOT EXISTS ${view} (rows, now, epoch, first, open_last, close_epoch, close_last, prows, flush)
  AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL;
CREATE TEMP TRIGGER IF NOT EXISTS ${view}_insert INSTEAD OF INSERT ON ${view} BEGIN
  ${checkRepeats ? `SELECT RAISE(ABORT, '${REPEAT_MESSAGE}') FROM jsonb_each(NEW.rows) j
    WHERE EXISTS (SELECT 1 FROM dedup_keys k WHERE k.key = ${dedupKeySql('j.value->>0', 'j.value->>3')});` : ''}
  UPDATE epochs SET last_seq = NEW.close_last, closed_at = NEW.now WHERE NEW.close_epoch IS NOT NULL AND epoch = NEW.close_epoch;
  INSERT INTO epochs (epoch, first_seq, last_seq, opened_at) SELECT NEW.epoch, NEW.first, NEW.open_last, NEW.now WHERE NEW.open_last IS NOT NULL;
  INSERT INTO outbox_rows (seq, epoch, series, ts, value, late)
    SELECT NEW.first + j.key, NEW.epoch, j.value->>3, j.value->>0, (j.value->>1) * pow(2, j.value->>2), MAX(0, NEW.now - (j.value->>0)) FROM jsonb_each(NEW.rows) j;
  ${flushDedupKeysSql('NEW.flush', 'NEW.flush IS NOT NULL').join(';\n  ')};
  INSERT INTO partials (device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts, updated_at)
    SELECT j.value->>0, j.value->>1, j.value->>2, NEW.epoch, j.value->>3, (j.value->>4) * pow(2, j.value->>5), (j.value->>6) * pow(2, j.value->>7),
      (j.value->>8) * pow(2, j.value->>9), (j.value->>10) * pow(2, j.value->>11), (j.value->>12) * pow(2, j.value->>13), j.value->>16,
      (j.value->>14) * pow(2, j.value->>15), j.value->>17, NEW.now FROM jsonb_each(NEW.prows) j WHERE true ${PARTIALS_UPSERT};
END;`;
const GROUP_COMMIT_SQL = groupCommitTrigger('group_commit', true);
const GROUP_COMMIT_INSERT = 'INSERT INTO temp.group_commit (rows, now, epoch, first, open_last, close_epoch, close_last, prows, flush) VALUES (jsonb(?), ?, ?, ?, ?, ?, ?, ?, ?)';
/**
 * The commit log's records into gateway.db as one statement (applyRecords, replayCommitLog): its
 * one parameter is a JSON array of the records' parameters (applyJson), whose every element runs
 * the group commit's trigger in turn, in order. One trip to SQLite's thread for all of them, where a
 * statement a record took one each and a callback on the main thread (4,096 readings: ~100 of
 * them). It is the group commit without the look into dedup_keys: a record's readings were found
 * new before it was written (commitLogged) [INV-2]. A single statement, so its own transaction.
 */
const GROUP_APPLY_SQL = groupCommitTrigger('group_apply', false);
const GROUP_APPLY_INSERT = `INSERT INTO temp.group_apply (rows, now, epoch, first, open_last, close_epoch, close_last, prows, flush)
  SELECT jsonb_extract(j.value, '$[0]'), j.value->>1, j.value->>2, j.value->>3, j.value->>4, j.value->>5, j.value->>6, jsonb_extract(j.value, '$[7]'), j.value->>8
  FROM jsonb_each(jsonb(?)) j ORDER BY j.key`;

/**
 * The records' parameters as GROUP_APPLY_INSERT takes them: the readings' and the partials' JSON
 * (texts, params 0 and 7, which it reads with jsonb_extract) go in as they are, not as strings of
 * JSON to parse once more; the others as JSON values.
 */
export function applyJson(records: LogRecord[]): string {
  const asJson = (x: unknown, i: number) => (i === PARAM.rows || i === PARAM.partials ? x as string : JSON.stringify(x));
  return `[${records.map((r) => `[${r.params.map(asJson).join(',')}]`).join(',')}]`;
}
/** What a commit probe writes (and deletes): about a group commit of a few hundred readings. */
const PROBE_BYTES = 64 * 1024;
const partialKey = (device: string, metric: string, minute: number) => `${device}${SEP}${metric}${SEP}${minute}`;
/** A series' key in the committer's maps of series numbers. */
const seriesKey = (device: string, metric: string) => `${device}${SEP}${metric}`;

/**
 * A series as the committer keeps it: its number once known to be committed (0: not known), and
 * the partials key of the minute its last reading fell in.
 */
interface SeriesRow {
  device: string;
  metric: string;
  id: number;
  minute: number;
  pkey: string;
}

export class Committer {
  private readonly writes: WriteQueue;
  private readonly logger: Logger;
  private readonly metrics: OutboxMetrics;
  private readonly now: () => number;
  private readonly opts: CommitterOptions;
  readonly state: CommitterState;

  private queue: Pending[] = [];
  private queuedReadings = 0;
  /** Cancels the scheduled group commit, when one is scheduled. */
  private timer: (() => void) | null = null;
  private flushing: Promise<void> | null = null;
  private closed = false;
  /**
   * Devices the last commit acknowledged several messages of, not heard from since: publishers with
   * a window in flight that refill it as soon as their PUBACKs arrive. The next commit waits until
   * each has sent again (at most refillWaitMs), so the windows of many devices share one commit and
   * one fsync instead of taking turns, each in a commit of its own.
   */
  private refilling = new Set<string>();
  /**
   * Each device's submits queued or being committed. A device with two or more keeps a window of
   * messages in flight: the linger does not wait for it (mayLinger).
   */
  private unsettled = new Map<string, number>();
  /**
   * Devices whose last commit held two or more of their messages: publishers keeping a window in
   * flight, whose next message may come alone (the rest held back by Nagle until the PUBACKs).
   */
  private windowed = new Set<string>();
  /** A queued submit's device keeps a window (another message unsettled, or `windowed`). */
  private queueWindowed = false;
  /** When the oldest queued submit was queued (performance.now()): the linger runs from it. */
  private queuedSince = 0;
  /** The scheduled commit is the linger's (a submit that ends it commits at once). */
  private lingering = false;
  /** Summaries of the open epoch's partials: the in-memory side of rows in `partials`. */
  private openPartials = new Map<string, Summary>();
  /**
   * Each series the committer has seen, by device then metric: no key string built, hashed and
   * looked up twice per reading (docs/benchmarks.md, gateway session 8). A row's number, known to
   * be committed, lets the usual commit put it in its rows instead of looking each reading's series
   * up in SQL: set after COMMIT only (cacheSeries); every row is dropped when the retention deletes
   * series (their numbers may be given again, forgetSeries) and when they grow past SERIES_CACHE_MAX.
   */
  private seriesRows = new Map<string, Map<string, SeriesRow>>();
  /**
   * [INV-2] The identities (series number -> ts) of the committed outbox rows not yet copied into
   * dedup_keys (schema.ts DEDUP_FLUSHED_KEY), with how many: the group commit checks its readings
   * against these, and SQL against dedup_keys. Rebuilt from the outbox when the gateway opens; may
   * also hold identities copied by another job (the forwarder's ack, the disk budget), which
   * are in dedup_keys too, until the next flush here.
   */
  private unflushed = new Map<number, Set<number>>();
  private unflushedCount = 0;
  private seriesRowCount = 0;
  /**
   * The commit log (commit-log.ts), or null: then every group commits in gateway.db before its
   * PUBACKs. With it, a group of fresh readings of numbered series is durable once its record is
   * written, and waits in `unapplied` (in order) until applyPending puts it into gateway.db.
   */
  private readonly log: CommitLog | null;
  private unapplied: LogRecord[] = [];
  private unappliedReadings = 0;
  private applyTimer: NodeJS.Timeout | null = null;
  private applyQueued = false;
  /** The apply running in the background (applySoon), if one is; it never rejects. */
  private applying: Promise<void> | null = null;
  /** The last apply failed (the commits' health stays failing until one succeeds). */
  private applyFailing = false;
  /**
   * [INV-2] Upper bounds on the ts of the identities in dedup_keys: `dedupHi` over all of them when
   * the gateway opened, `seriesHi` per series over those copied there since (clearUnflushed). A
   * reading above both for its series, and not in `unflushed`, is new without a look at dedup_keys:
   * what the commit log's groups need, decided before their PUBACKs with no SQL (commitLogged).
   */
  private readonly dedupHi: number;
  private seriesHi = new Map<number, number>();
  /** The group commit's and the apply's prepared Statements and the connection they belong to. */
  private statements = new Map<GroupStatement, { db: Db; stmt: Promise<sqlite3.Statement> }>();
  /** Called after each commit that assigned seq (the forwarder's wake-up). */
  onCommitted: (lastSeq: number) => void = () => {};
  /**
   * When commits started failing (ms), null while they succeed: the commit-health signal the
   * broker refuses CONNECTs on. Set by a failed commit, cleared by a successful one or probe.
   */
  failingSince: number | null = null;
  /** Called when commits start failing (true) and when they succeed again (false). */
  onHealth: (failing: boolean) => void = () => {};

  constructor(
    deps: { writes: WriteQueue; logger: Logger; metrics: OutboxMetrics; now: () => number; log?: CommitLog | null },
    opts: CommitterOptions,
    state: CommitterState,
    identities: UnflushedIdentity[] = [],
    dedupHi = Infinity,
  ) {
    this.writes = deps.writes;
    this.log = deps.log ?? null;
    this.dedupHi = dedupHi;
    // Every other write job sees the logged groups in gateway.db first.
    if (this.log) this.writes.before = (db) => this.applyPending(db);
    this.logger = deps.logger;
    this.metrics = deps.metrics;
    this.now = deps.now;
    this.opts = opts;
    this.state = state;
    for (const x of identities) this.addUnflushed(x.series, x.ts);
  }

  /** Queue readings for the next group commit; resolves once they are durable. */
  submit(readings: Reading[]): Promise<CommitResult> {
    return new Promise((resolve, reject) => {
      const err = this.submitTo(readings, PROMISE_SINK as CommitSink<unknown>, { resolve, reject });
      if (err) reject(err);
    });
  }

  /**
   * Queue readings for the next group commit; `sink.settled(ctx, ...)` once they are durable or
   * the commit failed. Returns the error instead when they are not queued (closing, queue full):
   * then the sink hears nothing.
   */
  submitTo<C>(readings: Reading[], sink: CommitSink<C>, ctx: C): Error | null {
    if (this.closed) return new ClosedError('gateway is shutting down');
    if (this.queuedReadings + readings.length > this.opts.maxQueuedReadings) {
      this.metrics.dropped.inc({ reason: 'queue_full' }, readings.length);
      return new LimitExceededError(`commit queue is full (${this.opts.maxQueuedReadings} readings)`);
    }
    const source = readings.length ? readings[0].device : undefined;
    if (this.queue.length === 0) this.queuedSince = performance.now();
    this.queue.push({ readings, source, sink: sink as CommitSink<unknown>, ctx });
    this.queuedReadings += readings.length;
    if (source !== undefined) {
      const n = (this.unsettled.get(source) ?? 0) + 1;
      this.unsettled.set(source, n);
      if (n > 1 || this.windowed.has(source)) this.queueWindowed = true;
    }
    if (source !== undefined && this.refilling.delete(source) && this.refilling.size === 0 && this.waitingRefill) {
      // Every device the wait was for has sent again: commit on the next turn.
      this.clearTimer();
    } else if (this.lingering && !this.mayLinger()) {
      // A windowed device, or enough readings: the linger ends.
      this.clearTimer();
    }
    this.schedule();
    return null;
  }

  /**
   * Keep a payload that could not be parsed, with its reason (bounded). Committed with the next
   * group; resolves once durable, so the PUBACK of a bad payload also follows its record.
   */
  quarantine(entry: QuarantineEntry): Promise<void> {
    if (this.closed) return Promise.reject(new ClosedError('gateway is shutting down'));
    return new Promise((resolve, reject) => {
      if (this.queue.length === 0) this.queuedSince = performance.now();
      this.queue.push({ readings: [], quarantine: entry, sink: PROMISE_SINK as CommitSink<unknown>, ctx: { resolve: () => resolve(), reject } });
      this.schedule();
    });
  }

  private waitingRefill = false;

  private schedule(): void {
    if (this.timer || this.flushing) return;
    if (this.queuedReadings >= this.opts.maxBatchReadings) {
      this.flushNow();
      return;
    }
    if (this.refilling.size && this.opts.refillWaitMs > 0 && !this.closed) {
      const h = setTimeout(() => this.flushNow(), this.opts.refillWaitMs);
      this.waitingRefill = true;
      this.timer = () => { clearTimeout(h); this.waitingRefill = false; };
      return;
    }
    if (this.mayLinger()) {
      const h = setTimeout(() => this.flushNow(), Math.max(0, this.queuedSince + this.opts.groupCommitMs - performance.now()));
      this.lingering = true;
      this.timer = () => { clearTimeout(h); this.lingering = false; };
      return;
    }
    // Commit on the next turn of the event loop (a 0 ms setTimeout is 1 ms); what arrives while a
    // commit runs forms the next group anyway.
    const h = setImmediate(() => this.flushNow());
    this.timer = () => clearImmediate(h);
  }

  /**
   * Whether the next commit may wait for more readings (groupCommitMs): devices that send one
   * message at a time, each on its own clock, share a commit only if it waits for them; a fleet of
   * them otherwise gets a commit, and its pages written and fsync'd, for every message or two
   * (docs/benchmarks.md, gateway, session 12: a fleet). Not while a queued submit's device keeps a
   * window (`queueWindowed`: its window refills only after PUBACKs), nor with LINGER_FULL_READINGS
   * queued, nor when closing.
   */
  private mayLinger(): boolean {
    return this.opts.groupCommitMs > 0 && !this.queueWindowed && this.queuedReadings < LINGER_FULL_READINGS && !this.closed;
  }

  /** The oldest queued submit has waited the linger out (or none may wait). */
  private lingerDone(): boolean {
    return !this.mayLinger() || performance.now() - this.queuedSince >= this.opts.groupCommitMs;
  }

  private clearTimer(): void {
    this.timer?.();
    this.timer = null;
  }

  private flushNow(): void {
    this.clearTimer();
    this.refilling.clear();
    if (this.flushing) return;
    this.flushing = this.flushLoop().finally(() => {
      this.flushing = null;
      if (this.queue.length) this.schedule();
    });
  }

  private async flushLoop(): Promise<void> {
    // After a commit with refills to wait for, or while the queued readings may linger, the loop
    // ends and schedule() waits for them.
    while (this.queue.length && !(this.refilling.size && this.opts.refillWaitMs > 0 && this.queuedReadings < this.opts.maxBatchReadings && !this.closed) && this.lingerDone()) {
      // Take a prefix in one splice: shift() per item is quadratic on a long queue.
      let n = 0;
      let take = 0;
      while (take < this.queue.length && (take === 0 || n + this.queue[take].readings.length <= this.opts.maxBatchReadings)) {
        n += this.queue[take].readings.length;
        take++;
      }
      const batch = this.queue.splice(0, take);
      if (this.queue.length === 0) this.queueWindowed = false;
      // A loop, not flatMap: flatMap's callback would make an array per submit.
      const quarantined: QuarantineEntry[] = [];
      for (let i = 0; i < batch.length; i++) if (batch[i].quarantine) quarantined.push(batch[i].quarantine!);
      this.queuedReadings -= n;
      const started = performance.now();
      try {
        // apply() runs inside the same write job, right after COMMIT: no other write job (an
        // epoch close) can see the state between the two.
        const { results, logged } = await this.writes.runBare(async (db) => {
          if (this.log && !quarantined.length && n <= LOG_MAX_READINGS) {
            const l = await this.commitLogged(db, batch);
            if (l) {
              l.apply();
              return { results: l.results, logged: true };
            }
          }
          // The SQL paths build on gateway.db as it is: with every logged group in it.
          await this.applyPending(db);
          const fast = quarantined.length ? null : await this.commitFast(db, batch);
          const { results: r, apply } = fast ?? await transaction(db, (d) => this.commit(d, batch, quarantined));
          apply();
          return { results: r, logged: false };
        });
        this.metrics.commitSeconds.observe((performance.now() - started) / 1000);
        this.metrics.commitReadings.observe(n);
        this.expectRefills(batch);
        // A logged group says nothing of gateway.db: while its apply fails, commits stay failing.
        if (!this.applyFailing) this.healthy();
        this.settleAll(batch, null, results);
        // A logged group reaches the forwarder when it is applied (applyPending).
        if (!logged) this.onCommitted(this.state.lastSeq);
      } catch (err) {
        this.logger.error({ err, readings: n }, 'outbox commit failed');
        this.metrics.commitFailures.inc();
        this.failing();
        this.settleAll(batch, err as Error, null);
      }
    }
  }

  /**
   * Tell every submit of a group how its commit went, in submit order, then each sink with a
   * `groupSettled` once. A sink that throws (a bug) is logged; the rest of the group still hears.
   */
  private settleAll(batch: Pending[], err: Error | null, results: CommitResult[] | null): void {
    let first: CommitSink<unknown> | null = null;
    let more: Array<CommitSink<unknown>> | null = null;
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i];
      if (p.source !== undefined) {
        const n = this.unsettled.get(p.source)!;
        if (n > 1) this.unsettled.set(p.source, n - 1);
        else this.unsettled.delete(p.source);
      }
      try {
        p.sink.settled(p.ctx, err, results ? results[i] : null);
      } catch (e) {
        this.logger.error({ err: e }, 'a commit\'s receiver failed');
      }
      const s = p.sink;
      if (s.groupSettled && s !== first) {
        if (first === null) first = s;
        else if (!more?.includes(s)) (more ??= []).push(s);
      }
    }
    for (const s of more ? [first!, ...more] : first ? [first] : []) {
      try {
        s.groupSettled!();
      } catch (e) {
        this.logger.error({ err: e }, 'a commit\'s receiver failed');
      }
    }
  }

  /**
   * The devices of this commit with two or more messages in it: their next ones are on the way (the
   * refill wait), and they keep a window in flight (`windowed`: the linger does not wait for them;
   * a device with one message in it is taken off). One submit of each ends the refill wait: a
   * publisher may refill its window in pieces (mosquitto_pub sends one message for a burst of
   * PUBACKs and the rest at its next one), so waiting for as many as were acknowledged only runs
   * the wait to its limit (docs/benchmarks.md, 2026-12-06).
   */
  private expectRefills(batch: Pending[]): void {
    if (this.opts.refillWaitMs <= 0 && this.opts.groupCommitMs <= 0) return;
    const seen = new Set<string>();
    const several = new Set<string>();
    for (const p of batch) {
      if (p.source === undefined) continue;
      if (seen.has(p.source)) several.add(p.source);
      else seen.add(p.source);
    }
    if (this.windowed.size > WINDOWED_MAX) this.windowed.clear();
    for (const d of seen) {
      if (several.has(d)) this.windowed.add(d);
      else this.windowed.delete(d);
    }
    if (this.opts.refillWaitMs > 0) for (const d of several) this.refilling.add(d);
  }

  /**
   * One transaction's statements. Returns the per-submit results and the in-memory changes to
   * apply once COMMIT has returned, so a failed commit leaves the process state as the disk has it.
   */
  private async commit(db: Db, batch: Pending[], quarantined: QuarantineEntry[]): Promise<{ results: CommitResult[]; apply: () => void }> {
    const now = this.now();
    const all = batch.flatMap((p) => p.readings);

    // [INV-2] dedup: an identity seen before is in dedup_keys or among the outbox rows not copied
    // there yet (`unflushed`); a repeat inside this very batch is dropped too, so the first
    // occurrence wins. An identity is its ts and the number of its series (schema.ts dedup_keys);
    // a reading whose series has no number (the series table full) or whose ts a key cannot hold
    // is dropped, counted.
    const ids = await seriesIds(db, all);
    const seen = new Set<string>();
    // Each reading's identity as a Set key (null: dropped), worked out once, in the order of `all`.
    const keys: Array<string | null> = new Array(all.length);
    const keyed: Array<{ ts: number; id: number }> = [];
    /** Each kept reading's series number, by the index in `all`. */
    const seriesOf: number[] = new Array(all.length);
    let unkeyed = 0;
    for (let i = 0; i < all.length; i++) {
      const r = all[i];
      const id = ids.get(seriesKey(r.device, r.metric));
      if (id === undefined || !Number.isSafeInteger(r.ts) || Math.abs(r.ts) >= DEDUP_TS_LIMIT) {
        keys[i] = null;
        unkeyed++;
      } else {
        keys[i] = `${r.ts}${SEP}${id}`;
        keyed.push({ ts: r.ts, id });
        seriesOf[i] = id;
      }
    }
    if (unkeyed) {
      this.logger.error({ readings: unkeyed, seriesMax: SERIES_MAX }, 'readings dropped: their series (device, metric) finds no number in a full series table, or their ts is out of range');
      this.metrics.dropped.inc({ reason: 'series_full' }, unkeyed);
    }
    // The keys as one JSON parameter, each looked up by its rowid (CROSS JOIN: the keys' list is the
    // outer loop, never a scan of dedup_keys); a long IN list of expressions compiles in quadratic
    // time (45,000 keys in statements of 16,383 took 14-29 s).
    {
      const look = keyed.filter((k) => !this.unflushed.get(k.id)?.has(k.ts)).map((k) => `[${k.ts},${k.id}]`);
      const rows = look.length ? await db.all<{ ts: number; id: number }>(
        `SELECT ${dedupKeyTsSql('k.key')} AS ts, ${dedupKeySeriesSql('k.key')} AS id FROM json_each(?) j
           CROSS JOIN dedup_keys k ON k.key = ${dedupKeySql('j.value->>0', 'j.value->>1')}`, [`[${look.join(',')}]`]) : [];
      for (const row of rows) seen.add(`${row.ts}${SEP}${row.id}`);
    }

    let seq = this.state.lastSeq;
    const results: CommitResult[] = [];
    const kept: Array<Reading & { seq: number; series: number }> = [];
    let i = 0;
    for (const p of batch) {
      let accepted = 0;
      let dropped = 0;
      for (const r of p.readings) {
        const at = i++;
        const key = keys[at];
        if (key === null) dropped++;
        if (key === null || seen.has(key) || this.unflushed.get(seriesOf[at])?.has(r.ts)) continue;
        seen.add(key);
        kept.push({ ...r, seq: ++seq, series: seriesOf[at] });
        accepted++;
      }
      results.push({ accepted, duplicates: p.readings.length - accepted - dropped });
    }

    let epoch = this.state.open;
    // The open epoch's partials as they stand; a new epoch starts from none.
    let base = this.openPartials;
    // The writer connection runs statements in the order issued (serialize mode, schema.ts), so
    // they go out together and are awaited once: one wait on SQLite's thread instead of several.
    const pending: Array<Promise<unknown>> = [];
    if (epoch && epochDue(epoch.openedAt, now, this.opts.epochMs)) {
      pending.push(closeEpoch(db, epoch, now));
      epoch = null;
      base = new Map();
    }
    let touched = new Map<string, Summary>();
    if (kept.length) {
      if (!epoch) {
        epoch = { epoch: this.state.lastEpoch + 1, firstSeq: this.state.lastSeq + 1, lastSeq: seq, openedAt: now };
        base = new Map();
        pending.push(db.run('INSERT INTO epochs (epoch, first_seq, last_seq, opened_at) VALUES (?, ?, ?, ?)', [epoch.epoch, epoch.firstSeq, seq, now]));
      } else {
        // The open epoch's row keeps the last_seq it was opened with until it closes (one page
        // fewer per commit); loadCommitterState recovers it after a crash.
        epoch = { ...epoch, lastSeq: seq };
      }
      for (const chunk of chunkRows(kept, 6)) {
        const params: unknown[] = [];
        for (const r of chunk) params.push(r.seq, epoch.epoch, r.series, r.ts, r.value, Math.max(0, now - r.ts));
        pending.push(db.run(`INSERT INTO outbox_rows (seq, epoch, series, ts, value, late) VALUES ${placeholders(chunk.length, 6)}`, params));
      }
      touched = this.writePartials(db, kept, epoch.epoch, base, now, pending);
    }
    const flush = this.unflushedCount + kept.length >= DEDUP_FLUSH_READINGS;
    if (flush) pending.push(flushDedupKeys(db, seq));
    await Promise.all(pending);
    const quarantineDropped = await this.writeQuarantine(db, quarantined, now);

    const apply = () => {
      this.cacheSeries(all, ids);
      // The group's own identities too: the flush copied them, and clearUnflushed bounds the
      // commit log's dedup (seriesHi) by what it holds.
      for (const r of kept) this.addUnflushed(r.series, r.ts);
      if (flush) this.clearUnflushed();
      this.applyCommit({ kept, seq, epoch, base, touched, quarantined: quarantined.length, quarantineDropped, readings: all.length - unkeyed });
    };
    return { results, apply };
  }

  /**
   * Merge the kept readings into the open epoch's partials (`base`, left untouched) and write the
   * touched rows (their statements pushed on `pending`); returns the touched summaries for the caller to apply after COMMIT.
   */
  private writePartials(db: Db, kept: Reading[], epoch: number, base: Map<string, Summary>, now: number, pending: Array<Promise<unknown>>): Map<string, Summary> {
    const { next, touched } = mergePartials(kept, base);
    const rows = [...touched.values()];
    for (const chunk of chunkRows(rows, 14)) {
      const params: unknown[] = [];
      for (const { device, metric, minute, s } of chunk) {
        params.push(device, metric, minute, epoch, s.count, s.sum, s.min, s.max, s.m2, s.first, s.firstTs, s.last, s.lastTs, now);
      }
      pending.push(db.run(
        `INSERT INTO partials (device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts, updated_at) VALUES ${placeholders(chunk.length, 14)} ${PARTIALS_UPSERT}`,
        params,
      ));
    }
    return next;
  }

  /**
   * The usual group commit in one round trip to SQLite's thread: the whole transaction is one run
   * of a Statement prepared once per connection, `INSERT INTO temp.group_commit`, whose INSTEAD OF
   * trigger (GROUP_COMMIT_SQL) writes the epochs, outbox rows, partials (and a batch of identities into dedup_keys). A
   * single statement in autocommit mode is its own transaction: it commits when the run returns
   * (synchronous=FULL) and a failing step rolls all of it back, so nothing is committed after a
   * failed one. That needs the connection in autocommit mode when the job starts: every write job
   * on it ends its BEGIN with COMMIT or ROLLBACK (`transaction`; SQLite's ROLLBACK fails only when
   * no transaction is open). The group goes as bound text parameters (the readings' JSON once, the partials'
   * JSON once), not spliced into SQL: no SQL text to convert and copy on the main thread, no
   * quoting, no statement for SQLite to compile per commit. It takes groups of fresh readings of
   * numbered series only: a repeat of an identity the committer holds (`unflushed`) or one inside
   * this group, or a series without a known number, returns null before SQL; a repeat of one in
   * dedup_keys fails the statement (RAISE), which is rolled back, and null is returned. The caller
   * then commits the group the general way, which sorts out the repeats and numbers the series
   * [INV-2]. Also null (nothing written) for what the JSON form does not carry: a ts that is not a
   * safe integer or a value that is not finite (the payload parser lets neither through).
   *
   * Doubles go as an integer mantissa and a power of two (`m * pow(2, e)`, exact for every finite
   * double): SQLite's decimal parsing is not correctly rounded for every double.
   */
  private async commitFast(db: Db, batch: Pending[]): Promise<{ results: CommitResult[]; apply: () => void } | null> {
    const g = this.prepareFast(batch, false);
    if (!g) return null;
    try {
      await runStatement(await this.statement(db, 'commit'), g.record.params);
    } catch (err) {
      g.undo();
      if (isDedupConflict(err)) return null;
      throw err;
    }
    return { results: g.results, apply: g.apply };
  }

  /**
   * The usual group as a record of the commit log [INV-1]: durable once written, its PUBACKs sent
   * then, its statement run in gateway.db later with others (applyPending). It takes groups of at
   * most LOG_MAX_READINGS (flushLoop) that commitFast would take, and of those only readings whose
   * ts is above every identity of their series in dedup_keys (`dedupHi`, `seriesHi`), so the dedup
   * is decided here, with no SQL [INV-2]; null (nothing written) for any other group, which commits
   * in gateway.db as before. When the records not yet applied leave the log no room (CommitLog.full:
   * the apply is far behind, or failing), they go into gateway.db first.
   */
  private async commitLogged(db: Db, batch: Pending[]): Promise<{ results: CommitResult[]; apply: () => void } | null> {
    const g = this.prepareFast(batch, true);
    if (!g) return null;
    // A page or a few a commit is what the log saves; a larger group costs less as a SQLite commit.
    const buf = CommitLog.encode(g.record);
    if (buf.length > LOG_MAX_RECORD_BYTES) {
      g.undo();
      return null;
    }
    try {
      if (this.log!.full(buf.length)) await this.applyPending(db);
      await this.log!.append(g.record, buf);
    } catch (err) {
      g.undo();
      throw err;
    }
    return {
      results: g.results,
      apply: () => {
        g.apply();
        this.unapplied.push(g.record);
        this.unappliedReadings += g.record.count;
        this.scheduleApply();
      },
    };
  }

  /**
   * Put the logged groups into gateway.db: after the apply running in the background, if one is
   * (applySoon), those waiting now. Every write job that touches gateway.db calls it first (the
   * `before` hook, the SQL commit paths, applied(), close()): one transaction at a time on the
   * connection, and the records in order. A failure fails the caller (applyRecords).
   */
  private async applyPending(db: Db): Promise<void> {
    await this.applyIdle();
    await this.applyRecords(db);
  }

  /**
   * The logged groups waiting, into gateway.db in order in one statement (GROUP_APPLY_INSERT); then the log may be
   * written over up to their last seq, and the forwarder hears of them. A failure keeps them all
   * waiting (they are in the log) and fails the caller: the next write job tries again.
   */
  private async applyRecords(db: Db): Promise<void> {
    if (!this.unapplied.length) return;
    this.clearApplyTimer();
    const take = this.unapplied;
    const readings = this.unappliedReadings;
    this.unapplied = [];
    this.unappliedReadings = 0;
    const started = performance.now();
    try {
      await runStatement(await this.statement(db, 'apply'), [applyJson(take)]);
    } catch (err) {
      this.unapplied = take.concat(this.unapplied);
      this.unappliedReadings += readings;
      this.logger.error({ err, readings }, 'applying the commit log to gateway.db failed');
      this.metrics.commitFailures.inc();
      this.applyFailing = true;
      this.failing();
      throw err;
    }
    if (this.applyFailing) {
      this.applyFailing = false;
      this.healthy();
    }
    this.metrics.applySeconds.observe((performance.now() - started) / 1000);
    this.metrics.applyReadings.observe(readings);
    const last = take[take.length - 1];
    const lastSeq = last.first + last.count - 1;
    this.log!.appliedUpTo(lastSeq);
    // Not state.lastSeq: logged groups may have come after these while they went in (applySoon).
    this.onCommitted(lastSeq);
  }

  /** After a logged group: its apply, at once past APPLY_READINGS waiting, else within APPLY_MS. */
  private scheduleApply(): void {
    if (this.unappliedReadings >= APPLY_READINGS) {
      this.applySoon();
      return;
    }
    if (!this.applyTimer) {
      this.applyTimer = setTimeout(() => {
        this.applyTimer = null;
        this.applySoon();
      }, APPLY_MS);
      this.applyTimer.unref();
    }
  }

  /**
   * Start an apply in the background: the write job that starts it ends at once, so the logged
   * groups queued behind it are written and acknowledged while gateway.db takes the records (an
   * apply of 4,096 readings takes 20-50 ms here, and held every PUBACK that long while it was a
   * write job of its own: docs/benchmarks.md, gateway, session 19). What touches gateway.db waits
   * for it (applyPending). When it ends, the groups logged meanwhile get their own, as scheduleApply
   * would have started it (a failed one is tried again by the next write job).
   */
  private applySoon(): void {
    // A closing committer applies what is left itself (close).
    if (this.applyQueued || this.closed) return;
    this.applyQueued = true;
    this.writes.runBare(async (db) => {
      this.applyQueued = false;
      if (this.applying || !this.unapplied.length) return;
      this.applying = this.applyRecords(db).then(() => {
        this.applying = null;
        // A timer that fired meanwhile found this one running (the check above).
        if (this.unapplied.length && (this.unappliedReadings >= APPLY_READINGS || !this.applyTimer)) this.applySoon();
      }, () => {
        this.applying = null; // logged and counted by applyRecords; the next write job tries again
      });
    }).catch(() => undefined);
  }

  private clearApplyTimer(): void {
    if (this.applyTimer) clearTimeout(this.applyTimer);
    this.applyTimer = null;
  }

  /**
   * Resolves once gateway.db holds every group acknowledged so far: for a reader connection that
   * must see them (the windows API after a PUBACK).
   */
  async applied(): Promise<void> {
    if (this.unapplied.length || this.applying) await this.writes.runBare((db) => this.applyPending(db));
  }

  /**
   * Resolves once no apply runs in the background (none starts before the caller's write job
   * ends, when awaited inside one): gateway.db's files are then at rest there, for a copy of them.
   */
  async applyIdle(): Promise<void> {
    while (this.applying) await this.applying;
  }

  /**
   * A group of fresh readings of numbered series as one group commit statement, with its results,
   * what to apply in memory once it is durable, and the undo of its identities otherwise; null
   * (nothing changed) for a group it cannot take: a repeat of an identity the committer holds
   * (`unflushed`) or one inside the group, a series without a known number, and, for the commit
   * log (`logged`), a ts not above every identity of its series in dedup_keys. The group commit
   * statement itself fails (RAISE) on a repeat in dedup_keys; commitFast then leaves the group to
   * the general way, which sorts out the repeats and numbers the series [INV-2]. Also null for what
   * the JSON form does not carry: a ts that is not a safe integer or a value that is not finite
   * (the payload parser lets neither through).
   *
   * Doubles go as an integer mantissa and a power of two (`m * pow(2, e)`, exact for every finite
   * double): SQLite's decimal parsing is not correctly rounded for every double.
   */
  private prepareFast(batch: Pending[], logged: boolean): { record: LogRecord; results: CommitResult[]; apply: () => void; undo: () => void } | null {
    // The group's identities go into `unflushed` as they are checked (so a repeat inside the group
    // is found too), and out again unless the group commits. Their series numbers are kept as they
    // were checked: the series rows may be dropped meanwhile (SERIES_CACHE_MAX), and an identity
    // left behind would turn the next reading with it away as a repeat, unstored.
    const ids: number[] = [];
    const undo = () => {
      let at = 0;
      for (const p of batch) {
        for (const r of p.readings) {
          if (at === ids.length) {
            ids.length = 0;
            return;
          }
          this.unflushed.get(ids[at++])?.delete(r.ts);
        }
      }
      ids.length = 0;
    };
    const fail = () => {
      undo();
      return null;
    };
    const now = this.now();
    // The submitted readings themselves: nothing changes them, and the seq is the index's.
    const kept: Reading[] = [];
    const rows: string[] = [];
    let seq = this.state.lastSeq;
    const results: CommitResult[] = [];
    /** Each kept reading's partials key (partialKey), in the order of `kept`. */
    const pkeys: string[] = [];
    for (const p of batch) {
      for (const r of p.readings) {
        const v = exactDouble(r.value);
        if (v === null || !Number.isSafeInteger(r.ts) || Math.abs(r.ts) >= DEDUP_TS_LIMIT) return fail();
        const e = this.seriesRow(r.device, r.metric);
        // A series without a known number: the general path numbers it (new) or looks it up.
        if (e.id === 0) return fail();
        // [INV-2] an identity that dedup_keys may hold: the statement's check decides (not logged).
        if (logged && !(r.ts > this.dedupHi && r.ts > (this.seriesHi.get(e.id) ?? -Infinity))) return fail();
        // [INV-2] an identity not yet in dedup_keys, or one of this group: the general path drops it.
        const seen = this.unflushedOf(e.id);
        if (seen.has(r.ts)) return fail();
        seen.add(r.ts);
        ids.push(e.id);
        kept.push(r);
        seq++;
        rows.push(`[${r.ts},${v},${e.id}]`);
        const minute = minuteOf(r.ts);
        if (e.minute !== minute) {
          e.minute = minute;
          e.pkey = partialKey(r.device, r.metric, minute);
        }
        pkeys.push(e.pkey);
      }
      results.push({ accepted: p.readings.length, duplicates: 0 });
    }
    let epoch = this.state.open;
    let base = this.openPartials;
    let closeEpoch: number | null = null;
    let closeLast: number | null = null;
    if (epoch && epochDue(epoch.openedAt, now, this.opts.epochMs)) {
      closeEpoch = epoch.epoch;
      closeLast = epoch.lastSeq;
      epoch = null;
      base = new Map();
    }
    let touched = new Map<string, Summary>();
    const first = this.state.lastSeq + 1;
    let openLast: number | null = null;
    const prows: string[] = [];
    if (kept.length) {
      if (!epoch) {
        epoch = { epoch: this.state.lastEpoch + 1, firstSeq: first, lastSeq: seq, openedAt: now };
        base = new Map();
        openLast = seq;
      } else {
        epoch = { ...epoch, lastSeq: seq };
      }
      const merged = mergePartials(kept, base, pkeys);
      touched = merged.next;
      if (!partialRows(merged.touched, prows)) return fail();
    }
    // The commit log takes groups that give seqs only: each of its records continues the last.
    if (logged && !kept.length) return fail();
    const flush = this.unflushedCount + kept.length >= DEDUP_FLUSH_READINGS;
    const finalEpoch = epoch;
    const finalBase = base;
    // Joined (flat) strings: node-sqlite3 copies a flat string as it binds it, a concatenated one is flattened first.
    const params = [`[${rows.join(',')}]`, now, epoch?.epoch ?? null, first, openLast, closeEpoch, closeLast, `[${prows.join(',')}]`, flush ? seq : null];
    const apply = () => {
      if (flush) this.clearUnflushed();
      else this.unflushedCount += kept.length;
      this.applyCommit({ kept, seq, epoch: finalEpoch, base: finalBase, touched, quarantined: 0, quarantineDropped: 0, readings: kept.length });
    };
    return { record: { first, count: kept.length, params }, results, apply, undo };
  }

  /**
   * The group commit's Statement on this connection ('commit'), or the commit log's apply ('apply'),
   * with its temp view and trigger (made once).
   */
  private statement(db: Db, kind: GroupStatement): Promise<sqlite3.Statement> {
    const held = this.statements.get(kind);
    if (held?.db === db) return held.stmt;
    const made = prepareGroupStatement(db, kind);
    // A failed preparation is tried again at the next commit.
    made.catch(() => { if (this.statements.get(kind)?.stmt === made) this.statements.delete(kind); });
    this.statements.set(kind, { db, stmt: made });
    return made;
  }

  /** The ts of a series' identities not in dedup_keys yet (made empty on first use). */
  private unflushedOf(series: number): Set<number> {
    let seen = this.unflushed.get(series);
    if (seen === undefined) this.unflushed.set(series, (seen = new Set()));
    return seen;
  }

  /** A committed reading's identity, not in dedup_keys yet. */
  private addUnflushed(series: number, ts: number): void {
    this.unflushedOf(series).add(ts);
    this.unflushedCount++;
  }

  /** Every committed identity is in dedup_keys now; `seriesHi` bounds their ts. */
  private clearUnflushed(): void {
    for (const [series, seen] of this.unflushed) {
      let hi = this.seriesHi.get(series) ?? -Infinity;
      for (const ts of seen) if (ts > hi) hi = ts;
      if (hi > -Infinity) this.seriesHi.set(series, hi);
    }
    this.unflushed = new Map();
    this.unflushedCount = 0;
  }

  /**
   * Copy the identities of every committed outbox row into dedup_keys (schema.ts flushDedupKeys)
   * and forget them here, once that committed, in the same write job (no commit between). The
   * retention calls it before pruning dedup_keys, so no identity it prunes is held here past the window.
   */
  flushIdentities(): Promise<void> {
    return this.writes.run(async (db) => {
      await transaction(db, (d) => flushDedupKeys(d, this.state.lastSeq));
      this.clearUnflushed();
    });
  }

  /** Remember the committed numbers `ids` (key: device SEP metric) of these series. */
  private cacheSeries(series: Iterable<{ device: string; metric: string }>, ids: Map<string, number>): void {
    if (ids.size === 0) return;
    for (const x of series) {
      const id = ids.get(seriesKey(x.device, x.metric));
      if (id !== undefined) this.seriesRow(x.device, x.metric).id = id;
    }
  }

  /** Forget every series number: the retention deleted series, whose numbers may be given again. Call inside the write job that deleted them. */
  forgetSeries(): void {
    this.seriesRows.clear();
    this.seriesRowCount = 0;
  }

  /** The committer's entry of a series (bounded: past SERIES_CACHE_MAX entries it starts again). */
  private seriesRow(device: string, metric: string): SeriesRow {
    let e = this.seriesRows.get(device)?.get(metric);
    if (e === undefined) {
      if (this.seriesRowCount >= SERIES_CACHE_MAX) {
        this.seriesRows.clear();
        this.seriesRowCount = 0;
      }
      let byMetric = this.seriesRows.get(device);
      if (byMetric === undefined) this.seriesRows.set(device, (byMetric = new Map()));
      e = { device, metric, id: 0, minute: NaN, pkey: '' };
      byMetric.set(metric, e);
      this.seriesRowCount++;
    }
    return e;
  }

  /** The in-memory side of a commit, once COMMIT has returned. */
  private applyCommit(c: { kept: Reading[]; seq: number; epoch: OpenEpoch | null; base: Map<string, Summary>; touched: Map<string, Summary>; quarantined: number; quarantineDropped: number; readings: number }): void {
    let bytes = 0;
    for (const r of c.kept) bytes += outboxRowBytes(r.device, r.metric);
    this.state.lastSeq = c.seq;
    this.state.open = c.epoch;
    if (c.epoch) this.state.lastEpoch = c.epoch.epoch;
    if (c.base !== this.openPartials) this.openPartials = c.base;
    for (const [k, v] of c.touched) this.openPartials.set(k, v);
    this.state.pendingRows += c.kept.length;
    this.state.pendingBytes += bytes;
    this.state.quarantineRows = Math.min(this.opts.quarantineMaxRows, this.state.quarantineRows + c.quarantined);
    if (c.kept.length) this.metrics.accepted.inc(c.kept.length);
    if (c.readings > c.kept.length) this.metrics.duplicates.inc(c.readings - c.kept.length);
    if (c.quarantineDropped) this.metrics.quarantineDropped.inc(c.quarantineDropped);
  }

  private async writeQuarantine(db: Db, entries: QuarantineEntry[], now: number): Promise<number> {
    if (!entries.length) return 0;
    for (const chunk of chunkRows(entries, 6)) {
      const params: unknown[] = [];
      for (const e of chunk) params.push(now, e.device, e.topic, e.reason, e.message, e.payload.subarray(0, this.opts.quarantinePayloadBytes));
      await db.run(`INSERT INTO quarantine (at, device, topic, reason, message, payload) VALUES ${placeholders(chunk.length, 6)}`, params);
    }
    const over = this.state.quarantineRows + entries.length - this.opts.quarantineMaxRows;
    if (over > 0) {
      await db.run('DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine ORDER BY id LIMIT ?)', [over]);
      return over;
    }
    return 0;
  }

  private failing(): void {
    if (this.failingSince !== null) return;
    this.failingSince = this.now();
    this.onHealth(true);
  }

  private healthy(): void {
    if (this.failingSince === null) return;
    this.logger.info({ failingForMs: this.now() - this.failingSince }, 'outbox commits succeed again');
    this.failingSince = null;
    this.onHealth(false);
  }

  /**
   * While commits fail nothing else writes (the broker refuses devices), so recovery is probed:
   * one transaction that writes PROBE_BYTES and deletes them again. It needs what a group commit
   * needs, room to grow the WAL and new pages, not only a page rewritten in place; on success the
   * freed pages are there for the readings that follow. Resolves whether it committed.
   */
  async probe(): Promise<boolean> {
    try {
      await this.writes.run((db) => transaction(db, async (d) => {
        await d.run("INSERT OR REPLACE INTO meta (key, value) VALUES ('commit_probe', CAST(zeroblob(?) AS TEXT))", [PROBE_BYTES]);
        await d.run("DELETE FROM meta WHERE key = 'commit_probe'");
      }));
    } catch (err) {
      this.logger.debug({ err }, 'outbox commit probe failed');
      return false;
    }
    this.healthy();
    return true;
  }

  /** Close the open epoch if it has been idle for `idleMs` or open for epochMs. */
  async closeEpochIfDue(idleMs: number, lastActivityAt: number): Promise<boolean> {
    const open = this.state.open;
    if (!open) return false;
    const now = this.now();
    if (now - lastActivityAt < idleMs && !epochDue(open.openedAt, now, this.opts.epochMs)) return false;
    return this.writes.run(async (db) => {
      // Re-check inside the queue: a commit may have closed or extended it meanwhile.
      const cur = this.state.open;
      if (!cur || cur.epoch !== open.epoch) return false;
      // [INV-1] Never over seqs gateway.db lacks (the log's records a failed apply left at a stop):
      // the epoch's last_seq would say they are in, and the next start would not replay them.
      // That start closes it, as after a crash.
      if (this.unapplied.length) return false;
      await closeEpoch(db, cur, this.now());
      this.state.open = null;
      this.openPartials = new Map();
      return true;
    });
  }

  /** Stop taking readings, commit everything queued. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.clearTimer();
    while (this.flushing || this.queue.length) {
      if (!this.flushing) this.flushNow();
      await this.flushing;
    }
    if (this.log) {
      // What the log holds and gateway.db not yet goes in now; should that fail, the next opening replays it.
      this.clearApplyTimer();
      await this.writes.runBare((db) => this.applyPending(db)).catch(() => undefined);
      // What did not go in stays in the log for the next start: no later job tries (and makes a
      // statement the closing connection would have to finalize).
      this.writes.before = null;
    }
    // The connection closes only once its statements are finalized.
    const held = [...this.statements.values()];
    this.statements.clear();
    if (held.length) {
      await this.writes.runBare(async () => {
        for (const h of held) {
          const stmt = await h.stmt.catch(() => null);
          if (stmt) await new Promise<void>((resolve) => stmt.finalize(() => resolve()));
        }
      });
    }
    this.log?.close();
  }
}

type GroupStatement = 'commit' | 'apply';

/** The temp view and trigger of the group commit or of the apply on this connection (made once), and its Statement. */
async function prepareGroupStatement(db: Db, kind: GroupStatement): Promise<sqlite3.Statement> {
  await db.exec(kind === 'commit' ? GROUP_COMMIT_SQL : GROUP_APPLY_SQL);
  return new Promise<sqlite3.Statement>((resolve, reject) => {
    const stmt: sqlite3.Statement = db.raw.prepare(kind === 'commit' ? GROUP_COMMIT_INSERT : GROUP_APPLY_INSERT, (err: Error | null) => (err ? reject(err) : resolve(stmt)));
  });
}

/** Run the group commit Statement once with `params`. */
function runStatement(stmt: sqlite3.Statement, params: unknown[]): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    stmt.run(params, (err: Error | null) => (err ? reject(err) : resolve()));
  });
}

/**
 * Apply the commit log's records that gateway.db does not hold yet (commit-log.ts replayable), in
 * order, in one statement (its own transaction), before anything else reads or writes the file:
 * each is the statement its group would have run, against the state it was decided on [INV-1].
 */
export async function replayCommitLog(db: Db, records: LogRecord[]): Promise<void> {
  if (!records.length) return;
  const full = await withPartials(db, records);
  const stmt = await prepareGroupStatement(db, 'apply');
  try {
    await runStatement(stmt, [applyJson(full)]);
  } finally {
    await new Promise<void>((resolve) => stmt.finalize(() => resolve()));
  }
}

/**
 * The records with their partials' parameter (PARAM.partials), made again where the log left it out
 * ('BRL2'): each record's readings merged into the open epoch's partials as its group commit merged
 * them (mergePartials, the same doubles in the same order), so the statement is the one its group
 * decided [INV-2: a reading's outbox row and its partial in one transaction]. The open epoch's
 * partials start as gateway.db holds them (every group before the first record is in: the replay
 * takes the records after gateway.db's last seq), and from none at a record that opens an epoch:
 * an epoch is never open across a restart (loadCommitterState), so no group of it was decided on
 * partials that gateway.db lacks.
 */
export async function withPartials(db: Db, records: LogRecord[]): Promise<LogRecord[]> {
  if (records.every((r) => r.params[PARAM.partials] !== null)) return records;
  const readings = records.map((r) => JSON.parse(r.params[PARAM.rows] as string) as Array<[number, number, number, number]>);
  const ids = [...new Set(readings.flatMap((rows) => rows.map((x) => x[3])))];
  const series = new Map<number, { device: string; metric: string }>();
  for (const row of await db.all<{ id: number; device: string; metric: string }>(
    'SELECT id, device, metric FROM series WHERE id IN (SELECT value FROM json_each(?))', [JSON.stringify(ids)])) {
    series.set(row.id, row);
  }
  const kept = readings.map((rows, i) => rows.map(([ts, m, e, id]): Reading => {
    const s = series.get(id);
    if (!s) throw new Error(`commit log: the record of seq ${records[i].first} names series ${id}, which gateway.db does not hold`);
    return { device: s.device, metric: s.metric, ts, value: m * 2 ** e };
  }));
  // The partials gateway.db holds of the epoch the first records continue (up to one that opens an epoch).
  const base = new Map<string, Summary>();
  const continued = records.findIndex((r) => r.params[PARAM.openLast] !== null);
  const wanted = new Map<string, [string, string, number]>();
  for (const rows of kept.slice(0, continued < 0 ? kept.length : continued)) {
    for (const r of rows) {
      const minute = minuteOf(r.ts);
      wanted.set(partialKey(r.device, r.metric, minute), [r.device, r.metric, minute]);
    }
  }
  if (wanted.size) {
    const stored = await db.all<SummaryColumns & { device: string; metric: string; minute: number }>(
      `SELECT p.device, p.metric, p.minute, p.count, p.sum, p.min, p.max, p.m2, p.first, p.first_ts, p.last, p.last_ts
       FROM json_each(?) j JOIN partials p ON p.device = j.value->>0 AND p.minute = j.value->>2 AND p.metric = j.value->>1 AND p.epoch = ?`,
      [JSON.stringify([...wanted.values()]), records[0].params[PARAM.epoch]]);
    for (const p of stored) base.set(partialKey(p.device, p.metric, p.minute), fromColumns(p, p.device));
  }
  return records.map((record, i) => {
    // A record that opens an epoch (open_last) starts its partials from none.
    if (record.params[PARAM.openLast] !== null) base.clear();
    const merged = mergePartials(kept[i], base);
    for (const [k, s] of merged.next) base.set(k, s);
    if (record.params[PARAM.partials] !== null) return record;
    const prows: string[] = [];
    if (!partialRows(merged.touched, prows)) throw new Error(`commit log: the record of seq ${record.first} makes a partial that is not finite`);
    return { ...record, params: record.params.map((x, j) => (j === PARAM.partials ? `[${prows.join(',')}]` : x)) };
  });
}

/**
 * The partials' JSON rows of GROUP_COMMIT_INSERT (its columns, committer.ts groupCommitTrigger) for
 * the touched summaries, pushed on `out`; false if one holds a number JSON cannot carry exactly.
 */
function partialRows(touched: Map<string, { device: string; metric: string; minute: number; s: Summary }>, out: string[]): boolean {
  for (const { device, metric, minute, s } of touched.values()) {
    const nums = [exactDouble(s.sum), exactDouble(s.min), exactDouble(s.max), exactDouble(s.m2), exactDouble(s.first), exactDouble(s.last)];
    if (nums.includes(null) || !Number.isSafeInteger(s.firstTs) || !Number.isSafeInteger(s.lastTs)) return false;
    out.push(`[${jsonString(device)},${jsonString(metric)},${minute},${s.count},${nums.join(',')},${s.firstTs},${s.lastTs}]`);
  }
  return true;
}

/** The highest seq gateway.db gave (loadCommitterState's lastSeq), before it closes a crashed epoch. */
export async function loadLastSeq(db: Db): Promise<number> {
  const row = await db.get<{ last_seq: number | null }>(LAST_SEQ_SQL, [ACKED_SEQ_KEY]);
  return row?.last_seq ?? 0;
}

/** The highest ts of any identity in dedup_keys, -Infinity for none (Committer's dedupHi). */
export async function loadDedupHi(db: Db): Promise<number> {
  const row = await db.get<{ ts: number | null }>(`SELECT ${dedupKeyTsSql('MAX(key)')} AS ts FROM dedup_keys`);
  return row?.ts ?? -Infinity;
}

async function closeEpoch(db: Db, epoch: OpenEpoch, now: number): Promise<void> {
  await db.run('UPDATE epochs SET last_seq = ?, closed_at = ? WHERE epoch = ?', [epoch.lastSeq, now, epoch.epoch]);
}

/** The identity of an outbox row not yet copied into dedup_keys. */
export interface UnflushedIdentity { series: number; ts: number }

/** The identities of the outbox rows not yet copied into dedup_keys (schema.ts DEDUP_FLUSHED_KEY). */
export function loadUnflushedIdentities(db: Db): Promise<UnflushedIdentity[]> {
  return db.all<UnflushedIdentity>(`SELECT series, ts FROM outbox_rows WHERE seq > ${DEDUP_FLUSHED_SQL}`);
}

/** The highest epoch and the highest seq given: the epochs', the outbox's, and the acknowledged one (meta, bound). */
const LAST_SEQ_SQL = `SELECT MAX(epoch) AS epoch, MAX(
   COALESCE((SELECT MAX(last_seq) FROM epochs), 0),
   COALESCE((SELECT MAX(seq) FROM outbox_rows), 0),
   COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0)) AS last_seq FROM epochs`;

/**
 * Read the committer's state back from the database; an epoch left open by a crash is closed. The
 * open epoch's row is written when it opens and when it closes, not at every commit, so its
 * last_seq after a crash is the highest seq the gateway gave: its outbox rows, or, where the
 * cloud acknowledged (deleted) them, the acknowledged seq (a drop at the disk budget raises the
 * row's last_seq to its gap's end, budget.ts). Every seq above the open epoch's first belongs to it.
 */
export async function loadCommitterState(db: Db, now: number): Promise<CommitterState> {
  const last = await db.get<{ epoch: number | null; last_seq: number | null }>(LAST_SEQ_SQL, [ACKED_SEQ_KEY]);
  const lastSeq = last?.last_seq ?? 0;
  // Everything in an epoch left open is committed; no seq can join it after a restart.
  await db.run('UPDATE epochs SET last_seq = MAX(last_seq, ?) WHERE closed_at IS NULL AND epoch = (SELECT MAX(epoch) FROM epochs)', [lastSeq]);
  await db.run('UPDATE epochs SET closed_at = ? WHERE closed_at IS NULL', [now]);
  const pending = await db.get<{ n: number; bytes: number | null }>(`SELECT COUNT(*) AS n, SUM(${outboxRowBytesSql('s.device', 's.metric')}) AS bytes FROM outbox_rows o JOIN series s ON s.id = o.series`);
  const q = await db.get<{ n: number }>('SELECT COUNT(*) AS n FROM quarantine');
  return {
    lastSeq,
    lastEpoch: last?.epoch ?? 0,
    open: null,
    quarantineRows: q?.n ?? 0,
    pendingRows: pending?.n ?? 0,
    pendingBytes: pending?.bytes ?? 0,
  };
}

/**
 * Merge readings into partials: `next` holds every touched summary (over `base`), `touched` the rows
 * to write. A key's first reading of the group makes its summary (a new object: `base` is the
 * committed state and stays as it is); the group's further readings of the key are added to that
 * object in place (addTo), not through a new `of` and `merge` summary each.
 */
function mergePartials(kept: Reading[], base: Map<string, Summary>, keys?: readonly string[]): { next: Map<string, Summary>; touched: Map<string, { device: string; metric: string; minute: number; s: Summary }> } {
  const next = new Map<string, Summary>();
  const touched = new Map<string, { device: string; metric: string; minute: number; s: Summary }>();
  for (let i = 0; i < kept.length; i++) {
    const r = kept[i];
    const minute = minuteOf(r.ts);
    const key = keys ? keys[i] : partialKey(r.device, r.metric, minute);
    const own = next.get(key);
    if (own) {
      addTo(own, r.value, r.ts, r.device);
      continue;
    }
    const prev = base.get(key);
    const s = prev ? merge(prev, of(r.value, r.ts, r.device)) : of(r.value, r.ts, r.device);
    next.set(key, s);
    touched.set(key, { device: r.device, metric: r.metric, minute, s });
  }
  return { next, touched };
}

/**
 * `s` becomes merge(s, of(value, ts, device)), in place: the same arithmetic in the same order
 * (b.count 1, b.sum / b.count = value, b.m2 0), so the same doubles to the last bit. `s.count` >= 1.
 */
function addTo(s: Summary, value: number, ts: number, device: string): void {
  const count = s.count + 1;
  const delta = value - s.sum / s.count;
  s.m2 = s.m2 + 0 + delta * delta * s.count / count;
  s.count = count;
  s.sum += value;
  if (!(s.min < value)) s.min = value;
  if (!(s.max > value)) s.max = value;
  if (!(s.firstTs < ts || (s.firstTs === ts && s.firstDevice < device))) {
    s.first = value;
    s.firstTs = ts;
    s.firstDevice = device;
  }
  if (!(ts < s.lastTs || (ts === s.lastTs && device < s.lastDevice))) {
    s.last = value;
    s.lastTs = ts;
    s.lastDevice = device;
  }
}

const F64 = new Float64Array(1);
const U32 = new Uint32Array(F64.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const ctz = (x: number) => 31 - Math.clz32(x & -x);

/**
 * A finite double as `m,e` with m an integer of at most 53 bits and v === m * 2^e exactly (SQL:
 * `m * pow(2, e)`; an integer times an exact power of two is exact); null for NaN and infinities.
 * -0 becomes 0, as binding it does (SQLite stores an integral REAL as an integer).
 */
export function exactDouble(v: number): string | null {
  if (Number.isSafeInteger(v)) return `${v},0`;
  if (!Number.isFinite(v)) return null;
  F64[0] = v;
  const lo = U32[LITTLE_ENDIAN ? 0 : 1];
  const hi = U32[LITTLE_ENDIAN ? 1 : 0];
  const bexp = (hi >>> 20) & 0x7ff;
  const hm = (hi & 0xfffff) | (bexp ? 0x100000 : 0);
  let m = hm * 4294967296 + lo;
  let e = bexp ? bexp - 1075 : -1074;
  const tz = lo !== 0 ? ctz(lo) : 32 + ctz(hm);
  m /= 2 ** tz;
  e += tz;
  return `${hi >>> 31 ? -m : m},${e}`;
}

const quoted = new Map<string, string>();
/** JSON.stringify of a device or metric name, remembered (a fleet has a bounded set of them). */
function jsonString(s: string): string {
  let q = quoted.get(s);
  if (q === undefined) {
    q = JSON.stringify(s);
    if (quoted.size >= 100_000) quoted.clear();
    quoted.set(s, q);
  }
  return q;
}

/** What the fast path leaves to the general one: a repeat of an identity in dedup_keys (the trigger's RAISE). */
function isDedupConflict(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e?.code === 'SQLITE_CONSTRAINT' && (e.message ?? '').includes(REPEAT_MESSAGE);
}

/** Most series numbers the committer keeps in memory (a fleet's series; about 100 bytes each). */
const SERIES_CACHE_MAX = 100_000;

/** The numbers of the given series that have one (key: device SEP metric). */
async function seriesIdsOf(db: Db, list: Array<{ device: string; metric: string }>): Promise<Map<string, number>> {
  const ids = new Map<string, number>();
  for (const chunk of chunkRows(list, 2)) {
    const rows = await db.all<{ id: number; device: string; metric: string }>(
      `SELECT id, device, metric FROM series WHERE (device, metric) IN (VALUES ${placeholders(chunk.length, 2)})`, chunk.flatMap((c) => [c.device, c.metric]));
    for (const row of rows) ids.set(seriesKey(row.device, row.metric), row.id);
  }
  return ids;
}

/**
 * The series number of each (device, metric) of the readings (key: device SEP metric), giving new
 * ones theirs: the next after the highest, or, once that is SERIES_MAX, the lowest free ones (the
 * retention prunes series no identity refers to). A series left without one (every number taken)
 * is missing from the answer.
 */
async function seriesIds(db: Db, readings: Reading[]): Promise<Map<string, number>> {
  const wanted = new Map<string, { device: string; metric: string }>();
  for (const r of readings) wanted.set(seriesKey(r.device, r.metric), { device: r.device, metric: r.metric });
  const list = [...wanted.values()];
  const ids = new Map<string, number>();
  const lookup = async () => {
    for (const [k, v] of await seriesIdsOf(db, list)) ids.set(k, v);
  };
  await lookup();
  let missing = list.filter((c) => !ids.has(seriesKey(c.device, c.metric)));
  if (!missing.length) return ids;
  // OR IGNORE: a number past SERIES_MAX fails the CHECK and leaves that series out.
  for (const chunk of chunkRows(missing, 2)) {
    await db.run(`INSERT OR IGNORE INTO series (device, metric) VALUES ${placeholders(chunk.length, 2)}`, chunk.flatMap((c) => [c.device, c.metric]));
  }
  await lookup();
  missing = list.filter((c) => !ids.has(seriesKey(c.device, c.metric)));
  if (!missing.length) return ids;
  const free = await db.all<{ id: number }>(
    `SELECT 1 AS id WHERE NOT EXISTS (SELECT 1 FROM series WHERE id = 1)
     UNION ALL SELECT * FROM (SELECT s.id + 1 AS id FROM series s WHERE s.id < ? AND NOT EXISTS (SELECT 1 FROM series t WHERE t.id = s.id + 1) ORDER BY s.id LIMIT ?)`,
    [SERIES_MAX, missing.length]);
  // Each gap found gives its first number; take one per gap and look again for the rest.
  for (let i = 0; i < missing.length && i < free.length; i++) {
    await db.run('INSERT INTO series (id, device, metric) VALUES (?, ?, ?)', [free[i].id, missing[i].device, missing[i].metric]);
    ids.set(seriesKey(missing[i].device, missing[i].metric), free[i].id);
  }
  if (free.length && free.length < missing.length) {
    for (const [k, v] of await seriesIds(db, readings.filter((r) => !ids.has(seriesKey(r.device, r.metric))))) ids.set(k, v);
  }
  return ids;
}
