/** Speed store metrics (names braid_speed_*; no device labels). */
import { Counter, Histogram, type Metric, type Registry } from 'prom-client';

/** Reuse a metric already on the registry: two clouds in one process (tests) share it. */
function reuse<T extends Metric>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

export function createSpeedMetrics(registry: Registry) {
  const registers = [registry];
  return {
    requests: reuse(registry, 'braid_speed_requests_total', () => new Counter({
      name: 'braid_speed_requests_total', help: 'Speed pushes by outcome: ok (2xx), rejected (4xx), failed (5xx)', labelNames: ['outcome'] as const, registers })),
    rejected: reuse(registry, 'braid_speed_rejected_total', () => new Counter({
      name: 'braid_speed_rejected_total', help: 'Speed pushes refused, by error code', labelNames: ['code'] as const, registers })),
    requestSeconds: reuse(registry, 'braid_speed_request_seconds', () => new Histogram({
      name: 'braid_speed_request_seconds', help: 'Time from a speed push to its answer (stored when 2xx)', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers })),
    stored: reuse(registry, 'braid_speed_partials_stored_total', () => new Counter({
      name: 'braid_speed_partials_stored_total', help: 'Speed partials inserted or replaced (a repeat with a smaller count is not)', registers })),
    stale: reuse(registry, 'braid_speed_partials_stale_total', () => new Counter({
      name: 'braid_speed_partials_stale_total', help: 'Speed partials dropped on arrival: their epoch was already pruned (the live views hold it)', registers })),
    pruned: reuse(registry, 'braid_speed_partials_pruned_total', () => new Counter({
      name: 'braid_speed_partials_pruned_total', help: 'Speed partials deleted once a manifest covering their epoch was live', registers })),
  };
}

export type SpeedMetrics = ReturnType<typeof createSpeedMetrics>;
