/** The speed pusher's Prometheus metrics (names braid_speedpush_*, no device labels). */
import { Counter, Gauge, type Metric, type Registry } from 'prom-client';

/** Reuse a metric already on the registry: a pusher restarted in one process must not throw "already registered". */
function reuse<T extends Metric>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

/** Per registry, what the lag gauge reads at scrape time (the pusher of that registry sets it). */
const lagSources = new WeakMap<Registry, () => number>();

export function createSpeedPushMetrics(registry: Registry, lagSeconds: () => number) {
  const registers = [registry];
  lagSources.set(registry, lagSeconds);
  return {
    requests: reuse(registry, 'braid_speedpush_requests_total', () => new Counter({
      name: 'braid_speedpush_requests_total', help: 'Speed pushes by outcome: ok (2xx with a watermark), retry (413, 408, 429, 5xx, timeout, connection error, malformed 2xx), rejected (other 4xx)', labelNames: ['outcome'] as const, registers })),
    partialsSent: reuse(registry, 'braid_speedpush_partials_sent_total', () => new Counter({
      name: 'braid_speedpush_partials_sent_total', help: 'Speed partials carried by pushes the cloud answered 2xx (re-sends included)', registers })),
    bytesSent: reuse(registry, 'braid_speedpush_bytes_sent_total', () => new Counter({
      name: 'braid_speedpush_bytes_sent_total', help: 'Gzipped speed push bodies put on the wire, retries included', registers })),
    lag: reuse(registry, 'braid_speedpush_lag_seconds', () => new Gauge({
      name: 'braid_speedpush_lag_seconds', help: 'Now minus the updated_at of the oldest partial not yet pushed (0 when none is waiting)', registers,
      collect() { this.set(lagSources.get(registry)?.() ?? 0); } })),
    consecutiveFailures: reuse(registry, 'braid_speedpush_consecutive_failures', () => new Gauge({
      name: 'braid_speedpush_consecutive_failures', help: 'Speed pushes failed in a row (0 after a success)', registers })),
    // No sample until the first success since the start: a 0 would read as "last success in 1970".
    lastSuccess: reuse(registry, 'braid_speedpush_last_success_timestamp_seconds', () => new Gauge({
      name: 'braid_speedpush_last_success_timestamp_seconds', help: 'Unix time of the last speed push the cloud answered 2xx (absent before the first one since the start)', registers })),
    watermark: reuse(registry, 'braid_speedpush_watermark', () => new Gauge({
      name: 'braid_speedpush_watermark', help: 'The last epoch the cloud said its batch views cover (E[g]); partials of epochs at or below it are not pushed', registers })),
  };
}

export type SpeedPushMetrics = ReturnType<typeof createSpeedPushMetrics>;
