/**
 * The speed pusher: every `pushIntervalMs`, start to start, sends the cloud the speed partials
 * changed since its last acknowledged push, of epochs above the watermark the cloud last told it,
 * with the health document and the connected devices (docs/serving.md). A push goes even with no partial: it is
 * the gateway's heartbeat in the cloud's registry. Failures back off (edge/cloudclient) and keep
 * the cursor, so after the failure streak the next pushes carry everything missed, at once. The
 * loop, cadence, backoff, close and status are edge/cloudclient's CloudSender.
 *
 * After an outage (or any backlog of more than one page) the newest partials go first: each push
 * carries those changed since the backlog was found, then the backlog from its newest end down
 * (page.ts, Backlog), so a reading published as the cloud returns shows in the merged query with
 * the first push, not after every page of the outage. While the cloud does not answer, the
 * pusher probes it every few seconds at most (speed.retryMaxMs) with a small page.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from '../../shared/logger.js';
import { CloudNodes, CloudSender, IDLE, type Next, NOW, displayUrl, gzipJson, postGzip, splitCloudUrls } from '../cloudclient/index.js';
import { SpeedPushResponseInvalidError, SpeedPushTimeoutError, SpeedPushUnreachableError } from './errors.js';
import { type SpeedPushMetrics, createSpeedPushMetrics } from './metrics.js';
import { DEFAULT_SPEED_PUSH_OPTIONS, type SpeedPushOptions, checkSpeedPushOptions } from './options.js';
import {
  type Backlog, type BacklogPage, type Page, type PartialRow, type Position, ensurePushIndex, findBacklog, loadPosition, readBacklogPage, readPage,
  savePosition, toTuple,
} from './page.js';
import type { SpeedPushAnswer, SpeedPushBody, SpeedPusherDeps, SpeedPushStatus } from './types.js';

export const SPEED_PATH = '/api/v1/speed';

/**
 * Most partials in a push while pushes fail: a probe of a cloud that may still be away costs a
 * small read and body, not a full page every retryMaxMs; the first success lifts the limit.
 */
export const PROBE_MAX_PARTIALS = 1_000;

/** What one push carries: the rows, and the positions they move to once acknowledged. */
interface Outgoing {
  rows: PartialRow[];
  /** Normal order: the page from `position`. */
  page?: Page;
  /** Backlog order: the rows above the backlog (from `fresh`), then the backlog's next rows down. */
  up?: Page;
  down?: BacklogPage;
}

/**
 * The health document with every U+0000 in its strings replaced by U+FFFD. The cloud refuses a
 * push that carries one (PostgreSQL TEXT and JSONB cannot hold it), and the document holds text
 * the gateway does not choose (a peer's error message in lastError): one such character would
 * otherwise stop every push.
 */
export function withoutNul(health: Record<string, unknown>): Record<string, unknown> {
  let found = false;
  const text = JSON.stringify(health, (_key, v: unknown) => {
    if (typeof v !== 'string' || !v.includes('\0')) return v;
    found = true;
    return v.replaceAll('\0', '\ufffd');
  });
  return found ? JSON.parse(text) as Record<string, unknown> : health;
}

export function parseAnswer(text: string): SpeedPushAnswer {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new SpeedPushResponseInvalidError(`speed push answered 2xx with a body that is not JSON: ${text.slice(0, 100)}`, { cause: err });
  }
  const a = v as { watermark?: unknown; manifestVersion?: unknown; stored?: unknown; alertRules?: unknown } | null;
  if (!a || typeof a !== 'object' || typeof a.watermark !== 'number' || !Number.isSafeInteger(a.watermark) || a.watermark < 0) {
    throw new SpeedPushResponseInvalidError(`speed push answered 2xx without an integer watermark: ${text.slice(0, 100)}`);
  }
  return {
    watermark: a.watermark,
    manifestVersion: typeof a.manifestVersion === 'number' ? a.manifestVersion : null,
    stored: typeof a.stored === 'number' ? a.stored : 0,
    alertRules: parseAlertRules(a.alertRules),
  };
}

