/**
 * The telemetry path: parse, stamp, commit, then release the PUBACK [INV-1] ack only after
 * durable. It runs in aedes' `authorizePublish` (aedes lib/handlers/publish.js writes its own PUBACK
 * before `published` runs, too late for [INV-1]); by default `done` is called once the commit
 * returned, after the gateway wrote the PUBACK itself, one write per connection per group commit,
 * and aedes goes on with the message as QoS 0 (TelemetryPath). With `maxUnacked` above 0 a QoS 0 or 1 message is acknowledged out
 * of band: aedes is told it is QoS 0 and goes on reading the device's socket while the message waits
 * for its group commit, and the PUBACK is written here once the commit returned, in the order the
 * PUBLISHes arrived [MQTT-4.6.0-2]; a device with `maxUnacked` messages waiting has its socket
 * paused until its oldest is committed. QoS 2 always keeps aedes' path (PUBREC after `done`).
 */
import type { Client, PublishPacket } from 'aedes';
import { ClosedError, LimitExceededError, PayloadInvalidError, type BraidError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { parsePayload, type ParsedReading, type PayloadLimits } from '../../shared/payload.js';
import type { CommitResult, CommitSink, Outbox, Reading } from '../outbox/index.js';
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

/**
 * One telemetry message from its PUBLISH to its answer: the context its commit comes back with
 * (committer.ts CommitSink), and, acknowledged out of band, its place in the connection's answers.
 * The one object the path allocates per message besides the readings: no promise, no closure.
 */
interface Msg {
  client: Client;
  packet: PublishPacket;
  /** aedes' callback: until it is called, aedes reads no more of the device's socket (in-band). */
  done: Done;
  /** The PUBLISH's packet id once it is to be answered here; -1 until then and for QoS 0 (nothing to answer). */
  messageId: number;
  committed: boolean;
  /** aedes' callback, kept while the device is over its cap: called once this message is answered. */
  held: Done | null;
}

export function handleTelemetry(deps: TelemetryDeps, client: Client, packet: PublishPacket, done: Done): void {
  const path = pathOf(deps);
  path.countMessage(packet.qos);
  const wait = deps.rate.take(client.id);
  if (wait > 0) {
    // Over its rate: hold this message (and with it the reads from the device's socket).
    deps.metrics.throttled.inc();
    setTimeout(() => guarded(path, client, packet, done), wait);
    return;
  }
  guarded(path, client, packet, done);
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
function guarded(path: TelemetryPath, client: Client, packet: PublishPacket, done: Done): void {
  try {
    ingest(path, client, packet, done);
  } catch (err) {
    path.deps.metrics.unacked.inc({ reason: 'internal' });
    path.deps.logger.error({ err, device: client.id }, 'telemetry path failed: the message is not acknowledged');
    done(err instanceof Error ? err : new Error(String(err)));
  }
}

function ingest(path: TelemetryPath, client: Client, packet: PublishPacket, done: Done): void {
  const deps = path.deps;
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
    const msg = path.message(client, packet, done);
    const recorded = deps.outbox.quarantine({ device, topic: packet.topic, reason: err.reason, message: err.message, payload });
    path.admit(msg);
    recorded.then(() => path.quarantined(msg, null), (e: BraidError) => path.quarantined(msg, e));
    return;
  }
  // A message is received at one time, so its readings without ts share one stamp; only a name
  // repeated without time (SenML) takes the device's next stamp, to keep an identity of its own.
  let needsStamp = false;
  for (let i = 0; i < parsed.length; i++) if (parsed[i].ts === undefined) { needsStamp = true; break; }
  let readings: Reading[];
  if (!needsStamp) {
    // The parser's fresh objects become the readings: the device added, no second object and
    // array per message (every one of them gets the same shape: metric, value, ts, device).
    readings = parsed as Array<ParsedReading & { device?: string }> as Reading[];
    for (let i = 0; i < readings.length; i++) readings[i].device = device;
  } else {
    readings = new Array(parsed.length);
    // QoS 2 too: a PUBLISH resent before its PUBREC arrived runs this path again.
    const track = packet.qos > 0;
    const digest = track ? RetransmitStamps.digest(payload) : '';
    const recalled = track && packet.dup ? deps.retransmits.recall(device, packet.messageId, digest) : undefined;
    const stamps: number[] = recalled ? [...recalled] : [];
    const repeats = new Map<string, number>();
    for (let i = 0; i < parsed.length; i++) {
      const r = parsed[i];
      if (r.ts !== undefined) {
        readings[i] = { device, metric: r.metric, ts: r.ts, value: r.value };
        continue;
      }
      const k = repeats.get(r.metric) ?? 0;
      repeats.set(r.metric, k + 1);
      while (stamps.length <= k) stamps.push(deps.outbox.stamp(device));
      readings[i] = { device, metric: r.metric, ts: stamps[k], value: r.value };
    }
    if (track) deps.retransmits.remember(device, packet.messageId, digest, stamps);
  }
  const msg = path.message(client, packet, done);
  const refused = deps.outbox.submitTo(readings, path, msg);
  path.admit(msg);
  if (refused) path.settled(msg, refused);
}

const paths = new WeakMap<TelemetryDeps, TelemetryPath>();
function pathOf(deps: TelemetryDeps): TelemetryPath {
  let p = paths.get(deps);
  if (!p) {
    p = new TelemetryPath(deps);
    paths.set(deps, p);
  }
  return p;
}

/**
 * Where the commits of telemetry come back (one per broker): each message is released once its
 * commit returned [INV-1], through aedes (QoS 2) or with a PUBACK written here (QoS 1), in-band
 * or out of band (the file's comment). In-band, a group commit's PUBACKs of one connection leave
 * in one write of one Buffer (4 bytes each: [MQTT-3.4], remaining length 2; the short form is
 * MQTT 5's success too), in the order the PUBLISHes arrived [MQTT-4.6.0-2], before aedes is let
 * go on with the message as QoS 0: aedes would write each PUBACK as two chunks of its own
 * (mqtt-packet corks the socket per packet and uncorks on the next tick) and wait a
 * setImmediate before going on (docs/benchmarks.md, 2026-12-06 session 7).
 */
class TelemetryPath implements CommitSink<Msg> {
  readonly deps: TelemetryDeps;
  private readonly outOfBand: boolean;
  /** Pre-bound children of the messages counter, by QoS: a label object hashed per message costs. */
  private readonly byQos: Array<{ inc: () => void } | undefined> = [];
  /** In-band messages of the group being settled, per connection, in arrival order. */
  private answering = new Map<Client, Msg[]>();

  constructor(deps: TelemetryDeps) {
    this.deps = deps;
    this.outOfBand = deps.maxUnacked > 0;
  }

  countMessage(qos: number): void {
    let c = this.byQos[qos];
    if (c === undefined) c = this.byQos[qos] = this.deps.metrics.messages.labels(String(qos));
    c.inc();
  }

  /** The message's context. */
  message(client: Client, packet: PublishPacket, done: Done): Msg {
    return { client, packet, done, messageId: -1, committed: false, held: null };
  }

  /**
   * After the message's readings were queued: out of band (QoS 0 and 1) it joins the connection's
   * answers and aedes goes on, which may read and queue the next message at once (so the queue
   * keeps the order of arrival: this one first).
   */
  admit(msg: Msg): void {
    const { client, packet, done } = msg;
    if (packet.qos === 2 || !this.outOfBand) return;
    msg.done = noop;
    const acks = acksOf(client);
    if (acks.failed) {
      // The connection is closing after an earlier message failed its commit: this one is not
      // acknowledged either (it may commit; the device resends it and the dedup drops the repeat).
      done(acks.failed);
      return;
    }
    msg.messageId = packet.qos === 1 ? packet.messageId ?? -1 : -1;
    acks.push(msg);
    // aedes must neither write a PUBACK nor wait for one: to it the message is QoS 0 now.
    packet.qos = 0;
    if (acks.waiting <= this.deps.maxUnacked && !client.conn?.writableNeedDrain) {
      done(null);
    } else {
      msg.held = done;
      holdSocket(client, true);
    }
  }

  /** The commit of a message's readings returned (err null) or failed. */
  settled(msg: Msg, err: Error | null): void {
    this.answer(msg, err, true);
  }

  /** The quarantine record of a bad payload is durable (or not): answered as a commit, outside a group. */
  quarantined(msg: Msg, err: Error | null): void {
    this.answer(msg, err, false);
    this.groupSettled();
  }

  /** `report`: tell the device about a failed commit (not for a payload already reported as bad). */
  private answer(msg: Msg, err: Error | null, report: boolean): void {
    const client = msg.client;
    if (err) {
      // Not acknowledged: closing the connection makes the device resend its QoS 1 messages.
      const e = err as BraidError;
      this.deps.metrics.unacked.inc({ reason: unackedReason(e) });
      if (report) this.deps.report(client.id, { code: e.code ?? 'BRAID_ERR_INTERNAL', message: e.message, topic: msg.packet.topic });
      if (msg.done !== noop) msg.done(err);
      else acksOf(client).fail(client, err);
      return;
    }
    if (msg.done === noop) {
      // Out of band: answered with the connection's other committed messages at the head.
      msg.committed = true;
      acksOf(client).release(client);
      return;
    }
    if (msg.packet.qos === 2) {
      corkForThisCommit(client);
      msg.done(null);
      return;
    }
    if (msg.packet.qos === 0) {
      msg.done(null);
      return;
    }
    msg.messageId = msg.packet.messageId ?? 0;
    let list = this.answering.get(client);
    if (list === undefined) this.answering.set(client, (list = []));
    list.push(msg);
  }

  /** The group's in-band PUBACKs: one write per connection, then aedes goes on with each message. */
  groupSettled(): void {
    if (this.answering.size === 0) return;
    const answering = this.answering;
    this.answering = new Map();
    for (const [client, msgs] of answering) answerInBand(client, msgs);
  }
}

const noop: Done = () => {};

/**
 * The PUBACKs of the messages with a packet id (`count` of them), in order, as one Buffer: 4 bytes
 * each ([MQTT-3.4], remaining length 2; the short form is MQTT 5's success too).
 */
function pubacks(msgs: readonly Msg[], count: number): Buffer {
  const buf = Buffer.allocUnsafe(4 * count);
  let o = 0;
  for (let i = 0; i < msgs.length; i++) {
    const id = msgs[i].messageId;
    if (id < 0) continue;
    buf[o] = 0x40; // PUBACK
    buf[o + 1] = 2;
    buf.writeUInt16BE(id, o + 2);
    o += 4;
  }
  return buf;
}

function answerInBand(client: Client, msgs: Msg[]): void {
  const conn = client.conn;
  // As aedes' own write: a client that is neither connecting nor connected gets no packet, and
  // its messages an error (the connection is going; nothing was acknowledged).
  const c = client as unknown as { connecting?: boolean; connected?: boolean };
  if (!(c.connecting || c.connected) || !conn || conn.destroyed) {
    const err = new Error('connection closed');
    for (const m of msgs) m.done(err);
    return;
  }
  const buf = pubacks(msgs, msgs.length);
  // Answered here: aedes goes on with them as QoS 0 (no PUBACK of its own, no wait).
  for (let i = 0; i < msgs.length; i++) msgs[i].packet.qos = 0;
  const drained = conn.write(buf);
  if (!drained && !conn.destroyed) {
    // A slow reader: as aedes does after a write that filled the socket's buffer, the device's
    // next packets wait until it drained.
    conn.once('drain', () => { for (const m of msgs) m.done(null); });
    return;
  }
  for (const m of msgs) m.done(null);
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

/**
 * One connection's messages from read to commit, in arrival order: the committed ones at the head
 * are answered together, one write of their PUBACKs (4 bytes each: [MQTT-3.4], remaining length 2;
 * the short form is MQTT 5's success too), never one behind a message not yet durable.
 */
class Acks {
  private entries: Msg[] = [];
  private head = 0;
  failed: Error | null = null;
  private queued = false;

  get waiting(): number {
    return this.entries.length - this.head;
  }

  push(e: Msg): void {
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
      conn.write(pubacks(answered, ids));
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
