/**
 * The speed pusher: every `pushIntervalMs` sends the cloud the speed partials changed since its
 * last acknowledged push, of epochs above the watermark the cloud last told it, with the health
 * document and the connected devices (docs/serving.md). A push goes even with no partial: it is
 * the gateway's heartbeat in the cloud's registry. Failures back off (edge/cloudclient) and keep
 * the cursor, so after the failure streak the next pushes carry everything missed, at once.
 */
import { performance } from 'node:perf_hooks';
import { BraidError, ClosedError, HttpError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { errorBodyCode, gzipJson, postGzip, retryDelayMs } from '../cloudclient/index.js';
import { SpeedPushResponseInvalidError, SpeedPushTimeoutError, SpeedPushUnreachableError } from './errors.js';
import { type SpeedPushMetrics, createSpeedPushMetrics } from './metrics.js';
import { DEFAULT_SPEED_PUSH_OPTIONS, type SpeedPushOptions, checkSpeedPushOptions } from './options.js';
import { type Page, type Position, ensureCursorIndex, loadPosition, readPage, savePosition, toTuple } from './page.js';
import type { SpeedPushAnswer, SpeedPushBody, SpeedPushError, SpeedPusherDeps, SpeedPushStatus } from './types.js';

export const SPEED_PATH = '/api/v1/speed';

type Next = { kind: 'now' } | { kind: 'backoff'; ms: number } | { kind: 'idle' };
const NOW: Next = { kind: 'now' };
const IDLE: Next = { kind: 'idle' };

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

  private started = false;
  private closing = false;
  private loop: Promise<void> | null = null;
  private closed: Promise<void> | null = null;
  private readonly abort = new AbortController();

  private position: Position = { cursor: 0, ties: new Map() };
  /** performance.now() of the read that produced `position` (null: loaded at start). */
  private positionReadAt: number | null = null;
  private watermark = 0;
  /** Working page size: halved by a 413, grown back by successes. */
  private pageSize: number;
  /** updated_at of the oldest partial known to wait for a push (the lag gauge), null when none. */
  private oldestPendingAt: number | null = null;
  private lastSuccessAt: number | null = null;
  private lastError: SpeedPushError | null = null;
  private consecutiveFailures = 0;
  private manifestVersion: number | null = null;
  private pushes = 0;
  private partialsSent = 0;
  private wake: (() => void) | null = null;

  constructor(deps: SpeedPusherDeps, options: Partial<SpeedPushOptions> = {}) {
    this.deps = deps;
    this.o = checkSpeedPushOptions({ ...DEFAULT_SPEED_PUSH_OPTIONS, ...options });
    this.log = deps.logger.child({ component: 'speedpush' });
    this.now = deps.now ?? Date.now;
    this.metrics = createSpeedPushMetrics(deps.registry, () => (this.oldestPendingAt === null ? 0 : Math.max(0, this.now() - this.oldestPendingAt) / 1000));
    this.pageSize = this.o.pushMaxPartials;
  }

  /** Load the cursor and the watermark, and start pushing (with no url, only the former). Throws ClosedError after close(). */
  async start(): Promise<void> {
    if (this.closing) throw new ClosedError('speed pusher is closed');
    if (this.started) return;
    this.started = true;
    const loaded = await loadPosition(this.deps.reader);
    this.position = loaded.position;
    this.watermark = loaded.watermark;
    this.metrics.watermark.set(this.watermark);
    this.metrics.consecutiveFailures.set(0);
    this.metrics.lastSuccess.remove({}); // a pusher before us on this registry (a restart in one process) had its own
    if (this.closing || this.o.url === null) return;
    await ensureCursorIndex(this.deps.writes);
    this.log.info({ url: this.o.url, cursor: this.position.cursor, watermark: this.watermark }, 'pushing speed partials');
    this.loop = this.run();
  }

  /** The cloud answered someone else (the forwarder): if pushes are failing, try again now instead of at the end of the backoff. */
  cloudReachable(): void {
    if (this.consecutiveFailures > 0) this.wake?.();
  }

  status(): SpeedPushStatus {
    return {
      lastSuccessAt: this.lastSuccessAt,
      watermark: this.watermark,
      consecutiveFailures: this.consecutiveFailures,
      lastError: this.lastError,
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
    this.closing = true;
    this.wake?.();
    if (this.loop) {
      const grace = setTimeout(() => this.abort.abort(new ClosedError('speed pusher closed during a push')), this.o.closeGraceMs);
      try { await this.loop; } finally { clearTimeout(grace); }
    }
    this.log.info({ cursor: this.position.cursor, watermark: this.watermark }, 'speed pusher closed');
  }

  private async run(): Promise<void> {
    while (!this.closing) {
      let next: Next;
      try {
        next = await this.step();
      } catch (err) {
        // A database error (busy, disk): nothing was acknowledged, the cursor stays.
        next = this.failed(err, 'speed push step failed');
      }
      if (this.closing) break;
      if (next.kind === 'now') continue;
      await this.sleep(next.kind === 'idle' ? this.o.pushIntervalMs : next.ms);
    }
  }

  private async step(): Promise<Next> {
    const now = this.now();
    const readAt = performance.now();
    if (this.position.cursor > now) this.rewind(now, readAt);
    const page = await readPage(this.deps.reader, this.position, this.watermark, this.pageSize, now);
    this.oldestPendingAt = page.rows.length ? page.rows[0].updated_at : null;
    const body = await this.body(page);
    if (this.closing) return NOW;
    const bytes = await gzipJson(JSON.stringify(body));
    this.metrics.bytesSent.inc(bytes.length);
    let answer: SpeedPushAnswer;
    try {
      const text = await postGzip({
        url: this.o.url as string, token: this.o.token, timeoutMs: this.o.requestTimeoutMs, signal: this.abort.signal, now: this.now,
        path: SPEED_PATH, what: 'speed push', TimeoutError: SpeedPushTimeoutError, UnreachableError: SpeedPushUnreachableError,
      }, bytes);
      answer = parseAnswer(text);
    } catch (err) {
      if (this.closing && this.abort.signal.aborted) return NOW;
      return this.requestFailed(err, page);
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
    this.metrics.requests.inc({ outcome: 'ok' });
    this.metrics.partialsSent.inc(page.rows.length);
    this.partialsSent += page.rows.length;
    this.pushes++;
    this.lastSuccessAt = this.now();
    this.metrics.lastSuccess.set(this.lastSuccessAt / 1000);
    if (this.consecutiveFailures > 0) this.log.info({ failures: this.consecutiveFailures }, 'speed push reconnected');
    this.consecutiveFailures = 0;
    this.metrics.consecutiveFailures.set(0);
    if (this.pageSize < this.o.pushMaxPartials) {
      this.pageSize = Math.min(this.o.pushMaxPartials, this.pageSize + Math.max(1, Math.floor(this.pageSize / 4)));
    }
    const more = page.full && page.advanced;
    if (!more) this.oldestPendingAt = null;
    // A full page means a backlog (after an outage, a burst): push the rest at once.
    return more ? NOW : IDLE;
  }

  private requestFailed(err: unknown, page: Page): Next {
    if (err instanceof HttpError && err.statusCode === 413 && page.rows.length > 1) {
      this.pageSize = Math.max(1, Math.floor(page.rows.length / 2));
      this.metrics.requests.inc({ outcome: 'retry' });
      this.record(err);
      this.log.warn({ pageSize: this.pageSize }, 'speed push too large; halving the page');
      return NOW;
    }
    // 400/401/403: the same push cannot succeed until someone fixes the token or the version;
    // keep the cursor and retry, backing off, as the forwarder does.
    const rejected = err instanceof HttpError && !err.canRetry();
    this.metrics.requests.inc({ outcome: rejected ? 'rejected' : 'retry' });
    return this.failed(err, rejected ? 'cloud rejected the speed push; retrying' : 'speed push failed; retrying', rejected);
  }

  private failed(err: unknown, msg: string, rejected = false): Next {
    this.consecutiveFailures++;
    this.metrics.consecutiveFailures.set(this.consecutiveFailures);
    const e = this.record(err);
    const retryAfterMs = err instanceof HttpError ? err.retryAfterMs : undefined;
    const ms = retryDelayMs(this.consecutiveFailures, retryAfterMs, this.o);
    const fields = { code: e.code, status: e.status, failures: this.consecutiveFailures, retryInMs: ms, error: e.message };
    if (rejected) this.log.error(fields, msg);
    else this.log.warn(fields, msg);
    return { kind: 'backoff', ms };
  }

  private record(err: unknown): SpeedPushError {
    const at = this.now();
    let e: SpeedPushError;
    if (err instanceof HttpError) e = { code: errorBodyCode(err.body) ?? err.code, message: err.message, status: err.statusCode, at };
    else if (err instanceof BraidError) e = { code: err.code, message: err.message, at };
    else {
      const x = err as { code?: unknown; message?: unknown } | undefined;
      e = { code: typeof x?.code === 'string' ? x.code : 'BRAID_ERR_INTERNAL', message: String(x?.message ?? err), at };
    }
    this.lastError = e;
    return e;
  }

  private sleep(ms: number): Promise<void> {
    if (this.closing) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }
}