/** The answer's `alertRules`, or null when absent or not `{version: string, rules?: [...]}` (an older cloud: no rules). */
function parseAlertRules(v: unknown): SpeedPushAnswer['alertRules'] {
  if (!v || typeof v !== 'object') return null;
  const o = v as { version?: unknown; rules?: unknown };
  if (typeof o.version !== 'string') return null;
  if (o.rules === undefined) return { version: o.version };
  return Array.isArray(o.rules) ? { version: o.version, rules: o.rules } : null;
}

export class SpeedPusher {
  private readonly deps: SpeedPusherDeps;
  private readonly o: SpeedPushOptions;
  private readonly log: Logger;
  private readonly metrics: SpeedPushMetrics;
  private readonly now: () => number;
  private readonly sender: CloudSender;
  /** Where pushes go (null: no cloud url); the gateway's list is shared with the forwarder. */
  private readonly nodes: CloudNodes | null;
  private readonly ownsNodes: boolean;
  /** The node of the latest push. */
  private lastUrl: string | null = null;
  private closed: Promise<void> | null = null;

  /** Everything below it is acknowledged (and, during a backlog, its lower end): the position in meta. */
  private position: Position = { cursor: 0, ties: new Map(), done: 0 };
  /** A backlog being pushed newest first, null when none. */
  private backlog: Backlog | null = null;
  /** During a backlog: the position of the partials changed since it was found (from its `hi` up). */
  private fresh: Position = { cursor: 0, ties: new Map(), done: 0 };
  /** performance.now() of the read that produced `position` (null: loaded at start). */
  private positionReadAt: number | null = null;
  private watermark = 0;
  /** updated_at of the oldest partial known to wait for a push (the lag gauge), null when none. */
  private oldestPendingAt: number | null = null;
  private manifestVersion: number | null = null;
  private pushes = 0;
  private partialsSent = 0;

  constructor(deps: SpeedPusherDeps, options: Partial<SpeedPushOptions> = {}) {
    this.deps = deps;
    this.o = checkSpeedPushOptions({ ...DEFAULT_SPEED_PUSH_OPTIONS, ...options });
    this.log = deps.logger.child({ component: 'speedpush' });
    this.now = deps.now ?? Date.now;
    this.metrics = createSpeedPushMetrics(deps.registry, () => (this.oldestPendingAt === null ? 0 : Math.max(0, this.now() - this.oldestPendingAt) / 1000));
    // idleMs is the push cadence: measured start to start, a reading waits at most one interval
    // (plus the push itself) before it goes, however long the pushes take.
    this.sender = new CloudSender({
      name: 'speed pusher', what: 'speed push', sizeField: 'pageSize', log: this.log, metrics: this.metrics, now: this.now,
      options: { ...this.o, idleMs: this.o.pushIntervalMs, maxSize: this.o.pushMaxPartials },
    });
    this.ownsNodes = !deps.nodes && this.o.url !== null;
    this.nodes = deps.nodes ?? (this.o.url === null ? null : new CloudNodes(splitCloudUrls(this.o.url), { logger: deps.logger, now: this.now }));
  }

  /** Load the cursor and the watermark, and start pushing (with no url, only the former). Throws ClosedError after close(). */
  async start(): Promise<void> {
    if (!this.sender.begin()) return;
    const loaded = await loadPosition(this.deps.reader);
    this.position = loaded.position;
    this.watermark = loaded.watermark;
    this.metrics.watermark.set(this.watermark);
    if (this.sender.closing || this.nodes === null) return;
    await ensurePushIndex(this.deps.writes);
    this.log.info({ url: this.nodes.status().nodes.join(','), cursor: this.position.cursor, done: this.position.done, watermark: this.watermark, pushIntervalMs: this.o.pushIntervalMs }, 'pushing speed partials');
    this.sender.run(() => this.step());
  }

  /** A backlog is being pushed newest first (tests, status pages). */
  get catchingUp(): boolean {
    return this.backlog !== null;
  }

