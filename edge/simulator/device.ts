/**
 * One simulated device: its own MQTT.js connection, a publish schedule at its rate, and the faults
 * of its profile (duplicates, late readings, malformed payloads, going offline on a schedule).
 */
import mqtt, { type MqttClient } from 'mqtt';
import type { DeviceProfile, SentMessage, SimDevice } from './options.js';
import { buildPayload, malformedPayload, signal } from './payload.js';
import type { LatencyWindow, SimulatorStats } from './stats.js';

export interface DeviceContext {
  url: string;
  connectTimeoutMs: number;
  maxBufferedMessages: number;
  stats: SimulatorStats;
  latencies: LatencyWindow;
  onMessage?: (m: SentMessage) => void;
}

/** Most messages one timer tick sends to catch up after the event loop stalled. */
const MAX_CATCH_UP = 1000;

interface Buffered { ts: number; values: Record<string, number> }

export class SimulatedDevice {
  private client: MqttClient | null = null;
  private timer: NodeJS.Timeout | null = null;
  private offlineTimer: NodeJS.Timeout | null = null;
  private readonly prev: number[];
  private nextAt = 0;
  private offline = false;
  private connected = false;
  private connects = 0;
  private stopped = false;
  private malformedCount = 0;
  /** The latest on-time (even) and late (odd) reading times, epoch ms. */
  private lastTs = -Infinity;
  private lastLateTs = -Infinity;
  private buffer: Buffered[] = [];
  private readonly topic: string;

  constructor(private readonly dev: SimDevice, private readonly index: number, private readonly p: DeviceProfile, private readonly ctx: DeviceContext) {
    this.prev = p.metrics.map(() => NaN);
    this.topic = `devices/${dev.id}/telemetry`;
  }

  get id(): string { return this.dev.id; }

  /** Connect; rejects with the broker's refusal (CONNACK error) or a timeout, naming the device. */
  connect(): Promise<void> {
    return new Promise((resolve, reject) => {
      const client = mqtt.connect(this.ctx.url, {
        clientId: this.dev.id, username: this.dev.id, password: this.dev.secret, protocolVersion: 4,
        reconnectPeriod: 1000, connectTimeout: this.ctx.connectTimeoutMs, clean: true,
        // A gateway whose store is failing refuses with CONNACK 3 (come back later); MQTT.js
        // stops reconnecting after any refusal unless told otherwise.
        reconnectOnConnackError: true,
      });
      this.client = client;
      let first = true;
      client.on('connect', () => {
        this.connects++;
        if (this.connects > 1) this.ctx.stats.reconnects++;
        if (!this.connected) { this.connected = true; this.ctx.stats.connected++; }
        if (first) { first = false; resolve(); }
        if (this.offline) this.cameBack();
      });
      client.on('close', () => {
        if (this.connected) { this.connected = false; this.ctx.stats.connected--; }
      });
      client.on('error', (err) => {
        this.ctx.stats.errors++;
        if (first) {
          first = false;
          client.end(true);
          reject(Object.assign(new Error(`device ${this.dev.id}: ${err.message}`), { cause: err, code: (err as { code?: unknown }).code }));
        }
      });
    });
  }

  /** Publish at the profile's rate, spread over one interval so a fleet does not send in lockstep. */
  start(): void {
    const interval = 1000 / this.p.ratePerDevice;
    this.nextAt = performance.now() + Math.random() * interval;
    this.arm();
    const off = this.p.offline;
    if (off) this.offlineTimer = setTimeout(() => this.goOffline(), off.afterMs);
  }

