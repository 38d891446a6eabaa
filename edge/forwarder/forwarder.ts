/**
 * The forwarder: sends the outbox to cloud ingest in seq order, one request at a time, and deletes
 * rows only once the cloud has them (docs/ingest-protocol.md). It never drops a reading because of
 * an ingest error: failures back off and retry the same rows.
 */
import { BraidError, ClosedError, HttpError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { errorBodyCode, gzipJson, retryDelayMs } from '../cloudclient/index.js';
import { type Batch, applyAck, countPending, ingestBody, loadAckedSeq, readBatch } from './batch.js';
import { type IngestAck, postIngest } from './http.js';
import { type ForwarderMetrics, createForwarderMetrics } from './metrics.js';
import { DEFAULT_FORWARDER_OPTIONS, type ForwarderOptions, checkForwarderOptions } from './options.js';
import type { CloseReport, ForwarderDeps, ForwarderError, ForwarderStatus } from './types.js';

/** What the loop does next: go on at once, back off, or wait for work (notify or the idle poll). */
type Next = { kind: 'now' } | { kind: 'backoff'; ms: number } | { kind: 'idle' };
const NOW: Next = { kind: 'now' };
const IDLE: Next = { kind: 'idle' };

export class Forwarder {
  private readonly deps: ForwarderDeps;
  private readonly o: ForwarderOptions;
  private readonly log: Logger;
  private readonly metrics: ForwarderMetrics;
  private readonly now: () => number;

  private started = false;
  private closing = false;
  private loop: Promise<void> | null = null;
  private closed: Promise<CloseReport> | null = null;
  private readonly abort = new AbortController();

  /** Working batch size: halved by a 413, grown back by successes. */
  private batchSize: number;
  private ackedSeq = 0;
  private inflightUpTo: number | null = null;
  private lastSuccessAt: number | null = null;
  private lastError: ForwarderError | null = null;
  private consecutiveFailures = 0;
  private sentReadings = 0;
  private batchesSent = 0;

  /** notify() since the last outbox read: skip the idle wait, the read may have missed those rows. */
  private notified = false;
  private wake: (() => void) | null = null;
  private wakeOnNotify = false;

  constructor(deps: ForwarderDeps, options: Partial<ForwarderOptions> = {}) {
    this.deps = deps;
    this.o = checkForwarderOptions({ ...DEFAULT_FORWARDER_OPTIONS, ...options });
    this.log = deps.logger.child({ component: 'forwarder' });
    this.metrics = createForwarderMetrics(deps.registry);
    this.now = deps.now ?? Date.now;
    this.batchSize = this.o.batchMaxReadings;
  }

  /** Load acked_seq and start sending (with no url, only the former). Throws ClosedError after close(). */
  async start(): Promise<void> {
    if (this.closing) throw new ClosedError('forwarder is closed');
    if (this.started) return;
    this.started = true;
    this.ackedSeq = await loadAckedSeq(this.deps.reader);
    this.metrics.ackedSeq.set(this.ackedSeq);
    this.metrics.consecutiveFailures.set(0);
    this.metrics.lastSuccess.remove({}); // a forwarder before us on this registry (a restart in one process) had its own
    if (this.closing) return;
    if (this.o.url === null) {
      this.log.info({ ackedSeq: this.ackedSeq }, 'no cloud url: readings stay buffered in the outbox');
      return;
    }
    if (!this.o.token) this.log.warn('no cloud token: ingest will answer 401 until one is configured');
    this.log.info({ url: this.o.url, ackedSeq: this.ackedSeq }, 'forwarding the outbox');
    this.loop = this.run();
  }

  /** New rows were committed: look for work now instead of at the next idle poll. */
  notify(): void {
    this.notified = true;
    if (this.wakeOnNotify) this.wake?.();
  }

  status(): ForwarderStatus {
    return {
      ackedSeq: this.ackedSeq,
      inflightUpToSeq: this.inflightUpTo ?? this.ackedSeq,
      lastSuccessAt: this.lastSuccessAt,
      lastError: this.lastError,
      consecutiveFailures: this.consecutiveFailures,
      sentReadings: this.sentReadings,
      batchesSent: this.batchesSent,
    };
  }

  /**
   * Stop: lets an in-flight request finish for closeGraceMs, then aborts it (its rows stay in the
   * outbox [INV-1]); reports how many readings are still unacknowledged. Idempotent.
   */
  close(): Promise<CloseReport> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async shutdown(): Promise<CloseReport> {
    this.closing = true;
    this.wake?.();
    if (this.loop) {
      const grace = setTimeout(() => this.abort.abort(new ClosedError('forwarder closed during an ingest request')), this.o.closeGraceMs);
      try {
        await this.loop;
      } finally {
        clearTimeout(grace);
      }
    }
    let pending: number | null = null;
    try {
      pending = await countPending(this.deps.reader, this.ackedSeq);
    } catch (err) {
      this.log.warn({ err }, 'could not count the readings left in the outbox');
    }
    this.log.info({ pending, ackedSeq: this.ackedSeq }, 'forwarder closed');
    return { pending };
  }

  private async run(): Promise<void> {
    while (!this.closing) {
      let next: Next;
      try {
        next = await this.step();
      } catch (err) {
        // A database error (busy, disk): nothing was acknowledged, so retry the same rows later.
        next = this.failed(err, 'forwarder step failed');
      }
      if (this.closing) break;
      if (next.kind === 'now') continue;
      if (next.kind === 'idle') await this.sleep(this.o.idlePollMs, true);
      else await this.sleep(next.ms, false);
    }
  }

  private async step(): Promise<Next> {
    this.notified = false;
    const batch = await readBatch(this.deps.reader, this.ackedSeq, this.batchSize);
    if (!batch) return this.notified ? NOW : IDLE;
    if (this.closing) return NOW;
    // Read-then-mark leaves a moment where the disk budget may drop rows of this batch; they then
    // reach the cloud AND get a gap record, which is harmless: the cloud keys on (gateway, seq) [INV-2].
    this.inflightUpTo = batch.lastSeq;
    try {
      return await this.send(batch);
    } finally {
      this.inflightUpTo = null;
    }
  }

  private async send(batch: Batch): Promise<Next> {
    const body = await gzipJson(JSON.stringify(ingestBody(batch, this.deps.gatewayId, this.now())));
    this.metrics.bytesSent.inc(body.length);
    const stop = this.metrics.requestSeconds.startTimer();
    let ack: IngestAck;
    try {
      ack = await postIngest({
        url: this.o.url as string, token: this.o.token, timeoutMs: this.o.requestTimeoutMs,
        signal: this.abort.signal, now: this.now,
      }, body);
    } catch (err) {
      if (this.closing && this.abort.signal.aborted) {
        this.log.info({ lastSeq: batch.lastSeq }, 'ingest request aborted at close; its rows stay in the outbox');
        return NOW;
      }
      return this.requestFailed(err, batch);
    } finally {
      stop();
    }
    return this.acknowledged(batch, ack);
  }

  private async acknowledged(batch: Batch, ack: IngestAck): Promise<Next> {
    const prev = this.ackedSeq;
    // [INV-1] only here, after a 2xx with an ackSeq, does anything leave the outbox.
    const applied = await applyAck(this.deps.writes, batch, ack.ackSeq, prev);
    this.ackedSeq = applied.ackedSeq;
    this.metrics.ackedSeq.set(applied.ackedSeq);
    this.metrics.requests.inc({ outcome: 'ok' });
    this.metrics.readingsSent.inc(batch.readings.length);
    this.sentReadings += batch.readings.length;
    this.batchesSent++;
    this.lastSuccessAt = this.now();
    if (applied.rows > 0 || applied.ackedSeq !== prev) {
      try {
        this.deps.onAcked?.({ ackSeq: applied.ackedSeq, rows: applied.rows, bytes: applied.bytes });
      } catch (err) {
        this.log.error({ err }, 'onAcked callback threw');
      }
    }
    if (this.batchSize < this.o.batchMaxReadings) {
      // Grow back by a quarter per success: a body that hit 413 is not retried at full size at once.
      this.batchSize = Math.min(this.o.batchMaxReadings, this.batchSize + Math.max(1, Math.floor(this.batchSize / 4)));
    }
    if (batch.readings.length > 0 && applied.ackedSeq === prev) {
      // A 2xx that acknowledges none of our readings (an old or duplicate ackSeq) is harmless
      // [INV-2], but resending at once would spin: back off as after a failure.
      this.log.warn({ ackSeq: ack.ackSeq, firstSeq: batch.firstSeq, lastSeq: batch.lastSeq }, 'ingest acknowledged none of the batch; resending later');
      return this.failed(new BraidError('BRAID_ERR_INGEST_NO_PROGRESS', `ingest answered ackSeq ${ack.ackSeq} for seq ${batch.firstSeq}..${batch.lastSeq}`, 502), null);
    }
    this.consecutiveFailures = 0;
    this.metrics.consecutiveFailures.set(0);
    this.metrics.lastSuccess.set(this.now() / 1000);
    this.log.debug({ ackSeq: applied.ackedSeq, rows: applied.rows, epochs: batch.epochs.length, gaps: batch.gaps.length }, 'batch acknowledged');
    return NOW;
  }

  private requestFailed(err: unknown, batch: Batch): Next {
    if (err instanceof HttpError && err.statusCode === 413 && batch.readings.length > 1) {
      // Too large for the cloud: halve what this request carried and retry at once, no backoff.
      this.batchSize = Math.max(1, Math.floor(batch.readings.length / 2));
      this.metrics.requests.inc({ outcome: 'retry' });
      this.record(err);
      this.log.warn({ batchSize: this.batchSize }, 'ingest body too large; halving the batch');
      return NOW;
    }
    // 400/401/403/413-at-one-reading: sending the same again cannot help until someone fixes the
    // token, version or limit, yet the protocol keeps the data and retries, backing off.
    const rejected = err instanceof HttpError && !err.canRetry();
    this.metrics.requests.inc({ outcome: rejected ? 'rejected' : 'retry' });
    return this.failed(err, rejected ? 'ingest rejected the batch; keeping it and retrying' : 'ingest failed; retrying', rejected);
  }

  /** Count a failure and pick the backoff (honouring Retry-After). */
  private failed(err: unknown, msg: string | null, rejected = false): Next {
    this.consecutiveFailures++;
    this.metrics.consecutiveFailures.set(this.consecutiveFailures);
    const e = this.record(err);
    const retryAfterMs = err instanceof HttpError ? err.retryAfterMs : undefined;
    const ms = retryDelayMs(this.consecutiveFailures, retryAfterMs, this.o);
    if (msg) {
      const fields = { code: e.code, status: e.status, failures: this.consecutiveFailures, retryInMs: ms, error: e.message };
      if (rejected) this.log.error(fields, msg);
      else this.log.warn(fields, msg);
    }
    return { kind: 'backoff', ms };
  }

  private record(err: unknown): ForwarderError {
    const at = this.now();
    let e: ForwarderError;
    if (err instanceof HttpError) {
      e = { code: errorBodyCode(err.body) ?? err.code, message: err.message, status: err.statusCode, at };
    } else if (err instanceof BraidError) {
      e = { code: err.code, message: err.message, at };
    } else {
      const x = err as { code?: unknown; message?: unknown } | undefined;
      e = { code: typeof x?.code === 'string' ? x.code : 'BRAID_ERR_INTERNAL', message: String(x?.message ?? err), at };
    }
    this.lastError = e;
    return e;
  }

  private sleep(ms: number, wakeOnNotify: boolean): Promise<void> {
    if (this.closing || (wakeOnNotify && this.notified)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake = null;
        this.wakeOnNotify = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
      this.wakeOnNotify = wakeOnNotify;
    });
  }
}
