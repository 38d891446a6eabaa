/**
 * Receive-time stamps of recent QoS 1 messages without `ts`, per device, so a retransmit (DUP=1,
 * same packet id and payload: its PUBACK was lost) gets the same stamps as the first delivery and
 * the dedup drops it as a repeat of the same identities [INV-2]. Without this it would be a new
 * reading at a new time.
 */
import { createHash } from 'node:crypto';

interface Entry {
  digest: string;
  stamps: number[];
}

export class RetransmitStamps {
  private readonly byDevice = new Map<string, Map<number, Entry>>();

  /** @param perDevice messages remembered per device (at least the client's in-flight window). */
  constructor(private readonly perDevice = 64) {}

  static digest(payload: Buffer): string {
    return createHash('sha1').update(payload).digest('base64');
  }

  /** The stamps given to this message the first time, if it is a retransmit of one we stamped. */
  recall(device: string, messageId: number | undefined, digest: string): number[] | undefined {
    if (messageId === undefined) return undefined;
    const e = this.byDevice.get(device)?.get(messageId);
    return e && e.digest === digest ? e.stamps : undefined;
  }

  remember(device: string, messageId: number | undefined, digest: string, stamps: number[]): void {
    if (messageId === undefined || stamps.length === 0) return;
    let m = this.byDevice.get(device);
    if (!m) {
      m = new Map();
      this.byDevice.set(device, m);
    }
    m.delete(messageId);
    m.set(messageId, { digest, stamps });
    if (m.size > this.perDevice) m.delete(m.keys().next().value as number);
  }

  forget(device: string): void {
    this.byDevice.delete(device);
  }
}
