/**
 * Device topics and the ACL: a device publishes and subscribes only under `devices/{its id}/`.
 */
export const telemetryTopic = (deviceId: string) => `devices/${deviceId}/telemetry`;
export const errorsTopic = (deviceId: string) => `devices/${deviceId}/errors`;

/**
 * Whether `deviceId` may use `topic` (a publish topic or a subscription filter): it starts with
 * `devices/{deviceId}/` and goes on. Compared in place, without building the prefix (per message).
 */
export function topicAllowed(deviceId: string, topic: string): boolean {
  const n = 8 + deviceId.length; // "devices/" + id
  if (topic.length <= n + 1 || !topic.startsWith('devices/') || !topic.startsWith(deviceId, 8) || topic.charCodeAt(n) !== 0x2f /* / */) return false;
  // `devices/d/#` is fine; wildcards can't reach above the prefix since it is matched literally.
  return true;
}

/** Whether `topic` is `devices/{deviceId}/telemetry` (telemetryTopic(deviceId), without building it). */
export function isTelemetryOf(deviceId: string, topic: string): boolean {
  return topic.length === deviceId.length + 18 && topic.startsWith('devices/') && topic.startsWith(deviceId, 8) && topic.endsWith('/telemetry');
}
