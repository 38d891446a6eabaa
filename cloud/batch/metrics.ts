/**
 * The batch job's Prometheus metrics (names braid_batch_*). Runs are counted by the process that
 * ran them (the cloud's scheduler: cron and POST /api/v1/batch/run); the last success is read from
 * cloud.db at scrape time, so it also covers `braid batch run` in another process and survives a
 * restart of the cloud.
 */
import { Counter, Gauge, Histogram, type Metric, type Registry } from 'prom-client';

/** Reuse a metric already on the registry: two clouds in one process (tests) share it. */
function reuse<T extends Metric>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

/** The end time (epoch ms) of the newest run that ended ok, null when none did; may reject (database closed). */
export type LastSuccessSource = () => Promise<number | null>;

/** Per registry, where the last-success gauge reads (the newest scheduler on it sets it). */
const lastSuccessSources = new WeakMap<Registry, LastSuccessSource>();

export type BatchRunResultLabel = 'published' | 'noop' | 'failed' | 'aborted';

export function createBatchMetrics(registry: Registry, lastSuccessAt: LastSuccessSource) {
  const registers = [registry];
  lastSuccessSources.set(registry, lastSuccessAt);
  return {
    runs: reuse(registry, 'braid_batch_runs_total', () => new Counter({
      name: 'braid_batch_runs_total',
      help: 'Batch runs of this process (cron and POST /api/v1/batch/run) by kind (incremental, full) and result: published (a new manifest), noop (nothing new to cover), failed, aborted (the cloud was stopping)',
      labelNames: ['kind', 'result'] as const, registers })),
    runSeconds: reuse(registry, 'braid_batch_run_seconds', () => new Histogram({
      name: 'braid_batch_run_seconds', help: 'Duration of the batch runs of this process that ended ok (published or noop), by kind',
      labelNames: ['kind'] as const, buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800], registers })),
    rowsRead: reuse(registry, 'braid_batch_rows_read_total', () => new Counter({
      name: 'braid_batch_rows_read_total', help: 'Master rows read by the batch runs of this process that ended ok', registers })),
    lastSuccess: reuse(registry, 'braid_batch_last_success_timestamp_seconds', () => new Gauge({
      name: 'braid_batch_last_success_timestamp_seconds',
      help: 'Unix time the newest batch run that ended ok ended, from cloud.db (any process, `braid batch run` included; absent before the first one)', registers,
      async collect() {
        const source = lastSuccessSources.get(registry);
        if (!source) return;
        let at: number | null;
        // A scrape while the cloud stops (database closed) keeps the last value rather than failing /metrics.
        try { at = await source(); } catch { return; }
        if (at === null) this.remove({});
        else this.set(at / 1000);
      },
    })),
  };
}

export type BatchMetrics = ReturnType<typeof createBatchMetrics>;