  /** The cloud answered someone else (the forwarder): if pushes are failing, try again now instead of at the end of the backoff. */
  cloudReachable(): void {
    this.sender.retryNow();
  }

  status(): SpeedPushStatus {
    return {
      ...this.sender.status(),
      cloudUrl: this.nodes === null ? null : displayUrl(this.lastUrl ?? this.nodes.current),
      watermark: this.watermark,
      cursor: this.position.cursor,
      manifestVersion: this.manifestVersion,
      pushes: this.pushes,
      partialsSent: this.partialsSent,
    };
  }

  /** Stop: lets an in-flight push finish for closeGraceMs, then aborts it (the cursor stays). Idempotent. */
  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async shutdown(): Promise<void> {
    await this.sender.close();
    if (this.ownsNodes) this.nodes?.close();
    this.log.info({ cursor: this.position.cursor, watermark: this.watermark }, 'speed pusher closed');
  }

  private async step(): Promise<Next> {
    const now = this.now();
    const readAt = performance.now();
    if ((this.backlog ? this.fresh.cursor : this.position.cursor) > now) {
      this.backlog = null;
      this.rewind(now, readAt);
    }
    const out = await this.read(now);
    const body = await this.body(out.rows);
    if (this.sender.closing) return NOW;
    const bytes = await gzipJson(JSON.stringify(body));
    this.metrics.bytesSent.inc(bytes.length);
    let answer: SpeedPushAnswer;
    const nodes = this.nodes as CloudNodes;
    const url = nodes.current;
    this.lastUrl = url;
    try {
      const text = await postGzip({
        url, token: this.o.token, timeoutMs: this.o.requestTimeoutMs, signal: this.sender.signal, now: this.now,
        path: SPEED_PATH, what: 'speed push', TimeoutError: SpeedPushTimeoutError, UnreachableError: SpeedPushUnreachableError,
      }, bytes);
      answer = parseAnswer(text);
      nodes.succeeded(url);
    } catch (err) {
      if (this.sender.abortedByClose()) return NOW;
      // The cursor has not moved: the next node gets these partials again at once (an upsert).
      if (nodes.failed(url, err, 'speed pusher') === 'next') return this.sender.failedOver(err);
      return this.sender.requestFailed(err, out.rows.length);
    }
    return this.acknowledged(out, answer, readAt);
  }

  /**
   * The next push's rows. Oldest first from the cursor while that fits one page; a full page means
   * a backlog (an outage, a burst): from then on each push carries the rows changed since it was
   * found (at most half the page, so the backlog moves on under any load) and fills the page with
   * the backlog's newest rows. While pushes fail nothing is acknowledged, and each attempt finds a
   * backlog again: the probe carries the newest partials, and no read grows with the outage (the
   * rows changed since a backlog found at its start would be all of it, read through the push
   * index's epochs and sorted at every attempt).
   */
  private async read(now: number): Promise<Outgoing> {
    const failing = this.sender.consecutiveFailures > 0;
    const limit = failing ? Math.min(this.sender.size, PROBE_MAX_PARTIALS) : this.sender.size;
    await this.deps.applied?.();
    const had = this.backlog !== null;
    if (failing && had) this.backlog = null;
    if (this.backlog === null) {
      let found = failing && had ? await findBacklog(this.deps.reader, this.position, this.watermark, now) : null;
      if (found === null) {
        const page = await readPage(this.deps.reader, this.position, this.watermark, limit, now);
        this.oldestPendingAt = page.rows.length ? page.rows[0].updated_at : null;
        if (!(page.full && page.advanced)) return { rows: page.rows, page };
        found = await findBacklog(this.deps.reader, this.position, this.watermark, now);
        if (found === null) return { rows: page.rows, page };
      }
      this.backlog = found.backlog;
      this.fresh = found.fresh;
      if (!had) this.log.info({ cursor: this.position.cursor, done: this.position.done, closed: found.backlog.closed, hi: found.backlog.hi }, 'speed push backlog: pushing the newest partials first');
    }
    const up = await readPage(this.deps.reader, this.fresh, this.watermark, Math.ceil(limit / 2), now);
    const down = await readBacklogPage(this.deps.reader, this.backlog!, this.watermark, limit - up.rows.length);
    return { rows: up.rows.concat(down.rows), up, down };
  }