  private arm(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => this.tick(), Math.max(0, this.nextAt - performance.now()));
  }

  /** Send every message due by now (the timer may fire late), so the rate holds under load. */
  private tick(): void {
    if (this.stopped) return;
    const interval = 1000 / this.p.ratePerDevice;
    const now = performance.now();
    let n = 0;
    while (this.nextAt <= now && n < MAX_CATCH_UP) {
      this.emit(this.nextAt);
      this.nextAt += interval;
      n++;
    }
    // Fell behind by more than a tick can send: skip ahead rather than burst forever.
    if (this.nextAt <= now) this.nextAt = now + interval;
    this.arm();
  }

  /**
   * A message due at `dueAt` (performance time). Its readings' time is when it was due, not when
   * the timer fired, so a catch-up burst does not stamp several messages alike. On-time readings
   * get even and late ones odd milliseconds, each strictly increasing: no two readings of a device
   * share an identity (device, metric, ts) by accident, whatever the rate, lateness or earlier
   * runs, so the gateway's duplicate counter counts exactly the duplicates injected.
   */
  private emit(dueAt: number): void {
    const now = Math.round(performance.timeOrigin + dueAt);
    const r = Math.random();
    if (r < this.p.malformedShare) {
      if (this.offline) return; // nothing worth keeping
      this.publish('malformed', malformedPayload(this.malformedCount++, this.p.metrics[0], now), null, null);
      return;
    }
    const late = r < this.p.malformedShare + this.p.lateShare;
    let ts: number;
    if (late) {
      const t = now - this.p.lateByMs;
      // Arithmetic, not `| 1`: bitwise operators cut epoch ms to 32 bits.
      ts = Math.max(t - (t % 2) + 1, this.lastLateTs + 2);
      this.lastLateTs = ts;
    } else {
      ts = Math.max(now - (now % 2), this.lastTs + 2);
      this.lastTs = ts;
    }
    const values: Record<string, number> = {};
    this.p.metrics.forEach((m, k) => { values[m] = this.prev[k] = signal(this.p.shape, ts, this.index, k, this.prev[k]); });
    if (this.offline) {
      if (!this.p.offline?.bufferWhileOffline) return;
      if (this.buffer.length >= this.ctx.maxBufferedMessages) { this.buffer.shift(); this.ctx.stats.bufferDropped++; }
      this.buffer.push({ ts, values });
      return;
    }
    const payload = buildPayload(this.p.format, this.dev.id, ts, values);
    this.publish(late ? 'late' : 'normal', payload, ts, values);
    // A retry of the same bytes, as firmware sends when it missed the PUBACK.
    if (this.p.duplicateShare > 0 && Math.random() < this.p.duplicateShare) this.publish('duplicate', payload, ts, values);
  }

  private publish(kind: SentMessage['kind'], payload: string, ts: number | null, values: Record<string, number> | null): void {
    const s = this.ctx.stats;
    const qos = this.p.qos;
    s.sent++;
    if (qos === 1) s.qos1++; else s.qos0++;
    const readings = values ? Object.keys(values).length : 0;
    s.readings += readings;
    if (kind === 'duplicate') { s.duplicates++; s.duplicateReadings += readings; }
    if (kind === 'late') { s.late++; s.lateReadings += readings; }
    if (kind === 'malformed') s.malformed++;
    if (kind === 'buffered') s.buffered++;
    const sentAt = performance.now();
    this.client!.publish(this.topic, payload, { qos }, (err) => {
      if (err) { s.errors++; return; }
      s.acked++;
      if (qos === 1) this.ctx.latencies.add(performance.now() - sentAt);
    });
    this.ctx.onMessage?.({ device: this.dev.id, kind, qos, ts, values, payload });
  }

  /** Drop off the network (a clean DISCONNECT after the in-flight acks, as a modem powering down). */
  private goOffline(): void {
    if (this.stopped || !this.p.offline) return;
    this.offline = true;
    this.ctx.stats.offlinePeriods++;
    const client = this.client!;
    client.end(false, {}, () => {
      if (this.stopped) return;
      this.offlineTimer = setTimeout(() => { if (!this.stopped) client.reconnect(); }, this.p.offline!.forMs);
    });
  }

  /** Back online: publish the buffer with the readings' own times, then follow the schedule. */
  private cameBack(): void {
    this.offline = false;
    const held = this.buffer;
    this.buffer = [];
    for (const b of held) this.publish('buffered', buildPayload(this.p.format, this.dev.id, b.ts, b.values), b.ts, b.values);
    const off = this.p.offline!;
    if (off.everyMs > 0) this.offlineTimer = setTimeout(() => this.goOffline(), off.everyMs - off.forMs);
  }

  /** Stop publishing and disconnect, letting in-flight QoS 1 messages finish for up to `graceMs`. */
  async stop(graceMs = 2000): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.offlineTimer) clearTimeout(this.offlineTimer);
    const client = this.client;
    if (!client) return;
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => client.end(true, {}, () => resolve()), graceMs);
      client.end(false, {}, () => { clearTimeout(force); resolve(); });
    });
  }
}
