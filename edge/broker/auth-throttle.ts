/**
 * What an unauthenticated client may make the gateway spend. Checking an operator-chosen secret
 * costs one scrypt hash (about 6 ms of a libuv thread, the pool SQLite's commits run on too; a
 * generated secret's salted SHA-256 costs a microsecond and takes a turn only when it fails), so:
 *
 * - at most `concurrency` hashes run at once; up to `queueMax` more CONNECTs wait their turn and
 *   past that a CONNECT is refused at once (`busy`);
 * - a client id, or an address, that keeps failing is refused without a hash for a while: after
 *   `idFailures` (`addressFailures`) failures the wait is `initialMs`, doubling with each further failure up to
 *   `maxMs` (`backoff`). A success forgets the client id's failures; any entry is forgotten
 *   2 x maxMs after its last failure; at most `trackedMax` entries are kept (oldest first out).
 *
 * Remembered credentials (a device reconnecting with the secret that verified before) cost no hash
 * and pass none of this: an honest fleet reconnecting after an outage is not slowed, and a stranger
 * failing as a device's client id cannot lock that device out.
 */

export interface AuthThrottleOptions {
  /** Secret hashes computed at once. */
  concurrency: number;
  /** CONNECTs waiting for a hash before more are refused. */
  queueMax: number;
  /** Failures of one client id after which it has to wait. */
  idFailures: number;
  /** Failures from one address after which it has to wait (devices behind one NAT share it). */
  addressFailures: number;
  /** First wait once those failures are reached, in ms; doubles per further failure. */
  initialMs: number;
  /** Longest wait, in ms. */
  maxMs: number;
  /** Client ids and addresses remembered at most. */
  trackedMax: number;
}

interface Failures {
  count: number;
  lastAt: number;
  until: number;
}

/** A bounded map of failure counts: insertion order is recency, the oldest goes first. */
class FailureBook {
  private readonly entries = new Map<string, Failures>();
  constructor(private readonly after: number, private readonly opts: AuthThrottleOptions, private readonly now: () => number) {}

  /** ms left to wait before `key` may try again (0: now). */
  waitMs(key: string): number {
    const e = this.entries.get(key);
    if (!e) return 0;
    const now = this.now();
    if (now - e.lastAt > 2 * this.opts.maxMs) {
      this.entries.delete(key);
      return 0;
    }
    return Math.max(0, e.until - now);
  }

  fail(key: string): void {
    const now = this.now();
    const prev = this.entries.get(key);
    const count = prev && now - prev.lastAt <= 2 * this.opts.maxMs ? prev.count + 1 : 1;
    const over = count - this.after;
    const until = over >= 0 ? now + Math.min(this.opts.maxMs, this.opts.initialMs * 2 ** Math.min(over, 30)) : 0;
    this.entries.delete(key);
    this.entries.set(key, { count, lastAt: now, until });
    if (this.entries.size > this.opts.trackedMax) this.entries.delete(this.entries.keys().next().value as string);
  }

  forget(key: string): void {
    this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}

/** A turn to hash, or why not: the queue is full, the client id or address is backing off, or the connection closed while it waited. */
export type Admission = { ok: true; release: () => void } | { ok: false; reason: 'busy' | 'backoff' | 'gone'; retryMs: number };

export class AuthThrottle {
  private readonly ids: FailureBook;
  private readonly addresses: FailureBook;
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly opts: AuthThrottleOptions, private readonly now: () => number = Date.now) {
    this.ids = new FailureBook(opts.idFailures, opts, now);
    this.addresses = new FailureBook(opts.addressFailures, opts, now);
  }

  /** CONNECTs waiting for or running a hash. */
  get pending(): number {
    return this.running + this.waiting.length;
  }

  /** ms this client id or address must still wait after failing (0: may try now). */
  backoffMs(id: string, address: string | undefined): number {
    return Math.max(this.ids.waitMs(id), address ? this.addresses.waitMs(address) : 0);
  }

  /**
   * A turn to compute a hash for `id` from `address`. Resolves when one is free: the backoff is
   * checked again then, so a burst queued before its first failures came back is refused without
   * hashing. `gone()` says the connection closed meanwhile; its turn is skipped.
   */
  async admit(id: string, address: string | undefined, gone: () => boolean): Promise<Admission> {
    const before = this.backoffMs(id, address);
    if (before > 0) return { ok: false, reason: 'backoff', retryMs: before };
    if (this.running >= this.opts.concurrency) {
      if (this.waiting.length >= this.opts.queueMax) return { ok: false, reason: 'busy', retryMs: 0 };
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running++;
    }
    // The slot is ours now (handed over by release, or taken above).
    const wait = this.backoffMs(id, address);
    if (gone() || wait > 0) {
      this.release();
      return wait > 0 ? { ok: false, reason: 'backoff', retryMs: wait } : { ok: false, reason: 'gone', retryMs: 0 };
    }
    let released = false;
    return { ok: true, release: () => { if (!released) { released = true; this.release(); } } };
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next(); // the slot passes straight to the next in line
    else this.running--;
  }

  failed(id: string, address: string | undefined): void {
    this.ids.fail(id);
    if (address) this.addresses.fail(address);
  }

  /** The client id verified: its failures are forgotten (its address's are not: a NAT may hide a prober). */
  succeeded(id: string): void {
    this.ids.forget(id);
  }

  /** Entries remembered (for tests of the bound). */
  get tracked(): { ids: number; addresses: number } {
    return { ids: this.ids.size, addresses: this.addresses.size };
  }
}