  /**
   * The wall clock went back below the cursor: rows committed since are stamped below it too. They
   * were all stamped after the acknowledged read, i.e. no earlier than `now` minus the monotonic
   * time since that read; push again from there (the cloud's upsert absorbs the repeats), or from
   * the start after a restart, when that time is unknown.
   */
  private rewind(now: number, readAt: number): void {
    const floor = this.positionReadAt === null ? 0 : Math.max(0, Math.floor(now - (readAt - this.positionReadAt)) - 1);
    this.log.warn({ cursor: this.position.cursor, now, floor }, 'the clock went back; pushing again from an earlier cursor');
    this.position = { cursor: Math.min(this.position.cursor, floor), ties: new Map(), done: this.position.done };
  }

  private async body(rows: PartialRow[]): Promise<SpeedPushBody> {
    let health: Record<string, unknown>;
    try {
      health = withoutNul(await this.deps.health());
    } catch (err) {
      this.log.warn({ err }, 'could not build the health document; pushing without it');
      health = {};
    }
    const devices = this.deps.connectedDevices().map((id) => ({ id, connected: true }));
    const body: SpeedPushBody = { v: 1, gateway: this.deps.gatewayId, sentAt: this.now(), partials: rows.map(toTuple), health, devices };
    if (this.deps.alertRules) body.alertRules = this.deps.alertRules.version();
    return body;
  }

  private async acknowledged(out: Outgoing, answer: SpeedPushAnswer, readAt: number): Promise<Next> {
    let more: boolean;
    let next = this.position;
    if (out.page) {
      next = out.page.next;
      more = out.page.full && out.page.advanced;
    } else {
      const up = out.up!;
      const down = out.down!;
      this.fresh = up.next;
      // The backlog is all pushed: what was acknowledged is everything below the upper position.
      if (down.done) next = up.next;
      else this.backlog = down.next;
      more = !down.done || (up.full && up.advanced);
    }
    // During a backlog the cursor in meta stays at its lower end: a restart pushes the backlog again (the upsert absorbs it).
    if (next.cursor !== this.position.cursor || next.done !== this.position.done || answer.watermark !== this.watermark) {
      await savePosition(this.deps.writes, next, answer.watermark);
    }
    if (answer.watermark !== this.watermark) this.log.debug({ from: this.watermark, to: answer.watermark }, 'cloud watermark moved');
    if (next !== this.position) {
      this.position = next;
      this.positionReadAt = readAt;
    }
    if (out.down?.done) {
      this.backlog = null;
      this.log.info({ cursor: this.position.cursor }, 'speed push backlog pushed');
    }
    // The cloud's word, even if lower (its data dir was reset): it knows what its views cover.
    this.watermark = answer.watermark;
    this.manifestVersion = answer.manifestVersion;
    this.metrics.watermark.set(answer.watermark);
    this.metrics.partialsSent.inc(out.rows.length);
    this.partialsSent += out.rows.length;
    this.pushes++;
    this.sender.answered();
    this.sender.progressed();
    const rules = answer.alertRules;
    if (rules?.rules && this.deps.alertRules && rules.version !== this.deps.alertRules.version()) {
      // Kept before the next push names the new version; a failure asks again at the next push.
      await this.deps.alertRules.received(rules.version, rules.rules).catch((err: unknown) => this.log.error({ err }, 'could not keep the alert rules the cloud sent'));
    }
    try {
      this.deps.onAnswered?.();
    } catch (err) {
      this.log.error({ err }, 'onAnswered callback threw');
    }
    if (!more) this.oldestPendingAt = null;
    // A full page means a backlog (after an outage, a burst): push the rest at once.
    return more ? NOW : IDLE;
  }
}
