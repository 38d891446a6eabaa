/**
 * The nodes of one cloud (`cloud.url` with several URLs, DESIGN.md "Cluster mode"), shared by the
 * forwarder and the speed pusher, so what one sender learns about a node the other uses at once.
 *
 * - The current node is the first healthy one: every request goes to it.
 * - A failure that says the node is away or unwell (no answer, a timeout, a 5xx, a 408, a malformed
 *   2xx) moves the list to the next node at once: the sender resends without waiting out its
 *   backoff. Once every node failed in a round, the list starts again at the first one and the
 *   sender backs off as with a single URL.
 * - An answer about the request itself (400, 401, 403, 409, 413, 429 and other 4xx) stays on the
 *   node: every node of one cloud shares one store and would say the same (a 429 asks for a wait).
 * - It sticks to a node that answers; while that is not the first, it probes the nodes before it
 *   (GET /healthz, no token) every probeIntervalMs and goes back to the first that answers.
 *
 * Resending a batch to another node is safe: the cloud keys ingest on (gateway, seq), so a batch a
 * dead node stored before it could answer is acknowledged again, not stored twice [INV-2]; a speed
 * push is an upsert.
 */
import { Counter, Gauge, type Metric, type Registry } from 'prom-client';
import { BraidError, ConfigInvalidError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { cloudUrl } from './post.js';
import { displayUrl } from './urls.js';

export interface CloudNodesOptions {
  /** While off the first node, how often the nodes before the current one are probed, in ms. */
  probeIntervalMs: number;
  /** Time one probe may take, in ms. */
  probeTimeoutMs: number;
}

export const DEFAULT_CLOUD_NODES_OPTIONS: CloudNodesOptions = {
  probeIntervalMs: 30_000, // 30 s: a recovered first node is used again within about this long
  probeTimeoutMs: 5_000, // 5 s
};

/** What a sender does after a failed request: resend at once (to the new current node), back off, or apply its own rules (the node is fine). */
export type NodeVerdict = 'next' | 'backoff' | 'request';

export interface CloudNodesStatus {
  /** Every node, in order of preference (users and passwords left out). */
  nodes: string[];
  /** The node requests go to now. */
  current: string;
  /** Its position in `nodes`, 0 = the first (preferred) node. */
  currentIndex: number;
  /** Moves from one node to another since the start (failovers and returns). */
  failovers: number;
  lastFailoverAt: number | null;
}

/** Reuse a metric already on the registry: a gateway restarted in one process must not throw "already registered". */
function reuse<T extends Metric>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

/** The node list's metrics; the gateway registers them with or without a cloud, so the families always exist. */
export function createCloudNodeMetrics(registry: Registry) {
  const registers = [registry];
  return {
    current: reuse(registry, 'braid_cloud_node_current', () => new Gauge({
      name: 'braid_cloud_node_current', help: 'One sample per cloud node of cloud.url: 1 for the node the forwarder and the speed push send to, 0 for the others', labelNames: ['url'] as const, registers })),
    index: reuse(registry, 'braid_cloud_node_index', () => new Gauge({
      name: 'braid_cloud_node_index', help: 'Position of the current cloud node in cloud.url: 0 = the first (preferred) one', registers })),
    failovers: reuse(registry, 'braid_cloud_failovers_total', () => new Counter({
      name: 'braid_cloud_failovers_total', help: 'Moves from one cloud node to another: a failover after a failure, or the return to an earlier node once it answers a probe', labelNames: ['from', 'to'] as const, registers })),
  };
}

export type CloudNodeMetrics = ReturnType<typeof createCloudNodeMetrics>;

export interface CloudNodesDeps {
  logger: Logger;
  /** From createCloudNodeMetrics; none: no metrics (tests, direct callers). */
  metrics?: CloudNodeMetrics;
  now?: () => number;
}

/**
 * Whether a failed request says the node is away or unwell rather than the request wrong: no
 * answer, a timeout, a malformed 2xx (the senders' own errors, 502-504), any 5xx, a 408.
 */
export function isNodeFailure(err: unknown): boolean {
  return err instanceof BraidError && (err.statusCode >= 500 || err.statusCode === 408);
}

export class CloudNodes {
  readonly urls: readonly string[];
  private readonly o: CloudNodesOptions;
  private readonly log: Logger;
  private readonly metrics: CloudNodeMetrics | undefined;
  private readonly now: () => number;
  private index = 0;
  /** Nodes that failed since the last success on the current one: a round is over when it holds them all. */
  private readonly failedInRound = new Set<number>();
  private probeTimer: NodeJS.Timeout | null = null;
  private probing: AbortController | null = null;
  private closed = false;
  private moves = 0;
  private lastMoveAt: number | null = null;

  constructor(urls: readonly string[], deps: CloudNodesDeps, options: Partial<CloudNodesOptions> = {}) {
    if (urls.length === 0) throw new ConfigInvalidError('cloud.url: a node list needs at least one URL');
    this.urls = [...urls];
    this.o = { ...DEFAULT_CLOUD_NODES_OPTIONS, ...options };
    this.log = deps.logger.child({ component: 'cloudnodes' });
    this.metrics = deps.metrics;
    this.now = deps.now ?? Date.now;
    this.metrics?.current.reset();
    this.urls.forEach((u, i) => this.metrics?.current.set({ url: displayUrl(u) }, i === 0 ? 1 : 0));
    this.metrics?.index.set(0);
  }

  /** The node the next request goes to. */
  get current(): string { return this.urls[this.index]; }

  status(): CloudNodesStatus {
    return { nodes: this.urls.map(displayUrl), current: displayUrl(this.current), currentIndex: this.index, failovers: this.moves, lastFailoverAt: this.lastMoveAt };
  }

  /** A request to `url` was answered 2xx: the round of failures is over (an answer from a node the list has left changes nothing). */
  succeeded(url: string): void {
    if (url === this.current) this.failedInRound.clear();
  }

  /**
   * A request to `url` failed with `err` (`who`: the sender, for the log). 'request': the node is
   * fine, the sender applies its own rules; 'next': resend at once, to `current`; 'backoff':
   * every node failed in this round (or there is one node), back off.
   */
  failed(url: string, err: unknown, who: string): NodeVerdict {
    if (!isNodeFailure(err)) return 'request';
    if (this.urls.length === 1) return 'backoff';
    const i = this.urls.indexOf(url);
    if (i >= 0) this.failedInRound.add(i);
    // Another sender already moved the list on: resend to where it points unless that failed too.
    if (i !== this.index) return this.failedInRound.has(this.index) ? 'backoff' : 'next';
    for (let k = 1; k < this.urls.length; k++) {
      const next = (i + k) % this.urls.length;
      if (!this.failedInRound.has(next)) {
        this.moveTo(next, `${who}: cloud node failed; failing over`, err);
        return 'next';
      }
    }
    // Every node failed: the next round starts at the first, after the sender's backoff.
    this.failedInRound.clear();
    if (this.index !== 0) this.moveTo(0, `${who}: every cloud node failed; backing off, then starting again at the first`, err);
    return 'backoff';
  }

  /** Stop probing. Idempotent. */
  close(): void {
    this.closed = true;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = null;
    this.probing?.abort();
  }

  private moveTo(next: number, msg: string, err?: unknown): void {
    const from = this.index;
    this.index = next;
    this.moves++;
    this.lastMoveAt = this.now();
    const f = displayUrl(this.urls[from]);
    const t = displayUrl(this.urls[next]);
    this.metrics?.failovers.inc({ from: f, to: t });
    this.metrics?.current.set({ url: f }, 0);
    this.metrics?.current.set({ url: t }, 1);
    this.metrics?.index.set(next);
    if (err === undefined) this.log.info({ from: f, to: t }, msg);
    else {
      const e = err as { code?: unknown; message?: unknown };
      this.log.warn({ from: f, to: t, code: e.code, error: String(e.message ?? err) }, msg);
    }
    if (next === 0) {
      if (this.probeTimer) clearTimeout(this.probeTimer);
      this.probeTimer = null;
    } else {
      this.armProbe();
    }
  }

  private armProbe(): void {
    if (this.closed || this.probeTimer || this.probing) return;
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null;
      void this.probe();
    }, this.o.probeIntervalMs);
    // A gateway closing does not wait for the next probe.
    this.probeTimer.unref();
  }

  /** GET /healthz on each node before the current one, in order; the first that answers 2xx becomes current. */
  private async probe(): Promise<void> {
    const ac = new AbortController();
    this.probing = ac;
    try {
      for (let i = 0; i < this.index && !this.closed; i++) {
        if (await this.answers(this.urls[i], ac.signal)) {
          // The list may have moved while the probe ran (a failure, a round that ended at the first).
          if (i < this.index && !this.closed) {
            this.failedInRound.clear();
            this.moveTo(i, 'cloud node answers again; going back to it');
          }
          break;
        }
      }
    } finally {
      this.probing = null;
      if (this.index !== 0) this.armProbe();
    }
  }

  private async answers(url: string, outer: AbortSignal): Promise<boolean> {
    try {
      const res = await fetch(cloudUrl(url, '/healthz'), { signal: AbortSignal.any([outer, AbortSignal.timeout(this.o.probeTimeoutMs)]) });
      await res.arrayBuffer();
      return res.ok;
    } catch {
      return false;
    }
  }
}
