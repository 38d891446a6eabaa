/**
 * gateway.db's schema versions 2 to 5 (edge/store/schema.ts): a v1, v2, v3 or v4 file is migrated when
 * opened, keeping every pending outbox row, open epoch, dedup identity (with its seen_at) and
 * partial, the forwarder sending the same readings, and its identities still drop repeats
 * [INV-2]; a v3 file's partials move to a rowid table with every row and the windows they give kept,
 * and are updated in place after; a v4 file's partials key is made again in its new order, the rows,
 * windows and alerts' reads as they were; a file of a newer version is refused; the series numbers of the dedup keys
 * run out only at SERIES_MAX (readings of a new series then dropped, counted, the others kept) and
 * the retention frees the numbers no identity refers to (and the committer forgets them); a new file
 * gets GATEWAY_PAGE_SIZE, an existing one keeps its page size and checkpoints after the same WAL bytes.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { readBatch } from '../../edge/forwarder/batch.js';
import { readWindows } from '../../edge/speed/index.js';
import { Outbox, type Reading } from '../../edge/outbox/index.js';
import { prunePartialsChunk } from '../../edge/outbox/retention.js';
import { GATEWAY_PAGE_SIZE, GATEWAY_SCHEMA_VERSION, GATEWAY_WAL_CHECKPOINT_BYTES, PARTIALS_KEY, SERIES_MAX } from '../../edge/store/schema.js';
import { Db } from '../../shared/sqlite.js';
import { nullLogger } from '../../shared/logger.js';
import { tempDir } from '../support/gateway.js';

const T0 = Date.UTC(2026, 11, 6, 5, 0, 0);

let dir: ReturnType<typeof tempDir>;
let outboxes: Outbox[] = [];
let registry: Registry;

beforeEach(() => {
  dir = tempDir('braid-schema-');
});

afterEach(async () => {
  for (const o of outboxes) await o.close();
  outboxes = [];
  dir.remove();
});

async function open(now = () => T0, logger = nullLogger(), freeDiskBytes?: (dir: string) => Promise<number>): Promise<Outbox> {
  registry = new Registry();
  const o = await Outbox.open({ dataDir: dir.path, logger, registry, now, freeDiskBytes }, { pruneCron: null });
  outboxes.push(o);
  return o;
}

const r = (device: string, metric: string, ts: number, value = 1): Reading => ({ device, metric, ts, value });

/** The tables versions 1 and 2 of gateway.db share: meta, the outbox with its device and metric text, epochs, partials. */
const V1_V2_DDL = `
PRAGMA page_size = 1024; PRAGMA journal_mode = WAL;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE outbox (seq INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, device TEXT NOT NULL, metric TEXT NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL);
CREATE TABLE epochs (epoch INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, opened_at INTEGER NOT NULL, closed_at INTEGER, reported INTEGER NOT NULL DEFAULT 0);
CREATE TABLE partials (device TEXT NOT NULL, metric TEXT NOT NULL, minute INTEGER NOT NULL, epoch INTEGER NOT NULL, count INTEGER NOT NULL, sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL, m2 REAL NOT NULL, first REAL NOT NULL, first_ts INTEGER NOT NULL, last REAL NOT NULL, last_ts INTEGER NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (device, metric, minute, epoch)) WITHOUT ROWID;
CREATE INDEX partials_minute ON partials (minute);
`;

/** The tables of a v1 gateway.db that hold readings (as braid made them before version 2). */
const V1_DDL = `${V1_V2_DDL}
CREATE TABLE dedup (ts INTEGER NOT NULL, device TEXT NOT NULL, metric TEXT NOT NULL, seen_at INTEGER NOT NULL, PRIMARY KEY (ts, device, metric)) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('schema_version', '1');
`;

