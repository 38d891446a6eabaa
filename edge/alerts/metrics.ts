/** The gateway's alert metrics (names braid_gateway_alert_*, no device labels). */
import { Counter, Gauge, Histogram, type Metric, type Registry } from 'prom-client';

function reuse<T extends Metric>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

export function createGatewayAlertMetrics(registry: Registry, pending: () => number) {
  const registers = [registry];
  return {
    rules: reuse(registry, 'braid_gateway_alert_rules', () => new Gauge({
      name: 'braid_gateway_alert_rules', help: 'Device rules this gateway holds (sent by the cloud with its speed-push answers, kept in gateway.db)', registers })),
    refused: reuse(registry, 'braid_gateway_alert_rules_refused_total', () => new Counter({
      name: 'braid_gateway_alert_rules_refused_total', registers,
      help: 'Rules the cloud sent that this gateway could not read (logged with the field; skipped, the others kept)' })),
    evaluations: reuse(registry, 'braid_gateway_alert_evaluations_total', () => new Counter({
      name: 'braid_gateway_alert_evaluations_total', labelNames: ['result'] as const, registers,
      help: 'Device rule evaluations on the gateway\'s windows (result: ok, failed: the read failed, its alerts left as they were)' })),
    seconds: reuse(registry, 'braid_gateway_alert_evaluation_seconds', () => new Histogram({
      name: 'braid_gateway_alert_evaluation_seconds', registers, buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      help: 'Time of one evaluation round of every rule the gateway holds (reads, state commit, publishes)' })),
    transitions: reuse(registry, 'braid_gateway_alert_transitions_total', () => new Counter({
      name: 'braid_gateway_alert_transitions_total', labelNames: ['to'] as const, registers,
      help: 'Alert transitions the gateway recorded (to: pending, firing, resolved), each committed to gateway.db before it is published' })),
    published: reuse(registry, 'braid_gateway_alert_published_total', () => new Counter({
      name: 'braid_gateway_alert_published_total', labelNames: ['result'] as const, registers,
      help: 'Transitions published to devices/{id}/alerts (QoS 1, retained) by result: ok, failed' })),
    forwarded: reuse(registry, 'braid_gateway_alert_forwarded_total', () => new Counter({
      name: 'braid_gateway_alert_forwarded_total', registers,
      help: 'Transitions the cloud acknowledged (POST /api/v1/ingest/alerts answered 2xx after its store committed them)' })),
    dropped: reuse(registry, 'braid_gateway_alert_transitions_dropped_total', () => new Counter({
      name: 'braid_gateway_alert_transitions_dropped_total', registers,
      help: 'Unsent transitions dropped, oldest first, past alerts.maxPendingTransitions (the cloud never hears of them)' })),
    pending: reuse(registry, 'braid_gateway_alert_pending', () => new Gauge({
      name: 'braid_gateway_alert_pending', registers, help: 'Transitions in gateway.db waiting for the cloud\'s acknowledgement',
      collect() { this.set(pending()); } })),
    requests: reuse(registry, 'braid_gateway_alert_forward_requests_total', () => new Counter({
      name: 'braid_gateway_alert_forward_requests_total', labelNames: ['outcome'] as const, registers,
      help: 'Requests of transitions to the cloud by outcome: ok, retry (413, 408, 429, 5xx, timeout, connection error), rejected (other 4xx)' })),
    consecutiveFailures: reuse(registry, 'braid_gateway_alert_forward_consecutive_failures', () => new Gauge({
      name: 'braid_gateway_alert_forward_consecutive_failures', registers, help: 'Requests of transitions to the cloud failed in a row (0 after a success)' })),
    lastSuccess: reuse(registry, 'braid_gateway_alert_forward_last_success_timestamp_seconds', () => new Gauge({
      name: 'braid_gateway_alert_forward_last_success_timestamp_seconds', registers,
      help: 'Unix time of the last request of transitions the cloud answered 2xx (absent before the first one since the start)' })),
  };
}

export type GatewayAlertMetrics = ReturnType<typeof createGatewayAlertMetrics>;
