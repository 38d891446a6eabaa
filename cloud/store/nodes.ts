/**
 * Staging ownership across machines (docs/cluster-store.md, "Staging that survives a node"): each
 * ingest node holds a lease in the store, renewed every third of `leaseMs`; a node whose lease ran
 * out (or that ended) has its staging claimed by exactly one live node, which seals it. Never a pid
 * or a hostname as the owner: those mean nothing on another machine. Expiry is judged by the
 * store's clock (PostgreSQL's now()), never a node's. PostgreSQL: cloud/store/pg/nodes.ts; the
 * embedded SQLite cloud keeps its fcntl owner lock (shared/owner-lock.ts) and has no registry.
 * Held to test/support/store-conformance/nodes.ts.
 */
import { BraidError } from '../../shared/errors.js';

/** store.leaseMs's default: a dead node's staging is claimable this long after its last renewal (renewed every third of it). */
export const DEFAULT_LEASE_MS = 15_000;
/** store.leaseMs's floor: renewals every second at the least, and room for a slow store round trip. */
export const MIN_LEASE_MS = 3_000;

export interface NodeInfo {
  /** A fresh id per start: the staging dir's name (`staging/<node>/`). */
  node: string;
  /** Where it runs, for an operator's eyes only. */
  host: string;
  pid: number;
  /** ms since the epoch, the node's clock (informative). */
  startedAt: number;
}

export interface LiveNode {
  node: string;
  host: string;
  /** The manifest version the node serves, as its last renewal reported. */
  servedVersion: number | null;
  /** When its lease runs out, ms since the epoch, by the store's clock. */
  leaseUntil: number;
}

export interface NodeRegistry {
  /** Register this node (a fresh id per start); its lease runs leaseMs from the database's now(). */
  register(info: NodeInfo, leaseMs: number): Promise<void>;
  /** Renew the lease and report the manifest version this node serves; fenced: another node claimed it (its lease had run out), or it ended. */
  renew(node: string, leaseMs: number, servedVersion: number | null): Promise<{ fenced: boolean }>;
  /**
   * Claim a node's staging: true for exactly one claimant, only when its lease ran out (or it ended)
   * and nobody claimed it; a claimant whose own lease ran out before it finished can be replaced,
   * and a repeated claim by the same claimant is true again (it resumes the move).
   */
  claim(dead: string, me: string): Promise<boolean>;
  /** Whether the node was ever registered (and its row not yet collected): a staging dir without one is judged by its age. */
  known(node: string): Promise<boolean>;
  /** Nodes with a live lease (not ended, not claimed), with the manifest version each serves. */
  live(): Promise<LiveNode[]>;
  /** A clean stop: ended_at set, so others may claim what is left at once. */
  end(node: string): Promise<void>;
}

/**
 * A group commit refused because this node's staging lease is no longer its own (another node
 * claimed its staging after the lease ran out, or it ran out): nothing of the group counts, no 2xx
 * leaves [INV-1]; the node opens a new staging dir under a fresh id and the gateway resends.
 */
export class StagingLeaseLostError extends BraidError {
  readonly node: string;
  constructor(node: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_INGEST_UNAVAILABLE', `this node's staging lease was taken over (node ${node}: its lease ran out and another node may have claimed its staging); nothing of this batch was stored; retry`, 503, options);
    this.node = node;
  }

  override canRetry(): boolean {
    return true;
  }
}

export function isStagingLeaseLost(err: unknown): err is StagingLeaseLostError {
  return err instanceof StagingLeaseLostError;
}