test('a v1 gateway.db is migrated when opened: outbox, identities and partials kept, repeats of its identities still dropped', async () => {
  const file = join(dir.path, 'gateway.db');
  const v1 = await Db.open(file);
  await v1.exec(V1_DDL);
  // 3 devices x 2 metrics x 50 readings: 300 identities, 200 of them still in the outbox (seq 101-300).
  const identities: Array<{ ts: number; device: string; metric: string; seen_at: number }> = [];
  for (let i = 0; i < 300; i++) identities.push({ ts: T0 - 3600_000 + Math.floor(i / 6) * 1000, device: `dev-${i % 3}`, metric: i % 2 ? 'hum' : "it's", seen_at: T0 - 3500_000 + i });
  for (const x of identities) await v1.run('INSERT INTO dedup (ts, device, metric, seen_at) VALUES (?, ?, ?, ?)', [x.ts, x.device, x.metric, x.seen_at]);
  await v1.run('INSERT INTO epochs (epoch, first_seq, last_seq, opened_at, closed_at) VALUES (1, 1, 300, ?, ?)', [T0 - 3600_000, T0 - 3000_000]);
  for (let i = 100; i < 300; i++) {
    const x = identities[i];
    await v1.run('INSERT INTO outbox (seq, epoch, device, metric, ts, value) VALUES (?, 1, ?, ?, ?, ?)', [i + 1, x.device, x.metric, x.ts, i + 0.5]);
  }
  await v1.run("INSERT INTO meta (key, value) VALUES ('acked_seq', '100')");
  await v1.run('INSERT INTO partials VALUES (?, ?, ?, 1, 2, 3.5, 1, 2.5, 0.5, 1, ?, 2.5, ?, ?)', ['dev-0', 'hum', T0 - 3600_000, T0 - 3600_000, T0 - 3599_000, T0 - 3000_000]);
  const outboxBefore = await v1.all('SELECT * FROM outbox ORDER BY seq');
  const partialsBefore = await v1.all('SELECT * FROM partials');
  await v1.close();

  const o = await open();
  const db = o.writes.db;
  expect(await db.get("SELECT value FROM meta WHERE key = 'schema_version'")).toEqual({ value: String(GATEWAY_SCHEMA_VERSION) });
  expect(await db.get("SELECT type FROM sqlite_schema WHERE name = 'dedup'")).toEqual({ type: 'view' });
  expect(await db.all('SELECT ts, device, metric, seen_at FROM dedup ORDER BY ts, device, metric')).toEqual(
    [...identities].sort((a, b) => a.ts - b.ts || (a.device < b.device ? -1 : a.device > b.device ? 1 : a.metric < b.metric ? -1 : 1)));
  expect(await db.all('SELECT * FROM outbox ORDER BY seq')).toEqual(outboxBefore);
  expect(await db.all('SELECT * FROM partials')).toEqual(partialsBefore);

  // A repeat of a migrated identity (in the outbox or acknowledged) is dropped; new readings follow seq 300.
  expect(await o.submit([r('dev-0', "it's", identities[0].ts), r('dev-1', 'hum', identities[299].ts)])).toEqual({ accepted: 0, duplicates: 2 });
  expect(await o.submit([r('dev-0', 'hum', T0), r('dev-9', 'new', T0)])).toEqual({ accepted: 2, duplicates: 0 });
  expect(await db.all('SELECT seq, device, metric FROM outbox WHERE seq > 300 ORDER BY seq')).toEqual([
    { seq: 301, device: 'dev-0', metric: 'hum' }, { seq: 302, device: 'dev-9', metric: 'new' }]);
  await o.close();

  // Opened again: already the current version, nothing migrated twice.
  const again = await open();
  expect(await again.writes.db.get('SELECT COUNT(*) AS n FROM dedup')).toEqual({ n: 302 });
  expect(await again.submit([r('dev-9', 'new', T0)])).toEqual({ accepted: 0, duplicates: 1 });
  await again.close();

  // A file of a newer version is refused, naming it.
  const w = await Db.open(file);
  await w.run("UPDATE meta SET value = ? WHERE key = 'schema_version'", [String(GATEWAY_SCHEMA_VERSION + 1)]);
  await w.close();
  await expect(open()).rejects.toThrow(`schema version ${GATEWAY_SCHEMA_VERSION + 1}`);
});

