/** The forwarder's Prometheus metrics (names braid_forward_*, no device labels: a fleet has too many). */
import { Counter, Gauge, Histogram, type Metric, type Registry } from 'prom-client';

/** Reuse a metric already on the registry: a forwarder restarted in one process (tests, reload) must not throw "already registered". */
function reuse<T extends Metric>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

export function createForwarderMetrics(registry: Registry) {
  const registers = [registry];
  return {
    requests: reuse(registry, 'braid_forward_requests_total', () => new Counter({
      name: 'braid_forward_requests_total', help: 'Ingest requests by outcome: ok (2xx with an ack), retry (413, 408, 429, 5xx, timeout, connection error, malformed 2xx), rejected (other 4xx)', labelNames: ['outcome'] as const, registers })),
    readingsSent: reuse(registry, 'braid_forward_readings_sent_total', () => new Counter({
      name: 'braid_forward_readings_sent_total', help: 'Readings carried by ingest requests the cloud answered 2xx (repeats included)', registers })),
    bytesSent: reuse(registry, 'braid_forward_bytes_sent_total', () => new Counter({
      name: 'braid_forward_bytes_sent_total', help: 'Gzipped request bodies put on the wire, retries included', registers })),
    requestSeconds: reuse(registry, 'braid_forward_request_seconds', () => new Histogram({
      name: 'braid_forward_request_seconds', help: 'Duration of one ingest request, answer body included', buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers })),
    ackedSeq: reuse(registry, 'braid_forward_acked_seq', () => new Gauge({
      name: 'braid_forward_acked_seq', help: 'Highest seq the cloud has acknowledged', registers })),
    cloudLost: reuse(registry, 'braid_forward_cloud_lost_readings_total', () => new Counter({
      name: 'braid_forward_cloud_lost_readings_total',
      help: 'Seqs the cloud had acknowledged and then lost (cloud.db restored from an older backup), recorded as cloud_lost gap records on its seq-skip refusal', registers })),
    cloudWarnings: reuse(registry, 'braid_forward_cloud_warnings_total', () => new Counter({
      name: 'braid_forward_cloud_warnings_total',
      help: 'Ingest answers (2xx) that carried a warning, by its code (BRAID_WARN_FUTURE_TS: readings stamped ahead of the cloud\'s clock)', labelNames: ['code'] as const, registers })),
    consecutiveFailures: reuse(registry, 'braid_forward_consecutive_failures', () => new Gauge({
      name: 'braid_forward_consecutive_failures', help: 'Ingest attempts failed in a row (0 after a success)', registers })),
    // No sample until the first success since the start: a 0 would read as "last success in 1970".
    lastSuccess: reuse(registry, 'braid_forward_last_success_timestamp_seconds', () => new Gauge({
      name: 'braid_forward_last_success_timestamp_seconds', help: 'Unix time of the last ingest request the cloud answered 2xx with progress (absent before the first one since the start)', registers })),
  };
}

export type ForwarderMetrics = ReturnType<typeof createForwarderMetrics>;
