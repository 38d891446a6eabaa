/**
 * The cloud's configuration: every key with its default and unit. Loaded by shared/config.ts
 * (defaults < file < BRAID_* env < flags); `braid cloud` runs with none of them given.
 *
 * Each key's `.describe()` (or `.meta()`) is its documentation, the one source of
 * docs/configuration.md (`node --import tsx bin/gen-config-docs.ts`); `secret: true` marks values
 * that `--check-config` never prints.
 */
import { join } from 'node:path';
import { z } from 'zod';
import { DEFAULT_LEASE_MS, MIN_LEASE_MS } from './store/nodes.js';

const port = z.number().int().min(0).max(65535);
const positive = z.number().int().positive();

export const cloudConfigSchema = z.object({
  dataDir: z.string().min(1).default('./.braid/cloud')
    .describe('Holds cloud.db, staging/, master/, views/ and tmp/ (docs/cloud-storage.md); created if missing. In cluster mode, the shared storage every node mounts (docs/scale-out.md).'),
  cacheDir: z.string().min(1).nullable().default(null)
    .describe('Node-local files: the compacted view copies for long ranges (cacheDir/views) and DuckDB\'s spill (cacheDir/duckdb); null keeps them in the data dir (dataDir/cache/views, dataDir/tmp/duckdb). In cluster mode set it to a local disk of each node, never the shared storage.'),
  store: z.object({
    url: z.string().default('sqlite').refine((v) => v === 'sqlite' || /^postgres(ql)?:\/\/[^\s]+$/i.test(v), 'must be "sqlite" or a postgres://user:password@host:port/database URL')
      .describe('Where the cloud keeps its transactional state: sqlite (dataDir/cloud.db, the embedded default) or a postgres:// URL (cluster mode, docs/cluster-store.md; its password is never printed). Every `braid cloud` node on one PostgreSQL store and one shared dataDir is a node of one cloud.'),
    leaseMs: z.number().int().min(MIN_LEASE_MS).default(DEFAULT_LEASE_MS)
      .describe('PostgreSQL store (cluster mode): each node holds a lease on its staging dir in the store, renewed every third of this many ms; once a node\'s lease has run out (by the database\'s clock) a live node claims its staging and seals it, and the old node\'s next group commit is refused (503) and it goes on under a fresh node id. Shorter: a dead node\'s acknowledged readings reach master/ sooner; longer: a pause or a slow store costs a takeover less often. Ignored with sqlite.'),
    poolMax: z.number().int().min(2).max(1000).default(10)
      .describe('PostgreSQL store: connections at most in a node\'s pool (the node holds one more for LISTEN and, during a batch run, one for the batch lock). Size PostgreSQL\'s max_connections for every node\'s (poolMax + 2), docs/scale-out.md. Ignored with sqlite.'),
    statementTimeoutMs: z.number().int().min(0).default(15_000)
      .describe('PostgreSQL store: the server cancels a statement that runs longer (statement_timeout), in ms; 0 for none. Ignored with sqlite.'),
  }).strict().prefault({}).describe('The cloud store.'),
  log: z.object({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info')
      .describe('Log level of the JSON log on stdout (pino).'),
  }).strict().prefault({}).describe('Logging.'),
  http: z.object({
    host: z.string().default('0.0.0.0').describe('Address the REST API binds (127.0.0.1 behind a reverse proxy on the same machine).'),
    port: port.default(8000).describe('REST API, ingest and console; 0 picks a free port.'),
  }).strict().prefault({}).describe('The REST API, ingest and the operator console.'),
  ingest: z.object({
    maxBodyBytes: positive.default(16 * 1024 * 1024).describe('Largest request body as sent (gzip), in bytes; larger is 413.'),
    maxInflatedBytes: positive.default(64 * 1024 * 1024).describe('Largest body after gunzip, in bytes; larger is 413.'),
    maxReadingsPerRequest: positive.default(100_000).describe('Most readings in one ingest request.'),
    groupCommitMs: z.number().int().min(0).default(2).describe('Requests arriving within this many ms share one fsync of the staging segment (group commit).'),
    sealMaxReadings: positive.default(1_000_000).describe('A staging segment is sealed into master Parquet once it holds this many readings, or is ingest.sealMaxAgeMs old.'),
    sealMaxAgeMs: positive.default(60_000).describe('A staging segment is sealed into master Parquet once it is this old, in ms.'),
    sealFromMemory: z.boolean().default(true)
      .describe('Keep the open staging segment\'s readings in memory as columns (about 45 bytes a reading, so up to ~45 MB at ingest.sealMaxReadings 1,000,000) and seal it from them, encoding in a worker thread, instead of reading the segment file back on the main thread. false: every seal reads its file. A segment left by a crash or claimed from another node is always read from its file.'),
    sealWorkerNice: z.number().int().min(0).max(19).default(10)
      .describe('Nice value of the worker thread that encodes sealed segments as Parquet (Linux; setpriority on that thread alone). Above 0, ingest requests on the main thread win a contended CPU core over a seal\'s encoding, which then takes longer (at 200,000 readings/s on 2 cores, 10 took the ingest p99 from 1.3 s to 0.5 s: docs/benchmarks.md); 0 leaves it at the process\'s priority.'),
    maxFutureMs: positive.default(300_000)
      .describe('Readings stamped more than this many ms after the cloud\'s clock are flagged: stored all the same, counted per gateway (braid_readings_future_total, GET /api/v1/gateways, the console) and warned about in the ingest answer.'),
  }).strict().prefault({}).describe('Ingest of gateway batches into the master dataset.'),
  batch: z.object({
    cron: z.string().nullable().default('0 2 * * *')
      .describe('node-cron schedule of the batch run, in UTC (5 fields, or 6 with seconds first); null runs none (use `braid batch run`).'),
    memoryLimit: z.string().regex(/^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/i, 'must be a size like 2GB').default('2GB')
      .describe('DuckDB memory_limit of a batch run, like 2GB; past it DuckDB spills to dataDir/tmp/duckdb (cacheDir/duckdb when cacheDir is set).'),
    threads: z.number().int().min(0).default(0).describe('Threads of a batch run in all (0 = one per core): two days built at once take one each and the DuckDB workers the rest; a run of one day gets them all.'),
    retainVersionsMs: positive.default(24 * 3600_000).describe('Superseded view versions are deleted this long after they stopped being live, in ms.'),
  }).strict().prefault({}).describe('The batch job that rebuilds the views.'),
  speed: z.object({
    staleAfterMs: positive.default(15_000).describe('A gateway whose last speed push is older than this is offline and its speed parts are provisional, in ms.'),
    maxPartialsPerRequest: positive.default(100_000).describe('Most partials accepted in one speed push.'),
  }).strict().prefault({}).describe('The cloud speed store (partials pushed by gateways).'),
  query: z.object({
    maxBuckets: positive.default(100_000).describe('Most buckets one query may answer.'),
    viewStore: z.enum(['parquet', 'influx']).default('parquet')
      .describe('Where the merged query reads batch views: the Parquet views, or InfluxDB (influx.*) once it holds them.'),
  }).strict().prefault({}).describe('The merged query, GET /api/v1/query.'),
  alerts: z.object({
    evalIntervalMs: z.number().int().min(100).default(15_000)
      .describe('How often the alert rules are evaluated on the merged answers, in ms (docs/alerts.md). In cluster mode one node evaluates at a time (an advisory lock in the store); the others skip their turn.'),
    alertmanagerUrl: z.url().nullable().default(null)
      .describe('Prometheus Alertmanager base URL (http://alertmanager:9093): firing and resolved alerts are posted to its v2 API (/api/v2/alerts); null sends none (alerts are still evaluated, recorded and listed).'),
    resendMs: z.number().int().min(1_000).default(60_000)
      .describe('A firing alert is sent to Alertmanager again this often, in ms, with endsAt four resends ahead; keep it well below Alertmanager\'s resolve_timeout (5m by default), as Prometheus does (1m).'),
    notifyTimeoutMs: z.number().int().min(100).default(5_000)
      .describe('Time one POST to Alertmanager may take, in ms; a failed or slow send is logged, counted and retried at the next evaluation, never holding the evaluation up longer.'),
    historyPerRule: z.number().int().min(1).max(100_000).default(1_000)
      .describe('Transitions kept per rule in the alert history (the newest; older ones are deleted as new ones are recorded).'),
    maxRules: z.number().int().min(1).max(100_000).default(10_000)
      .describe('Most rules in the rule set; a PUT /api/v1/alerts/rules with more is refused (400).'),
    consoleUrl: z.url().nullable().default(null)
      .describe('The console\'s external base URL (https://braid.example.com/), for the link in each alert sent to Alertmanager; null sends no link.'),
  }).strict().prefault({}).describe('Alert rules, their evaluation in the cloud and notifications to Alertmanager (docs/alerts.md).'),
  influx: z.object({
    url: z.url().nullable().default(null)
      .describe('InfluxDB base URL (http://influxdb:8086); null writes no InfluxDB views (Parquet views are always written).'),
    api: z.enum(['auto', 'v1', 'v2']).default('auto')
      .describe('Write API: auto reads /ping\'s X-Influxdb-Version (1.x before 1.8 gets the 1.x /write), v1 or v2 force one.'),
    token: z.string().nullable().default(null).meta({
      description: 'v2 API token with write access to influx.bucket. Better given as BRAID_INFLUX_TOKEN than in the file.',
      secret: true,
    }),
    org: z.string().default('braid').describe('v2 organization.'),
    bucket: z.string().default('braid').describe('v2 bucket the views are written to.'),
    database: z.string().default('braid').describe('v1 database (created if missing); with InfluxDB 1.8+ also the v2 bucket.'),
    username: z.string().nullable().default(null).describe('v1 user, if the server wants one.'),
    password: z.string().nullable().default(null).meta({
      description: 'v1 password of influx.username. Better given as BRAID_INFLUX_PASSWORD than in the file.',
      secret: true,
    }),
    batchSize: positive.default(5000).describe('Points per write request.'),
    timeoutMs: positive.default(30_000).describe('Time one write may take, in ms.'),
    maxRetries: z.number().int().min(0).default(5).describe('Attempts per batch before the sink\'s step fails (retried at the next run).'),
  }).strict().prefault({}).describe('The InfluxDB view sink (and reader, with query.viewStore = influx).'),
}).strict();

export type CloudConfig = z.infer<typeof cloudConfigSchema>;

/** The node-local dirs (cacheDir): the query's compacted views and DuckDB's spill of a batch run. */
export function localDirs(config: Pick<CloudConfig, 'dataDir' | 'cacheDir'>): { compactedViews: string; duckdbSpill: string } {
  return config.cacheDir
    ? { compactedViews: join(config.cacheDir, 'views'), duckdbSpill: join(config.cacheDir, 'duckdb') }
    : { compactedViews: join(config.dataDir, 'cache', 'views'), duckdbSpill: join(config.dataDir, 'tmp', 'duckdb') };
}
