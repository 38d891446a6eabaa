/** The broker's Prometheus metrics. */
import { Counter, Gauge, type Registry } from 'prom-client';

export function createBrokerMetrics(registry: Registry) {
  const registers = [registry];
  return {
    connections: new Gauge({ name: 'braid_mqtt_connected_devices', help: 'Devices connected to the broker now', registers }),
    connects: new Counter({ name: 'braid_mqtt_connects_total', help: 'Successful MQTT connects', registers }),
    authFailures: new Counter({ name: 'braid_mqtt_auth_failures_total', help: 'Refused MQTT connects, by reason', labelNames: ['reason'], registers }),
    aclDenied: new Counter({ name: 'braid_mqtt_acl_denied_total', help: 'Publishes and subscribes refused by the ACL, by action', labelNames: ['action'], registers }),
    limitRefused: new Counter({ name: 'braid_mqtt_limit_refused_total', help: 'Packets or connections refused at a broker limit, by limit', labelNames: ['limit'], registers }),
    throttled: new Counter({ name: 'braid_mqtt_throttled_total', help: 'Telemetry messages delayed by the per-device rate limit', registers }),
    messages: new Counter({ name: 'braid_mqtt_telemetry_messages_total', help: 'Telemetry messages received, by QoS', labelNames: ['qos'], registers }),
    payloadInvalid: new Counter({ name: 'braid_payload_invalid_total', help: 'Telemetry payloads refused, by reason (acknowledged, quarantined, reported on devices/{id}/errors)', labelNames: ['reason'], registers }),
    clientErrors: new Counter({ name: 'braid_mqtt_client_errors_total', help: 'Connections closed on a protocol or socket error', registers }),
    unacked: new Counter({ name: 'braid_mqtt_telemetry_unacked_total', help: 'Telemetry messages answered by closing the connection instead of a PUBACK (the device resends), by reason', labelNames: ['reason'], registers }),
    connectRefused: new Counter({ name: 'braid_mqtt_connect_refused_total', help: 'CONNECTs refused before or instead of checking the secret, by reason (store_unavailable, auth_busy, auth_backoff, will)', labelNames: ['reason'], registers }),
    sessionsRevoked: new Counter({ name: 'braid_mqtt_sessions_revoked_total', help: 'Live sessions ended because their device was removed or its secret rotated, by reason', labelNames: ['reason'], registers }),
    retainStripped: new Counter({ name: 'braid_mqtt_retain_stripped_total', help: 'Device publishes whose retain flag was cleared (the gateway keeps no retained messages)', registers }),
    verifications: new Counter({ name: 'braid_mqtt_auth_verifications_total', help: 'Device secrets checked behind the CONNECT throttle, by result: chosen secrets hashed (scrypt) and failed checks of generated ones; a matching generated secret or a remembered chosen one costs none', labelNames: ['result'], registers }),
    authPending: new Gauge({ name: 'braid_mqtt_auth_pending', help: 'CONNECTs waiting for or running a secret hash now', registers }),
  };
}

export type BrokerMetrics = ReturnType<typeof createBrokerMetrics>;
