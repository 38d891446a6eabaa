/**
 * The gateway's database (`<data-dir>/gateway.db`): outbox, epochs, speed partials, dedup
 * identities, quarantine and gap records. WAL with synchronous=FULL: a commit is on disk when
 * COMMIT returns, so a PUBACK sent after it survives a power loss [INV-1].
 */
import { Db, useWal } from '../../shared/sqlite.js';

export const GATEWAY_SCHEMA_VERSION = 1;

/** meta key holding the highest seq the cloud has acknowledged; rows at or below it are gone. */
export const ACKED_SEQ_KEY = 'acked_seq';

const DDL = `
CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;

-- Every accepted reading, in seq order, until the cloud acknowledges it.
-- seq is contiguous per gateway; epoch is the span of seq it belongs to.
CREATE TABLE IF NOT EXISTS outbox (
  seq    INTEGER PRIMARY KEY,
  epoch  INTEGER NOT NULL,
  device TEXT    NOT NULL,
  metric TEXT    NOT NULL,
  ts     INTEGER NOT NULL,
  value  REAL    NOT NULL
);

-- first_seq..last_seq of each epoch; closed_at is set when the gateway closes it (no more seq).
-- The row is written when the epoch opens and when it closes: while open, last_seq is the first
-- commit's (the gateway keeps the current one in memory; a restart recovers it, committer.ts).
-- reported = 1 once the cloud has acknowledged the closed epoch.
CREATE TABLE IF NOT EXISTS epochs (
  epoch     INTEGER PRIMARY KEY,
  first_seq INTEGER NOT NULL,
  last_seq  INTEGER NOT NULL,
  opened_at INTEGER NOT NULL,
  closed_at INTEGER,
  reported  INTEGER NOT NULL DEFAULT 0
);

-- Speed partials: the summary (shared/summary.ts) of one device's metric in one minute of
-- event time, for the readings of one epoch.
CREATE TABLE IF NOT EXISTS partials (
  device    TEXT    NOT NULL,
  metric    TEXT    NOT NULL,
  minute    INTEGER NOT NULL,
  epoch     INTEGER NOT NULL,
  count     INTEGER NOT NULL,
  sum       REAL    NOT NULL,
  min       REAL    NOT NULL,
  max       REAL    NOT NULL,
  m2        REAL    NOT NULL,
  first     REAL    NOT NULL,
  first_ts  INTEGER NOT NULL,
  last      REAL    NOT NULL,
  last_ts   INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (device, metric, minute, epoch)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS partials_minute ON partials (minute);

-- Identities seen, for the 24 h dedup window [INV-2]. Keyed by event ts first so pruning is a
-- range delete; seen_at keeps a late reading's identity for the whole window.
CREATE TABLE IF NOT EXISTS dedup (
  ts      INTEGER NOT NULL,
  device  TEXT    NOT NULL,
  metric  TEXT    NOT NULL,
  seen_at INTEGER NOT NULL,
  PRIMARY KEY (ts, device, metric)
) WITHOUT ROWID;

-- Payloads that could not be parsed, with the reason; bounded (oldest dropped, counted).
CREATE TABLE IF NOT EXISTS quarantine (
  id       INTEGER PRIMARY KEY AUTOINCREMENT,
  at       INTEGER NOT NULL,
  device   TEXT    NOT NULL,
  topic    TEXT    NOT NULL,
  reason   TEXT    NOT NULL,
  message  TEXT    NOT NULL,
  payload  BLOB
);

-- Readings dropped at the outbox disk budget [INV-6]: sent to the cloud like a batch.
CREATE TABLE IF NOT EXISTS gaps (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  created_at INTEGER NOT NULL,
  reason    TEXT    NOT NULL,
  from_seq  INTEGER NOT NULL,
  to_seq    INTEGER NOT NULL,
  count     INTEGER NOT NULL,
  min_ts    INTEGER NOT NULL,
  max_ts    INTEGER NOT NULL,
  devices   TEXT    NOT NULL,
  sent      INTEGER NOT NULL DEFAULT 0
);

-- Alerts at the gateway (edge/alerts, docs/alerts.md "At the gateway"). The device rules the cloud
-- sent with its last speed-push answer that changed them (one row: their version and JSON), so a
-- restart while the cloud is away keeps evaluating them.
CREATE TABLE IF NOT EXISTS alert_rules (
  id          INTEGER PRIMARY KEY CHECK (id = 1),
  version     TEXT    NOT NULL,
  rules       TEXT    NOT NULL,
  received_at INTEGER NOT NULL
);

-- The state of each alert (a rule at one device), as the shared state machine left it.
CREATE TABLE IF NOT EXISTS alert_states (
  rule           TEXT    NOT NULL,
  device         TEXT    NOT NULL,
  state          TEXT    NOT NULL,
  since          INTEGER NOT NULL,
  value          REAL,
  active_since   INTEGER,
  clearing_since INTEGER,
  PRIMARY KEY (rule, device)
) WITHOUT ROWID;

-- Transitions not yet acknowledged by the cloud (POST /api/v1/ingest/alerts), written in the
-- transaction that changed the state; deleted once acknowledged. id never repeats (AUTOINCREMENT).
CREATE TABLE IF NOT EXISTS alert_outbox (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  rule       TEXT    NOT NULL,
  device     TEXT    NOT NULL,
  from_state TEXT,
  to_state   TEXT    NOT NULL,
  at         INTEGER NOT NULL,
  value      REAL
);
`;