/** A v2 gateway.db's tables that hold readings (as braid made them before version 3). */
const V2_DDL = `${V1_V2_DDL}
CREATE TABLE series (id INTEGER PRIMARY KEY CONSTRAINT series_id_max CHECK (id <= 1048575), device TEXT NOT NULL, metric TEXT NOT NULL, UNIQUE (device, metric));
CREATE TABLE dedup_keys (key INTEGER PRIMARY KEY, seen_at INTEGER NOT NULL);
CREATE VIEW dedup AS SELECT (k.key >> 20) AS ts, s.device AS device, s.metric AS metric, k.seen_at AS seen_at FROM dedup_keys k JOIN series s ON s.id = (k.key & 1048575);
INSERT INTO meta (key, value) VALUES ('schema_version', '2');
`;

test('a v2 gateway.db opens as v4 (through v3): pending rows, the open epoch, identities and partials kept; the forwarder sends the same readings, a repeat is still one', async () => {
  const file = join(dir.path, 'gateway.db');
  const v2 = await Db.open(file);
  await v2.exec(V2_DDL);
  // Identities of 3 series, one seen before its ts (a device clock ahead); rows of a fourth series
  // that has no number (v2 numbered only what the dedup window held).
  const series = [['dev-0', 'temp'], ['dev-1', "it's"], ['dev-2', 'hum']];
  await v2.run('INSERT INTO series (id, device, metric) VALUES (1, ?, ?), (7, ?, ?), (9, ?, ?)', series.flat());
  const identities: Array<{ ts: number; device: string; metric: string; seen_at: number }> = [];
  for (let i = 0; i < 120; i++) {
    const [id, [device, metric]] = [[1, 7, 9][i % 3], series[i % 3]];
    const ts = T0 - 600_000 + i * 1000;
    const seenAt = i === 5 ? ts - 2000 : T0 - 500_000 + i * 977;
    identities.push({ ts, device, metric, seen_at: seenAt });
    await v2.run('INSERT INTO dedup_keys (key, seen_at) VALUES ((? << 20) | ?, ?)', [ts, id, seenAt]);
  }
  // seq 1-60 acknowledged (epoch 1); 61-90 in epoch 2, closed, not reported; 91-130 in epoch 3, left
  // open by a crash (its row as written when it opened: last_seq its first commit's).
  await v2.run('INSERT INTO epochs (epoch, first_seq, last_seq, opened_at, closed_at, reported) VALUES (1, 1, 60, ?, ?, 1), (2, 61, 90, ?, ?, 0), (3, 91, 95, ?, NULL, 0)',
    [T0 - 600_000, T0 - 560_000, T0 - 560_000, T0 - 520_000, T0 - 520_000]);
  for (let seq = 61; seq <= 130; seq++) {
    const x = seq <= 120 ? identities[seq - 1] : { device: 'dev-3', metric: 'co2', ts: T0 - 10_000 + seq };
    await v2.run('INSERT INTO outbox (seq, epoch, device, metric, ts, value) VALUES (?, ?, ?, ?, ?, ?)', [seq, seq <= 90 ? 2 : 3, x.device, x.metric, x.ts, seq / 3]);
  }
  await v2.run("INSERT INTO meta (key, value) VALUES ('acked_seq', '60')");
  await v2.run('INSERT INTO partials VALUES (?, ?, ?, 3, 2, 3.5, 1, 2.5, 0.5, 1, ?, 2.5, ?, ?)', ['dev-3', 'co2', T0 - 60_000, T0 - 9_000, T0 - 8_000, T0 - 5_000]);
  const outboxBefore = await v2.all<{ seq: number; epoch: number; device: string; metric: string; ts: number; value: number }>('SELECT * FROM outbox ORDER BY seq');
  const partialsBefore = await v2.all('SELECT * FROM partials');
  await v2.close();

  const o = await open();
  const db = o.writes.db;
  expect(await db.get("SELECT value FROM meta WHERE key = 'schema_version'")).toEqual({ value: String(GATEWAY_SCHEMA_VERSION) });
  expect(await db.get("SELECT type FROM sqlite_schema WHERE name = 'outbox'")).toEqual({ type: 'view' });
  expect(await db.all('SELECT * FROM outbox ORDER BY seq')).toEqual(outboxBefore);
  expect(await db.all('SELECT * FROM partials')).toEqual(partialsBefore);
  // seen_at reads as the later of ts and the first sighting: what the retention keeps an identity by.
  expect(await db.all('SELECT ts, device, metric, seen_at FROM dedup ORDER BY ts')).toEqual(identities.map((x) => ({ ...x, seen_at: Math.max(x.ts, x.seen_at) })));
  expect(await db.get('SELECT COUNT(*) AS n FROM dedup_keys')).toEqual({ n: 120 });
  expect(o.status()).toMatchObject({ pending: 70, lastSeq: 130 });

  // The forwarder sends the same readings, and the epochs: 2, and 3 closed at the last seq given.
  const batch = await readBatch(o.reader, 60, 1000);
  expect(batch).toMatchObject({ firstSeq: 61, lastSeq: 130, epochs: [{ epoch: 2, firstSeq: 61, lastSeq: 90 }, { epoch: 3, firstSeq: 91, lastSeq: 130 }] });
  expect(batch!.readings).toEqual(outboxBefore.map((r) => [r.seq, r.epoch, r.device, r.metric, r.ts, r.value]));

  // A repeat of a migrated identity (pending or acknowledged) is a duplicate; a new reading follows seq 130.
  expect(await o.submit([0, 119, 5].map((i) => r(identities[i].device, identities[i].metric, identities[i].ts)))).toEqual({ accepted: 0, duplicates: 3 });
  expect(await o.submit([r('dev-3', 'co2', T0), r('dev-0', 'temp', T0)])).toEqual({ accepted: 2, duplicates: 0 });
  expect(await db.all('SELECT seq, epoch, device, metric FROM outbox WHERE seq > 130 ORDER BY seq')).toEqual([
    { seq: 131, epoch: 4, device: 'dev-3', metric: 'co2' }, { seq: 132, epoch: 4, device: 'dev-0', metric: 'temp' }]);
  await o.close();

  // Opened again: already the current version, nothing migrated twice.
  const again = await open();
  expect(await again.writes.db.get('SELECT COUNT(*) AS n FROM dedup')).toEqual({ n: 122 });
  expect(await again.writes.db.get('SELECT COUNT(*) AS n FROM outbox')).toEqual({ n: 72 });
  expect(await again.submit([r('dev-3', 'co2', T0)])).toEqual({ accepted: 0, duplicates: 1 });
});

