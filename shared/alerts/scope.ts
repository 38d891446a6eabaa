/** An alert's scope as stored (`device:<id>`, `gateway:<id>`, `fleet`) and as answered (`{device}`, `{gateway}`, `{fleet: true}`). */
export type AlertScope = { device: string } | { gateway: string } | { fleet: true };

export function scopeKey(s: AlertScope): string {
  return 'device' in s ? `device:${s.device}` : 'gateway' in s ? `gateway:${s.gateway}` : 'fleet';
}

export function parseScope(key: string): AlertScope {
  if (key.startsWith('device:')) return { device: key.slice(7) };
  if (key.startsWith('gateway:')) return { gateway: key.slice(8) };
  return { fleet: true };
}
