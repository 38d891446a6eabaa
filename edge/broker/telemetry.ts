/**
 * The telemetry path: parse, stamp, commit, then release the PUBACK [INV-1] ack only after
 * durable. It runs in aedes' `authorizePublish`; by default `done` is called once the commit
 * returned and aedes writes the PUBACK (aedes lib/handlers/publish.js writes it before `published`
 * runs, too late for [INV-1]). With `maxUnacked` above 0 a QoS 0 or 1 message is acknowledged out
 * of band: aedes is told it is QoS 0 and goes on reading the device's socket while the message waits
 * for its group commit, and the PUBACK is written here once the commit returned, in the order the
 * PUBLISHes arrived [MQTT-4.6.0-2]; a device with `maxUnacked` messages waiting has its socket
 * paused until its oldest is committed. QoS 2 always keeps aedes' path (PUBREC after `done`).
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
  /**
   * Messages of one device read and waiting for their commit at most; past it its socket is held
   * until the oldest is committed. 0: every message holds the socket until its commit (aedes' path).
   */
  maxUnacked: number;
  /** Send a JSON error report to the device (devices/{id}/errors). */
  report: (deviceId: string, body: Record<string, unknown>) => void;
  now: () => number;
}

type Done = (err?: Error | null) => void;

export function handleTelemetry(deps: TelemetryDeps, client: Client, packet: PublishPacket, done: Done): void {
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
 * Whether a topic is a device's telemetry topic. Telemetry is not forwarded to MQTT subscribers:
 * the ACL lets only the device itself subscribe to it, and a message acknowledged out of band is
 * handed to aedes before it is durable, so aedes' forwarding would run ahead of the commit.
 */
export function isTelemetryTopic(topic: string): boolean {
  return topic.startsWith('devices/') && topic.endsWith('/telemetry') && topic.indexOf('/', 8) === topic.length - 10;
}

/**
 * [INV-5] Whatever goes wrong with one message is answered through `done(err)`: a throw here would
 * escape aedes' callback (or the throttle's timer) and take the whole gateway down. aedes closes
 * that one connection; nothing was acknowledged, so the device resends.
 */
function guarded(deps: TelemetryDeps, client: Client, packet: PublishPacket, done: Done): void {
  const device = client.id;
  try {
    ingest(deps, client, packet, done);
  } catch (err) {
    deps.metrics.unacked.inc({ reason: 'internal' });
    deps.logger.error({ err, device }, 'telemetry path failed: the message is not acknowledged');
    done(err instanceof Error ? err : new Error(String(err)));
  }
}

function ingest(deps: TelemetryDeps, client: Client, packet: PublishPacket, done: Done): void {
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
    settle(deps, client, packet, done, deps.outbox.quarantine({ device, topic: packet.topic, reason: err.reason, message: err.message, payload }), false);
    return;
  }
  // A message is received at one time, so its readings without ts share one stamp; only a name
  // repeated without time (SenML) takes the device's next stamp, to keep an identity of its own.
  let needsStamp = false;
  for (const r of parsed) if (r.ts === undefined) { needsStamp = true; break; }
  let readings;
  if (!needsStamp) {
    readings = parsed.map((r) => ({ device, metric: r.metric, ts: r.ts as number, value: r.value }));
  } else {
    // QoS 2 too: a PUBLISH resent before its PUBREC arrived runs this path again.
    const track = packet.qos > 0;
    const digest = track ? RetransmitStamps.digest(payload) : '';
    const recalled = track && packet.dup ? deps.retransmits.recall(device, packet.messageId, digest) : undefined;
    const stamps: number[] = recalled ? [...recalled] : [];
    const repeats = new Map<string, number>();
    readings = parsed.map((r) => {
      if (r.ts !== undefined) return { device, metric: r.metric, ts: r.ts, value: r.value };
      const k = repeats.get(r.metric) ?? 0;
      repeats.set(r.metric, k + 1);
      while (stamps.length <= k) stamps.push(deps.outbox.stamp(device));
      return { device, metric: r.metric, ts: stamps[k], value: r.value };
    });
    if (track) deps.retransmits.remember(device, packet.messageId, digest, stamps);
  }
  settle(deps, client, packet, done, deps.outbox.submit(readings), true);
}

/** Release the message once `committed` resolved: out of band (QoS 0 and 1), or through aedes (QoS 2). */
function settle(deps: TelemetryDeps, client: Client, packet: PublishPacket, done: Done, committed: Promise<unknown>, report: boolean): void {
  const failed = (err: BraidError) => {
    // Not acknowledged: closing the connection makes the device resend its QoS 1 messages.
    deps.metrics.unacked.inc({ reason: unackedReason(err) });
    if (report) deps.report(client.id, { code: err.code ?? 'BRAID_ERR_INTERNAL', message: err.message, topic: packet.topic });
  };
  if (packet.qos === 2 || deps.maxUnacked <= 0) {
    committed.then(() => {
      corkForThisCommit(client);
      done(null);
    }, (err: BraidError) => {
      failed(err);
      done(err);
    });
    return;
  }
  const acks = acksOf(client);
  if (acks.failed) {
    // The connection is closing after an earlier message failed its commit: this one is not
    // acknowledged either (it may commit; the device resends it and the dedup drops the repeat).
    done(acks.failed);
    return;
  }
  const entry: AckEntry = { messageId: packet.qos === 1 ? packet.messageId ?? -1 : -1, committed: false, held: null };
  acks.push(entry);
  // aedes must neither write a PUBACK nor wait for one: to it the message is QoS 0 now.
  packet.qos = 0;
  committed.then(() => {
    entry.committed = true;
    acks.release(client);
  }, (err: BraidError) => {
    failed(err);
    acks.fail(client, err);
  });
  if (acks.waiting <= deps.maxUnacked && !client.conn?.writableNeedDrain) {
    done(null);
  } else {
    entry.held = done;
    holdSocket(client, true);
  }
}

