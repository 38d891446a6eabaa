/**
 * A device fleet on MQTT.js: each simulated device connects with its own id and secret and
 * publishes telemetry at a rate, recording PUBACK latency. Used by `braid simulate`, the demo and
 * the benchmarks.
 */
import mqtt, { type MqttClient } from 'mqtt';

export interface SimDevice {
  id: string;
  secret: string;
}

export type Shape = 'sine' | 'walk' | 'steps' | 'noise';

export interface SimulatorOptions {
  /** Broker URL, e.g. mqtt://127.0.0.1:1883. */
  url: string;
  devices: SimDevice[];
  /** Messages per second per device. */
  ratePerDevice: number;
  /** 0 or 1. */
  qos: 0 | 1;
  /** Metrics in each message. */
  metrics: string[];
  /** Payload format: a flat JSON object or a SenML array. */
  format: 'flat' | 'senml';
  shape: Shape;
  /** Stop after this long, in ms; 0 runs until stop(). */
  durationMs: number;
}

export const DEFAULT_SIMULATOR_OPTIONS: Omit<SimulatorOptions, 'url' | 'devices'> = {
  ratePerDevice: 1,
  qos: 1,
  metrics: ['temp', 'hum'],
  format: 'flat',
  shape: 'sine',
  durationMs: 0,
};

export interface SimulatorStats {
  connected: number;
  sent: number;
  acked: number;
  errors: number;
  /** PUBACK latency percentiles of QoS 1 messages, in ms (null before the first ack). */
  p50Ms: number | null;
  p99Ms: number | null;
}

/** A value of `shape` at time t for device number i: stable per device, smooth where it should be. */
export function signal(shape: Shape, t: number, i: number, metricIndex: number, prev: number): number {
  const base = 20 + 5 * metricIndex + (i % 7);
  switch (shape) {
    case 'sine': return Math.round((base + 5 * Math.sin((t / 60_000) * 2 * Math.PI + i)) * 100) / 100;
    case 'walk': return Math.round(((Number.isFinite(prev) ? prev : base) + (Math.random() - 0.5)) * 100) / 100;
    case 'steps': return base + 10 * (Math.floor(t / 30_000 + i) % 3);
    case 'noise': return Math.round((base + (Math.random() - 0.5) * 4) * 100) / 100;
  }
}

export class Simulator {
  private readonly opts: SimulatorOptions;
  private clients: MqttClient[] = [];
  private timers: NodeJS.Timeout[] = [];
  private latencies: number[] = [];
  private readonly stats: SimulatorStats = { connected: 0, sent: 0, acked: 0, errors: 0, p50Ms: null, p99Ms: null };
  private stopped = false;

  constructor(opts: Partial<SimulatorOptions> & Pick<SimulatorOptions, 'url' | 'devices'>) {
    this.opts = { ...DEFAULT_SIMULATOR_OPTIONS, ...opts };
  }

  /** Connect every device, then publish until durationMs or stop(). */
  async start(): Promise<void> {
    const { devices, url } = this.opts;
    await Promise.all(devices.map((d, i) => new Promise<void>((resolve, reject) => {
      const client = mqtt.connect(url, { clientId: d.id, username: d.id, password: d.secret, protocolVersion: 4, reconnectPeriod: 1000, connectTimeout: 10_000 });
      this.clients.push(client);
      client.once('connect', () => { this.stats.connected++; resolve(); this.schedule(client, i); });
      client.once('error', (err) => { if (!this.stats.connected) reject(err); });
      client.on('error', () => { this.stats.errors++; });
    })));
    if (this.opts.durationMs > 0) {
      await new Promise((r) => setTimeout(r, this.opts.durationMs));
      await this.stop();
    }
  }

  private schedule(client: MqttClient, i: number): void {
    const interval = 1000 / this.opts.ratePerDevice;
    const prev: number[] = this.opts.metrics.map(() => NaN);
    const device = this.opts.devices[i];
    // Spread the devices over the interval so the load is smooth.
    const first = setTimeout(() => {
      const tick = () => {
        if (this.stopped) return;
        const now = Date.now();
        const values = this.opts.metrics.map((_, m) => (prev[m] = signal(this.opts.shape, now, i, m, prev[m])));
        const payload = this.opts.format === 'senml'
          ? JSON.stringify([{ bn: `${device.id}:`, bt: now / 1000, n: this.opts.metrics[0], v: values[0] }, ...this.opts.metrics.slice(1).map((n, m) => ({ n, v: values[m + 1] }))])
          : JSON.stringify(Object.fromEntries([['ts', now], ...this.opts.metrics.map((n, m) => [n, values[m]])]));
        const sentAt = performance.now();
        this.stats.sent++;
        client.publish(`devices/${device.id}/telemetry`, payload, { qos: this.opts.qos }, (err) => {
          if (err) { this.stats.errors++; return; }
          this.stats.acked++;
          if (this.opts.qos === 1) this.latencies.push(performance.now() - sentAt);
        });
      };
      tick();
      this.timers.push(setInterval(tick, interval));
    }, Math.random() * interval);
    this.timers.push(first);
  }

  snapshot(): SimulatorStats {
    if (this.latencies.length) {
      const sorted = [...this.latencies].sort((a, b) => a - b);
      this.stats.p50Ms = Math.round(sorted[Math.floor(sorted.length * 0.5)] * 10) / 10;
      this.stats.p99Ms = Math.round(sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))] * 10) / 10;
      if (this.latencies.length > 100_000) this.latencies = this.latencies.slice(-50_000);
    }
    return { ...this.stats };
  }

  async stop(): Promise<SimulatorStats> {
    this.stopped = true;
    for (const t of this.timers) { clearTimeout(t); clearInterval(t); }
    this.timers = [];
    await Promise.all(this.clients.map((c) => new Promise<void>((r) => c.end(false, {}, () => r()))));
    this.clients = [];
    return this.snapshot();
  }
}
