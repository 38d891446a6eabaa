/**
 * A device fleet on MQTT.js: each simulated device connects with its own id and secret and
 * publishes telemetry at a rate, recording PUBACK latency, with the faults its profile asks for.
 * Used by `braid simulate`, the demo and the benchmarks.
 */
import { SimulatedDevice } from './device.js';
import { resolveOptions, type SimulatorOptions } from './options.js';
import { LatencyWindow, emptyStats, type SimulatorStats } from './stats.js';

/** Devices connecting at once: a large fleet ramps up instead of opening every socket in one tick. */
const CONNECT_CONCURRENCY = 50;

export class Simulator {
  private readonly opts: SimulatorOptions;
  private readonly devices: SimulatedDevice[];
  private readonly stats = emptyStats();
  private readonly latencies = new LatencyWindow();
  private stopping: Promise<SimulatorStats> | null = null;
  private durationTimer: NodeJS.Timeout | null = null;
  private wakeDuration: (() => void) | null = null;

  /** Throws ConfigInvalidError naming the option when one cannot run. */
  constructor(opts: Partial<SimulatorOptions> & Pick<SimulatorOptions, 'url' | 'devices'>) {
    const { options, profiles } = resolveOptions(opts);
    this.opts = options;
    const ctx = {
      url: options.url, connectTimeoutMs: options.connectTimeoutMs, maxBufferedMessages: options.maxBufferedMessages,
      stats: this.stats, latencies: this.latencies, onMessage: options.onMessage,
    };
    this.devices = options.devices.map((d, i) => new SimulatedDevice(d, i, profiles[i], ctx));
  }

  /**
   * Connect every device, then publish; with durationMs, resolve once that has passed and the fleet
   * has stopped. A device the broker refuses rejects (naming it) after the others are closed.
   */
  async start(): Promise<void> {
    let next = 0;
    const failures: Error[] = [];
    const worker = async () => {
      while (next < this.devices.length && !failures.length && !this.stopping) {
        const d = this.devices[next++];
        try { await d.connect(); } catch (err) { failures.push(err as Error); }
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONNECT_CONCURRENCY, this.devices.length) }, worker));
    if (failures.length) {
      await this.stop();
      throw failures[0];
    }
    if (this.stopping) return;
    for (const d of this.devices) d.start();
    if (this.opts.durationMs > 0) {
      await new Promise<void>((resolve) => {
        this.wakeDuration = resolve;
        this.durationTimer = setTimeout(resolve, this.opts.durationMs);
      });
      await this.stop();
    }
  }

  snapshot(): SimulatorStats {
    return { ...this.stats, ...this.latencies.percentiles() };
  }

  /** Stop publishing, let in-flight QoS 1 messages be acked (briefly), disconnect; idempotent. */
  stop(): Promise<SimulatorStats> {
    this.stopping ??= (async () => {
      if (this.durationTimer) clearTimeout(this.durationTimer);
      this.wakeDuration?.();
      await Promise.all(this.devices.map((d) => d.stop()));
      return this.snapshot();
    })();
    return this.stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
