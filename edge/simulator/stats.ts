/** The simulator's counters and PUBACK latency percentiles. */

export interface SimulatorStats {
  /** Devices connected now. */
  connected: number;
  /** Messages handed to MQTT.js (every kind). */
  sent: number;
  /** QoS 1: PUBACK received; QoS 0: written to the socket (there is no ack). */
  acked: number;
  /** Publish and connection errors. */
  errors: number;
  /** PUBACK latency percentiles of QoS 1 messages over the latest 100,000, in ms (null before the first ack). */
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  /** Messages by QoS. */
  qos0: number;
  qos1: number;
  /** Readings (metric values) in the messages that carry good ones, duplicates included. */
  readings: number;
  /** Messages sent twice on purpose, and the readings in them: the gateway counts these as duplicates. */
  duplicates: number;
  duplicateReadings: number;
  /** Messages stamped `lateByMs` in the past, and their readings. */
  late: number;
  lateReadings: number;
  /** Messages the gateway must reject (its invalid-payload counter). */
  malformed: number;
  /** Times a device went offline on its schedule; messages published from its buffer after coming back; messages lost to a full buffer. */
  offlinePeriods: number;
  buffered: number;
  bufferDropped: number;
  /** Connects after the first (schedule or broker dropped the connection). */
  reconnects: number;
}

export function emptyStats(): SimulatorStats {
  return {
    connected: 0, sent: 0, acked: 0, errors: 0, p50Ms: null, p99Ms: null, maxMs: null, qos0: 0, qos1: 0, readings: 0,
    duplicates: 0, duplicateReadings: 0, late: 0, lateReadings: 0, malformed: 0, offlinePeriods: 0, buffered: 0,
    bufferDropped: 0, reconnects: 0,
  };
}

/** The latest `size` latencies in a ring (bounded memory at any rate), percentiles by sorting a copy. */
export class LatencyWindow {
  private readonly ring: Float64Array;
  private n = 0;
  private max = 0;

  constructor(private readonly size = 100_000) {
    this.ring = new Float64Array(size);
  }

  add(ms: number): void {
    this.ring[this.n % this.size] = ms;
    this.n++;
    if (ms > this.max) this.max = ms;
  }

  /** p50, p99 (nearest rank) and the maximum since start, rounded to 0.1 ms. */
  percentiles(): { p50Ms: number | null; p99Ms: number | null; maxMs: number | null } {
    const len = Math.min(this.n, this.size);
    if (len === 0) return { p50Ms: null, p99Ms: null, maxMs: null };
    const sorted = this.ring.slice(0, len).sort();
    const at = (q: number) => round1(sorted[Math.min(len - 1, Math.ceil(q * len) - 1)]);
    return { p50Ms: at(0.5), p99Ms: at(0.99), maxMs: round1(this.max) };
  }
}

const round1 = (x: number) => Math.round(x * 10) / 10;
