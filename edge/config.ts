/**
 * The gateway's configuration: every key with its default and unit. Loaded by shared/config.ts
 * (defaults < file < BRAID_* env < flags); `braid gateway` runs with none of them given.
 */
import { hostname } from 'node:os';
import { z } from 'zod';

const port = z.number().int().min(0).max(65535);
const positive = z.number().int().positive();
const idPattern = /^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$/;

/** Device and gateway ids: 1-64 of [A-Za-z0-9_.-], so they are one MQTT topic level and safe in paths. */
export const idSchema = z.string().regex(idPattern, 'must be 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit');

export function defaultGatewayId(): string {
  const h = hostname().replace(/[^A-Za-z0-9_.\-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 60);
  return `gw-${h || 'local'}`.slice(0, 64);
}

export const gatewayConfigSchema = z.object({
  /** Gateway id, unique in the fleet (default: gw-<hostname>). */
  id: idSchema.default(defaultGatewayId()),
  /** Where the gateway keeps gateway.db and registry.db. */
  dataDir: z.string().min(1).default('./.braid/gateway'),
  log: z.object({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  }).strict().prefault({}),
  mqtt: z.object({
    /** Address the MQTT listeners bind. */
    host: z.string().default('0.0.0.0'),
    /** MQTT over TCP; 0 picks a free port. */
    port: port.default(1883),
    /** MQTT over WebSocket (path /mqtt); null turns it off. */
    wsPort: port.nullable().default(null),
    /** MQTT over TLS; null turns it off. Needs tlsCert and tlsKey. */
    tlsPort: port.nullable().default(null),
    tlsCert: z.string().nullable().default(null),
    tlsKey: z.string().nullable().default(null),
    /** Time a new connection has to send CONNECT, in ms. */
    connectTimeoutMs: positive.default(10_000),
    /** Longest keepalive a device may ask for, in seconds (0 = any). */
    keepaliveMaxSeconds: z.number().int().min(0).default(1200),
    /** Largest MQTT packet accepted, in bytes; a larger one closes the connection. */
    maxPacketBytes: positive.default(256 * 1024),
    /** Most topic levels in a topic. */
    maxTopicLevels: positive.default(8),
    /** Longest client id (= device id). */
    maxClientIdLength: positive.default(64),
    /** Time to wait for a slow client to drain its socket before closing it, in ms. */
    drainTimeoutMs: positive.default(30_000),
    /** Packets queued per client before its CONNECT is handled. */
    queueLimit: positive.default(42),
    /** Messages per second a device may publish, sustained. */
    ratePerDevice: positive.default(100),
    /** Burst above the sustained rate a device may publish at once. */
    rateBurst: positive.default(200),
    /** Largest telemetry payload, in bytes. */
    maxPayloadBytes: positive.default(64 * 1024),
    /** Most readings in one message. */
    maxReadingsPerMessage: positive.default(1000),
  }).strict().prefault({}),
  http: z.object({
    host: z.string().default('0.0.0.0'),
    /** Local REST API (windows, health, metrics); 0 picks a free port. */
    port: port.default(8080),
  }).strict().prefault({}),
  outbox: z.object({
    /**
     * Readings arriving within this many ms share one SQLite transaction (group commit); 0 commits on
     * the next turn of the event loop, and what arrives during a commit forms the next group.
     */
    groupCommitMs: z.number().int().min(0).default(0),
    /** Most readings in one group commit. */
    maxBatchReadings: positive.default(20_000),
    /** Readings waiting for a commit before new ones are refused (counted). */
    maxQueuedReadings: positive.default(200_000),
    /** An epoch closes after this long, in ms. */
    epochMs: positive.default(60_000),
    /** An epoch closes once no reading has arrived for this long, in ms. */
    epochIdleMs: positive.default(2_000),
    /** Disk budget for unsent readings, in bytes; past it the oldest are dropped and a gap recorded. */
    maxBytes: positive.default(1024 * 1024 * 1024),
    /** How long an identity is remembered for dedup, in ms. */
    dedupWindowMs: positive.default(24 * 3600_000),
    /** Most quarantined payloads kept. */
    quarantineMaxRows: positive.default(10_000),
  }).strict().prefault({}),
  speed: z.object({
    /**
     * Partials older than this (event minute) are pruned, in minutes; must cover the 24h window.
     * With a cloud, only once pushed or covered by its views (a late reading's partial reaches it).
     */
    retentionMinutes: positive.min(1441).default(25 * 60),
    /** node-cron schedule of the retention job. */
    pruneCron: z.string().default('*/5 * * * *'),
    /** How often the speed partials changed since the last push go to the cloud, in ms. */
    pushIntervalMs: positive.default(2_000),
    /** Most partials in one speed push. */
    pushMaxPartials: positive.default(20_000),
  }).strict().prefault({}),
  cloud: z.object({
    /** Cloud base URL (http://host:port); null keeps everything in the outbox. */
    url: z.url().nullable().default(null),
    /** The gateway token (`braid cloud gateway add`). */
    token: z.string().nullable().default(null),
    /** Most readings in one ingest request. */
    batchMaxReadings: positive.default(5_000),
    /** Time an ingest request may take, in ms. */
    requestTimeoutMs: positive.default(30_000),
    /** First retry delay, in ms; doubles up to retryMaxMs, with jitter. */
    retryInitialMs: positive.default(500),
    retryMaxMs: positive.default(60_000),
  }).strict().prefault({}),
}).strict();

export type GatewayConfig = z.infer<typeof gatewayConfigSchema>;
