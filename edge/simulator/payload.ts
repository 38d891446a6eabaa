/** Pure parts of the simulator: signal values, payloads (flat JSON or SenML), malformed payloads. */
import type { PayloadFormat, Shape } from './options.js';

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

/**
 * The telemetry payload of one message. SenML carries the device id as a base name ending in ':'
 * (the gateway strips that prefix, the device comes from the topic) and the time in seconds.
 */
export function buildPayload(format: PayloadFormat, deviceId: string, ts: number, values: Record<string, number>): string {
  const entries = Object.entries(values);
  if (format === 'senml') {
    return JSON.stringify(entries.map(([n, v], k) => (k === 0 ? { bn: `${deviceId}:`, bt: ts / 1000, n, v } : { n, v })));
  }
  return JSON.stringify({ ts, ...values });
}

/**
 * Payloads a gateway must reject, one per common firmware mistake; `n` picks one, so a run walks
 * through all of them. Each is rejected whole (no reading of it is stored).
 */
export function malformedPayload(n: number, metric: string, ts: number): string {
  const kinds = [
    () => `{"ts":${ts},"${metric}":21.5`, // truncated JSON
    () => JSON.stringify({ ts, [metric]: 'hot' }), // a string value
    () => JSON.stringify({ ts, [metric]: { value: 21.5 } }), // nested
    () => JSON.stringify({ ts: Math.floor(ts / 1000), [metric]: 21.5 }), // seconds where ms are expected
    () => JSON.stringify([{ n: metric, vs: 'hot' }]), // SenML string value
    () => '', // empty
  ];
  return kinds[n % kinds.length]();
}
