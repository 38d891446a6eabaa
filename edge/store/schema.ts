/**
 * The gateway's database (`<data-dir>/gateway.db`): outbox, epochs, speed partials, dedup
 * identities, quarantine and gap records. WAL with synchronous=FULL: a commit is on disk when
 * COMMIT returns, so a PUBACK sent after it survives a power loss [INV-1].
 */
import { statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { nullLogger, type Logger } from '../../shared/logger.js';
import { Db, PARTIAL_COLUMNS_DDL, transaction, useWal } from '../../shared/sqlite.js';

/**
 * 2 (2026-12-06): dedup identities in a rowid table keyed by ts and a series number (`dedup_keys`,
 * `series`), read through the view `dedup`; a v1 file is migrated when opened (migrateToV2).
 * 3 (2026-12-06): outbox rows carry the series number instead of the device and metric text
 * (`outbox_rows`, read through the view `outbox`), and an identity keeps how late it was seen
 * (`late`, ms) instead of its seen_at; the identities of the newest outbox rows are written to
 * `dedup_keys` in batches (DEDUP_FLUSHED_KEY); a v2 file is migrated when opened (migrateToV3).
 * 4 (2026-12-07): the speed partials in a rowid table with their key in a unique index
 * (PARTIALS_DDL), not a WITHOUT ROWID table clustered by it; a v3 file is migrated when opened
 * (migrateToV4).
 * 5 (2026-12-07): the partials' key ordered (device, minute, metric, epoch) (PARTIALS_KEY), not
 * (device, metric, minute, epoch); a v4 file's index is made again when opened (migrateToV5).
 */
export const GATEWAY_SCHEMA_VERSION = 5;

/** meta key holding the highest seq the cloud has acknowledged; rows at or below it are gone. */
export const ACKED_SEQ_KEY = 'acked_seq';

/**
 * meta key holding the seq up to which the outbox rows' identities are in `dedup_keys` (absent: 0).
 * A group commit writes its readings' outbox rows only; their identities (ts, series, late) are
 * copied into `dedup_keys` in batches (flushDedupKeys: by the committer every DEDUP_FLUSH_READINGS,
 * before any outbox row is deleted, and before the retention prunes). Meanwhile the identities
 * seen are those of `dedup_keys` and of the outbox rows above this seq [INV-2] (the view `dedup`).
 * A group's identities land in as many places of the key order as its devices' clocks disagree
 * (each device's event times run on their own), and each place is a leaf and its parent written
 * again at every commit; a batch of thousands, sorted, writes each of those leaves once
 * (docs/benchmarks.md, gateway session 9).
 */
export const DEDUP_FLUSHED_KEY = 'dedup_flushed_seq';

/** SQL: the seq up to which the outbox rows' identities are in dedup_keys. */
export const DEDUP_FLUSHED_SQL = `COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = '${DEDUP_FLUSHED_KEY}'), 0)`;

/** Bits of a dedup key below the ts: the series id. */
export const SERIES_BITS = 20;
/** Most series (device, metric) the dedup window holds at once. */
export const SERIES_MAX = 2 ** SERIES_BITS - 1;
/** Event times a dedup key holds: |ts| below 2^43 ms (the year 2248; the payload parser takes 2000 on). */
export const DEDUP_TS_LIMIT = 2 ** 43;

/**
 * The dedup key's layout in SQL, the one place it is spelled: the key of an event time and a series
 * number (SQL expressions, both in range) is ts * 2^SERIES_BITS + id, and back.
 */
export const dedupKeySql = (ts: string, id: string) => `((${ts}) << ${SERIES_BITS}) | (${id})`;
export const dedupKeyTsSql = (key: string) => `(${key} >> ${SERIES_BITS})`;
export const dedupKeySeriesSql = (key: string) => `(${key} & ${SERIES_MAX})`;

const SERIES_DDL = `CREATE TABLE IF NOT EXISTS series (
  id     INTEGER PRIMARY KEY CONSTRAINT series_id_max CHECK (id <= ${SERIES_MAX}),
  device TEXT    NOT NULL,
  metric TEXT    NOT NULL,
  UNIQUE (device, metric)
);`;
/** Version 2's dedup keys (what migrateToV2 makes and migrateToV3 converts). */
const DEDUP_KEYS_V2_DDL = `CREATE TABLE IF NOT EXISTS dedup_keys (
  key     INTEGER PRIMARY KEY,
  seen_at INTEGER NOT NULL
);`;
/**
 * late: ms from the identity's ts to its first sighting, 0 when seen before its ts (a device clock
 * ahead). The retention keeps an identity while its ts or its sighting is in the window, so it needs
 * max(ts, seen_at) = ts + late, exactly; a reading that arrives at once is late by a few ms, 1-2
 * bytes where seen_at took 6 (SQLite's smallest integer that holds it).
 */
const DEDUP_KEYS_DDL = (name = 'dedup_keys') => `CREATE TABLE IF NOT EXISTS ${name} (
  key  INTEGER PRIMARY KEY,
  late INTEGER NOT NULL
);`;
/**
 * The outbox's rows: the reading's series number (`series`), not its device and metric text, and
 * how late it was committed (`late`, ms from ts, 0 if before: its identity's, see DEDUP_FLUSHED_KEY).
 */
const OUTBOX_ROWS_DDL = `CREATE TABLE IF NOT EXISTS outbox_rows (
  seq    INTEGER PRIMARY KEY,
  epoch  INTEGER NOT NULL,
  series INTEGER NOT NULL,
  ts     INTEGER NOT NULL,
  value  REAL    NOT NULL,
  late   INTEGER NOT NULL
);`;

/**
 * Speed partials: the summary (shared/summary.ts) of one device's metric in one minute of event
 * time, for the readings of one epoch. A rowid table, its key in a unique index (PARTIALS_INDEXES):
 * rows are appended as their minutes come, so a commit's new and updated rows share the table's
 * last leaves whatever devices they are of, and only the key's index (a key and a rowid an entry)
 * takes a page per device, for a new row. Clustered by the key (WITHOUT ROWID, versions 1-3), a
 * commit rewrote a 1 KiB leaf of whole rows per series it held: 1,000 devices x 4 metrics with 4
 * hours of their partials kept wrote 3,821 B a reading (30 s windows) against 656-680 B over whole
 * minutes with this layout, 515-518 B with epochs on the clock's minutes (bench:gateway's fleet
 * phase; docs/benchmarks.md gateway sessions 14 and 15). One device's windows, read through the
 * index, take ~1.3 ms more for 240 minutes.
 */
const PARTIALS_DDL = (name = 'partials') => `CREATE TABLE IF NOT EXISTS ${name} (
  ${PARTIAL_COLUMNS_DDL},
  updated_at INTEGER NOT NULL
);`;
/**
 * The partials' key, in its index's order: a device's metrics side by side within each minute.
 * Each series starts a row a minute (its new minute, and the new epoch, at once), and the row's
 * key goes into the unique index beside the device's keys of the minute before: ordered by
 * (device, metric, minute) a device's 4 metrics were 4 places of the key order, each a leaf of its
 * own written to the WAL and again by the checkpoint; ordered by minute within the device, they
 * are one. The commit path with a fleet of 1,000 devices x 4 metrics and 4 hours of their partials
 * kept: 502-582 against 686-788 B written a reading, partials_key's WAL frames a commit 3.3-4.9
 * against 6.8-9.2 (bench/outbox-commit.ts --fleet 1000 --windows 240; docs/benchmarks.md, gateway
 * session 16). What it costs: one device's windows of a metric read its other metrics' keys of the
 * same minutes too (the index's device and minute range, the metric filtered in the index).
 */
export const PARTIALS_KEY = 'device, minute, metric, epoch';
/**
 * The partials' indexes: their key, unique (what the upserts conflict on and the reads find a
 * device's minutes by), and the retention's by event minute. Made after the rows when migrating:
 * built from sorted keys, not one insert at a time.
 */
const PARTIALS_INDEXES = `CREATE UNIQUE INDEX IF NOT EXISTS partials_key ON partials (${PARTIALS_KEY});
CREATE INDEX IF NOT EXISTS partials_minute ON partials (minute);`;

const DDL = `
CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;

-- Every accepted reading, in seq order, until the cloud acknowledges it.
-- seq is contiguous per gateway; epoch is the span of seq it belongs to; series the number of its
-- (device, metric) in the table series (the retention keeps a series while a row refers to it).
-- 15 bytes of text fewer a row than the device and metric would take (docs/benchmarks.md,
-- gateway session 9): fewer WAL pages a group commit and fewer bytes for SQLite to write.
${OUTBOX_ROWS_DDL}

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

${PARTIALS_DDL()}
${PARTIALS_INDEXES}

-- Each (device, metric) with an identity in the dedup window or a row in the outbox, numbered
-- (1 .. SERIES_MAX): dedup keys and outbox rows carry the number. Rows nothing refers to any more
-- are pruned (retention.ts).
${SERIES_DDL}

-- The outbox as (seq, epoch, device, metric, ts, value), for reading; rows written through it
-- (tools, fixtures) get their series' number, a new series the next one.
CREATE VIEW IF NOT EXISTS outbox AS
  SELECT o.seq AS seq, o.epoch AS epoch, s.device AS device, s.metric AS metric, o.ts AS ts, o.value AS value
  FROM outbox_rows o JOIN series s ON s.id = o.series;
CREATE TRIGGER IF NOT EXISTS outbox_insert INSTEAD OF INSERT ON outbox BEGIN
  INSERT INTO series (device, metric) SELECT NEW.device, NEW.metric
    WHERE NOT EXISTS (SELECT 1 FROM series WHERE device = NEW.device AND metric = NEW.metric);
  INSERT INTO outbox_rows (seq, epoch, series, ts, value, late)
    VALUES (NEW.seq, NEW.epoch, (SELECT id FROM series WHERE device = NEW.device AND metric = NEW.metric), NEW.ts, NEW.value, 0);
END;
-- A row's identity goes to dedup_keys before the row, as flushDedupKeys does.
CREATE TRIGGER IF NOT EXISTS outbox_delete INSTEAD OF DELETE ON outbox BEGIN
  INSERT OR IGNORE INTO dedup_keys (key, late) SELECT ${dedupKeySql('ts', 'series')}, late FROM outbox_rows
    WHERE seq = OLD.seq AND seq > ${DEDUP_FLUSHED_SQL};
  DELETE FROM outbox_rows WHERE seq = OLD.seq;
END;

-- Identities seen, for the 24 h dedup window [INV-2]: key = ts * 2^20 + the series' id (SERIES_BITS).
-- A rowid table keyed by ts first: pruning is a range delete, and a group's identities, appended
-- at the right end, split the last leaf the quick way (a new leaf and its parent), where an index
-- b-tree (the WITHOUT ROWID table of v1) rebalanced three siblings: 3 of the 9 WAL pages a commit
-- of 20 readings wrote (docs/benchmarks.md, 2026-12-06 session 7). late keeps a late reading's
-- identity for the whole window after its sighting.
${DEDUP_KEYS_DDL()}

-- The identities as (ts, device, metric, seen_at), for reading: those of dedup_keys and of the
-- outbox rows not yet copied there (DEDUP_FLUSHED_KEY); seen_at is max(ts, first sighting).
CREATE VIEW IF NOT EXISTS dedup AS
  SELECT ${dedupKeyTsSql('k.key')} AS ts, s.device AS device, s.metric AS metric, ${dedupKeyTsSql('k.key')} + k.late AS seen_at
  FROM dedup_keys k JOIN series s ON s.id = ${dedupKeySeriesSql('k.key')}
  UNION ALL
  SELECT o.ts AS ts, s.device AS device, s.metric AS metric, o.ts + o.late AS seen_at
  FROM outbox_rows o JOIN series s ON s.id = o.series WHERE o.seq > ${DEDUP_FLUSHED_SQL};

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
 * and eMMC whose endurance is bytes written. 512 B pages, measured and not taken (2026-12-06,
 * bench:gateway beside this in the same run, medians): 400 vs 537 B a reading at -M 20 at the same
 * msg/s, but 5% fewer msg/s at -M 100 (77.4k vs 82.0k, 6 of 6 runs lower, 11.4 vs 10.5 us of CPU
 * a message) and the speed layer's reads of partials 8-9% slower. An existing file keeps the page
 * size it was made with (a WAL database cannot change it).
 */
export const GATEWAY_PAGE_SIZE = 1024;

/**
 * Bytes of WAL between automatic checkpoints: wal_autocheckpoint is in pages, so it is set from
 * the file's own page size (4,000 pages of 1 KiB, 8,000 of 512 B): smaller pages do not checkpoint
 * more often.
 */
export const GATEWAY_WAL_CHECKPOINT_BYTES = 4000 * 1024;

export interface GatewayDbOptions {
  logger?: Logger;
  /** Free bytes on the filesystem of a directory (default: statfs); a migration that copies a table checks it first. */
  freeDiskBytes?: (dir: string) => Promise<number>;
}

/** Open the gateway database for writing, with its pragmas and schema (an older file migrated, logged). */
export async function openGatewayDb(file: string, opts: GatewayDbOptions = {}): Promise<Db> {
  const logger = opts.logger ?? nullLogger();
  const db = await Db.open(file);
  try {
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
    `);
    const pageSize = (await db.get<{ page_size: number }>('PRAGMA page_size'))?.page_size ?? GATEWAY_PAGE_SIZE;
    await db.exec(`PRAGMA wal_autocheckpoint = ${Math.round(GATEWAY_WAL_CHECKPOINT_BYTES / pageSize)}`);
    await migrate(db, logger, () => (opts.freeDiskBytes ?? freeDiskBytes)(dirname(file)));
    await db.exec(DDL);
    await db.run(`INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)`, [String(GATEWAY_SCHEMA_VERSION)]);
  } catch (err) {
    // A refused or failed migration, a newer file: the caller gets the error, not an open handle.
    await db.close().catch(() => undefined);
    throw err;
  }
  return db;
}