/** Version 3's partials: a WITHOUT ROWID table clustered by its key, and the speed push's index on updated_at alone. */
const V3_PARTIALS_DDL = `
CREATE TABLE partials (device TEXT NOT NULL, metric TEXT NOT NULL, minute INTEGER NOT NULL, epoch INTEGER NOT NULL, count INTEGER NOT NULL, sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL, m2 REAL NOT NULL, first REAL NOT NULL, first_ts INTEGER NOT NULL, last REAL NOT NULL, last_ts INTEGER NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (device, metric, minute, epoch)) WITHOUT ROWID;
CREATE INDEX partials_minute ON partials (minute);
CREATE INDEX partials_updated_at ON partials (updated_at);
`;

/** Each metric's values: at second `s` of device `i`. */
const FILL_VALUES: Record<string, (s: number, i: number) => number> = { temp: (s, i) => s + i, hum: (s) => 100 - s, co2: (s, i) => s * i };

/**
 * A gateway.db filled by commits as braid makes them: 3 devices (one with a quote in its id) x
 * `metrics`, a message every 7 s over 3 minutes from T0; `now` is the last message's time.
 */
async function filledByCommits(metrics: string[]): Promise<{ first: Outbox; devices: string[]; now: number }> {
  const clock = { now: T0 };
  const first = await open(() => clock.now);
  const devices = ['dev-0', 'dev-1', "it's"];
  for (let s = 0; s < 180; s += 7) {
    clock.now = T0 + s * 1000;
    await first.submit(devices.flatMap((d, i) => metrics.map((m, j) => r(d, m, clock.now - 500 + 100 * j, FILL_VALUES[m](s, i)))));
  }
  await first.applied();
  return { first, devices, now: clock.now };
}

