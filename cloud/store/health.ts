/**
 * Whether the store answers: one round trip every `intervalMs` (SQLite: a read of cloud.db;
 * PostgreSQL: `SELECT 1` through the pool). It feeds `braid_store_up` and GET /healthz's `store`,
 * and says when an outage began and ended in the log, once each. While the store is out of reach
 * ingest answers 503 and queries are flagged `degraded`; nothing waits for this probe to notice:
 * it is what an operator and a load balancer see.
 */
import { Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../shared/logger.js';
import type { CloudStore } from './cloud-store.js';

export const STORE_PROBE_MS = 2_000;

export class StoreHealth {
  /** The last probe's outcome (true before the first: the store was just opened). */
  up = true;
  private downSince: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private probing = false;
  private readonly gauge: Gauge;

  constructor(private readonly store: Pick<CloudStore, 'ping' | 'kind'>, registry: Registry, private readonly log: Logger, private readonly intervalMs = STORE_PROBE_MS) {
    this.gauge = (registry.getSingleMetric('braid_store_up') as Gauge | undefined) ?? new Gauge({
      name: 'braid_store_up', registers: [registry], labelNames: ['kind'] as const,
      help: 'Whether the cloud\'s store (kind: sqlite, postgres) answered its last probe (one round trip each 2 s): 0 while it is unreachable (ingest answers 503, queries are flagged degraded)',
    });
    this.gauge.set({ kind: store.kind }, 1);
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => { void this.probe(); }, this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Probe now; resolves with whether the store answered. */
  async probe(): Promise<boolean> {
    if (this.probing) return this.up;
    this.probing = true;
    try {
      await this.store.ping();
      this.set(true);
    } catch (err) {
      this.set(false, err);
    } finally {
      this.probing = false;
    }
    return this.up;
  }

  private set(up: boolean, err?: unknown): void {
    this.gauge.set({ kind: this.store.kind }, up ? 1 : 0);
    if (up === this.up) return;
    this.up = up;
    if (!up) {
      this.downSince = Date.now();
      this.log.error({ err: (err as Error | undefined)?.message }, 'the store is unreachable: ingest answers 503, queries are degraded, until it is back');
    } else {
      this.log.info({ downMs: this.downSince === null ? null : Date.now() - this.downSince }, 'the store is reachable again');
      this.downSince = null;
    }
  }
}
