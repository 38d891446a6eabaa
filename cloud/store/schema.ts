/**
 * cloud.db: gateways and API keys, the ingest state (what is stored, what is sealed, epochs, gaps),
 * the master file catalog and the batch run history. See docs/cloud-storage.md. WAL and
 * synchronous=FULL: every ingest process and the batch job open it; SQLite's lock serialises
 * their writes (busy_timeout waits instead of failing).
 */
import { Db } from '../../shared/sqlite.js';

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
`;

/** Open cloud.db with its pragmas and schema (any process: ingest, batch, CLI). */
export async function openCloudDb(file: string): Promise<Db> {
  const db = await Db.open(file);
  await db.exec(`
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    PRAGMA busy_timeout = 15000;
  `);
  await db.exec(DDL);
  await db.run(`INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)`, [String(CLOUD_SCHEMA_VERSION)]);
  return db;
}
