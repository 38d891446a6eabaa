/**
 * The freshness benchmark's instruments: a probe device that publishes numbered readings at known
 * times, and pollers that record when each one is first visible through an HTTP answer (the cloud's
 * merged query, the gateway's windows). Both run in the benchmark's own process, on one clock
 * (performance.now()), so "visible minus published" needs no clock sync.
 *
 * Readings are numbered 1..N and carry value = their number: the probe publishes them in order on one
 * QoS 1 connection, so a view that counts n readings of the probe holds probes 1..n, and its `last`
 * must be n. An answer whose `last` is not n, or whose count goes back, is counted as inconsistent.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { sleep } from './net.js';

export interface ProbeReading {
  /** 1..N; also the value published. */
  k: number;
  /** Event time in the payload, epoch ms. */
  ts: number;
  /** performance.now() just before publish. */
  sentAt: number;
  /** performance.now() at the PUBACK (the reading is committed to the outbox and the speed layer). */
  pubackAt: number | null;
  /** performance.now() when an answer of each observer first held it (the answer's arrival). */
  seenAt: Record<string, number | null>;
}

export interface Observation {
  /** Readings of the probe the answer holds. */
  count: number;
  /** The answer's last value (the probe reading with the largest ts), null when none. */
  last: number | null;
}

export interface ObserverStats {
  polls: number;
  errors: number;
  lastError: string | null;
  /** Answers whose last value was not their count, or whose count went back. */
  inconsistent: number;
  /** Round-trip times of the polls, ms. */
  rtts: number[];
  /** performance.now() of every answer that showed more readings than the one before. */
  steps: number[];
}

export class Probe {
  readonly readings: ProbeReading[] = [];
  private client: MqttClient | null = null;
  private timer: NodeJS.Timeout | null = null;
  private errors = 0;
  private closed = false;
  private finish: (() => void) | null = null;

  constructor(private readonly o: { url: string; device: string; secret: string; metric: string; observers: string[] }) {}

  async connect(): Promise<void> {
    const { url, device, secret } = this.o;
    this.client = await mqtt.connectAsync(url, { clientId: device, username: device, password: secret, protocolVersion: 4, reconnectPeriod: 1000, connectTimeout: 10_000 });
    this.client.on('error', () => { this.errors++; });
  }

  /**
   * Publish `count` readings (numbered on from the last run's), the gaps drawn uniformly from [0.5, 1.5] x `meanMs`; resolves after the
   * last one was sent. Random gaps, not a fixed period: the gateway pushes on its own period, and a
   * probe on a fixed one would see only a few phases of it (500 ms beside a 2,010 ms push cycle
   * samples 4 points that drift 10 ms a cycle), which biases every quantile.
   */
  run(count: number, meanMs: number): Promise<void> {
    const client = this.client;
    if (!client) throw new Error('probe: connect() first');
    return new Promise((resolve) => {
      this.finish = resolve;
      // Numbers go on across runs: readings 1..n of every run so far are what a count of n holds.
      let k = this.readings.length;
      const end = k + count;
      const tick = () => {
        this.timer = null;
        k++;
        const r: ProbeReading = { k, ts: Date.now(), sentAt: 0, pubackAt: null, seenAt: Object.fromEntries(this.o.observers.map((n) => [n, null])) };
        this.readings.push(r);
        const payload = JSON.stringify({ ts: r.ts, [this.o.metric]: k });
        r.sentAt = performance.now();
        client.publish(`devices/${this.o.device}/telemetry`, payload, { qos: 1 }, (err) => {
          if (err) this.errors++;
          else r.pubackAt = performance.now();
        });
        if (k >= end || this.closed) resolve();
        else this.timer = setTimeout(tick, meanMs * (0.5 + Math.random()));
      };
      tick();
    });
  }

  publishErrors(): number {
    return this.errors;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.finish?.();
    await this.client?.endAsync();
    this.client = null;
  }
}

/**
 * Poll `observe` every `everyMs` (less the time the poll took) until `done()`; the first answer that
 * counts reading k marks `seenAt[name]` of readings up to k.
 */
export async function pollVisibility(name: string, readings: ProbeReading[], observe: () => Promise<Observation>, everyMs: number, done: () => boolean): Promise<ObserverStats> {
  const s: ObserverStats = { polls: 0, errors: 0, lastError: null, inconsistent: 0, rtts: [], steps: [] };
  let seen = 0;
  while (!done()) {
    const t0 = performance.now();
    let o: Observation | null = null;
    try {
      o = await observe();
    } catch (err) {
      s.errors++;
      s.lastError = String((err as Error).message ?? err);
    }
    const t1 = performance.now();
    s.polls++;
    s.rtts.push(t1 - t0);
    if (o) {
      if (o.count < seen || (o.count > 0 && o.last !== o.count)) s.inconsistent++;
      if (o.count > seen) {
        // Only readings already published can be counted (a larger count is some other writer's).
        const upTo = Math.min(o.count, readings.length);
        for (let k = seen + 1; k <= upTo; k++) readings[k - 1].seenAt[name] ??= t1;
        seen = Math.max(seen, upTo);
        s.steps.push(t1);
      }
    }
    await sleep(Math.max(0, everyMs - (t1 - t0)));
  }
  return s;
}

/** Sum of a Prometheus sample over every label set that includes `labels` (NaN when absent). */
export function promValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = NaN;
  const re = new RegExp(`^${name}(?:\\{([^}]*)\\})? ([0-9.eE+-]+|NaN|\\+Inf)$`, 'gm');
  for (const m of text.matchAll(re)) {
    const set = m[1] ?? '';
    if (!Object.entries(labels).every(([k, v]) => set.includes(`${k}="${v}"`))) continue;
    sum = (Number.isNaN(sum) ? 0 : sum) + Number(m[2]);
  }
  return sum;
}