/**
 * Bring an older gateway.db to GATEWAY_SCHEMA_VERSION, in one transaction; a newer one is refused
 * (an older braid would not know its tables).
 */
async function migrate(db: Db, logger: Logger, freeBytes: () => Promise<number>): Promise<void> {
  const hasMeta = await db.get<{ n: number }>("SELECT COUNT(*) AS n FROM sqlite_schema WHERE type = 'table' AND name = 'meta'");
  if (!hasMeta?.n) return;
  // A file with tables but no version yet is v1 (or a v2 whose first open stopped before writing
  // it: migrateToV2 then finds the view and only records the version).
  const v = Number((await db.get<{ value: string }>("SELECT value FROM meta WHERE key = 'schema_version'"))?.value ?? 1);
  if (v > GATEWAY_SCHEMA_VERSION) throw new Error(`gateway.db is schema version ${v}; this braid knows versions up to ${GATEWAY_SCHEMA_VERSION} (run a newer braid)`);
  if (v === GATEWAY_SCHEMA_VERSION) return;
  // A large file takes a while (the partials of a day of a fleet: minutes, v3 -> v4): say so.
  const started = Date.now();
  logger.info({ from: v, to: GATEWAY_SCHEMA_VERSION }, 'migrating gateway.db to a newer schema version; the gateway starts once it is done');
  if (v < 2) await migrateToV2(db);
  if (v < 3) await migrateToV3(db);
  if (v < 4) await migrateToV4(db, freeBytes);
  if (v < 5) await migrateToV5(db, freeBytes);
  logger.info({ from: v, to: GATEWAY_SCHEMA_VERSION, ms: Date.now() - started }, 'gateway.db migrated');
}