/**
 * Stop (or let go on) reading a device's socket while a message of it is held. A held callback
 * alone does not stop aedes: each 'readable' event also counts down its batch counter, so with one
 * packet held the next chunk would be read anyway (a device sending one packet per segment would
 * be read on and on). aedes' `pause()` makes those events no-ops; the field is set directly on the
 * way back because `resume()` would count down once more, for a packet that never came.
 */
function holdSocket(client: Client, hold: boolean): void {
  const c = client as unknown as { pause?: () => void; _paused?: boolean };
  if (hold) c.pause?.();
  else c._paused = false;
}

interface AckEntry {
  /** The PUBLISH's packet id; -1 for QoS 0 (nothing to answer). */
  messageId: number;
  committed: boolean;
  /** aedes' callback, kept while the device is over its cap: called once this message is answered. */
  held: Done | null;
}

/**
 * One connection's messages from read to commit, in arrival order: the committed ones at the head
 * are answered together, one write of their PUBACKs (4 bytes each: [MQTT-3.4], remaining length 2;
 * the short form is MQTT 5's success too), never one behind a message not yet durable.
 */
class Acks {
  private entries: AckEntry[] = [];
  private head = 0;
  failed: Error | null = null;
  private queued = false;

  get waiting(): number {
    return this.entries.length - this.head;
  }

  push(e: AckEntry): void {
    this.entries.push(e);
  }

  /** A commit returned: answer the head on the next microtask, with the rest of this commit's messages. */
  release(client: Client): void {
    if (this.queued) return;
    this.queued = true;
    releasing.push(() => this.flush(client));
    if (releasing.length === 1) queueMicrotask(releaseAll);
  }

  private flush(client: Client): void {
    this.queued = false;
    if (this.failed) return;
    let n = 0;
    let ids = 0;
    while (this.head + n < this.entries.length && this.entries[this.head + n].committed) {
      if (this.entries[this.head + n].messageId >= 0) ids++;
      n++;
    }
    if (n === 0) return;
    const answered = this.entries.slice(this.head, this.head + n);
    this.head += n;
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
    const conn = client.conn;
    if (ids > 0 && !client.closed && conn && !conn.destroyed) {
      const buf = Buffer.allocUnsafe(4 * ids);
      let o = 0;
      for (const e of answered) {
        if (e.messageId < 0) continue;
        buf[o] = 0x40; // PUBACK
        buf[o + 1] = 2;
        buf.writeUInt16BE(e.messageId, o + 2);
        o += 4;
      }
      conn.write(buf);
    }
    const held = answered.filter((e) => e.held);
    if (!held.length) return;
    // Messages held over the cap are let go once their answer is on its way; after a slow reader's
    // socket has drained (aedes' own PUBACK write waits for that too).
    const go = () => {
      // Still paused while a later message of the device is held; its own answer lets go.
      if (!this.entries.slice(this.head).some((e) => e.held)) holdSocket(client, false);
      for (const e of held) { const d = e.held!; e.held = null; d(null); }
    };
    if (conn && conn.writableNeedDrain && !conn.destroyed) conn.once('drain', go);
    else go();
  }

  /** A commit failed: no PUBACK for it or anything after it, and the connection is closed. */
  fail(client: Client, err: Error): void {
    if (this.failed) return;
    this.failed = err;
    const held = this.entries.slice(this.head).filter((e) => e.held);
    this.entries = [];
    this.head = 0;
    if (held.length) {
      holdSocket(client, false);
      for (const e of held) { const d = e.held!; e.held = null; d(err); }
    } else {
      // As aedes does with an error from its callback: destroy the socket, close the client.
      client.emit('error', err);
    }
  }
}

const acksByClient = new WeakMap<Client, Acks>();
function acksOf(client: Client): Acks {
  let a = acksByClient.get(client);
  if (!a) {
    a = new Acks();
    acksByClient.set(client, a);
  }
  return a;
}

/** Connections with answers to write after this commit: written once its reactions have all run. */
let releasing: Array<() => void> = [];
function releaseAll(): void {
  const fns = releasing;
  releasing = [];
  for (const f of fns) f();
}

/**
 * The PUBACKs one group commit releases through aedes (QoS 2's PUBRECs, or every message with
 * maxUnacked 0) leave in one write per connection instead of one each: the committer resolves
 * every submit of the group at once, so their reactions (this one among them) are queued together;
 * the first corks its connection and queues the uncork behind them all, and each packet aedes
 * writes meanwhile (synchronously, in done) is buffered. Nothing is held past the current microtask
 * queue, and only packets already released by a durable commit [INV-1].
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