test('a v3 gateway.db opens as v4: every partial kept in a rowid table, the same windows, updated in place after, pruned by minute', async () => {
  // A v3 file as braid made it: the tables of today with version 3's partials, filled by commits.
  const { first, devices, now } = await filledByCommits(['temp', 'hum']);
  const rows = await first.writes.db.all('SELECT * FROM partials ORDER BY device, metric, minute, epoch');
  expect(rows.length).toBeGreaterThanOrEqual(devices.length * 2 * 3); // 3 minutes, an epoch or more each
  const windowsBefore = await readWindows(first.reader, 'dev-1', 'temp', now);
  await first.close();
  outboxes = [];
  const file = join(dir.path, 'gateway.db');
  const v3 = await Db.open(file);
  await v3.exec(`BEGIN; DROP TABLE partials; ${V3_PARTIALS_DDL}
    UPDATE meta SET value = '3' WHERE key = 'schema_version'; COMMIT;`);
  for (const x of rows as Array<Record<string, number | string>>) {
    await v3.run(`INSERT INTO partials VALUES (${Object.keys(x).map(() => '?').join(', ')})`, Object.values(x));
  }
  await v3.close();

  // Too little disk for the copy: refused before it starts, naming what it needs; the file is left as it was.
  const free = 60_000_000;
  await expect(open(() => now, nullLogger(), async (d) => (d === dir.path ? free : Infinity)))
    .rejects.toThrow(/migrating to schema version 4 rewrites the speed partials \(\d+ MB\) and needs about \d+ MB free on its filesystem; 60 MB are free\. .* unchanged \(schema version 3\)/);
  const still = await Db.open(file);
  expect(await still.get("SELECT value FROM meta WHERE key = 'schema_version'")).toEqual({ value: '3' });
  expect(await still.all('SELECT * FROM partials ORDER BY device, metric, minute, epoch')).toEqual(rows);
  await still.close();

  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, new Writable({ write(chunk, _enc, cb) { lines.push(JSON.parse(String(chunk)) as Record<string, unknown>); cb(); } }));
  const o = await open(() => now, logger);
  const db = o.writes.db;
  expect(await db.get("SELECT value FROM meta WHERE key = 'schema_version'")).toEqual({ value: String(GATEWAY_SCHEMA_VERSION) });
  // The operator sees why the gateway takes a while to start, and when it is done.
  expect(lines.filter((l) => /gateway.db/.test(String(l.msg))).map((l) => [l.msg, l.from, l.to])).toEqual([
    ['migrating gateway.db to a newer schema version; the gateway starts once it is done', 3, GATEWAY_SCHEMA_VERSION], ['gateway.db migrated', 3, GATEWAY_SCHEMA_VERSION]]);
  const ddl = await db.get<{ sql: string }>("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'partials'");
  expect(ddl!.sql).not.toMatch(/WITHOUT ROWID/i);
  expect((await db.all<{ name: string; sql: string }>("SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'partials' ORDER BY name"))).toEqual([
    { name: 'partials_key', sql: `CREATE UNIQUE INDEX partials_key ON partials (${PARTIALS_KEY})` },
    { name: 'partials_minute', sql: 'CREATE INDEX partials_minute ON partials (minute)' }]);
  expect(await db.all('SELECT * FROM partials ORDER BY device, metric, minute, epoch')).toEqual(rows);
  // A reading of a new minute goes after every migrated row.
  const last = await db.get<{ id: number }>('SELECT MAX(rowid) AS id FROM partials');
  expect(await readWindows(o.reader, 'dev-1', 'temp', now)).toEqual(windowsBefore);
  expect(await o.submit([r('dev-0', 'hum', T0 + 185_000, 1)])).toEqual({ accepted: 1, duplicates: 0 });
  expect(await db.get('SELECT rowid > ? AS after FROM partials WHERE device = ? AND metric = ? AND minute = ?', [last!.id, 'dev-0', 'hum', T0 + 180_000])).toEqual({ after: 1 });

  // A reading in a minute that has a partial updates that row (the key is unique, no second row).
  const before = await db.get<{ n: number; count: number; id: number }>(
    "SELECT COUNT(*) AS n, SUM(count) AS count, MAX(rowid) AS id FROM partials WHERE device = 'dev-1' AND metric = 'temp' AND minute = ?", [Math.floor((now - 500) / 60_000) * 60_000]);
  expect(await o.submit([r('dev-1', 'temp', now - 200, 7)])).toEqual({ accepted: 1, duplicates: 0 });
  const epochs = await db.all<{ epoch: number; count: number }>("SELECT epoch, count FROM partials WHERE device = 'dev-1' AND metric = 'temp' AND minute = ? ORDER BY epoch", [Math.floor((now - 500) / 60_000) * 60_000]);
  expect(epochs.reduce((n, x) => n + x.count, 0)).toBe(before!.count + 1);
  const w = await readWindows(o.reader, 'dev-1', 'temp', now);
  expect(w.windows['1h'].count).toBe(windowsBefore.windows['1h'].count + 1);
  await o.submit([r('dev-1', 'temp', now - 100, 8)]);
  expect(await db.get("SELECT COUNT(*) AS n FROM partials WHERE device = 'dev-1' AND metric = 'temp' AND minute = ?", [Math.floor((now - 500) / 60_000) * 60_000]))
    .toEqual({ n: epochs.length });

  // The retention prunes by minute through the rowids: the first minute's rows, in chunks.
  const old = await db.get<{ n: number }>('SELECT COUNT(*) AS n FROM partials WHERE minute < ?', [T0 + 60_000]);
  const total = await db.get<{ n: number }>('SELECT COUNT(*) AS n FROM partials');
  expect(old!.n).toBeGreaterThan(2);
  expect(await prunePartialsChunk(db, T0 + 61 * 60_000, 60, 2)).toBe(2);
  expect(await prunePartialsChunk(db, T0 + 61 * 60_000, 60)).toBe(old!.n - 2);
  expect(await db.get('SELECT COUNT(*) AS n FROM partials WHERE minute < ?', [T0 + 60_000])).toEqual({ n: 0 });
  expect(await db.get('SELECT COUNT(*) AS n FROM partials')).toEqual({ n: total!.n - old!.n });
});