/**
 * v1 -> v2: the dedup identities move from the WITHOUT ROWID table `dedup (ts, device, metric,
 * seen_at)` to `series` and `dedup_keys` (every identity kept, with its seen_at); `dedup` becomes a
 * view. The outbox, epochs and partials are unchanged.
 */
async function migrateToV2(db: Db): Promise<void> {
  const old = await db.get<{ type: string }>("SELECT type FROM sqlite_schema WHERE name = 'dedup'");
  if (old?.type === 'table') {
    const n = await db.get<{ n: number }>('SELECT COUNT(*) AS n FROM (SELECT DISTINCT device, metric FROM dedup)');
    if ((n?.n ?? 0) > SERIES_MAX) throw new Error(`gateway.db: the dedup window holds ${n?.n} series (device, metric), more than the ${SERIES_MAX} of schema version 2`);
  }
  await migrateTo(db, 2, `
    ${SERIES_DDL}
    ${DEDUP_KEYS_V2_DDL}
    ${old?.type === 'table' ? `
    INSERT INTO series (device, metric) SELECT DISTINCT device, metric FROM dedup ORDER BY device, metric;
    INSERT INTO dedup_keys (key, seen_at)
      SELECT ${dedupKeySql('d.ts', 's.id')}, d.seen_at FROM dedup d JOIN series s ON s.device = d.device AND s.metric = d.metric
      WHERE d.ts > -${DEDUP_TS_LIMIT} AND d.ts < ${DEDUP_TS_LIMIT} ORDER BY 1;
    DROP TABLE dedup;` : ''}
`);
}

