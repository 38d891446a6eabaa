/**
 * The telemetry path: parse, stamp, commit, then release the PUBACK. It runs in aedes'
 * `authorizePublish`, whose callback is what lets aedes write the PUBACK ([INV-1] ack only after
 * durable; aedes lib/handlers/publish.js writes PUBACK before `published` runs, too late).
 */
import type { Client, PublishPacket } from 'aedes';
import { ClosedError, LimitExceededError, PayloadInvalidError, type BraidError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { parsePayload, type PayloadLimits } from '../../shared/payload.js';
import type { Outbox } from '../outbox/index.js';
import { errorsTopic } from './acl.js';
import type { RateLimiter } from './limits.js';
import { RetransmitStamps } from './retransmit.js';
import type { BrokerMetrics } from './metrics.js';

export interface TelemetryDeps {
  outbox: Outbox;
  metrics: BrokerMetrics;
  logger: Logger;
  limits: PayloadLimits;
  rate: RateLimiter;
  retransmits: RetransmitStamps;
  /** Send a JSON error report to the device (devices/{id}/errors). */
  report: (deviceId: string, body: Record<string, unknown>) => void;
  now: () => number;
}

export function handleTelemetry(deps: TelemetryDeps, client: Client, packet: PublishPacket, done: (err?: Error | null) => void): void {
  const device = client.id;
  deps.metrics.messages.inc({ qos: String(packet.qos) });
  const wait = deps.rate.take(device);
  if (wait > 0) {
    // Over its rate: hold this message (and with it the reads from the device's socket).
    deps.metrics.throttled.inc();
    setTimeout(() => guarded(deps, client, packet, done), wait);
    return;
  }
  guarded(deps, client, packet, done);
}

/**
 * [INV-5] Whatever goes wrong with one message is answered through `done(err)`: a throw here would
 * escape aedes' callback (or the throttle's timer) and take the whole gateway down. aedes closes
 * that one connection; nothing was acknowledged, so the device resends.
 */
function guarded(deps: TelemetryDeps, client: Client, packet: PublishPacket, done: (err?: Error | null) => void): void {
  const device = client.id;
  try {
    ingest(deps, client, packet, done);
  } catch (err) {
    deps.metrics.unacked.inc({ reason: 'internal' });
    deps.logger.error({ err, device }, 'telemetry path failed: the message is not acknowledged');
    done(err instanceof Error ? err : new Error(String(err)));
  }
}

function ingest(deps: TelemetryDeps, client: Client, packet: PublishPacket, done: (err?: Error | null) => void): void {
  const device = client.id;
  const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
  let parsed;
  try {
    parsed = parsePayload(payload, deps.now(), deps.limits);
  } catch (err) {
    if (!(err instanceof PayloadInvalidError)) throw err;
    // [INV-5] a bad payload costs only itself: acknowledged (firmware must not retry it forever),
    // counted, quarantined with its reason, and reported to the device.
    deps.metrics.payloadInvalid.inc({ reason: err.reason });
    deps.report(device, { code: err.code, reason: err.reason, message: err.message, topic: packet.topic });
    deps.logger.debug({ device, reason: err.reason }, 'payload refused');
    deps.outbox.quarantine({ device, topic: packet.topic, reason: err.reason, message: err.message, payload })
      .then(() => done(null), (e: BraidError) => {
        deps.metrics.unacked.inc({ reason: unackedReason(e) });
        done(e);
      });
    return;
  }
  // A message is received at one time, so its readings without ts share one stamp; only a name
  // repeated without time (SenML) takes the device's next stamp, to keep an identity of its own.
  const needsStamp = parsed.some((r) => r.ts === undefined);
  // QoS 2 too: a PUBLISH resent before its PUBREC arrived runs this path again.
  const track = needsStamp && packet.qos > 0;
  const digest = track ? RetransmitStamps.digest(payload) : '';
  const recalled = track && packet.dup ? deps.retransmits.recall(device, packet.messageId, digest) : undefined;
  const stamps: number[] = recalled ? [...recalled] : [];
  const repeats = new Map<string, number>();
  const readings = parsed.map((r) => {
    if (r.ts !== undefined) return { device, metric: r.metric, ts: r.ts, value: r.value };
    const k = repeats.get(r.metric) ?? 0;
    repeats.set(r.metric, k + 1);
    while (stamps.length <= k) stamps.push(deps.outbox.stamp(device));
    return { device, metric: r.metric, ts: stamps[k], value: r.value };
  });
  if (track) deps.retransmits.remember(device, packet.messageId, digest, stamps);
  deps.outbox.submit(readings).then(
    () => {
      corkForThisCommit(client);
      done(null);
    },
    (err: BraidError) => {
      // Not acknowledged: closing the connection makes the device resend its QoS 1 messages.
      deps.metrics.unacked.inc({ reason: unackedReason(err) });
      deps.report(device, { code: err.code ?? 'BRAID_ERR_INTERNAL', message: err.message, topic: packet.topic });
      done(err);
    },
  );
}

/**
 * The PUBACKs one group commit releases leave in one write per connection instead of one each:
 * the committer resolves every submit of the group at once, so their reactions (this one among
 * them) are queued together; the first corks its connection and queues the uncork behind them all,
 * and each PUBACK aedes writes meanwhile (synchronously, in done) is buffered. Nothing is held past
 * the current microtask queue, and only PUBACKs already released by a durable commit [INV-1].
 */
const corked = new Set<Client['conn']>();
let uncorkQueued = false;

function corkForThisCommit(client: Client): void {
  const conn = client.conn;
  if (!conn || typeof conn.cork !== 'function' || corked.has(conn)) return;
  conn.cork();
  corked.add(conn);
  if (!uncorkQueued) {
    uncorkQueued = true;
    queueMicrotask(uncorkAll);
  }
}

function uncorkAll(): void {
  uncorkQueued = false;
  for (const conn of corked) conn.uncork();
  corked.clear();
}

/** The label of a message left without PUBACK: a limit, a shutdown, or the store failing its commit. */
function unackedReason(err: BraidError): string {
  if (err instanceof LimitExceededError) return 'queue_full';
  if (err instanceof ClosedError) return 'closing';
  return 'commit_failed';
}

export { errorsTopic };
