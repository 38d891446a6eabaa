/**
 * Live sessions and the credential version each one authenticated with, so a `braid device remove`
 * or `rotate` ends them and not only the next CONNECT [INV-7]. The registry's watch reports every
 * device's version after a change; a session whose version is no longer its device's is closed.
 */
import type { Client } from 'aedes';

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

  /**
   * Close the sessions whose device is gone from `versions` (every registered device's current
   * version) or has another version now; calls `revoked` for each.
   */
  revoke(versions: ReadonlyMap<string, number>, revoked: (client: Client, reason: RevokeReason) => void): void {
    for (const [id, s] of this.byDevice) {
      const version = versions.get(id);
      if (version === s.version) continue;
      this.byDevice.delete(id);
      // Authenticated but closed before aedes registered it (no disconnect event): nothing to end.
      if (s.client.closed) continue;
      revoked(s.client, version === undefined ? 'removed' : 'rotated');
    }
  }

  get size(): number {
    return this.byDevice.size;
  }
}