/**
 * v2 -> v3: the outbox's rows move to `outbox_rows` with their series number (a (device, metric)
 * without one gets the next number), `outbox` becomes a view; the dedup keys keep `late` (ms from
 * ts to seen_at, 0 when seen before it) instead of seen_at: what the retention reads of them,
 * max(ts, seen_at), stays exact. Every pending row keeps its seq, epoch, ts and value; epochs and
 * partials are unchanged.
 */
async function migrateToV3(db: Db): Promise<void> {
  const old = await db.get<{ type: string }>("SELECT type FROM sqlite_schema WHERE name = 'outbox'");
  const oldOutbox = old?.type === 'table';
  if (oldOutbox) {
    const n = await db.get<{ n: number }>(
      `SELECT (SELECT COALESCE(MAX(id), 0) FROM series) + (SELECT COUNT(*) FROM (SELECT DISTINCT device, metric FROM outbox o
         WHERE NOT EXISTS (SELECT 1 FROM series s WHERE s.device = o.device AND s.metric = o.metric))) AS n`);
    if ((n?.n ?? 0) > SERIES_MAX) throw new Error(`gateway.db: the outbox and the dedup window need ${n?.n} series numbers (device, metric), more than the ${SERIES_MAX} of schema version 3`);
  }
  const keys = await db.get<{ sql: string }>("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'dedup_keys'");
  const oldKeys = keys !== undefined && /\bseen_at\b/.test(keys.sql);
  await migrateTo(db, 3, `
    ${SERIES_DDL}
    ${OUTBOX_ROWS_DDL}
    ${oldOutbox ? `
    INSERT INTO series (device, metric) SELECT DISTINCT device, metric FROM outbox o
      WHERE NOT EXISTS (SELECT 1 FROM series s WHERE s.device = o.device AND s.metric = o.metric) ORDER BY device, metric;
    INSERT INTO outbox_rows (seq, epoch, series, ts, value, late)
      SELECT o.seq, o.epoch, s.id, o.ts, o.value, 0 FROM outbox o JOIN series s ON s.device = o.device AND s.metric = o.metric ORDER BY o.seq;
    DROP TABLE outbox;` : ''}
    -- Version 2 wrote every outbox row's identity to the dedup keys at its commit.
    INSERT INTO meta (key, value) SELECT '${DEDUP_FLUSHED_KEY}', COALESCE(MAX(seq), 0) FROM outbox_rows WHERE true ON CONFLICT (key) DO NOTHING;
    ${oldKeys ? `
    DROP VIEW IF EXISTS dedup;
    ${DEDUP_KEYS_DDL('dedup_keys_v3')}
    INSERT INTO dedup_keys_v3 (key, late) SELECT key, MAX(0, seen_at - ${dedupKeyTsSql('key')}) FROM dedup_keys ORDER BY key;
    DROP TABLE dedup_keys;
    ALTER TABLE dedup_keys_v3 RENAME TO dedup_keys;` : ''}
`);
}

