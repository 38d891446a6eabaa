/**
 * The gateway's configuration: every key with its default and unit. Loaded by shared/config.ts
 * (defaults < file < BRAID_* env < flags); `braid gateway` runs with none of them given.
 *
 * Each key's `.describe()` (or `.meta()`) is its documentation, the one source of
 * docs/configuration.md (`node --import tsx bin/gen-config-docs.ts`); `secret: true` marks values
 * that `--check-config` never prints, `docDefault` a default that depends on the machine.
 */
import { hostname } from 'node:os';
import { z } from 'zod';
import { cloudUrlsProblem, splitCloudUrls } from './cloudclient/index.js';

const port = z.number().int().min(0).max(65535);
const positive = z.number().int().positive();
const idPattern = /^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$/;

/** Device and gateway ids: 1-64 of [A-Za-z0-9_.-], so they are one MQTT topic level and safe in paths. */
export const idSchema = z.string().regex(idPattern, 'must be 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit');

export function defaultGatewayId(): string {
  const h = hostname().replace(/[^A-Za-z0-9_.\-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 60);
  return `gw-${h || 'local'}`.slice(0, 64);
}

/**
 * `cloud.url`: one URL, or the nodes of one cloud as a comma-separated string (flag, environment,
 * file) or a JSON array (file). Parsed to the comma-separated form, so a single URL stays the
 * string it was; edge/cloudclient's splitCloudUrls gives the list.
 */
const cloudUrlSchema = z.union([z.string(), z.array(z.string())]).nullable().default(null)
  .superRefine((v, ctx) => {
    if (v === null) return;
    const problem = Array.isArray(v) && v.length === 0 ? 'an empty list (null keeps everything in the outbox)' : cloudUrlsProblem(splitCloudUrls(v));
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  })
  .transform((v) => (v === null ? null : splitCloudUrls(v).join(',')));

export const gatewayConfigSchema = z.object({
  id: idSchema.default(defaultGatewayId()).meta({
    description: 'Gateway id, unique in the fleet: 1-64 of A-Z a-z 0-9 _ . - (the cloud registers it with `braid cloud gateway add`).',
    docDefault: 'gw-<hostname>',
  }),
  dataDir: z.string().min(1).default('./.braid/gateway')
    .describe('Where the gateway keeps gateway.db (outbox, speed layer, quarantine) and registry.db (devices); created if missing.'),
  log: z.object({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info')
      .describe('Log level of the JSON log on stdout (pino).'),
  }).strict().prefault({}).describe('Logging.'),
  mqtt: z.object({
    host: z.string().default('0.0.0.0').describe('Address the MQTT listeners (TCP, WebSocket, TLS) bind.'),
    port: port.default(1883).describe('MQTT over TCP; 0 picks a free port.'),
    wsPort: port.nullable().default(null).describe('MQTT over WebSocket (path /mqtt); null turns it off.'),
    tlsPort: port.nullable().default(null).describe('MQTT over TLS (usually 8883); null turns it off. Needs mqtt.tlsCert and mqtt.tlsKey.'),
    tlsCert: z.string().nullable().default(null).describe('Path of the PEM certificate (chain) of the TLS listener.'),
    tlsKey: z.string().nullable().default(null).describe('Path of the PEM private key of the TLS listener; readable by the gateway\'s user only.'),
    connectTimeoutMs: positive.default(10_000).describe('Time a new connection has to send CONNECT, in ms.'),
    keepaliveMaxSeconds: z.number().int().min(0).default(1200).describe('Longest keepalive a device may ask for, in seconds (0 = any).'),
    maxPacketBytes: positive.default(256 * 1024).describe('Largest MQTT packet accepted, in bytes; a larger one closes the connection (counted).'),
    maxTopicLevels: positive.default(8).describe('Most topic levels in a topic.'),
    maxClientIdLength: positive.default(64).describe('Longest client id (= device id).'),
    drainTimeoutMs: positive.default(30_000).describe('Time to wait for a slow client to drain its socket before closing it, in ms.'),
    queueLimit: positive.default(42).describe('Packets queued per client before its CONNECT is handled.'),
    ratePerDevice: positive.default(100).describe('Messages per second a device may publish, sustained; above it the gateway stops reading its socket for a moment.'),
    rateBurst: positive.default(200).describe('Burst above the sustained rate a device may publish at once.'),
    maxUnackedPerDevice: z.number().int().min(0).default(0).describe(
      'Acknowledge telemetry out of band: up to this many messages (QoS 0 and 1) of one device read off its socket while they wait for their commit, their PUBACKs sent in order once committed; past it the device\'s socket is paused until its oldest is committed. 0 (the default): each socket read\'s messages are committed before the next read, and aedes writes the PUBACKs. Out of band measured slower at mosquitto_pub\'s default window on a loaded 2-core machine (docs/benchmarks.md, 2026-12-06).',
    ),
    maxPayloadBytes: positive.default(64 * 1024).describe('Largest telemetry payload, in bytes; a larger one is quarantined (counted).'),
    maxReadingsPerMessage: positive.default(1000).describe('Most readings in one message (a SenML pack or a flat object).'),
    authConcurrency: positive.default(2).describe(
      'Operator-chosen device secrets checked (scrypt) at once. The hash runs on the libuv thread pool, which SQLite commits share; a generated secret (salted SHA-256) or a remembered chosen one (a device reconnecting with the secret that verified before) needs none.',
    ),
    authQueueMax: z.number().int().min(0).default(10_000).describe(
      'CONNECTs waiting for a secret check before more are refused with CONNACK 3 (server unavailable; counted). Room for a whole fleet coming back after a gateway restart; a CONNECT whose client gave up waiting is skipped, not hashed.',
    ),
    authBackoffAfterFailures: positive.default(3).describe('Wrong secrets for one client id before its next CONNECTs are refused without a check (CONNACK 3, counted) for a while.'),
    authBackoffAfterAddressFailures: positive.default(10).describe('Wrong secrets from one address before its next CONNECTs are refused without a check; higher than per client id since devices behind one NAT share an address.'),
    authBackoffInitialMs: positive.default(1000).describe('First wait after those failures, in ms; doubles with each further failure.'),
    authBackoffMaxMs: positive.default(60_000).describe('Longest wait, in ms; a client id or address is forgotten 2 x this after its last failure, a client id at once when it verifies.'),
    authTrackedMax: positive.default(10_000).describe('Client ids and addresses whose failures are remembered, at most (the oldest are forgotten first).'),
    revocationCheckMs: positive.default(1000).describe('How often the device registry is checked for removed or rotated devices (`braid device remove|rotate`), in ms; their live sessions are closed (counted).'),
  }).strict().prefault({}).describe('The MQTT broker devices connect to.'),
  http: z.object({
    host: z.string().default('127.0.0.1').describe(
      'Address the local REST API binds. It has no authentication (windows, health, metrics), so loopback by default; 0.0.0.0 (or one interface\'s address) exposes it to the network, e.g. for a Prometheus on another host.',
    ),
    port: port.default(8080).describe('Local REST API (windows, health, metrics); 0 picks a free port.'),
  }).strict().prefault({}).describe('The local REST API.'),
  outbox: z.object({
    groupCommitMs: z.number().int().min(0).default(25).describe(
      'Longest wait, in ms, for more readings to share one SQLite transaction (group commit) and its fsync: a device\'s PUBACK waits at most this long beyond the commit. It is not taken while a queued message comes from a device keeping a window of QoS 1 messages in flight (which sends more only after their PUBACKs), nor once 256 readings are queued; what arrives during a commit forms the next group. Devices that each send one message at a time share commits only through it: with 0 (commit on the next turn of the event loop) a fleet of them gets a commit, and its pages written to the disk, for every message or two.',
    ),
    refillWaitMs: z.number().int().min(0).default(1).describe(
      'Longest wait, in ms, before the next group commit for each device the last one acknowledged several messages of (a publisher that keeps a window of QoS 1 messages in flight) to send again, so that many devices\' windows share one commit and one fsync instead of each taking a commit of its own; 0 does not wait. Devices that sent one message are not waited for.',
    ),
    commitLog: z.boolean().default(true).describe(
      'A group of fresh readings of up to 512 (whose record, ~40 B a reading, takes at most 16 KiB: devices keeping windows of QoS 1 messages in flight, a fleet\'s readings gathered by the linger) is durable, and its PUBACKs go, once written to the commit log (`commit.log` in the data dir: one write of its pages with O_DSYNC); it goes into gateway.db afterwards, many groups in one transaction, within 250 ms (at once for the local REST API\'s windows and the speed push). Other groups (larger ones, repeats, new series, old timestamps, quarantined payloads) commit in gateway.db as before. false: every group commits in gateway.db before its PUBACKs (a log left by an earlier run is still replayed when the gateway starts).',
    ),
    maxBatchReadings: positive.default(20_000).describe('Most readings in one group commit.'),
    maxQueuedReadings: positive.default(200_000).describe('Readings waiting for a commit before new ones are refused (counted).'),
    epochMs: positive.default(60_000).describe('Epochs close on the clock\'s multiples of this many ms (12:01:00, 12:02:00, ... with the default minute, UTC), so one spans at most this long.'),
    epochIdleMs: positive.default(2_000).describe('An epoch closes once no reading has arrived for this long, in ms.'),
    maxBytes: positive.default(1024 * 1024 * 1024).describe('Disk budget for unsent readings, in bytes; past it the oldest are dropped and a gap record goes to the cloud.'),
    minFreeBytes: z.number().int().min(0).default(256 * 1024 * 1024).describe(
      'Free space to keep on the data dir\'s filesystem, in bytes (free blocks plus gateway.db\'s free pages); below it the oldest unsent readings are dropped, as past outbox.maxBytes, with a gap record to the cloud (counted as reason disk_floor), down to 10% above it. A full disk fails every commit, refusing the newest readings; 256 MiB leaves SQLite room for its WAL and checkpoints and the speed layer room to grow. 0 turns it off.',
    ),
    dedupWindowMs: positive.default(24 * 3600_000).describe('How long a reading\'s identity (device, metric, ts) is remembered to drop repeats, in ms.'),
    quarantineMaxRows: positive.default(10_000).describe('Most quarantined payloads kept (the oldest go first).'),
  }).strict().prefault({}).describe('The durable outbox (SQLite WAL) of readings not yet acknowledged by the cloud.'),
  speed: z.object({
    retentionMinutes: positive.min(1441).default(25 * 60).describe(
      'Speed partials older than this (event minute) are pruned, in minutes; must cover the 24h window. With a cloud, only once pushed or covered by its views (a late reading\'s partial reaches it).',
    ),
    pruneCron: z.string().default('*/5 * * * *').describe('node-cron schedule of the retention job (5 fields, or 6 with seconds first).'),
    pushIntervalMs: positive.default(1_000).describe('How often the speed partials changed since the last push go to the cloud, in ms, start to start (a slow push is followed at once).'),
    pushMaxPartials: positive.default(20_000).describe('Most partials in one speed push.'),
    retryMaxMs: positive.default(2_000).describe(
      'Longest retry delay of a failing speed push while the cloud does not answer (down, 5xx, timeout), in ms; cloud.retryMaxMs when that is shorter. The push is small and idempotent, so it probes an absent cloud this often and the newest readings show in the merged query within about this long of its return, whatever the length of the outage. A Retry-After or a refusal (400, 401, 403) still waits up to cloud.retryMaxMs.',
    ),
  }).strict().prefault({}).describe('The speed layer: 1-minute partials behind the rolling windows.'),
  cloud: z.object({
    url: cloudUrlSchema.meta({
      description: 'Cloud base URL (https://host[:port]); null keeps everything in the outbox. Several URLs, comma-separated (or a JSON array in the file), are the nodes of one cloud: requests go to the first that answers, fail over to the next when a node does not answer or answers 5xx, and go back to an earlier node once it answers a probe (cloud.probeIntervalMs).',
      docType: 'URL[,URL...] or array of URLs or null',
    }),
    token: z.string().nullable().default(null).meta({
      description: 'The gateway token (printed by `braid cloud gateway add`); needed with cloud.url (or cloud.tokenFile). Better given as BRAID_CLOUD_TOKEN than in the file; a --token flag shows in `ps`.',
      secret: true,
    }),
    tokenFile: z.string().min(1).nullable().default(null).describe(
      'Path of a file holding the gateway token (instead of cloud.token; trailing newline ignored), e.g. a systemd credential: the token stays out of the config, the environment and `ps`. Refused if other users can read it.',
    ),
    batchMaxReadings: positive.default(5_000).describe('Most readings in one ingest request.'),
    lingerMs: z.number().int().min(0).default(200).describe(
      'How long the forwarder holds a batch short of cloud.batchMaxReadings for more readings, in ms: one ingest request per lingerMs instead of one per outbox commit. A full batch goes at once; 0 sends after every commit. Delays only the master dataset, not the speed layer.',
    ),
    requestTimeoutMs: positive.default(30_000).describe('Time an ingest request may take, in ms.'),
    retryInitialMs: positive.default(500).describe('First retry delay, in ms; doubles up to cloud.retryMaxMs, with jitter.'),
    retryMaxMs: positive.default(60_000).describe('Longest retry delay, in ms.'),
    probeIntervalMs: positive.default(30_000).describe(
      'With several cloud.url nodes: while requests go to another than the first, how often the nodes before it are probed (GET /healthz), in ms; the first that answers is used again.',
    ),
  }).strict().prefault({}).describe('Forwarding to the cloud.'),
  alerts: z.object({
    evalIntervalMs: positive.default(1_000).describe(
      'How often the device rules the cloud sent (with its speed-push answers) are evaluated on this gateway\'s windows, in ms; a transition is published to the device on devices/{id}/alerts and kept for the cloud.',
    ),
    maxPendingTransitions: positive.default(10_000).describe(
      'Alert transitions kept in gateway.db while the cloud does not acknowledge them; past it the oldest are dropped (counted in braid_gateway_alert_transitions_dropped_total).',
    ),
  }).strict().prefault({}).describe('Device alert rules evaluated at the gateway (docs/alerts.md, "At the gateway").'),
}).strict();

export type GatewayConfig = z.infer<typeof gatewayConfigSchema>;
