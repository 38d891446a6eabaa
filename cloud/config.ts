/**
 * The cloud's configuration: every key with its default and unit. Loaded by shared/config.ts
 * (defaults < file < BRAID_* env < flags); `braid cloud` runs with none of them given.
 */
import { z } from 'zod';

const port = z.number().int().min(0).max(65535);
const positive = z.number().int().positive();

export const cloudConfigSchema = z.object({
  /** Holds cloud.db, staging/, master/, views/ (docs/cloud-storage.md). */
  dataDir: z.string().min(1).default('./.braid/cloud'),
  log: z.object({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  }).strict().prefault({}),
  http: z.object({
    host: z.string().default('0.0.0.0'),
    /** REST API, ingest and console; 0 picks a free port. */
    port: port.default(8000),
  }).strict().prefault({}),
  ingest: z.object({
    /** Largest request body as sent (gzip), in bytes; larger is 413. */
    maxBodyBytes: positive.default(16 * 1024 * 1024),
    /** Largest body after gunzip, in bytes; larger is 413. */
    maxInflatedBytes: positive.default(64 * 1024 * 1024),
    /** Most readings in one request. */
    maxReadingsPerRequest: positive.default(100_000),
    /** Requests arriving within this many ms share one fsync of the staging segment (group commit). */
    groupCommitMs: z.number().int().min(0).default(2),
    /** A staging segment is sealed into Parquet once it holds this many readings... */
    sealMaxReadings: positive.default(1_000_000),
    /** ...or is this old, in ms. */
    sealMaxAgeMs: positive.default(60_000),
  }).strict().prefault({}),
  batch: z.object({
    /** node-cron schedule of the nightly batch run, UTC; null runs none (use `braid batch run`). */
    cron: z.string().nullable().default('0 2 * * *'),
    /** DuckDB memory_limit; past it DuckDB spills to dataDir/tmp. */
    memoryLimit: z.string().regex(/^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/i, 'must be a size like 2GB').default('2GB'),
    /** DuckDB threads (0 = one per core). */
    threads: z.number().int().min(0).default(0),
    /** Superseded view versions are deleted this long after they stopped being live, in ms. */
    retainVersionsMs: positive.default(24 * 3600_000),
  }).strict().prefault({}),
  speed: z.object({
    /** A gateway whose last speed push is older than this is offline; its speed parts are provisional. In ms. */
    staleAfterMs: positive.default(15_000),
    /** Most partials accepted in one speed push. */
    maxPartialsPerRequest: positive.default(100_000),
  }).strict().prefault({}),
  query: z.object({
    /** Most buckets one query may answer. */
    maxBuckets: positive.default(100_000),
    /** Where batch views are read from: the Parquet views, or InfluxDB (influx.*) when it holds them. */
    viewStore: z.enum(['parquet', 'influx']).default('parquet'),
  }).strict().prefault({}),
  influx: z.object({
    /** InfluxDB base URL; null writes no InfluxDB views (Parquet views are always written). */
    url: z.url().nullable().default(null),
    /** Protocol: auto reads /ping's X-Influxdb-Version (1.x before 1.8 gets the 1.x /write). */
    api: z.enum(['auto', 'v1', 'v2']).default('auto'),
    /** v2: token, org and bucket. */
    token: z.string().nullable().default(null),
    org: z.string().default('braid'),
    bucket: z.string().default('braid'),
    /** v1: database (created if missing), and credentials if the server wants them. */
    database: z.string().default('braid'),
    username: z.string().nullable().default(null),
    password: z.string().nullable().default(null),
    /** Points per write request. */
    batchSize: positive.default(5000),
    /** Time one write may take, in ms. */
    timeoutMs: positive.default(30_000),
    /** Attempts per batch before the sink's step fails (retried at the next run). */
    maxRetries: z.number().int().min(0).default(5),
  }).strict().prefault({}),
}).strict();

export type CloudConfig = z.infer<typeof cloudConfigSchema>;
