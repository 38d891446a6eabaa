/**
 * The background loop every gateway -> cloud sender runs (the forwarder, the speed pusher): one
 * request at a time; between requests a wait that new work, a reachable cloud or close() can cut
 * short; the backoff after failures; close() with a grace period, then abort; and the status an
 * operator reads (last success, last error, failures in a row). The sender's `step` decides what
 * to send and answers what to do next; this decides when.
 */
import { performance } from 'node:perf_hooks';
import type { Counter, Gauge } from 'prom-client';
import { BraidError, ClosedError, HttpError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { type BackoffOptions, retryDelayMs } from './backoff.js';
import { errorBodyCode } from './post.js';

/** What the loop does after a step. */
export type Next =
  /** Step again at once: more to send, or a halved retry after a 413. */
  | { kind: 'now' }
  /** Nothing (more) to send: wait until `idleMs` after this step began; poke() ends the wait early. */
  | { kind: 'idle' }
  /** A small batch is held for more: wait `ms`; wake('linger') ends it, and close() sends it at once. */
  | { kind: 'linger'; ms: number }
  /** After a failure: wait `ms`; retryNow() ends it. */
  | { kind: 'backoff'; ms: number };

export const NOW: Next = { kind: 'now' };
export const IDLE: Next = { kind: 'idle' };

export type WaitKind = Next['kind'];

/** The last failure, as status pages show it. */
export interface SenderError { code: string; message: string; status?: number; at: number }

export interface SenderStatus {
  /** Wall time of the last 2xx (with or without progress), null before the first. */
  lastSuccessAt: number | null;
  lastError: SenderError | null;
  consecutiveFailures: number;
}

/** The metrics every sender keeps under its own names (braid_forward_*, braid_speedpush_*). */
export interface SenderMetrics {
  /** By outcome: ok, retry, rejected. */
  requests: Counter<'outcome'>;
  consecutiveFailures: Gauge;
  /** No sample until the first success since start: a 0 would read as "last success in 1970". */
  lastSuccess: Gauge;
}

export interface SenderOptions extends BackoffOptions {
  /** Wait after a step that found nothing (more) to send, from that step's start, in ms: a fixed cadence. */
  idleMs: number;
  /** How long close() lets an in-flight request finish before aborting it, in ms. */
  closeGraceMs: number;
  /** Largest working size of one request (readings, partials); a 413 halves it, successes grow it back. */
  maxSize: number;
}

export interface SenderConfig {
  /** The component, for messages: "forwarder", "speed pusher". */
  name: string;
  /** One request, for messages: "ingest", "speed push". */
  what: string;
  /** Log field of the working size: "batchSize", "pageSize". */
  sizeField: string;
  log: Logger;
  metrics: SenderMetrics;
  now: () => number;
  options: SenderOptions;
}

/** The step a sender runs; `flush` is true for the one last step close() grants a held (lingering) batch. */
export type Step = (flush: boolean) => Promise<Next>;

export class CloudSender {
  private readonly c: SenderConfig;
  private readonly o: SenderOptions;

  private started = false;
  private closingNow = false;
  private loop: Promise<void> | null = null;
  private closed: Promise<void> | null = null;
  private readonly abort = new AbortController();
  private waiting: { kind: WaitKind; done: () => void } | null = null;
  private poked = false;

  /** Working size of one request: halved by a 413, grown back by successes. */
  size: number;
  private successAt: number | null = null;
  private error: SenderError | null = null;
  private failures = 0;
  /** The last failure was the cloud out of reach (no answer, 5xx without Retry-After), not the cloud asking us to wait or refusing. */
  private unreachable = false;

  constructor(config: SenderConfig) {
    this.c = config;
    this.o = config.options;
    this.size = config.options.maxSize;
  }

  get closing(): boolean { return this.closingNow; }
  /** Aborts the request in flight once close()'s grace has passed; pass it to every request. */
  get signal(): AbortSignal { return this.abort.signal; }
  /** poke() came since the current step began: its read may have missed that work. */
  get pokedDuringStep(): boolean { return this.poked; }
  get lastSuccessAt(): number | null { return this.successAt; }
  get lastError(): SenderError | null { return this.error; }
  get consecutiveFailures(): number { return this.failures; }

  /** The part of a sender's status() that is the loop's. */
  status(): SenderStatus {
    return { lastSuccessAt: this.successAt, lastError: this.error, consecutiveFailures: this.failures };
  }

  /**
   * Claim the start: false when already started, ClosedError after close(). Resets the failure
   * gauge and drops the last-success sample of a sender before us on this registry (a restart in
   * one process had its own).
   */
  begin(): boolean {
    if (this.closingNow) throw new ClosedError(`${this.c.name} is closed`);
    if (this.started) return false;
    this.started = true;
    this.c.metrics.consecutiveFailures.set(0);
    this.c.metrics.lastSuccess.remove({});
    return true;
  }

  /** Start the loop (once, after begin()). */
  run(step: Step): void {
    this.loop ??= this.cycle(step);
  }

  /** New work: ends an idle wait, or makes the coming one end at once (not a backoff: the cloud is still down). */
  poke(): void {
    this.poked = true;
    this.wake('idle');
  }

  /** End the current wait if it is of this kind. */
  wake(kind: WaitKind): void {
    if (this.waiting?.kind === kind) this.waiting.done();
  }

  /**
   * The cloud answered someone else: if we are backing off because it was out of reach, try again
   * now instead of at the end of the delay. Not after a 429, a Retry-After or a refusal: the cloud
   * answered us too, and asked for the wait (a busy ingest queue) or needs a fix first.
   */
  retryNow(): void {
    if (this.failures > 0 && this.unreachable) this.wake('backoff');
  }

  /** The request failed because close() aborted it, not because of the cloud. */
  abortedByClose(): boolean {
    return this.closingNow && this.abort.signal.aborted;
  }

  /** Stop: a request in flight gets closeGraceMs, then is aborted; resolves when the loop is done. Idempotent. */
  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  /** A 2xx: counted ok; the working size grows back by a quarter, so a body that hit 413 is not retried at full size at once. */
  answered(): void {
    this.c.metrics.requests.inc({ outcome: 'ok' });
    this.successAt = this.c.now();
    if (this.size < this.o.maxSize) this.size = Math.min(this.o.maxSize, this.size + Math.max(1, Math.floor(this.size / 4)));
  }

  /** ...and the 2xx moved things on: the failure streak ends. */
  progressed(): void {
    if (this.failures > 0) this.c.log.info({ failures: this.failures }, `${this.c.what} reconnected`);
    this.failures = 0;
    this.c.metrics.consecutiveFailures.set(0);
    this.c.metrics.lastSuccess.set((this.successAt ?? this.c.now()) / 1000);
  }

  /**
   * A request that got no usable 2xx. A 413 for more than one item halves the working size and
   * retries at once; anything else backs off. 400/401/403 cannot succeed until someone fixes the
   * token, version or limit, yet the data is kept and retried, backing off, logged as an error.
   */
  requestFailed(err: unknown, carried: number): Next {
    if (err instanceof HttpError && err.statusCode === 413 && carried > 1) {
      this.size = Math.max(1, Math.floor(carried / 2));
      this.c.metrics.requests.inc({ outcome: 'retry' });
      this.record(err);
      this.c.log.warn({ [this.c.sizeField]: this.size }, `${this.c.what} body too large; halving it`);
      return NOW;
    }
    const rejected = err instanceof HttpError && !err.canRetry();
    this.c.metrics.requests.inc({ outcome: rejected ? 'rejected' : 'retry' });
    return this.failed(err, rejected ? `cloud rejected the ${this.c.what} request; keeping its data and retrying` : `${this.c.what} failed; retrying`, rejected);
  }

  /**
   * A request failed on a cloud node the node list has just left (edge/cloudclient/nodes.ts): counted
   * as a retry and kept as the last error, but no backoff and no failure streak: the next node gets
   * the same data at once.
   */
  failedOver(err: unknown): Next {
    this.c.metrics.requests.inc({ outcome: 'retry' });
    this.record(err);
    return NOW;
  }

  /**
   * Count a failure and pick the backoff (honouring Retry-After); `msg` null logs nothing.
   * `rejected`: the cloud answered and refused (or took nothing): logged as an error, and a peer's
   * success does not end the backoff.
   */
  failed(err: unknown, msg: string | null, rejected = false): Next {
    this.failures++;
    // A 5xx without Retry-After is a proxy whose backend is down as much as a refused connection.
    this.unreachable = !rejected && !(err instanceof HttpError && (err.statusCode < 500 || err.retryAfterMs !== undefined));
    this.c.metrics.consecutiveFailures.set(this.failures);
    const e = this.record(err);
    const retryAfterMs = err instanceof HttpError ? err.retryAfterMs : undefined;
    // A refusal (401, 403, 400) is the cloud answering, not a cloud away: no fast probing of it.
    const o = rejected && this.o.retryAfterMaxMs !== undefined ? { ...this.o, retryMaxMs: this.o.retryAfterMaxMs } : this.o;
    const ms = retryDelayMs(this.failures, retryAfterMs, o);
    if (msg) {
      const fields = { code: e.code, status: e.status, failures: this.failures, retryInMs: ms, error: e.message };
      if (rejected) this.c.log.error(fields, msg);
      else this.c.log.warn(fields, msg);
    }
    return { kind: 'backoff', ms };
  }

  /** Keep `err` as the last error: the code of a Braid error body when the cloud sent one. */
  record(err: unknown): SenderError {
    const at = this.c.now();
    let e: SenderError;
    if (err instanceof HttpError) e = { code: errorBodyCode(err.body) ?? err.code, message: err.message, status: err.statusCode, at };
    else if (err instanceof BraidError) e = { code: err.code, message: err.message, at };
    else {
      const x = err as { code?: unknown; message?: unknown } | undefined;
      e = { code: typeof x?.code === 'string' ? x.code : 'BRAID_ERR_INTERNAL', message: String(x?.message ?? err), at };
    }
    this.error = e;
    return e;
  }

  private async shutdown(): Promise<void> {
    this.closingNow = true;
    this.waiting?.done();
    if (!this.loop) return;
    const grace = setTimeout(() => this.abort.abort(new ClosedError(`${this.c.name} closed during a request`)), this.o.closeGraceMs);
    try {
      await this.loop;
    } finally {
      clearTimeout(grace);
    }
  }

  private async cycle(step: Step): Promise<void> {
    let next: Next = NOW;
    // A linger that close() cut short (or that a step answered during close) gets one last step, so
    // what was held goes now, under the same grace, instead of waiting for the next start.
    while (!this.closingNow || next.kind === 'linger') {
      const flush = this.closingNow;
      const startedAt = performance.now();
      this.poked = false;
      try {
        next = await step(flush);
      } catch (err) {
        // A database error (busy, disk): nothing was acknowledged, so retry the same data later.
        next = this.failed(err, `${this.c.name} step failed`);
      }
      if (flush) break;
      if (this.closingNow || next.kind === 'now') continue;
      // Idle waits run from the step's start, not its end: a fixed cadence that slow requests do
      // not stretch (a request longer than idleMs is followed at once, never overlapped).
      const ms = next.kind === 'idle' ? startedAt + this.o.idleMs - performance.now() : next.ms;
      await this.sleep(next.kind, ms);
    }
  }

  private sleep(kind: WaitKind, ms: number): Promise<void> {
    if (this.closingNow || ms <= 0 || (kind === 'idle' && this.poked)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiting = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiting = { kind, done };
    });
  }
}
