/**
 * Live sessions and the credential version each one authenticated with, so a `braid device remove`
 * or `rotate` ends them and not only the next CONNECT [INV-7]. The registry's watch reports the
 * devices whose row changed; a session whose version is no longer the device's is closed.
 */
import type { Client } from 'aedes';
import type { DeviceChange } from '../registry/index.js';

export type RevokeReason = 'removed' | 'rotated';

export class Sessions {
  private readonly byDevice = new Map<string, { client: Client; version: number }>();

  /** The session `client` authenticated with `version` of its device's credential (a takeover replaces the old one). */
  admit(client: Client, version: number): void {
    this.byDevice.set(client.id, { client, version });
  }

  /** The connection closed; a newer session of the same device stays. */
  drop(client: Client): void {
    if (this.byDevice.get(client.id)?.client === client) this.byDevice.delete(client.id);
  }

  /** Close the sessions the changes made stale; calls `revoked` for each. */
  revoke(changes: DeviceChange[], revoked: (client: Client, reason: RevokeReason) => void): void {
    for (const { id, version } of changes) {
      const s = this.byDevice.get(id);
      if (!s || s.version === version) continue;
      this.byDevice.delete(id);
      revoked(s.client, version === null ? 'removed' : 'rotated');
    }
  }

  get size(): number {
    return this.byDevice.size;
  }
}
