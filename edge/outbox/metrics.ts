/** The outbox's Prometheus metrics (names braid_*, no device labels: a fleet has too many). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export function createOutboxMetrics(registry: Registry) {
  const registers = [registry];
  return {
    accepted: new Counter({ name: 'braid_readings_accepted_total', help: 'Readings committed to the outbox with a seq', registers }),
    duplicates: new Counter({ name: 'braid_readings_duplicate_total', help: 'Readings dropped as repeats of an identity seen in the dedup window', registers }),
    dropped: new Counter({ name: 'braid_readings_dropped_total', help: 'Readings dropped at a limit, by reason (queue_full, disk_budget, rate_limit)', labelNames: ['reason'], registers }),
    quarantineDropped: new Counter({ name: 'braid_quarantine_dropped_total', help: 'Quarantined payloads deleted to keep the quarantine within its bound', registers }),
    commitFailures: new Counter({ name: 'braid_commit_failures_total', help: 'Group commits that failed (their readings were not acknowledged)', registers }),
    commitSeconds: new Histogram({ name: 'braid_commit_seconds', help: 'Time of one group commit (SQLite transaction with fsync)', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1], registers }),
    commitReadings: new Histogram({ name: 'braid_commit_batch_readings', help: 'Readings in one group commit', buckets: [1, 10, 100, 500, 1000, 5000, 20000], registers }),
    gaps: new Counter({ name: 'braid_gap_records_total', help: 'Gap records written for readings dropped at the disk budget', registers }),
    pruned: new Counter({ name: 'braid_retention_pruned_rows_total', help: 'Rows removed by the retention jobs, by table', labelNames: ['table'], registers }),
  };
}

export type OutboxMetrics = ReturnType<typeof createOutboxMetrics>;
