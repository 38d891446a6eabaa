/**
 * The telemetry path: parse, stamp, commit, then release the PUBACK. It runs in aedes'
 * `authorizePublish`, whose callback is what lets aedes write the PUBACK ([INV-1] ack only after
 * durable; aedes lib/handlers/publish.js writes PUBACK before `published` runs, too late).
 */
import type { Client, PublishPacket } from 'aedes';
import { PayloadInvalidError, type BraidError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { parsePayload, type PayloadLimits } from '../../shared/payload.js';
import type { Outbox } from '../outbox/index.js';
import { errorsTopic } from './acl.js';
import type { RateLimiter } from './limits.js';
import type { BrokerMetrics } from './metrics.js';

export interface TelemetryDeps {
  outbox: Outbox;
  metrics: BrokerMetrics;
  logger: Logger;
  limits: PayloadLimits;
  rate: RateLimiter;
  /** Send a JSON error report to the device (devices/{id}/errors). */
  report: (deviceId: string, body: Record<string, unknown>) => void;
  now: () => number;
}

export function handleTelemetry(deps: TelemetryDeps, client: Client, packet: PublishPacket, done: (err?: Error | null) => void): void {
  const device = client.id;
  deps.metrics.messages.inc({ qos: String(packet.qos) });
  const wait = deps.rate.take(device);
  if (wait > 0) {
    // Over its rate: hold this message (and with it the reads from the device's socket).
    deps.metrics.throttled.inc();
    setTimeout(() => ingest(deps, device, packet, done), wait);
    return;
  }
  ingest(deps, device, packet, done);
}

function ingest(deps: TelemetryDeps, device: string, packet: PublishPacket, done: (err?: Error | null) => void): void {
  const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
  let parsed;
  try {
    parsed = parsePayload(payload, deps.now(), deps.limits);
  } catch (err) {
    if (!(err instanceof PayloadInvalidError)) throw err;
    // [INV-5] a bad payload costs only itself: acknowledged (firmware must not retry it forever),
    // counted, quarantined with its reason, and reported to the device.
    deps.metrics.payloadInvalid.inc({ reason: err.reason });
    deps.outbox.quarantine({ device, topic: packet.topic, reason: err.reason, message: err.message, payload });
    deps.report(device, { code: err.code, reason: err.reason, message: err.message, topic: packet.topic });
    deps.logger.debug({ device, reason: err.reason }, 'payload refused');
    done(null);
    return;
  }
  const readings = parsed.map((r) => ({ device, metric: r.metric, ts: r.ts ?? deps.outbox.stamp(device), value: r.value }));
  deps.outbox.submit(readings).then(
    () => done(null),
    (err: BraidError) => {
      // Not acknowledged: closing the connection makes the device resend its QoS 1 messages.
      deps.report(device, { code: err.code ?? 'BRAID_ERR_INTERNAL', message: err.message, topic: packet.topic });
      done(err);
    },
  );
}

export { errorsTopic };
