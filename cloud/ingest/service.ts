/**
 * The ingest service: group commit into this process's staging segments, sealing into master/,
 * and the adoption of segments that dead ingest processes left behind. start() before serving,
 * close() after the HTTP server stopped taking requests: it commits what is queued and seals the
 * open segment.
 *
 * Cluster mode (`nodes`, the store's NodeRegistry): the staging dir is owned by a lease in the
 * store instead of an fcntl lock, and a dead node's dir is claimed and sealed by a live one. When
 * this node finds its lease taken over (a group commit refused, or a renewal answered fenced) it
 * abandons the open segment, registers a fresh node id with a new staging dir and goes on
 * (counted in braid_ingest_lease_takeovers_total).
 */
import { mkdir } from 'node:fs/promises';
import { join, sep } from 'node:path';
import type { Registry } from 'prom-client';
import { ClosedError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { IngestStore } from '../store/ingest.js';
import { DEFAULT_LEASE_MS, type NodeRegistry } from '../store/nodes.js';
import { GatewayClocks } from './clock.js';
import { GroupCommitter } from './committer.js';
import { type IngestMetrics, createIngestMetrics } from './metrics.js';
import type { IngestAck } from './plan.js';
import { ParquetEncoder } from './parquet.js';
import { Sealer } from './sealer.js';
import { StagingArea, type StagingLease, fsyncDir } from './staging.js';
import type { IngestBatch } from './validate.js';

export interface IngestOptions {
  /** Largest request body as sent (gzip), in bytes; larger is 413. */
  maxBodyBytes: number;
  /** Largest body after gunzip, in bytes; larger is 413. */
  maxInflatedBytes: number;
  /** Most readings in one request; more is 413 (the gateway halves its batch). */
  maxReadingsPerRequest: number;
  /** Requests arriving within this many ms share one fsync and one cloud.db transaction. */
  groupCommitMs: number;
  /** A staging segment holds at most this many readings, then it is sealed (bounds seal memory). */
  sealMaxReadings: number;
  /** A staging segment is sealed once this old, in ms. */
  sealMaxAgeMs: number;
  /** Readings waiting for a group commit before requests get 429 (not in the config file yet). */
  maxQueuedReadings: number;
  /** How often to look for dead processes' staging dirs and retry failed seals, in ms (with a lease: at most the lease's length). */
  orphanScanMs: number;
  /** Readings stamped later than the cloud's clock plus this, in ms, are counted per gateway and warned about (stored all the same). */
  maxFutureMs: number;
  /**
   * Seal this process's own segments from the columns kept in memory while they were staged (about
   * 45 bytes a reading of the open segment), instead of reading the file back. A segment adopted
   * after a crash or claimed from another node is always read from its file.
   */
  sealFromMemory: boolean;
  /** The Parquet worker thread's nice value (Linux): above 0, ingest requests win a contended core over a seal's encoding. */
  sealWorkerNice: number;
}

export const DEFAULT_INGEST_OPTIONS: IngestOptions = {
  maxBodyBytes: 16 * 1024 * 1024, // 16 MiB
  maxInflatedBytes: 64 * 1024 * 1024, // 64 MiB
  maxReadingsPerRequest: 100_000,
  groupCommitMs: 2,
  sealMaxReadings: 1_000_000,
  sealMaxAgeMs: 60_000, // 1 minute
  maxQueuedReadings: 1_000_000,
  orphanScanMs: 60_000, // 1 minute
  maxFutureMs: 300_000, // 5 minutes
  sealFromMemory: true,
  sealWorkerNice: 10,
};

export interface IngestDeps {
  dataDir: string;
  /** Ingest's state: group commits and the seal's catalog steps (SqliteIngestStore for cloud.db). */
  store: IngestStore;
  logger: Logger;
  registry: Registry;
  now?: () => number;
  /** Cluster mode: staging owned by a lease in this registry (CloudStore.nodes). Null or absent: the fcntl owner lock of one host. */
  nodes?: NodeRegistry | null;
  /** The lease's length in ms (store.leaseMs), renewed every third of it. Default DEFAULT_LEASE_MS. */
  leaseMs?: number;
  /** The manifest version this node serves, reported with each lease renewal (null: none yet). */
  servedVersion?: () => number | null;
}

export interface IngestStatus {
  procId: string;
  openReadings: number;
  unsealedReadings: number;
  sealing: number;
}

export class IngestService {
  readonly options: IngestOptions;
  readonly metrics: IngestMetrics;
  /** Each gateway's clock offset, sampled by the ingest and speed push routes (clock.ts). */
  readonly clocks = new GatewayClocks();
  private readonly d: IngestDeps;
  private readonly log: Logger;
  private readonly committer: GroupCommitter;
  private readonly sealer: Sealer;
  private readonly encoder: ParquetEncoder;
  private current: StagingArea;
  private readonly lease: Omit<StagingLease, 'onFenced'> | null;
  /** Rotated segments not sealed yet, with their reading counts (the staging gauge). */
  private readonly unsealed = new Map<string, number>();
  private scanTimer: NodeJS.Timeout | null = null;
  private scanning: Promise<void> | null = null;
  private started = false;
  private closing: Promise<void> | null = null;

  constructor(deps: IngestDeps, options: Partial<IngestOptions> = {}) {
    this.d = deps;
    this.options = { ...DEFAULT_INGEST_OPTIONS, ...options };
    this.log = deps.logger.child({ component: 'ingest' });
    this.metrics = createIngestMetrics(deps.registry, this.clocks);
    this.lease = deps.nodes ? { registry: deps.nodes, leaseMs: deps.leaseMs ?? DEFAULT_LEASE_MS, servedVersion: deps.servedVersion } : null;
    this.current = this.newStaging();
    this.encoder = new ParquetEncoder((err) => this.log.warn({ err }, 'no Parquet worker thread; encoding on the main thread'), this.options.sealWorkerNice);
    this.sealer = new Sealer({
      dataDir: deps.dataDir, store: deps.store, log: this.log, metrics: this.metrics, now: deps.now, encoder: this.encoder,
      removeSegment: async (path) => {
        await this.current.removeSegment(path);
        this.unsealed.delete(path);
        this.gauge();
      },
    });
    this.committer = new GroupCommitter({
      store: deps.store, stagingDir: this.current.dir, log: this.log, metrics: this.metrics, now: deps.now, clocks: this.clocks,
      ...(this.lease ? { node: this.current.procId, onLeaseLost: (node: string) => this.replaceStaging(node) } : {}),
      onRotated: (seg) => {
        this.unsealed.set(seg.path, seg.readings);
        this.sealer.enqueue(seg);
        this.gauge();
      },
    }, this.options);
  }

  /** This process's staging area (a new one after a lease takeover). */
  get staging(): StagingArea {
    return this.current;
  }

  /** This node's id: its staging dir's name and, in cluster mode, its lease (a fresh one after a takeover). */
  get nodeId(): string {
    return this.current.procId;
  }

  private newStaging(): StagingArea {
    const lease = this.lease ? { ...this.lease, onFenced: (node: string) => { void this.committer.leaseLost(node); } } : null;
    return new StagingArea(this.d.dataDir, this.log, Date.now(), lease);
  }

  /**
   * The lease of `node` was taken over; the committer has abandoned its open segment. Register a
   * fresh node with a new staging dir; end the old lease (what is left in the old dir is claimable
   * at once, by us too) and look for orphans.
   */
  private async replaceStaging(node: string): Promise<{ dir: string; node: string }> {
    const old = this.current;
    old.abandon();
    this.log.error({ node }, 'this node\'s staging lease was taken over; going on under a fresh node id with a new staging dir (the old dir\'s segments are sealed by whoever claims them)');
    const next = this.newStaging();
    await next.open();
    this.current = next;
    this.metrics.leaseTakeovers.inc();
    for (const path of this.unsealed.keys()) if (path.startsWith(old.dir + sep)) this.unsealed.delete(path);
    this.gauge();
    this.log.warn({ from: node, node: next.procId }, 'ingest goes on under a fresh node id');
    void this.lease!.registry.end(node).catch(() => undefined)
      .then(() => (this.closing ? undefined : this.scan()))
      .catch((err) => this.log.error({ err }, 'staging scan failed'));
    return { dir: next.dir, node: next.procId };
  }

  /** Create the staging dir (and register its lease), adopt dead owners' segments (sealed in the background), start the scan timer. */
  async start(): Promise<void> {
    if (this.closing) throw new ClosedError('ingest is closed');
    if (this.started) return;
    this.started = true;
    const master = join(this.d.dataDir, 'master');
    await mkdir(master, { recursive: true });
    await mkdir(join(this.d.dataDir, 'tmp'), { recursive: true });
    await fsyncDir(this.d.dataDir);
    await this.current.open();
    await this.scan();
    const scanMs = this.lease ? Math.min(this.options.orphanScanMs, this.lease.leaseMs) : this.options.orphanScanMs;
    this.scanTimer = setInterval(() => { void this.scan().catch((err) => this.log.error({ err }, 'staging scan failed')); }, scanMs);
    this.scanTimer.unref();
    this.log.info({ procId: this.current.procId, ownership: this.current.ownership, options: this.options }, 'ingest started');
  }

  /** Adopt orphaned segments and queue every segment of ours that is neither open nor being sealed. */
  /** One scan at a time; close() waits for the one in flight (it may be moving a dead node's segments in). */
  private scan(): Promise<void> {
    this.scanning ??= this.scanOnce().finally(() => { this.scanning = null; });
    return this.scanning;
  }

  private async scanOnce(): Promise<void> {
    const staging = this.current;
    await staging.adoptOrphans();
    for (const seg of await staging.segments()) {
      if (this.committer.owns(seg.id) || this.sealer.has(seg.id)) continue;
      this.sealer.enqueue(seg);
    }
  }

  private gauge(): void {
    let n = this.committer.openReadings;
    for (const v of this.unsealed.values()) n += v;
    this.metrics.stagingReadings.set(n);
  }

  /** Store a validated batch; resolves with the ack once it is durable [INV-1]. */
  async submit(batch: IngestBatch): Promise<IngestAck> {
    if (!this.started || this.closing) throw new ClosedError('ingest is not running');
    const ack = await this.committer.submit(batch);
    this.gauge();
    return ack;
  }

  /** Seal the open segment now and wait for every pending seal (tests, operators, before a batch run). */
  async sealNow(): Promise<void> {
    await this.committer.rotateNow();
    await this.sealer.idle();
  }

  status(): IngestStatus {
    let unsealed = 0;
    for (const v of this.unsealed.values()) unsealed += v;
    return { procId: this.current.procId, openReadings: this.committer.openReadings, unsealedReadings: unsealed, sealing: this.unsealed.size };
  }

  /** Commit what is queued, seal the open segment, release the staging dir. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    if (this.scanTimer) clearInterval(this.scanTimer);
    if (!this.started) return;
    await this.scanning?.catch(() => undefined);
    await this.committer.close();
    await this.sealer.idle();
    // Segments whose seal failed earlier (the store was out of reach; retried by the scan only every
    // orphanScanMs) get one more try now, so a clean stop after an outage leaves nothing unsealed
    // when it can (found by test/cloud/cluster-faults.test.ts: a PostgreSQL restart, then SIGTERM).
    for (const seg of await this.staging.segments().catch(() => [])) this.sealer.enqueue(seg);
    await this.sealer.idle();
    await this.encoder.close();
    await this.current.close();
    this.log.info({ procId: this.current.procId }, 'ingest closed');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
