/**
 * Group commit of ingest requests: requests arriving within `groupCommitMs` (or while the previous
 * group is being written) share one staging append + fdatasync and one cloud.db transaction.
 *
 * Order, inside one transaction of the store (IngestStore.commitGroup; SQLite: BEGIN IMMEDIATE,
 * the write lock shared by every ingest process on the data dir): decide what is new against `received` [INV-2], append it to the open
 * segment and fdatasync, then add it to `received` and `staged`, COMMIT, and only then answer 2xx
 * [INV-1]. A crash after the fsync and before the COMMIT leaves lines that no `staged` row
 * vouches for: the seal that later finds them stores them only if no one has meanwhile (sealer.ts).
 *
 * Cluster mode (a staging lease, cloud/store/nodes.ts): each group commit names this node, and the
 * store refuses it (StagingLeaseLostError, 503) once another node claimed our staging. Then the
 * open segment is abandoned, neither sealed nor deleted (its file is the claimant's now), and the
 * committer goes on in a new staging dir under a fresh node id (`onLeaseLost`).
 */
import { ClosedError, LimitExceededError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { IngestStore, Placement } from '../store/ingest.js';
import { isStagingLeaseLost } from '../store/nodes.js';
import type { GatewayClocks } from './clock.js';
import { IngestSeqSkipError, IngestUnavailableError } from './errors.js';
import type { IngestMetrics } from './metrics.js';
import { type IngestAck, type StagingLine, seqRanges } from './plan.js';
import { type Range, normalize } from './ranges.js';
import { SegmentImage } from './segment-image.js';
import { OpenSegment, newSegmentId, segmentLine, segmentLineOf } from './staging.js';
import type { ReadingColumns } from './columns.js';
import type { IngestBatch } from './validate.js';

export interface CommitterOptions {
  /** Requests arriving within this many ms share one fsync and one transaction. */
  groupCommitMs: number;
  /** A segment holds at most this many readings; a group that would pass it continues in a new one. */
  sealMaxReadings: number;
  /** A segment is rotated (and sealed) once this old, in ms. */
  sealMaxAgeMs: number;
  /** Readings waiting for a group commit before new requests are refused with 429. */
  maxQueuedReadings: number;
  /** New readings stamped later than the cloud's now plus this, in ms, are counted and warned about. */
  maxFutureMs: number;
  /** Keep the open segment's readings as columns while appending, so its seal need not read the file back. */
  sealFromMemory: boolean;
}

export interface CommitterDeps {
  /** Where the group commit's decisions and bookkeeping go (one transaction per group). */
  store: IngestStore;
  /** This process's staging directory. */
  stagingDir: string;
  /** Cluster mode: this node's id (its staging lease), named in each group commit so a claimed node's commit is refused. */
  node?: string;
  /**
   * Cluster mode: the lease of `node` was taken over. Give a new staging dir under a fresh node id
   * (registered); a throw leaves the committer on the old one, whose next commit is refused again.
   */
  onLeaseLost?: (node: string) => Promise<{ dir: string; node: string }>;
  log: Logger;
  metrics: IngestMetrics;
  /** The gateways' clock estimates: written to gateway_clock with each commit. */
  clocks: GatewayClocks;
  /**
   * A rotated segment, every line of it committed or abandoned: seal it. `image`: its lines as
   * appended, parsed (null: read the file).
   */
  onRotated: (segment: { id: string; path: string; readings: number; image: SegmentImage | null }) => void;
  now?: () => number;
}

interface Pending { batch: IngestBatch; resolve: (a: IngestAck) => void; reject: (e: Error) => void }

export class GroupCommitter {
  private readonly d: CommitterDeps;
  private readonly o: CommitterOptions;
  private readonly now: () => number;
  private queue: Pending[] = [];
  private queuedReadings = 0;
  private timer: NodeJS.Timeout | null = null;
  private ageTimer: NodeJS.Timeout | null = null;
  private flushing = false;
  /** Flushes and rotations run one at a time, in order. */
  private lane: Promise<void> = Promise.resolve();
  private segment: OpenSegment | null = null;
  private dir: string;
  private node: string | undefined;
  /** Segments written by this committer and not handed to the sealer yet. */
  private readonly live = new Set<string>();
  private closed = false;

  constructor(deps: CommitterDeps, options: CommitterOptions) {
    this.d = deps;
    this.o = options;
    this.now = deps.now ?? Date.now;
    this.dir = deps.stagingDir;
    this.node = deps.node;
  }

  /** The staging dir new segments go to (it changes after a lease was taken over). */
  get stagingDir(): string {
    return this.dir;
  }

  /** Readings in the open segment. */
  get openReadings(): number {
    return this.segment?.readings ?? 0;
  }

  /** Whether a segment is still this committer's (open, or rotated by a commit in flight). */
  owns(id: string): boolean {
    return this.live.has(id);
  }

  /** Queue a validated batch; resolves once it is durable [INV-1]. */
  submit(batch: IngestBatch): Promise<IngestAck> {
    if (this.closed) return Promise.reject(new ClosedError('ingest is shutting down; retry on another node or later'));
    const n = batch.readings.length;
    if (this.queuedReadings > 0 && this.queuedReadings + n > this.o.maxQueuedReadings) {
      // [INV-6] a bounded queue: the gateway keeps the rows and retries after Retry-After.
      return Promise.reject(new LimitExceededError(`ingest queue is full (${this.queuedReadings} readings waiting); retry shortly`));
    }
    return new Promise<IngestAck>((resolve, reject) => {
      this.queue.push({ batch, resolve, reject });
      this.queuedReadings += n;
      this.kick(false);
    });
  }

  private kick(now: boolean): void {
    if (this.timer || this.flushing || this.queue.length === 0) return;
    const run = () => {
      this.timer = null;
      this.flushing = true;
      void this.enqueue(() => this.flush()).catch(() => undefined);
    };
    this.timer = now || this.o.groupCommitMs === 0 ? setTimeout(run, 0) : setTimeout(run, this.o.groupCommitMs);
  }

  private enqueue(job: () => Promise<void>): Promise<void> {
    const next = this.lane.then(job);
    this.lane = next.catch((err) => this.d.log.error({ err }, 'ingest lane job failed'));
    return next;
  }

  private async flush(): Promise<void> {
    const group = this.queue;
    this.queue = [];
    const readings = group.reduce((n, p) => n + p.batch.readings.length, 0);
    try {
      const rotated: OpenSegment[] = [];
      const plan = await this.d.store.commitGroup({
        batches: group.map((x) => x.batch),
        now: this.now,
        maxFutureMs: this.o.maxFutureMs,
        clockOffset: (g, now) => this.d.clocks.offset(g, now),
        stage: (lines) => this.stage(lines, rotated),
        log: this.d.log,
        ...(this.node !== undefined ? { node: this.node } : {}),
      }).finally(() => {
        // Sealed only now: every line of a rotated segment is committed (or its transaction is gone).
        for (const s of rotated) this.handOver(s);
      });
      this.d.metrics.groupCommits.inc();
      group.forEach((p, i) => {
        const o = plan.outcomes[i];
        if (o.refused) {
          if (o.refused instanceof IngestSeqSkipError) this.d.metrics.seqGaps.inc();
          p.reject(o.refused);
          return;
        }
        this.d.metrics.readings.inc(o.stored);
        this.d.metrics.duplicates.inc(o.duplicates);
        this.d.metrics.epochs.inc(o.newEpochs);
        this.d.metrics.gaps.inc(o.newGaps);
        this.d.metrics.cloudLost.inc(o.newLostReadings);
        const ack: IngestAck = { ackSeq: o.ackSeq, stored: o.stored, duplicates: o.duplicates };
        if (o.future) {
          this.d.metrics.future.inc({ gateway: p.batch.gateway }, o.future.count);
          ack.warnings = [{
            code: 'BRAID_WARN_FUTURE_TS',
            count: o.future.count,
            message: `${o.future.count} reading(s) stamped more than ${this.o.maxFutureMs} ms after the cloud's clock (ingest.maxFutureMs), the furthest `
              + `${o.future.device}/${o.future.metric} at ${new Date(o.future.ts).toISOString()}: stored and counted; check the clocks of gateway ${p.batch.gateway} and its devices`,
          }];
        }
        p.resolve(ack);
      });
      // A full segment is sealed now rather than when the next request arrives.
      if (this.segment && this.segment.readings >= this.o.sealMaxReadings) {
        await this.rotate().catch((e) => this.d.log.error({ err: e }, 'rotating a full segment failed'));
      }
    } catch (err) {
      if (isStagingLeaseLost(err)) {
        // [INV-1] nothing of the group counts. The 503 leaves once this node moved on to a fresh
        // lease, so the gateway's resend (here or to another node) is stored.
        await this.leaseLostNow(err.node);
        for (const p of group) p.reject(err);
        return;
      }
      this.d.log.error({ err, requests: group.length }, 'group commit failed; nothing acknowledged');
      // Whatever the failure left in the file (a half line, a write the disk may not hold), the seal
      // judges the file itself, as it would after a crash.
      if (this.segment) this.segment.image = null;
      // The open segment may hold lines of the failed transaction, or a half write: start a new one.
      await this.rotate().catch((e) => this.d.log.error({ err: e }, 'rotating after a failed commit failed'));
      const e = new IngestUnavailableError('could not store the batch durably; retry', { cause: err });
      for (const p of group) p.reject(e);
    } finally {
      this.queuedReadings -= readings;
      this.flushing = false;
      this.kick(true);
    }
  }

  /**
   * Append the lines to the open segment, rotating at sealMaxReadings; fdatasync each segment
   * written. The lines of one segment go in one write (writev): a group of 25 requests was 25
   * round trips to the thread pool, each waiting behind the gunzips and fsyncs queued there.
   */
  private async stage(lines: StagingLine[], rotated: OpenSegment[]): Promise<Placement> {
    const placed: Placement = new Map();
    const touched = new Set<OpenSegment>();
    let pending: Array<{ gateway: string; rows: ReadingColumns; parts: Buffer[]; bytes: number }> = [];
    const write = async (seg: OpenSegment | null) => {
      if (!seg || pending.length === 0) return;
      const these = pending;
      pending = [];
      await seg.appendAll(these.flatMap((p) => p.parts));
      // Only what the file holds: added once the append is done (a failed one drops the image).
      for (const p of these) seg.image?.add(p.gateway, p.rows, p.bytes);
    };
    for (const line of lines) {
      let rows = line.rows;
      while (rows.length > 0) {
        let seg = this.segment;
        if (seg && seg.readings >= this.o.sealMaxReadings) {
          await write(seg);
          await seg.sync();
          await seg.close();
          touched.delete(seg);
          rotated.push(seg);
          this.segment = seg = null;
        }
        if (!seg) seg = await this.openSegment();
        const take = rows.length <= this.o.sealMaxReadings - seg.readings ? rows : rows.slice(0, this.o.sealMaxReadings - seg.readings);
        // The request's own bytes when the line goes whole into this segment (the usual case).
        const parts = take === line.rows && line.json ? segmentLineOf(line.gateway, line.json) : [segmentLine(line.gateway, take)];
        pending.push({ gateway: line.gateway, rows: take, parts, bytes: parts.reduce((k, b) => k + b.length, 0) });
        seg.readings += take.length;
        touched.add(seg);
        const byGateway = placed.get(seg.id) ?? new Map<string, Range[]>();
        byGateway.set(line.gateway, normalize([...(byGateway.get(line.gateway) ?? []), ...seqRanges(take)]));
        placed.set(seg.id, byGateway);
        rows = take === rows ? rows.slice(rows.length) : rows.slice(take.length);
      }
    }
    await write(this.segment);
    // [INV-1] durable before the COMMIT that makes it count, and before any 2xx.
    await Promise.all([...touched].map((s) => s.sync()));
    return placed;
  }

  private async openSegment(): Promise<OpenSegment> {
    // Ours before the file exists: a staging scan that lists the directory meanwhile (every
    // min(orphanScanMs, leaseMs)) must not take a segment still being written for one to seal.
    const now = this.now();
    const id = newSegmentId(now);
    this.live.add(id);
    let seg: OpenSegment;
    try {
      seg = await OpenSegment.create(this.dir, now, id);
    } catch (err) {
      this.live.delete(id);
      throw err;
    }
    if (this.o.sealFromMemory) seg.image = new SegmentImage(this.o.sealMaxReadings);
    this.segment = seg;
    if (this.ageTimer) clearTimeout(this.ageTimer);
    this.ageTimer = setTimeout(() => {
      this.ageTimer = null;
      if (this.segment === seg) void this.enqueue(() => this.rotate()).catch(() => undefined);
    }, this.o.sealMaxAgeMs);
    return seg;
  }

  /** Close the open segment (if any) and hand it to the sealer. Runs between group commits. */
  private async rotate(): Promise<void> {
    const seg = this.segment;
    if (!seg) return;
    this.segment = null;
    if (this.ageTimer) { clearTimeout(this.ageTimer); this.ageTimer = null; }
    try {
      await seg.close();
    } finally {
      this.handOver(seg);
    }
  }

  private handOver(seg: OpenSegment): void {
    this.live.delete(seg.id);
    const image = seg.image;
    seg.image = null;
    this.d.onRotated({ id: seg.id, path: seg.path, readings: seg.readings, image });
  }

  /**
   * The lease of `node` was taken over (a renewal said so): after the group commits queued before
   * this call, abandon the open segment and go on under a fresh node id. Nothing when the committer
   * moved on from `node` already.
   */
  leaseLost(node: string): Promise<void> {
    return this.enqueue(() => this.leaseLostNow(node));
  }

  private async leaseLostNow(node: string): Promise<void> {
    if (node !== this.node || !this.d.onLeaseLost) return;
    // Abandoned: not handed to the sealer, not deleted. The claimant renamed (or will rename) the
    // file into its own dir and seals it; lines no staged row vouches for go by the sealer's rule.
    const seg = this.segment;
    this.segment = null;
    if (this.ageTimer) { clearTimeout(this.ageTimer); this.ageTimer = null; }
    this.live.clear();
    await seg?.close().catch(() => undefined);
    try {
      const next = await this.d.onLeaseLost(node);
      this.dir = next.dir;
      this.node = next.node;
    } catch (err) {
      this.d.log.error({ err, node }, 'could not open a new staging dir after the lease was taken over; the next commit tries again');
    }
  }

  /** Rotate the open segment now (after the group commits queued before this call). */
  rotateNow(): Promise<void> {
    return this.enqueue(() => this.rotate());
  }

  /** Stop taking requests, commit those queued, rotate the open segment. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    for (;;) {
      if (this.timer) {
        clearTimeout(this.timer);
        this.timer = null;
        this.flushing = true;
        void this.enqueue(() => this.flush()).catch(() => undefined);
      }
      await this.lane;
      if (!this.timer && this.queue.length === 0) break;
    }
    await this.enqueue(() => this.rotate()).catch(() => undefined);
  }
}
