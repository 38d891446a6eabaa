/**
 * Device topics and the ACL: a device publishes and subscribes only under `devices/{its id}/`.
 */
export const telemetryTopic = (deviceId: string) => `devices/${deviceId}/telemetry`;
export const errorsTopic = (deviceId: string) => `devices/${deviceId}/errors`;

/** Whether `deviceId` may use `topic` (a publish topic or a subscription filter). */
export function topicAllowed(deviceId: string, topic: string): boolean {
  const prefix = `devices/${deviceId}/`;
  if (!topic.startsWith(prefix) || topic.length === prefix.length) return false;
  // `devices/d/#` is fine; wildcards can't reach above the prefix since it is matched literally.
  return true;
}
