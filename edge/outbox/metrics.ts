/** The outbox's Prometheus metrics (names braid_*, no device labels: a fleet has too many). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** What the backlog gauges read at scrape time (the outbox of that registry provides it). */
export interface OutboxBacklogSource {
  /** Readings not yet acknowledged by the cloud, and what the disk budget counts for them, in bytes. */
  backlog(): { pending: number; bytes: number; maxBytes: number };
  /** Seconds the oldest unacknowledged reading has waited (0 when none); rejects if the database is closed. */
  oldestPendingAgeSeconds(): Promise<number>;
}

export function createOutboxMetrics(registry: Registry, source: () => OutboxBacklogSource | null) {
  const registers = [registry];
  return {
    accepted: new Counter({ name: 'braid_readings_accepted_total', help: 'Readings committed to the outbox with a seq', registers }),
    duplicates: new Counter({ name: 'braid_readings_duplicate_total', help: 'Readings dropped as repeats of an identity seen in the dedup window', registers }),
    dropped: new Counter({ name: 'braid_readings_dropped_total', help: 'Readings dropped at a limit, by reason (queue_full: the commit queue was full, no PUBACK; disk_budget, disk_floor: the oldest unsent readings, over outbox.maxBytes or below outbox.minFreeBytes free on the disk, sent to the cloud as a gap record; series_full: every one of the 1,048,575 series numbers of the dedup window taken)', labelNames: ['reason'], registers }),
    quarantineDropped: new Counter({ name: 'braid_quarantine_dropped_total', help: 'Quarantined payloads deleted to keep the quarantine within its bound', registers }),
    commitFailures: new Counter({ name: 'braid_commit_failures_total', help: 'Group commits that failed (their readings were not acknowledged)', registers }),
    commitSeconds: new Histogram({ name: 'braid_commit_seconds', help: 'Time of one group commit, to durable (a commit log record written, or a SQLite transaction with fsync)', buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1], registers }),
    commitReadings: new Histogram({ name: 'braid_commit_batch_readings', help: 'Readings in one group commit', buckets: [1, 10, 100, 500, 1000, 5000, 20000], registers }),
    applySeconds: new Histogram({ name: 'braid_commit_log_apply_seconds', help: 'Time of one transaction that puts commit log records into gateway.db', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1], registers }),
    applyReadings: new Histogram({ name: 'braid_commit_log_apply_readings', help: 'Readings put into gateway.db from the commit log in one transaction', buckets: [10, 100, 500, 1000, 4096, 10000, 50000], registers }),
    logWrites: new Counter({ name: 'braid_commit_log_writes_total', help: 'Records written to the commit log, by thread: main (the disk answers in under 0.5 ms on average) or pool (a slower disk, so the event loop is not held)', labelNames: ['thread'], registers }),
    gaps: new Counter({ name: 'braid_gap_records_total', help: 'Gap records written for readings dropped at the disk budget or the disk floor', registers }),
    pruned: new Counter({ name: 'braid_retention_pruned_rows_total', help: 'Rows removed by the retention jobs, by table', labelNames: ['table'], registers }),
    // The backlog is live state: read at scrape time, so an alert sees it as it is, not as of the last commit.
    pending: new Gauge({
      name: 'braid_outbox_pending_readings', help: 'Readings in the outbox not yet acknowledged by the cloud (health outbox.pending)', registers,
      collect() { const s = source(); if (s) this.set(s.backlog().pending); },
    }),
    bytes: new Gauge({
      name: 'braid_outbox_bytes', help: 'What the disk budget counts for the unacknowledged readings, in bytes (compare with braid_outbox_max_bytes)', registers,
      collect() { const s = source(); if (s) this.set(s.backlog().bytes); },
    }),
    maxBytes: new Gauge({
      name: 'braid_outbox_max_bytes', help: 'The outbox disk budget (outbox.maxBytes), in bytes: past it the oldest unsent readings are dropped', registers,
      collect() { const s = source(); if (s) this.set(s.backlog().maxBytes); },
    }),
    oldestPendingAge: new Gauge({
      name: 'braid_outbox_oldest_pending_age_seconds',
      help: 'Seconds since the oldest reading not yet acknowledged by the cloud was committed, counted from the opening of its epoch (at most outbox.epochMs more than exact); 0 when none waits', registers,
      async collect() {
        const s = source();
        if (!s) return;
        // A scrape during shutdown (database closed) keeps the last value rather than failing /metrics.
        try { this.set(await s.oldestPendingAgeSeconds()); } catch { /* keep the last value */ }
      },
    }),
  };
}

export type OutboxMetrics = ReturnType<typeof createOutboxMetrics>;