/**
 * One migration step: `script` (SQL statements) and the new schema_version, in one transaction
 * (BEGIN IMMEDIATE ... COMMIT; rolled back whole on any failure: the file stays at the version before).
 */
function migrateTo(db: Db, version: number, script: string): Promise<void> {
  return transaction(db, (d) => d.exec(`${script}
    INSERT INTO meta (key, value) VALUES ('schema_version', '${version}') ON CONFLICT(key) DO UPDATE SET value = excluded.value;`));
}

/** Free space a migration leaves besides what it needs (the WAL's headers, the commits that follow it). */
const MIGRATION_MARGIN_BYTES = 64 * 1024 * 1024;

/** Free bytes on the filesystem of `dir` for an unprivileged writer (statfs: bavail x bsize; root's reserve is not the gateway's to plan on). */
export async function freeDiskBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/**
 * v3 -> v4: the speed partials move to a rowid table (PARTIALS_DDL), every row kept as it was, in
 * the old table's key order (sorting them by minute took twice as long: 11.3 against 5.2 s for
 * 720,000 rows on a 2-core server's SSD, 2026-12-07; new rows go after them either way), and their
 * indexes are made after them from sorted keys. The old table's indexes go with it (the speed push
 * makes its own again at start, speedpush/page.ts ensurePushIndex). A day of a 1,000-device
 * fleet's partials is several million rows: ~7 s a million here, minutes on an SD card, once.
 */
