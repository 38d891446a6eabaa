/**
 * cloud.db: gateways and API keys, the ingest state (what is stored, what is sealed, epochs, gaps),
 * the master file catalog and the batch run history. See docs/cloud-storage.md. WAL and
 * synchronous=FULL: every ingest process and the batch job open it; SQLite's lock serialises
 * their writes (busy_timeout waits instead of failing).
 */
import { Db, PARTIAL_COLUMNS_DDL, useWal } from '../../shared/sqlite.js';

export const CLOUD_SCHEMA_VERSION = 1;

const DDL = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;

-- A gateway may post to ingest with its token; only the SHA-256 of the token is kept.
CREATE TABLE IF NOT EXISTS gateways (
  id         TEXT PRIMARY KEY,
  token_hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- API keys for the REST API; role read or admin; only the SHA-256 of the key is kept.
CREATE TABLE IF NOT EXISTS api_keys (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  name       TEXT NOT NULL UNIQUE,
  role       TEXT NOT NULL CHECK (role IN ('read', 'admin')),
  key_hash   TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL
);

-- Seq ranges of each gateway stored durably (staged or sealed); merged, non-overlapping. [INV-2]
CREATE TABLE IF NOT EXISTS received (
  gateway  TEXT    NOT NULL,
  from_seq INTEGER NOT NULL,
  to_seq   INTEGER NOT NULL,
  PRIMARY KEY (gateway, from_seq)
) WITHOUT ROWID;

-- Seq ranges of each gateway in sealed Parquet files (a subset of received); merged.
CREATE TABLE IF NOT EXISTS sealed (
  gateway  TEXT    NOT NULL,
  from_seq INTEGER NOT NULL,
  to_seq   INTEGER NOT NULL,
  PRIMARY KEY (gateway, from_seq)
) WITHOUT ROWID;

-- Seq ranges held by each unsealed staging segment (a subset of received; merged per segment and
-- gateway). A line of a segment file counts only if its seq is here: a line written and fsynced by a
-- group commit whose transaction then failed is not, so a later seal or recovery stores it once at
-- most [INV-2]. Rows go when the segment is sealed, in the transaction that adds to sealed.
CREATE TABLE IF NOT EXISTS staged (
  segment  TEXT    NOT NULL,
  gateway  TEXT    NOT NULL,
  from_seq INTEGER NOT NULL,
  to_seq   INTEGER NOT NULL,
  PRIMARY KEY (segment, gateway, from_seq)
) WITHOUT ROWID;

-- Closed epochs, as the gateways report them.
CREATE TABLE IF NOT EXISTS epochs (
  gateway   TEXT    NOT NULL,
  epoch     INTEGER NOT NULL,
  first_seq INTEGER NOT NULL,
  last_seq  INTEGER NOT NULL,
  PRIMARY KEY (gateway, epoch)
) WITHOUT ROWID;

-- Readings a gateway dropped at its disk budget (gap records), shown to the operator.
CREATE TABLE IF NOT EXISTS gaps (
  gateway     TEXT    NOT NULL,
  id          INTEGER NOT NULL,
  reason      TEXT    NOT NULL,
  from_seq    INTEGER NOT NULL,
  to_seq      INTEGER NOT NULL,
  count       INTEGER NOT NULL,
  min_ts      INTEGER NOT NULL,
  max_ts      INTEGER NOT NULL,
  devices     TEXT    NOT NULL,
  received_at INTEGER NOT NULL,
  PRIMARY KEY (gateway, id)
) WITHOUT ROWID;

-- Seq holes seen at ingest (a batch starting above the next expected seq with no gap record).
CREATE TABLE IF NOT EXISTS seq_gaps (
  gateway  TEXT    NOT NULL,
  from_seq INTEGER NOT NULL,
  to_seq   INTEGER NOT NULL,
  seen_at  INTEGER NOT NULL,
  PRIMARY KEY (gateway, from_seq)
) WITHOUT ROWID;

-- The catalog of master files (paths relative to the data dir).
CREATE TABLE IF NOT EXISTS files (
  path       TEXT PRIMARY KEY,
  day        TEXT    NOT NULL,
  rows       INTEGER NOT NULL,
  bytes      INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_day ON files (day);

CREATE TABLE IF NOT EXISTS file_gateways (
  path      TEXT    NOT NULL,
  gateway   TEXT    NOT NULL,
  min_seq   INTEGER NOT NULL,
  max_seq   INTEGER NOT NULL,
  min_epoch INTEGER NOT NULL,
  max_epoch INTEGER NOT NULL,
  rows      INTEGER NOT NULL,
  PRIMARY KEY (path, gateway)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS file_gateways_epoch ON file_gateways (gateway, max_epoch);

-- Batch run history (GET /api/v1/batch).
CREATE TABLE IF NOT EXISTS batch_runs (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  kind        TEXT    NOT NULL,          -- incremental | full
  trigger     TEXT    NOT NULL,          -- cron | cli | api
  started_at  INTEGER NOT NULL,
  ended_at    INTEGER,
  outcome     TEXT    NOT NULL,          -- running | ok | failed
  rows_read   INTEGER,
  partitions  INTEGER,
  version     INTEGER,
  watermark   TEXT,                      -- JSON {gateway: epoch}
  sinks       TEXT,                      -- JSON {sink: {outcome, points, error}}
  error       TEXT
);

-- Speed partials pushed by the gateways (docs/serving.md): the summary of one device's metric in
-- one minute of event time for the readings of one epoch. Only epochs above the live manifest's
-- E[gateway] matter; those at or below it are pruned once that manifest is live.
CREATE TABLE IF NOT EXISTS speed_partials (
  gateway     TEXT    NOT NULL,
  ${PARTIAL_COLUMNS_DDL},
  received_at INTEGER NOT NULL,
  PRIMARY KEY (gateway, device, metric, minute, epoch)
) WITHOUT ROWID;
-- The merged query: one device's metric over a time range, or every device's (gateway, fleet).
CREATE INDEX IF NOT EXISTS speed_partials_device ON speed_partials (device, metric, minute);
CREATE INDEX IF NOT EXISTS speed_partials_metric ON speed_partials (metric, minute);

-- Per gateway, the epoch up to which speed partials were pruned: a push of an older partial (sent
-- before the gateway learnt the watermark) is dropped instead of stored again [INV-3].
CREATE TABLE IF NOT EXISTS speed_pruned (
  gateway TEXT    PRIMARY KEY,
  epoch   INTEGER NOT NULL
) WITHOUT ROWID;

-- The registry: each gateway's last speed push (its heartbeat), health document and connected devices.
CREATE TABLE IF NOT EXISTS gateway_status (
  gateway      TEXT    PRIMARY KEY,
  last_push_at INTEGER NOT NULL,
  sent_at      INTEGER,
  health       TEXT    NOT NULL,          -- JSON: the gateway's GET /api/v1/health document
  connected    TEXT    NOT NULL,          -- JSON array of the device ids connected to it
  pushes       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- The registry: every device a gateway reported (in a speed partial or as connected).
CREATE TABLE IF NOT EXISTS devices (
  id         TEXT    PRIMARY KEY,
  gateway    TEXT    NOT NULL,          -- the gateway that reported it last
  first_seen INTEGER NOT NULL,
  last_seen  INTEGER NOT NULL,
  metrics    TEXT    NOT NULL           -- JSON array of metric names, sorted
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS devices_gateway ON devices (gateway);
-- The console's devices page sorted by last seen (GET /api/v1/devices?sort=lastSeen); PostgreSQL's migration 4.
CREATE INDEX IF NOT EXISTS devices_last_seen ON devices (last_seen);

-- Each gateway's clock as the cloud sees it (cloud/ingest/clock.ts): the offset of its sentAt from
-- the cloud's receive time (the max over a recent window; written by ingest and speed pushes), and
-- the readings it sent stamped more than ingest.maxFutureMs ahead of the cloud's clock (stored, counted).
CREATE TABLE IF NOT EXISTS gateway_clock (
  gateway         TEXT    PRIMARY KEY,
  offset_ms       INTEGER,
  offset_at       INTEGER,
  future_readings INTEGER NOT NULL DEFAULT 0,
  future_device   TEXT,
  future_metric   TEXT,
  future_ts       INTEGER,
  future_at       INTEGER
) WITHOUT ROWID;

-- Alerts (cloud/store/alerts.ts, docs/alerts.md): the rule set as PUT /api/v1/alerts/rules gave it
-- (one row per rule, in order; definition is its JSON), each alert's state (a rule at one scope:
-- device:<id>, gateway:<id> or fleet) with what Alertmanager last accepted, and the transitions,
-- the newest alerts.historyPerRule per rule. Times in ms since the epoch.
CREATE TABLE IF NOT EXISTS alert_rules (
  name       TEXT    PRIMARY KEY,
  position   INTEGER NOT NULL,
  definition TEXT    NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS alert_states (
  rule           TEXT    NOT NULL,
  scope          TEXT    NOT NULL,
  state          TEXT    NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
  since          INTEGER NOT NULL,
  value          REAL,
  active_since   INTEGER,
  clearing_since INTEGER,
  sent_state     TEXT,
  sent_at        INTEGER,
  PRIMARY KEY (rule, scope)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS alert_history (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  rule       TEXT    NOT NULL,
  scope      TEXT    NOT NULL,
  from_state TEXT,
  to_state   TEXT    NOT NULL,
  at         INTEGER NOT NULL,
  value      REAL
);
CREATE INDEX IF NOT EXISTS alert_history_rule ON alert_history (rule, id);
-- The history of one device or gateway (GET /api/v1/alerts/history?device=), newest first; PostgreSQL's migration 7.
CREATE INDEX IF NOT EXISTS alert_history_scope ON alert_history (scope, id);

-- Transitions raised by gateways (POST /api/v1/ingest/alerts), each once by (gateway, id):
-- committed before the 2xx, merged into alert_states and alert_history by the next evaluation
-- round (applied = 1 in that round's transaction), then kept a week for the re-sends' idempotency.
CREATE TABLE IF NOT EXISTS alert_intake (
  gateway     TEXT    NOT NULL,
  id          TEXT    NOT NULL,
  rule        TEXT    NOT NULL,
  device      TEXT    NOT NULL,
  from_state  TEXT,
  to_state    TEXT    NOT NULL,
  at          INTEGER NOT NULL,
  value       REAL,
  received_at INTEGER NOT NULL,
  applied     INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (gateway, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alert_intake_pending ON alert_intake (applied, received_at);
`;

/** Open cloud.db with its pragmas and schema (any process: ingest, batch, CLI). */
export async function openCloudDb(file: string): Promise<Db> {
  const db = await Db.open(file);
  // One statement at a time on the connection. In node-sqlite3's parallel mode a get() leaves its
  // statement active (a read transaction open) until its finalize, and a write another caller
  // queued on the same connection meanwhile ran inside it: once any other connection had committed
  // since, SQLite answered SQLITE_BUSY at once (the snapshot cannot be upgraded; no busy wait
  // helps). A batch run's progress update on the batch connection, beside a lastSuccessAt() or
  // getMeta() of another caller, failed the run that way (test/cloud/oracle.test.ts and the
  // console's batch test in CI; test/cloud/store-batch.test.ts).
  db.raw.serialize();
  await useWal(db, 15_000);
  await db.exec('PRAGMA synchronous = FULL');
  await db.exec(DDL);
  await db.run(`INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)`, [String(CLOUD_SCHEMA_VERSION)]);
  return db;
}
