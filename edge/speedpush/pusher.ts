/**
 * The speed pusher: every `pushIntervalMs`, start to start, sends the cloud the speed partials
 * changed since its last acknowledged push, of epochs above the watermark the cloud last told it,
 * with the health document and the connected devices (docs/serving.md). A push goes even with no partial: it is
 * the gateway's heartbeat in the cloud's registry. Failures back off (edge/cloudclient) and keep
 * the cursor, so after the failure streak the next pushes carry everything missed, at once. The
 * loop, cadence, backoff, close and status are edge/cloudclient's CloudSender.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from '../../shared/logger.js';
import { CloudSender, IDLE, type Next, NOW, gzipJson, postGzip } from '../cloudclient/index.js';
import { SpeedPushResponseInvalidError, SpeedPushTimeoutError, SpeedPushUnreachableError } from './errors.js';
import { type SpeedPushMetrics, createSpeedPushMetrics } from './metrics.js';
import { DEFAULT_SPEED_PUSH_OPTIONS, type SpeedPushOptions, checkSpeedPushOptions } from './options.js';
import { type Page, type Position, ensureCursorIndex, loadPosition, readPage, savePosition, toTuple } from './page.js';
import type { SpeedPushAnswer, SpeedPushBody, SpeedPusherDeps, SpeedPushStatus } from './types.js';

export const SPEED_PATH = '/api/v1/speed';

export function parseAnswer(text: string): SpeedPushAnswer {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new SpeedPushResponseInvalidError(`speed push answered 2xx with a body that is not JSON: ${text.slice(0, 100)}`, { cause: err });
  }
  const a = v as { watermark?: unknown; manifestVersion?: unknown; stored?: unknown } | null;
  if (!a || typeof a !== 'object' || typeof a.watermark !== 'number' || !Number.isSafeInteger(a.watermark) || a.watermark < 0) {
    throw new SpeedPushResponseInvalidError(`speed push answered 2xx without an integer watermark: ${text.slice(0, 100)}`);
  }
  return {
    watermark: a.watermark,
    manifestVersion: typeof a.manifestVersion === 'number' ? a.manifestVersion : null,
    stored: typeof a.stored === 'number' ? a.stored : 0,
  };
}

export class SpeedPusher {
  private readonly deps: SpeedPusherDeps;
  private readonly o: SpeedPushOptions;
  private readonly log: Logger;
  private readonly metrics: SpeedPushMetrics;
  private readonly now: () => number;
  private readonly sender: CloudSender;
  private closed: Promise<void> | null = null;

  private position: Position = { cursor: 0, ties: new Map() };
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
  }

  /** Load the cursor and the watermark, and start pushing (with no url, only the former). Throws ClosedError after close(). */
  async start(): Promise<void> {
    if (!this.sender.begin()) return;
    const loaded = await loadPosition(this.deps.reader);
    this.position = loaded.position;
    this.watermark = loaded.watermark;
    this.metrics.watermark.set(this.watermark);
    if (this.sender.closing || this.o.url === null) return;
    await ensureCursorIndex(this.deps.writes);
    this.log.info({ url: this.o.url, cursor: this.position.cursor, watermark: this.watermark, pushIntervalMs: this.o.pushIntervalMs }, 'pushing speed partials');
    this.sender.run(() => this.step());
  }

  /** The cloud answered someone else (the forwarder): if pushes are failing, try again now instead of at the end of the backoff. */
  cloudReachable(): void {
    this.sender.retryNow();
  }

  status(): SpeedPushStatus {
    return {
      ...this.sender.status(),
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
    this.log.info({ cursor: this.position.cursor, watermark: this.watermark }, 'speed pusher closed');
  }

  private async step(): Promise<Next> {
    const now = this.now();
    const readAt = performance.now();
    if (this.position.cursor > now) this.rewind(now, readAt);
    const page = await readPage(this.deps.reader, this.position, this.watermark, this.sender.size, now);
    this.oldestPendingAt = page.rows.length ? page.rows[0].updated_at : null;
    const body = await this.body(page);
    if (this.sender.closing) return NOW;
    const bytes = await gzipJson(JSON.stringify(body));
    this.metrics.bytesSent.inc(bytes.length);
    let answer: SpeedPushAnswer;
    try {
      const text = await postGzip({
        url: this.o.url as string, token: this.o.token, timeoutMs: this.o.requestTimeoutMs, signal: this.sender.signal, now: this.now,
        path: SPEED_PATH, what: 'speed push', TimeoutError: SpeedPushTimeoutError, UnreachableError: SpeedPushUnreachableError,
      }, bytes);
      answer = parseAnswer(text);
    } catch (err) {
      if (this.sender.abortedByClose()) return NOW;
      return this.sender.requestFailed(err, page.rows.length);
    }
    return this.acknowledged(page, answer, readAt);
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
    this.position = { cursor: Math.min(this.position.cursor, floor), ties: new Map() };
  }

  private async body(page: Page): Promise<SpeedPushBody> {
    let health: Record<string, unknown>;
    try {
      health = await this.deps.health();
    } catch (err) {
      this.log.warn({ err }, 'could not build the health document; pushing without it');
      health = {};
    }
    const devices = this.deps.connectedDevices().map((id) => ({ id, connected: true }));
    return { v: 1, gateway: this.deps.gatewayId, sentAt: this.now(), partials: page.rows.map(toTuple), health, devices };
  }

  private async acknowledged(page: Page, answer: SpeedPushAnswer, readAt: number): Promise<Next> {
    if (page.next.cursor !== this.position.cursor || answer.watermark !== this.watermark) {
      await savePosition(this.deps.writes, page.next.cursor, answer.watermark);
    }
    if (answer.watermark !== this.watermark) this.log.debug({ from: this.watermark, to: answer.watermark }, 'cloud watermark moved');
    this.position = page.next;
    this.positionReadAt = readAt;
    // The cloud's word, even if lower (its data dir was reset): it knows what its views cover.
    this.watermark = answer.watermark;
    this.manifestVersion = answer.manifestVersion;
    this.metrics.watermark.set(answer.watermark);
    this.metrics.partialsSent.inc(page.rows.length);
    this.partialsSent += page.rows.length;
    this.pushes++;
    this.sender.answered();
    this.sender.progressed();
    const more = page.full && page.advanced;
    if (!more) this.oldestPendingAt = null;
    // A full page means a backlog (after an outage, a burst): push the rest at once.
    return more ? NOW : IDLE;
  }
}
