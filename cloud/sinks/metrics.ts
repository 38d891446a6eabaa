/** Metrics every view sink reports, labelled by sink name (braid_sink_*). */
import { Counter, Histogram, type Metric, type Registry } from 'prom-client';

/** Reuse a metric already on the registry: several sinks (and restarts in one process) share them. */
function reuse<T extends Metric>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

export function createSinkMetrics(registry: Registry) {
  const registers = [registry];
  return {
    points: reuse(registry, 'braid_sink_points_total', () => new Counter({
      name: 'braid_sink_points_total', help: 'View points the sink\'s server acknowledged (a day sent again counts again)', labelNames: ['sink'] as const, registers })),
    failures: reuse(registry, 'braid_sink_failures_total', () => new Counter({
      name: 'braid_sink_failures_total', help: 'Sink writes that failed after their retries (the batch job sends the same days at its next run)', labelNames: ['sink'] as const, registers })),
    skipped: reuse(registry, 'braid_sink_points_skipped_total', () => new Counter({
      name: 'braid_sink_points_skipped_total', help: 'View rows the sink cannot represent and left out, by reason', labelNames: ['sink', 'reason'] as const, registers })),
    writeSeconds: reuse(registry, 'braid_sink_write_seconds', () => new Histogram({
      name: 'braid_sink_write_seconds', help: 'Duration of one sink write (all its batches and retries)', labelNames: ['sink'] as const,
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600], registers })),
  };
}

export type SinkMetrics = ReturnType<typeof createSinkMetrics>;