/**
 * Page size of a new gateway.db, in bytes. Every group commit appends to the WAL each page it
 * touched, whole (the leaves of outbox and dedup its readings land in, the speed partials,
 * page 1), and fsyncs it: 1 KiB pages write about half the bytes per reading of the
 * 4 KiB default at mosquitto_pub's default window (docs/benchmarks.md), which counts on SD cards
 * and eMMC whose endurance is bytes written.
 */
export const GATEWAY_PAGE_SIZE = 1024;

/** Open the gateway database for writing, with its pragmas and schema. */
export async function openGatewayDb(file: string): Promise<Db> {
  const db = await Db.open(file);
  // Statements run in the order issued: the committer sends a transaction's statements together.
  db.raw.serialize();
  // Set before the first table exists, so it takes on a new file only (a WAL database keeps the
  // page size it was made with).
  await db.exec(`PRAGMA page_size = ${GATEWAY_PAGE_SIZE}`);
  await useWal(db, 10_000);
  await db.exec(`
    PRAGMA synchronous = FULL;
    PRAGMA foreign_keys = OFF;
    PRAGMA cache_size = -32000;
    PRAGMA wal_autocheckpoint = 4000;
  `);
  await db.exec(DDL);
  await db.run(`INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)`, [String(GATEWAY_SCHEMA_VERSION)]);
  return db;
}

/** A second connection for reads (windows, forwarder, health): sees committed data only. */
export async function openGatewayReader(file: string): Promise<Db> {
  const db = await Db.open(file);
  await db.exec(`PRAGMA busy_timeout = 10000; PRAGMA query_only = 1;`);
  return db;
}

export async function getMeta(db: Db, key: string): Promise<string | undefined> {
  const row = await db.get<{ value: string }>('SELECT value FROM meta WHERE key = ?', [key]);
  return row?.value;
}

export async function setMeta(db: Db, key: string, value: string | number): Promise<void> {
  await db.run('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value', [key, String(value)]);
}

/**
 * Disk the outbox spends on one reading, in bytes, as the disk budget counts it: the row's text
 * plus its numbers and the B-tree's overhead, measured on a filled outbox (about 48 bytes).
 */
export const OUTBOX_ROW_OVERHEAD_BYTES = 48;

export function outboxRowBytes(device: string, metric: string): number {
  return device.length + metric.length + OUTBOX_ROW_OVERHEAD_BYTES;
}
