/**
 * Speed store metrics (names braid_speed_*; no device labels), and what the serving side sees at
 * scrape time: the live views (braid_views_*) and each gateway's last contact (labelled by gateway:
 * a fleet has few gateways, and they are the unit an operator acts on).
 */
import { Counter, Gauge, Histogram, type Metric, type Registry } from 'prom-client';

/** Reuse a metric already on the registry: two clouds in one process (tests) share it. */
function reuse<T extends Metric>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

/** What the scrape-time gauges read; each may reject (database closed while the cloud stops). */
export interface ServingSource {
  /** The live manifest's version and creation time (epoch ms), null before the first batch run. */
  views(): Promise<{ version: number; createdAt: number } | null>;
  /** Per registered gateway that has pushed, its last push (epoch ms). */
  lastContact(): Promise<Map<string, number>>;
  now(): number;
}

/** Per registry, where the scrape-time gauges read (the newest speed service on it sets it). */
const servingSources = new WeakMap<Registry, ServingSource>();

export function createSpeedMetrics(registry: Registry, source?: ServingSource) {
  const registers = [registry];
  if (source) servingSources.set(registry, source);
  /** The source's answer, or undefined (no source, or it failed: the gauge keeps its last value rather than failing /metrics). */
  const read = async <T>(fn: (s: ServingSource) => Promise<T>): Promise<T | undefined> => {
    const s = servingSources.get(registry);
    if (!s) return undefined;
    try { return await fn(s); } catch { return undefined; }
  };
  return {
    requests: reuse(registry, 'braid_speed_requests_total', () => new Counter({
      name: 'braid_speed_requests_total', help: 'Speed pushes by outcome: ok (2xx), rejected (4xx), failed (5xx)', labelNames: ['outcome'] as const, registers })),
    rejected: reuse(registry, 'braid_speed_rejected_total', () => new Counter({
      name: 'braid_speed_rejected_total', help: 'Speed pushes refused, by error code', labelNames: ['code'] as const, registers })),
    registryRejected: reuse(registry, 'braid_registry_rejected_total', () => new Counter({
      name: 'braid_registry_rejected_total', help: 'GET /api/v1/gateways and /api/v1/devices answered 4xx (a bad parameter, a missing or wrong key), by route and status',
      labelNames: ['route', 'status'] as const, registers })),
    requestSeconds: reuse(registry, 'braid_speed_request_seconds', () => new Histogram({
      name: 'braid_speed_request_seconds', help: 'Time from a speed push to its answer (stored when 2xx)', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers })),
    stored: reuse(registry, 'braid_speed_partials_stored_total', () => new Counter({
      name: 'braid_speed_partials_stored_total', help: 'Speed partials inserted or replaced (a repeat with a smaller count is not)', registers })),
    stale: reuse(registry, 'braid_speed_partials_stale_total', () => new Counter({
      name: 'braid_speed_partials_stale_total', help: 'Speed partials dropped on arrival: their epoch was already pruned (the live views hold it)', registers })),
    pruned: reuse(registry, 'braid_speed_partials_pruned_total', () => new Counter({
      name: 'braid_speed_partials_pruned_total', help: 'Speed partials deleted once a manifest covering their epoch was live', registers })),
    viewsVersion: reuse(registry, 'braid_views_version', () => new Gauge({
      name: 'braid_views_version', help: 'Version of the live batch views (views/manifest.json); 0 before the first batch run', registers,
      async collect() {
        const v = await read((s) => s.views());
        if (v !== undefined) this.set(v?.version ?? 0);
      },
    })),
    viewsAge: reuse(registry, 'braid_views_age_seconds', () => new Gauge({
      name: 'braid_views_age_seconds', help: 'Now minus the createdAt of the live manifest: how old the batch views are (absent before the first batch run)', registers,
      async collect() {
        const s = servingSources.get(registry);
        const v = await read((x) => x.views());
        if (v === undefined || !s) return;
        if (v === null) this.remove({});
        else this.set(Math.max(0, s.now() - v.createdAt) / 1000);
      },
    })),
    lastContactAge: reuse(registry, 'braid_gateway_last_contact_age_seconds', () => new Gauge({
      name: 'braid_gateway_last_contact_age_seconds',
      help: 'Now minus the last speed push of each registered gateway (one every speed.pushIntervalMs while it runs); a gateway never heard from has no sample', registers,
      labelNames: ['gateway'] as const,
      async collect() {
        const s = servingSources.get(registry);
        const contacts = await read((x) => x.lastContact());
        if (contacts === undefined || !s) return;
        // Rebuilt at each scrape: a gateway whose token was removed leaves no stale series behind.
        this.reset();
        const now = s.now();
        for (const [gateway, at] of contacts) this.set({ gateway }, Math.max(0, now - at) / 1000);
      },
    })),
  };
}

export type SpeedMetrics = ReturnType<typeof createSpeedMetrics>;