test("a v4 gateway.db opens as v5: the partials' key index made again in its new order, every row, the windows and the upserts as before", async () => {
  const { first, devices, now } = await filledByCommits(['temp', 'hum', 'co2']);
  const rows = await first.writes.db.all('SELECT rowid, * FROM partials ORDER BY rowid');
  expect(rows.length).toBeGreaterThanOrEqual(devices.length * 3 * 3);
  const windowsBefore = await readWindows(first.reader, 'dev-1', 'hum', now);
  await first.close();
  outboxes = [];
  // The file as version 4 left it: the key ordered by (device, metric, minute, epoch).
  const file = join(dir.path, 'gateway.db');
  const v4 = await Db.open(file);
  await v4.exec(`BEGIN; DROP INDEX partials_key; CREATE UNIQUE INDEX partials_key ON partials (device, metric, minute, epoch);
    UPDATE meta SET value = '4' WHERE key = 'schema_version'; COMMIT;`);
  await v4.close();

  // Too little disk for the new index: refused before it starts, naming what it needs; the file is left as it was.
  await expect(open(() => now, nullLogger(), async (d) => (d === dir.path ? 60_000_000 : Infinity)))
    .rejects.toThrow(/migrating to schema version 5 makes the speed partials' key index again \(\d+ MB\) and needs about \d+ MB free on its filesystem; 60 MB are free\. .* unchanged \(schema version 4\)/);
  const still = await Db.open(file);
  expect(await still.get("SELECT value FROM meta WHERE key = 'schema_version'")).toEqual({ value: '4' });
  expect(await still.get("SELECT sql FROM sqlite_schema WHERE name = 'partials_key'")).toEqual({ sql: 'CREATE UNIQUE INDEX partials_key ON partials (device, metric, minute, epoch)' });
  await still.close();

  const o = await open(() => now);
  const db = o.writes.db;
  expect(await db.get("SELECT value FROM meta WHERE key = 'schema_version'")).toEqual({ value: '5' });
  expect(await db.get("SELECT sql FROM sqlite_schema WHERE name = 'partials_key'")).toEqual({ sql: 'CREATE UNIQUE INDEX partials_key ON partials (device, minute, metric, epoch)' });
  expect(await db.all('SELECT rowid, * FROM partials ORDER BY rowid')).toEqual(rows);
  expect(await readWindows(o.reader, 'dev-1', 'hum', now)).toEqual(windowsBefore);
  // The reads find a device's minutes through the key, and the upserts conflict on it: a reading in
  // a minute that has a row in the open epoch updates that row, no second one.
  expect((await db.all<{ detail: string }>("EXPLAIN QUERY PLAN SELECT minute, count, sum FROM partials WHERE device = 'dev-1' AND metric = 'hum' AND minute BETWEEN 0 AND 1 ORDER BY minute DESC")).map((x) => x.detail))
    .toEqual(['SEARCH partials USING INDEX partials_key (device=? AND minute>? AND minute<?)']);
  const minute = Math.floor((now - 400) / 60_000) * 60_000;
  await o.submit([r('dev-1', 'hum', now - 100, 7)]);
  const n = await db.get<{ n: number; count: number }>("SELECT COUNT(*) AS n, SUM(count) AS count FROM partials WHERE device = 'dev-1' AND metric = 'hum' AND minute = ?", [minute]);
  await o.submit([r('dev-1', 'hum', now - 50, 8)]);
  await o.applied();
  expect(await db.get("SELECT COUNT(*) AS n, SUM(count) AS count FROM partials WHERE device = 'dev-1' AND metric = 'hum' AND minute = ?", [minute]))
    .toEqual({ n: n!.n, count: n!.count + 1 });
  expect((await readWindows(o.reader, 'dev-1', 'hum', now)).windows['1h'].count).toBe(windowsBefore.windows['1h'].count + 2);
});

test('a new gateway.db gets GATEWAY_PAGE_SIZE; a file made with other pages keeps them, and its WAL checkpoints after the same bytes', async () => {
  const o = await open();
  expect(await o.writes.db.get('PRAGMA page_size')).toEqual({ page_size: GATEWAY_PAGE_SIZE });
  expect(await o.writes.db.get('PRAGMA wal_autocheckpoint')).toEqual({ wal_autocheckpoint: GATEWAY_WAL_CHECKPOINT_BYTES / GATEWAY_PAGE_SIZE });
  const other = (GATEWAY_PAGE_SIZE as number) === 512 ? 1024 : 512;
  const file = join(dir.path, 'other', 'gateway.db');
  mkdirSync(join(dir.path, 'other'));
  const made = await Db.open(file);
  await made.exec(`PRAGMA page_size = ${other}; PRAGMA journal_mode = WAL; CREATE TABLE t (x)`);
  await made.close();
  const reg = new Registry();
  const p = await Outbox.open({ dataDir: join(dir.path, 'other'), logger: nullLogger(), registry: reg, now: () => T0 }, { pruneCron: null });
  outboxes.push(p);
  expect(await p.writes.db.get('PRAGMA page_size')).toEqual({ page_size: other });
  expect(await p.writes.db.get('PRAGMA wal_autocheckpoint')).toEqual({ wal_autocheckpoint: GATEWAY_WAL_CHECKPOINT_BYTES / other });
  expect(await p.submit([r('dev-0', 'temp', T0 - 1000)])).toEqual({ accepted: 1, duplicates: 0 });
});

test('series numbers: past SERIES_MAX a new series is dropped (counted) while known ones commit; the retention frees unused numbers', async () => {
  const o = await open();
  const db = o.writes.db;
  expect(await o.submit([r('a', 'temp', T0 - 1000), r('b', 'temp', T0 - 1000)])).toEqual({ accepted: 2, duplicates: 0 });
  // Every other number taken by series no identity refers to.
  await db.exec(`WITH RECURSIVE n(i) AS (SELECT 3 UNION ALL SELECT i + 1 FROM n WHERE i < ${SERIES_MAX})
    INSERT INTO series (id, device, metric) SELECT i, 'old-' || i, 'm' FROM n`);
  const dropped = async () => (await registry.getSingleMetric('braid_readings_dropped_total')!.get()).values.find((v) => v.labels.reason === 'series_full')?.value ?? 0;

  expect(await o.submit([r('a', 'temp', T0), r('new', 'temp', T0), r('b', 'temp', T0)])).toEqual({ accepted: 2, duplicates: 0 });
  expect(await dropped()).toBe(1);
  expect(await db.all('SELECT device, ts FROM outbox WHERE ts = ? ORDER BY seq', [T0])).toEqual([{ device: 'a', ts: T0 }, { device: 'b', ts: T0 }]);

  // Numbers freed below the highest are taken by new series.
  await db.exec('DELETE FROM series WHERE id IN (500, 700)');
  expect(await o.submit([r('x', 'temp', T0), r('y', 'temp', T0), r('z', 'temp', T0)])).toEqual({ accepted: 2, duplicates: 0 });
  expect(await dropped()).toBe(2);
  expect(await db.all("SELECT id, device FROM series WHERE device IN ('x', 'y', 'z') ORDER BY id")).toEqual([{ id: 500, device: 'x' }, { id: 700, device: 'y' }]);
  expect(await db.all('SELECT device, ts FROM dedup WHERE ts = ? ORDER BY device', [T0])).toEqual(['a', 'b', 'x', 'y'].map((device) => ({ device, ts: T0 })));

  await o.runRetention();
  expect(await db.all('SELECT id FROM series ORDER BY id')).toEqual([{ id: 1 }, { id: 2 }, { id: 500 }, { id: 700 }]);
  expect(await o.submit([r('new', 'temp', T0), r('new', 'hum', T0)])).toEqual({ accepted: 2, duplicates: 0 });
  expect(await db.all('SELECT device, metric FROM series WHERE id > 700 ORDER BY device, metric')).toEqual([{ device: 'new', metric: 'hum' }, { device: 'new', metric: 'temp' }]);
  expect(await db.get('SELECT MAX(id) AS id FROM series')).toEqual({ id: 702 });
  expect(await o.submit([r('new', 'temp', T0)])).toEqual({ accepted: 0, duplicates: 1 });
  expect(await dropped()).toBe(2);
  expect((await registry.getSingleMetric('braid_readings_duplicate_total')!.get()).values[0].value).toBe(1);

  // A series an outbox row refers to is kept, its identities gone or not (the row reads by its number).
  await db.exec('DELETE FROM dedup_keys WHERE (key & 1048575) = 500');
  await db.exec(`WITH RECURSIVE n(i) AS (SELECT 703 UNION ALL SELECT i + 1 FROM n WHERE i < ${SERIES_MAX})
    INSERT INTO series (id, device, metric) SELECT i, 'old-' || i, 'm' FROM n`);
  await o.runRetention();
  expect(await db.get("SELECT COUNT(*) AS n FROM series WHERE device LIKE 'old-%'")).toEqual({ n: 0 });
  expect(await db.all("SELECT id, device FROM series WHERE device = 'x'")).toEqual([{ id: 500, device: 'x' }]);
  expect(await db.all("SELECT device, ts FROM outbox WHERE device = 'x'")).toEqual([{ device: 'x', ts: T0 }]);

  // A series the retention deletes is forgotten by the committer too: x, whose identities and
  // outbox rows are gone, is numbered again when it comes back (its old number no longer names it).
  await db.exec('DELETE FROM outbox_rows WHERE series = 500');
  await db.exec(`WITH RECURSIVE n(i) AS (SELECT 703 UNION ALL SELECT i + 1 FROM n WHERE i < ${SERIES_MAX})
    INSERT INTO series (id, device, metric) SELECT i, 'old-' || i, 'm' FROM n`);
  await o.runRetention();
  expect(await db.get("SELECT COUNT(*) AS n FROM series WHERE device = 'x' OR device LIKE 'old-%'")).toEqual({ n: 0 });
  expect(await o.submit([r('x', 'temp', T0 + 1000), r('y', 'temp', T0 + 1000)])).toEqual({ accepted: 2, duplicates: 0 });
  expect(await db.all('SELECT device, ts FROM dedup WHERE ts = ? ORDER BY device', [T0 + 1000])).toEqual([{ device: 'x', ts: T0 + 1000 }, { device: 'y', ts: T0 + 1000 }]);
  expect(await o.submit([r('x', 'temp', T0 + 1000)])).toEqual({ accepted: 0, duplicates: 1 });
}, 60_000);