async function migrateToV4(db: Db, freeBytes: () => Promise<number>): Promise<void> {
  const old = await db.get<{ sql: string }>("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'partials'");
  const clustered = old !== undefined && /WITHOUT\s+ROWID/i.test(old.sql);
  // The copy and its indexes (~1.1x the old b-trees) go to the WAL, then into the file past its
  // end (the old pages are freed only as the transaction ends): about twice the partials' size.
  if (clustered) await requireMigrationSpace(db, freeBytes, 4, "tbl_name = 'partials'", 2.2, 'rewrites the speed partials');
  const cols = 'device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts, updated_at';
  await migrateTo(db, 4, `
    ${clustered ? `
    ${PARTIALS_DDL('partials_v4')}
    INSERT INTO partials_v4 (${cols}) SELECT ${cols} FROM partials;
    DROP TABLE partials;
    ALTER TABLE partials_v4 RENAME TO partials;
    ${PARTIALS_INDEXES}` : ''}
`);
}

/**
 * v4 -> v5: the partials' unique index made again in PARTIALS_KEY's order, from sorted keys; the
 * rows are untouched. A file migrated from v3 in the same open has it already.
 */
async function migrateToV5(db: Db, freeBytes: () => Promise<number>): Promise<void> {
  const index = await db.get<{ sql: string }>("SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = 'partials_key'");
  const stale = index !== undefined && !index.sql.includes(`(${PARTIALS_KEY})`);
  // The new index goes to the WAL, then into the file past its end (the old one's pages are freed
  // only as the transaction ends): about the old index's size again.
  if (stale) await requireMigrationSpace(db, freeBytes, 5, "name = 'partials_key'", 1.2, "makes the speed partials' key index again");
  await migrateTo(db, 5, `
    ${stale ? `DROP INDEX partials_key;
    ${PARTIALS_INDEXES}` : ''}
`);
}

