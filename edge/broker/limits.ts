/** Limits the broker enforces around aedes: per-device message rate and MQTT packet size. */
import type { Client } from 'aedes';

/**
 * A token bucket per device: `ratePerSec` sustained, `burst` at once. `take()` answers how long the
 * caller must wait for a token (0 = now); the broker delays the message that long, which stops
 * reading from that device's socket: TCP backpressure instead of a lost reading.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(private readonly ratePerSec: number, private readonly burst: number, private readonly now: () => number = Date.now) {}

  take(key: string): number {
    const now = this.now();
    let b = this.buckets.get(key);
    if (!b) {
      b = { tokens: this.burst, at: now };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) * this.ratePerSec) / 1000);
    b.at = now;
    b.tokens -= 1;
    return b.tokens >= 0 ? 0 : Math.ceil((-b.tokens * 1000) / this.ratePerSec);
  }

  forget(key: string): void {
    this.buckets.delete(key);
  }
}

interface ParserInternals {
  packet: { length: number; cmd?: string };
  _parseLength: () => boolean;
  _emitError: (err: Error) => void;
}

/**
 * Refuse MQTT packets longer than `maxBytes` as soon as their length is known.
 * mqtt-packet's parser has no size limit and aedes no hook before the whole packet is buffered,
 * so wrap the parser's length step: the remaining length is read before any payload byte, and a
 * parser error makes aedes close the connection.
 */
export function limitPacketSize(client: Client, maxBytes: number, onRefused: () => void): void {
  const parser = (client as unknown as { _parser: ParserInternals })._parser;
  const parseLength = parser._parseLength;
  parser._parseLength = function (this: ParserInternals) {
    const done = parseLength.call(this);
    if (done && this.packet.length > maxBytes) {
      onRefused();
      this._emitError(new Error(`packet of ${this.packet.length} bytes is over the limit of ${maxBytes}`));
      return false;
    }
    return done;
  };
}
