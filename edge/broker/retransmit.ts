/**
 * Receive-time stamps of recent QoS 1 messages without `ts`, per device, so a retransmit (DUP=1,
 * same packet id and payload: its PUBACK was lost) gets the same stamps as the first delivery and
 * the dedup drops it as a repeat of the same identities [INV-2]. Without this it would be a new
 * reading at a new time.
 */
import { createHash } from 'node:crypto';

interface Entry {
  messageId: number;
  digest: string;
  stamps: number[];
}

/**
 * A device's entries are a short array, oldest first, searched from the newest: one per device
 * that ever sent such a message (they outlive a connection, a retransmit may follow a reconnect),
 * so a Map per device (~0.4 KB of hash table for one entry) was 4 MB of a gateway with 10,000.
 */
export class RetransmitStamps {
  private readonly byDevice = new Map<string, Entry[]>();

  /** @param perDevice messages remembered per device (at least the client's in-flight window). */
  constructor(private readonly perDevice = 64) {}

  static digest(payload: Buffer): string {
    return createHash('sha1').update(payload).digest('base64');
  }

  /** The stamps given to this message the first time, if it is a retransmit of one we stamped. */
  recall(device: string, messageId: number | undefined, digest: string): number[] | undefined {
    if (messageId === undefined) return undefined;
    const list = this.byDevice.get(device);
    if (!list) return undefined;
    for (let i = list.length - 1; i >= 0; i--) {
      const e = list[i];
      if (e.messageId === messageId) return e.digest === digest ? e.stamps : undefined;
    }
    return undefined;
  }

  remember(device: string, messageId: number | undefined, digest: string, stamps: number[]): void {
    if (messageId === undefined || stamps.length === 0) return;
    const entry: Entry = { messageId, digest, stamps };
    const list = this.byDevice.get(device);
    if (!list) {
      this.byDevice.set(device, [entry]);
      return;
    }
    // A packet id is reused once its message is acknowledged: the newer message replaces the older.
    const at = list.findIndex((e) => e.messageId === messageId);
    if (at >= 0) list.splice(at, 1);
    list.push(entry);
    if (list.length > this.perDevice) list.shift();
  }

  forget(device: string): void {
    this.byDevice.delete(device);
  }
}
