/** Ingest and master dataset metrics (names braid_ingest_*, braid_master_*, braid_staging_*; no device labels). */
import { Counter, Gauge, Histogram, type Metric, type Registry } from 'prom-client';

/** Reuse a metric already on the registry: two ingest services in one process (tests) share it. */
function reuse<T extends Metric>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

/** Per registry, the clock estimates the offset gauge reads at scrape time (the newest ingest service on it sets it). */
const clockSources = new WeakMap<Registry, { all: (now: number) => Map<string, number> }>();

export function createIngestMetrics(registry: Registry, clocks?: { all: (now: number) => Map<string, number> }) {
  const registers = [registry];
  if (clocks) clockSources.set(registry, clocks);
  return {
    requests: reuse(registry, 'braid_ingest_requests_total', () => new Counter({
      name: 'braid_ingest_requests_total', help: 'Ingest requests by outcome: ok (2xx), rejected (4xx), failed (5xx)', labelNames: ['outcome'] as const, registers })),
    rejected: reuse(registry, 'braid_ingest_rejected_total', () => new Counter({
      name: 'braid_ingest_rejected_total', help: 'Ingest requests refused, by error code', labelNames: ['code'] as const, registers })),
    requestSeconds: reuse(registry, 'braid_ingest_request_seconds', () => new Histogram({
      name: 'braid_ingest_request_seconds', help: 'Time from an ingest request to its answer (durable when 2xx)', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers })),
    readings: reuse(registry, 'braid_ingest_readings_total', () => new Counter({
      name: 'braid_ingest_readings_total', help: 'Readings stored by ingest (new (gateway, seq) only)', registers })),
    duplicates: reuse(registry, 'braid_ingest_duplicates_total', () => new Counter({
      name: 'braid_ingest_duplicates_total', help: 'Readings ingest received again and ignored: their (gateway, seq) was stored already', registers })),
    epochs: reuse(registry, 'braid_ingest_epochs_total', () => new Counter({
      name: 'braid_ingest_epochs_total', help: 'Closed epochs recorded (repeats not counted)', registers })),
    gaps: reuse(registry, 'braid_ingest_gap_records_total', () => new Counter({
      name: 'braid_ingest_gap_records_total', help: 'Gap records (readings a gateway dropped at its disk budget or disk floor, or seqs this cloud acknowledged and lost) recorded, repeats not counted', registers })),
    cloudLost: reuse(registry, 'braid_ingest_cloud_lost_readings_total', () => new Counter({
      name: 'braid_ingest_cloud_lost_readings_total', help: 'Seqs named by new cloud_lost gap records: acknowledged by this cloud earlier and lost since (cloud.db restored from an older backup), as the gateway reported them', registers })),
    seqGaps: reuse(registry, 'braid_ingest_seq_gaps_total', () => new Counter({
      name: 'braid_ingest_seq_gaps_total', help: 'Batches refused because they skip seqs: above the highest stored, neither in the batch nor named by a gap record (BRAID_ERR_INGEST_SEQ_SKIP)', registers })),
    future: reuse(registry, 'braid_readings_future_total', () => new Counter({
      name: 'braid_readings_future_total', help: 'Readings stored by ingest stamped more than ingest.maxFutureMs after the cloud\'s clock (stored, not dropped), by gateway',
      labelNames: ['gateway'] as const, registers })),
    clockOffset: reuse(registry, 'braid_gateway_clock_offset_seconds', () => new Gauge({
      name: 'braid_gateway_clock_offset_seconds',
      help: 'Each gateway\'s clock minus the cloud\'s (positive: ahead): the max over the last minute of sentAt minus receive time of its ingest requests and speed pushes to this process',
      labelNames: ['gateway'] as const, registers,
      collect() {
        const source = clockSources.get(registry);
        if (!source) return;
        // Rebuilt at each scrape from the estimates this process holds.
        this.reset();
        for (const [gateway, ms] of source.all(Date.now())) this.set({ gateway }, ms / 1000);
      },
    })),
    groupCommits: reuse(registry, 'braid_ingest_group_commits_total', () => new Counter({
      name: 'braid_ingest_group_commits_total', help: 'Group commits (one staging fsync and one cloud.db transaction each)', registers })),
    leaseTakeovers: reuse(registry, 'braid_ingest_lease_takeovers_total', () => new Counter({
      name: 'braid_ingest_lease_takeovers_total', help: 'Times this node found its staging lease taken over (it ran out, e.g. a pause or the store out of reach, and another node claimed the staging): it went on under a fresh node id (cluster mode)', registers })),
    stagingReadings: reuse(registry, 'braid_staging_readings', () => new Gauge({
      name: 'braid_staging_readings', help: 'Readings in staging segments of this process not sealed yet', registers })),
    masterFiles: reuse(registry, 'braid_master_files_total', () => new Counter({
      name: 'braid_master_files_total', help: 'Parquet files added to master/', registers })),
    sealedReadings: reuse(registry, 'braid_master_sealed_readings_total', () => new Counter({
      name: 'braid_master_sealed_readings_total', help: 'Readings sealed into master/ Parquet files', registers })),
    sealSeconds: reuse(registry, 'braid_master_seal_seconds', () => new Histogram({
      name: 'braid_master_seal_seconds', help: 'Time to seal one staging segment', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers })),
    sealFailures: reuse(registry, 'braid_master_seal_failures_total', () => new Counter({
      name: 'braid_master_seal_failures_total', help: 'Seal attempts that failed (the segment stays in staging and is retried)', registers })),
  };
}

export type IngestMetrics = ReturnType<typeof createIngestMetrics>;
