/**
 * The forwarder: sends the outbox to cloud ingest in seq order, one request at a time, and deletes
 * rows only once the cloud has them (docs/ingest-protocol.md). It never drops a reading because of
 * an ingest error: failures back off and retry the same rows. The loop, waits, backoff, close and
 * status are edge/cloudclient's CloudSender; this file decides what each request carries and when
 * a small batch has waited long enough (lingerMs).
 */
import { performance } from 'node:perf_hooks';
import { BraidError, HttpError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { CloudNodes, CloudSender, IDLE, type Next, NOW, displayUrl, gzipJson, splitCloudUrls } from '../cloudclient/index.js';
import { type Batch, applyAck, countPending, ingestBody, loadAckedSeq, readBatch } from './batch.js';
import { lostRanges, parseSeqSkip, recordCloudLost } from './cloud-lost.js';
import { type IngestAck, type IngestWarning, postIngest } from './http.js';
import { type ForwarderMetrics, createForwarderMetrics } from './metrics.js';
import { DEFAULT_FORWARDER_OPTIONS, type ForwarderOptions, checkForwarderOptions } from './options.js';
import type { CloseReport, ForwarderDeps, ForwarderStatus } from './types.js';

/** The same warning code of ingest answers is logged at most once per this many ms (it is counted every time). */
const WARNING_LOG_INTERVAL_MS = 60_000; // 1 minute

export class Forwarder {
  private readonly deps: ForwarderDeps;
  private readonly o: ForwarderOptions;
  private readonly log: Logger;
  private readonly metrics: ForwarderMetrics;
  private readonly now: () => number;
  private readonly sender: CloudSender;
  /** Where requests go (null: no cloud url); the gateway's list is shared with the speed pusher. */
  private readonly nodes: CloudNodes | null;
  private readonly ownsNodes: boolean;
  /** The node of the latest request. */
  private lastUrl: string | null = null;
  private closed: Promise<CloseReport> | null = null;

  private ackedSeq = 0;
  private inflightUpTo: number | null = null;
  private sentReadings = 0;
  private batchesSent = 0;
  /**
   * performance.now() of the first notify() since the last send decision: when the readings a small
   * batch would carry started waiting, so lingering never holds one longer than lingerMs. null: no
   * commit seen since (rows found by the idle poll, e.g. at start, have waited already: no linger).
   */
  private pendingSince: number | null = null;
  /**
   * The batch after the one in flight, read while its request and acknowledgement run (a backlog
   * drains at the pace of the slower of the two, not of their sum). `after`: the seq it was read
   * from, the in-flight batch's lastSeq; used only when the acknowledgement lands exactly there.
   */
  private readAhead: ReadAhead | null = null;
  /** Per warning code of ingest answers: when its last line was logged, and how many came since unlogged. */
  private readonly warned = new Map<string, { at: number; unlogged: number }>();

  constructor(deps: ForwarderDeps, options: Partial<ForwarderOptions> = {}) {
    this.deps = deps;
    this.o = checkForwarderOptions({ ...DEFAULT_FORWARDER_OPTIONS, ...options });
    this.log = deps.logger.child({ component: 'forwarder' });
    this.metrics = createForwarderMetrics(deps.registry);
    this.now = deps.now ?? Date.now;
    this.sender = new CloudSender({
      name: 'forwarder', what: 'ingest', sizeField: 'batchSize', log: this.log, metrics: this.metrics, now: this.now,
      options: { ...this.o, idleMs: this.o.idlePollMs, maxSize: this.o.batchMaxReadings },
    });
    this.ownsNodes = !deps.nodes && this.o.url !== null;
    this.nodes = deps.nodes ?? (this.o.url === null ? null : new CloudNodes(splitCloudUrls(this.o.url), { logger: deps.logger, now: this.now }));
  }

  /** Load acked_seq and start sending (with no url, only the former). Throws ClosedError after close(). */
  async start(): Promise<void> {
    if (!this.sender.begin()) return;
    this.ackedSeq = await loadAckedSeq(this.deps.reader);
    this.metrics.ackedSeq.set(this.ackedSeq);
    if (this.sender.closing) return;
    if (this.nodes === null) {
      this.log.info({ ackedSeq: this.ackedSeq }, 'no cloud url: readings stay buffered in the outbox');
      return;
    }
    if (!this.o.token) this.log.warn('no cloud token: ingest will answer 401 until one is configured');
    this.log.info({ url: this.nodes.status().nodes.join(','), ackedSeq: this.ackedSeq, lingerMs: this.o.lingerMs }, 'forwarding the outbox');
    this.sender.run((flush) => this.step(flush));
  }

  /**
   * New rows were committed (or an epoch closed): look for work now instead of at the next idle
   * poll. `lastSeq`, the outbox's highest seq, lets a linger end as soon as a full batch is there;
   * without it every notify ends the linger and the batch is read again.
   */
  notify(lastSeq?: number): void {
    this.pendingSince ??= performance.now();
    this.sender.poke();
    if (lastSeq === undefined || lastSeq - this.ackedSeq >= this.sender.size) this.sender.wake('linger');
  }

  /** The cloud answered someone else (the speed push): if ingest is backing off, try again now instead of at the end of the delay. */
  cloudReachable(): void {
    this.sender.retryNow();
  }

  status(): ForwarderStatus {
    return {
      ackedSeq: this.ackedSeq,
      inflightUpToSeq: this.inflightUpTo ?? this.ackedSeq,
      cloudUrl: this.nodes === null ? null : displayUrl(this.lastUrl ?? this.nodes.current),
      ...this.sender.status(),
      sentReadings: this.sentReadings,
      batchesSent: this.batchesSent,
    };
  }

  /**
   * Stop: a batch held by the linger goes at once; a request in flight gets closeGraceMs, then is
   * aborted (its rows stay in the outbox [INV-1]); reports how many readings are still
   * unacknowledged. Idempotent.
   */
  close(): Promise<CloseReport> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async shutdown(): Promise<CloseReport> {
    await this.sender.close();
    // A read ahead still running finishes before the caller closes the reader under it.
    await this.readAhead?.batch;
    this.readAhead = null;
    if (this.ownsNodes) this.nodes?.close();
    let pending: number | null = null;
    try {
      pending = await countPending(this.deps.reader, this.ackedSeq);
    } catch (err) {
      this.log.warn({ err }, 'could not count the readings left in the outbox');
    }
    this.log.info({ pending, ackedSeq: this.ackedSeq }, 'forwarder closed');
    return { pending };
  }

  private async step(flush: boolean): Promise<Next> {
    const batch = await this.nextBatch();
    if (!batch) {
      // A notify during the read may name rows it missed: keep their clock for the next step.
      if (!this.sender.pokedDuringStep) this.pendingSince = null;
      return IDLE;
    }
    if (!flush) {
      const lingerMs = this.lingerLeft(batch);
      if (lingerMs > 0) return { kind: 'linger', ms: lingerMs };
      if (this.sender.closing) return NOW;
    }
    // Rows committed during the read are not in this batch: their wait starts about now.
    this.pendingSince = this.sender.pokedDuringStep ? performance.now() : null;
    // Read-then-mark leaves a moment where the disk budget may drop rows of this batch; they then
    // reach the cloud AND get a gap record, which is harmless: the cloud keys on (gateway, seq) [INV-2].
    this.inflightUpTo = batch.lastSeq;
    try {
      return await this.send(batch);
    } finally {
      this.inflightUpTo = null;
    }
  }

  /**
   * The batch read ahead, when the last acknowledgement ended where it began and it is full at
   * today's working size (a success after a 413 grows the size: then the larger batch is read); else
   * one read now.
   */
  private async nextBatch(): Promise<Batch | null> {
    const ahead = this.readAhead;
    this.readAhead = null;
    if (ahead && ahead.after === this.ackedSeq) {
      const batch = await ahead.batch;
      if (batch && batch.readings.length >= this.sender.size) return batch;
    }
    return readBatch(this.deps.reader, this.ackedSeq, this.sender.size);
  }

  /**
   * Start reading the batch after `inflight` (a full one: a backlog), on the reader while the
   * request runs. It leaves out the epoch and gap records `inflight` carries: they are marked only
   * when its acknowledgement lands, so the read still finds them. Any other record it finds is
   * unsent, and a gap the disk budget writes meanwhile is read as a later readBatch would read it.
   * A read that fails is not an error here: nextBatch reads again.
   */
  private readAheadOf(inflight: Batch): void {
    if (inflight.readings.length < this.sender.size || this.sender.closing) return;
    const inFlight = { epochs: new Set(inflight.epochs.map((e) => e.epoch)), gaps: new Set(inflight.gaps.map((g) => g.id)) };
    const batch = readBatch(this.deps.reader, inflight.lastSeq, this.sender.size, inFlight).catch((err: unknown) => {
      this.log.debug({ err }, 'reading the next batch ahead failed; it is read again after the acknowledgement');
      return null;
    });
    this.readAhead = { after: inflight.lastSeq, batch };
  }

  /**
   * How much longer a batch short of the working size may wait for more readings (Kafka's
   * linger.ms): one request per lingerMs instead of one per group commit, and no reading waits
   * more than lingerMs (plus the request in flight) for its request. A full batch goes at once.
   */
  private lingerLeft(batch: Batch): number {
    if (this.pendingSince === null || this.o.lingerMs <= 0 || batch.readings.length >= this.sender.size) return 0;
    return this.pendingSince + this.o.lingerMs - performance.now();
  }

  private async send(batch: Batch): Promise<Next> {
    const body = await gzipJson(JSON.stringify(ingestBody(batch, this.deps.gatewayId, this.now())));
    this.readAheadOf(batch);
    this.metrics.bytesSent.inc(body.length);
    const stop = this.metrics.requestSeconds.startTimer();
    let ack: IngestAck;
    // The node is picked per request: a failover resends this batch (or a longer one) to the next node.
    const nodes = this.nodes as CloudNodes;
    const url = nodes.current;
    this.lastUrl = url;
    try {
      ack = await postIngest({
        url, token: this.o.token, timeoutMs: this.o.requestTimeoutMs,
        signal: this.sender.signal, now: this.now,
      }, body);
      nodes.succeeded(url);
    } catch (err) {
      if (this.sender.abortedByClose()) {
        this.log.info({ lastSeq: batch.lastSeq }, 'ingest request aborted at close; its rows stay in the outbox');
        return NOW;
      }
      if (err instanceof HttpError && err.statusCode === 409) {
        const next = await this.seqSkipped(err, batch);
        if (next) return next;
      }
      // [INV-2] the next node may get a batch this one stored before it failed: the cloud keys on (gateway, seq).
      if (nodes.failed(url, err, 'forwarder') === 'next') return this.sender.failedOver(err);
      return this.sender.requestFailed(err, batch.readings.length);
    } finally {
      stop();
    }
    return this.acknowledged(batch, ack);
  }

  /**
   * A seq-skip refusal (cloud-lost.ts): the seqs the cloud misses at or below ackedSeq, which it had
   * acknowledged, become a cloud_lost gap record and the next batch goes at once; null (the
   * caller backs off as after any refusal) when the 409 is something else, or names only seqs this
   * gateway still holds or has already recorded: a bug, not a lost cloud, and never papered over.
   */
  private async seqSkipped(err: HttpError, batch: Batch): Promise<Next | null> {
    const skip = parseSeqSkip(err.body);
    if (!skip) return null;
    const fields = { heldSeq: skip.heldSeq, ackedSeq: this.ackedSeq, firstSeq: batch.firstSeq, lastSeq: batch.lastSeq, missing: skip.missing.slice(0, 10) };
    const lost = lostRanges(skip.missing, this.ackedSeq);
    const { lost: recorded, resent } = lost.length > 0 ? await recordCloudLost(this.deps.writes, lost, this.now()) : { lost: [], resent: [] };
    if (recorded.length === 0 && resent.length === 0) {
      this.log.error(fields, lost.length > 0
        ? 'ingest refused a batch as skipping seqs that an unsent cloud_lost gap record already names: a bug; backing off, nothing recorded'
        : 'ingest refused a batch as skipping seqs this gateway still holds or never acknowledged: a bug, not a lost cloud; backing off, nothing recorded');
      return null;
    }
    const count = recorded.reduce((n, r) => n + r.toSeq - r.fromSeq + 1, 0);
    this.metrics.cloudLost.inc(count);
    this.metrics.requests.inc({ outcome: 'rejected' });
    this.sender.record(err);
    const seqs = (rs: Array<{ fromSeq: number; toSeq: number }>) => rs.map((r) => `${r.fromSeq}..${r.toSeq}`).join(', ');
    this.log.warn({ ...fields, lost: recorded, count, resentGaps: resent },
      `the cloud lost ${count} reading(s) it had acknowledged (seqs ${seqs(recorded) || 'none'}`
      + `${resent.length > 0 ? `, and its gap records of seqs ${seqs(resent)}` : ''}; cloud.db restored from an older backup?): `
      + 'sending them as a cloud_lost gap record, the readings after them as usual');
    return NOW;
  }

  /** Count every warning of an ingest answer by code; log each code at most once a minute (with how many came unlogged). */
  private warnings(warnings: IngestWarning[], batch: Batch): void {
    const now = this.now();
    for (const w of warnings) {
      this.metrics.cloudWarnings.inc({ code: w.code });
      const last = this.warned.get(w.code);
      if (last && now - last.at < WARNING_LOG_INTERVAL_MS) {
        last.unlogged++;
        continue;
      }
      this.warned.set(w.code, { at: now, unlogged: 0 });
      this.log.warn({ code: w.code, count: w.count, firstSeq: batch.firstSeq, lastSeq: batch.lastSeq, unloggedSinceLast: last?.unlogged ?? 0 },
        `ingest stored the batch with a warning: ${w.message}`);
    }
  }

  private async acknowledged(batch: Batch, ack: IngestAck): Promise<Next> {
    const prev = this.ackedSeq;
    // [INV-1] only here, after a 2xx with an ackSeq, does anything leave the outbox.
    const applied = await applyAck(this.deps.writes, batch, ack.ackSeq, prev);
    this.ackedSeq = applied.ackedSeq;
    this.metrics.ackedSeq.set(applied.ackedSeq);
    this.metrics.readingsSent.inc(batch.readings.length);
    this.sentReadings += batch.readings.length;
    this.batchesSent++;
    this.sender.answered();
    if (ack.warnings) this.warnings(ack.warnings, batch);
    if (applied.rows > 0 || applied.ackedSeq !== prev) {
      try {
        this.deps.onAcked?.({ ackSeq: applied.ackedSeq, rows: applied.rows, bytes: applied.bytes });
      } catch (err) {
        this.log.error({ err }, 'onAcked callback threw');
      }
    }
    if (batch.readings.length > 0 && applied.ackedSeq === prev) {
      // A 2xx that acknowledges none of our readings (an old or duplicate ackSeq) is harmless
      // [INV-2], but resending at once would spin: back off as after a failure.
      this.log.warn({ ackSeq: ack.ackSeq, firstSeq: batch.firstSeq, lastSeq: batch.lastSeq }, 'ingest acknowledged none of the batch; resending later');
      return this.sender.failed(new BraidError('BRAID_ERR_INGEST_NO_PROGRESS', `ingest answered ackSeq ${ack.ackSeq} for seq ${batch.firstSeq}..${batch.lastSeq}`, 502), null, true);
    }
    this.sender.progressed();
    this.log.debug({ ackSeq: applied.ackedSeq, rows: applied.rows, epochs: batch.epochs.length, gaps: batch.gaps.length }, 'batch acknowledged');
    return NOW;
  }
}

interface ReadAhead {
  /** The seq it was read after. */
  after: number;
  batch: Promise<Batch | null>;
}