/**
 * Refuse a migration to version `to` before it starts, not half-way with the disk full: it writes
 * about `factor` x the pages of the schema objects `objects` (an SQL condition on sqlite_schema),
 * less the file's free pages, and leaves MIGRATION_MARGIN_BYTES besides. `what` says what it does.
 */
async function requireMigrationSpace(db: Db, freeBytes: () => Promise<number>, to: number, objects: string, factor: number, what: string): Promise<void> {
  const size = await db.get<{ n: number | null }>(
    `SELECT SUM(pgsize) AS n FROM dbstat('main', 1) WHERE name IN (SELECT name FROM sqlite_schema WHERE ${objects})`);
  const pages = await db.get<{ n: number }>('SELECT freelist_count * page_size AS n FROM pragma_freelist_count, pragma_page_size');
  const need = Math.round(factor * (size?.n ?? 0)) - (pages?.n ?? 0) + MIGRATION_MARGIN_BYTES;
  const free = await freeBytes();
  if (free < need) {
    const mb = (n: number) => `${Math.ceil(n / 1e6).toLocaleString('en-US')} MB`;
    throw new Error(`gateway.db: migrating to schema version ${to} ${what} (${mb(size?.n ?? 0)}) and needs about ${mb(need)} free on its filesystem; ${mb(free)} are free. Free some space and start the gateway again: the file is unchanged (schema version ${to - 1})`);
  }
}

/**
 * The two statements of flushDedupKeys, with `upTo` an SQL expression (a parameter, or the group
 * commit trigger's NEW.flush) and both run only `when` (an SQL condition).
 */
export function flushDedupKeysSql(upTo: string, when = 'true'): [string, string] {
  return [
    `INSERT OR IGNORE INTO dedup_keys (key, late) SELECT ${dedupKeySql('ts', 'series')}, late FROM outbox_rows
    WHERE ${when} AND seq > ${DEDUP_FLUSHED_SQL} AND seq <= ${upTo} ORDER BY 1`,
    // WHERE always there: an upsert's SELECT needs one to parse.
    `INSERT INTO meta (key, value) SELECT '${DEDUP_FLUSHED_KEY}', ${upTo} WHERE ${when}
    ON CONFLICT (key) DO UPDATE SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))`,
  ];
}

/**
 * Copy the identities of the outbox rows up to `upTo` not yet in dedup_keys there, sorted by key,
 * and move DEDUP_FLUSHED_KEY up to `upTo` (never down). Inside the caller's transaction: before an
 * outbox row is deleted, its identity must be in dedup_keys [INV-2].
 */
export async function flushDedupKeys(db: Db, upTo: number): Promise<void> {
  const [keys, mark] = flushDedupKeysSql('?');
  await db.run(keys, [upTo]);
  await db.run(mark, [upTo]);
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
 * plus its numbers and the B-tree's overhead, measured on a filled outbox (about 48 bytes) of
 * schema version 2. Version 3's rows hold the series number instead of the text (about 30 bytes):
 * the budget keeps this measure, so outbox.maxBytes admits the readings it did and overstates
 * their disk, on the safe side.
 */
export const OUTBOX_ROW_OVERHEAD_BYTES = 48;

export function outboxRowBytes(device: string, metric: string): number {
  return device.length + metric.length + OUTBOX_ROW_OVERHEAD_BYTES;
}

/** outboxRowBytes in SQL, of the device's and the metric's text (SQL expressions). */
export const outboxRowBytesSql = (device: string, metric: string) => `LENGTH(${device}) + LENGTH(${metric}) + ${OUTBOX_ROW_OVERHEAD_BYTES}`;
