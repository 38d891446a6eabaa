/**
 * The commit log (edge/outbox/commit-log.ts; committer.ts commitLogged, applyPending): a group of
 * fresh readings is durable once its record is written [INV-1], goes into gateway.db later with
 * others, before any other write job and when a reader asks; a crash image (the files as a kill -9
 * leaves them) replays what gateway.db lacks; repeats are still dropped, the first kept [INV-2];
 * an apply that fails keeps the readings and fails the commits' health. Real SQLite, real files.
 */
import { copyFileSync, existsSync, openSync, closeSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { Registry } from 'prom-client';
import { CommitLog, INLINE_MAX_MS, LOG_PAGE, LOG_PREALLOC_BYTES, PARAM, replayable, type LogRecord } from '../../edge/outbox/commit-log.js';
import { APPLY_READINGS, DEDUP_FLUSH_READINGS, LOG_MAX_READINGS, LOG_MAX_RECORD_BYTES } from '../../edge/outbox/committer.js';
import { COMMIT_LOG_FILE, Outbox, type OutboxOptions, type Reading } from '../../edge/outbox/index.js';
import { nullLogger } from '../../shared/logger.js';
import { IoTimes } from '../../shared/io-times.js';
import { metricValue } from '../../shared/metrics.js';
import { Db } from '../../shared/sqlite.js';
import { tempDir } from '../support/gateway.js';

const T0 = Date.UTC(2026, 11, 7, 12, 0, 0);

let dirs: Array<ReturnType<typeof tempDir>> = [];
let outboxes: Outbox[] = [];

afterEach(async () => {
  for (const o of outboxes) await o.close();
  outboxes = [];
  for (const d of dirs) d.remove();
  dirs = [];
});

function dir(): string {
  const d = tempDir('braid-commit-log-');
  dirs.push(d);
  return d.path;
}

async function open(dataDir: string, opts: Partial<OutboxOptions> = {}, registry = new Registry()): Promise<Outbox> {
  const o = await Outbox.open({ dataDir, logger: nullLogger(), registry, now: () => T0 }, { pruneCron: null, refillWaitMs: 0, ...opts });
  outboxes.push(o);
  return o;
}

const r = (device: string, ts: number, value = 1, metric = 'temp'): Reading => ({ device, metric, ts, value });
async function histogramSum(registry: Registry, name: string): Promise<number | undefined> {
  const { values } = await registry.getSingleMetric(name)!.get();
  return values.find((v) => (v as { metricName?: string }).metricName === `${name}_sum`)?.value;
}

const rows = async (o: Outbox) => (await o.reader.get<{ n: number }>('SELECT COUNT(*) AS n FROM outbox_rows'))!.n;
const seqs = async (o: Outbox) => (await o.reader.all<{ seq: number; ts: number; value: number }>('SELECT seq, ts, value FROM outbox_rows ORDER BY seq'));

/**
 * The data dir's files as a kill -9 leaves them, copied to a new dir: inside a write job of the
 * outbox's, so no transaction, checkpoint or log write is half done in the copy.
 */
function crashImage(o: Outbox, from: string): Promise<string> {
  return o.writes.runBare(async () => {
    await o.applyIdle();
    const to = dir();
    for (const f of ['gateway.db', 'gateway.db-wal', COMMIT_LOG_FILE]) if (existsSync(join(from, f))) copyFileSync(join(from, f), join(to, f));
    return to;
  });
}

/** A record as the log gives it back: the partials' parameter (PARAM.partials) is not written; `tag` rides in `now`'s. */
const record = (first: number, count: number, tag: string): LogRecord => {
  const readings = Array.from({ length: count }, (_, i) => [T0 + first + i, 1, 0, 1]);
  return { first, count, params: [JSON.stringify(readings), tag, 1, first, null, null, null, null, null] };
};

test('the log file: records come back in seq order; the replay takes those after gateway.db\'s last seq, contiguous; a ring that never writes over a record not applied; a torn record is passed over', async () => {
  const file = join(dir(), COMMIT_LOG_FILE);
  const { log, records } = CommitLog.open(file);
  expect(records).toEqual([]);
  expect(statSync(file).size).toBe(LOG_PREALLOC_BYTES);
  const [a, b, c] = [record(1, 2, 'a'), record(3, 1, 'b"\u00e9'), record(4, 3, 'c'.repeat(LOG_PAGE))];
  for (const x of [a, b, c]) await log.append(x);
  log.close();

  const again = CommitLog.open(file);
  expect(again.records).toEqual([a, b, c]);
  expect(replayable(again.records, 0)).toEqual([a, b, c]);
  expect(replayable(again.records, 2)).toEqual([b, c]);
  expect(replayable(again.records, 3)).toEqual([c]);
  expect(replayable(again.records, 6)).toEqual([]);
  // A gap in seq ends the replay: what follows cannot continue gateway.db.
  expect(replayable([a, c], 0)).toEqual([a]);

  // Everything written is applied: the next record goes at offset 0, over `a`; b and c stay, older.
  again.log.appliedUpTo(6);
  const d = record(7, 1, 'd');
  await again.log.append(d);
  again.log.close();
  const third = CommitLog.open(file);
  expect(third.records).toEqual([b, c, d]);
  expect(replayable(third.records, 6)).toEqual([d]);
  expect(replayable(third.records, 7)).toEqual([]);

  // A ring: records go on past the end at 0 again, over applied ones only; with no room, an
  // append is refused and full() says so.
  const { log: ring } = third;
  const pages = LOG_PREALLOC_BYTES / LOG_PAGE;
  let seq = 8;
  for (let i = 0; i < pages; i++) await ring.append(record(seq++, 1, 'r'));
  expect(ring.full()).toBe(true);
  await expect(ring.append(record(seq, 1, 'r'))).rejects.toThrow(/no room/);
  // The oldest half applied: the next records go at 0, after the last page.
  ring.appliedUpTo(7 + pages / 2);
  expect(ring.full()).toBe(false);
  for (let i = 0; i < pages / 2; i++) await ring.append(record(seq++, 1, 'w'));
  expect(ring.full()).toBe(true);
  ring.close();
  const wrapped = CommitLog.open(file);
  // Every page holds a record now: the newer half (written at 0) and the older, in seq order.
  expect(wrapped.records.map((x) => x.first)).toEqual(Array.from({ length: pages }, (_, i) => 8 + pages / 2 + i));
  expect(replayable(wrapped.records, 7 + pages / 2).length).toBe(pages);
  wrapped.log.close();

  // A record cut by a crash (its bytes not all written) is passed over: the replay stops before it.
  const fd = openSync(file, 'r+');
  writeSync(fd, Buffer.from('x'), 0, 1, 20);
  closeSync(fd);
  const torn = CommitLog.open(file);
  expect(torn.records.map((x) => x.first)).not.toContain(8 + pages);
  expect(torn.records.length).toBe(pages - 1);
  expect(replayable(torn.records, 7 + pages)).toEqual([]);
  expect(replayable(torn.records, 7 + pages / 2).length).toBe(pages / 2);
  torn.log.close();

  // A record of sessions 18-22 ('BRL1', its partials' parameter written) is read with it; one of
  // this form ('BRL2') that holds a partials' parameter is not one the log wrote.
  const old = (magic: string, params: unknown[]) => {
    const payload = Buffer.from(JSON.stringify(params));
    const buf = Buffer.alloc(LOG_PAGE);
    Buffer.from([0xff, 0xfe, ...Buffer.from(magic), 0xfe, 0xff]).copy(buf, 0);
    buf.writeUInt32LE(payload.length, 8);
    buf.writeUInt32LE(crc32(payload), 12);
    payload.copy(buf, 16);
    return buf;
  };
  const v1 = record(1, 2, 'v1');
  v1.params[PARAM.partials] = '[["d1","temp",0,2,2,0,1,0,1,0,0,0,1,0,1,0,1,2]]';
  const fd2 = openSync(file, 'r+');
  writeSync(fd2, old('BRL1', v1.params), 0, LOG_PAGE, 0);
  writeSync(fd2, old('BRL2', v1.params), 0, LOG_PAGE, LOG_PAGE);
  closeSync(fd2);
  const both = CommitLog.open(file);
  both.log.close();
  expect(both.records.filter((x) => x.params[1] === 'v1')).toEqual([v1]);
});

test('the log writes on the main thread while its writes are fast, on the thread pool once they are slow (a stall) and back when the average is fast again; the records are the same either way', async () => {
  const t = new IoTimes(INLINE_MAX_MS);
  expect(t.inline()).toBe(true);
  for (let i = 0; i < 50; i++) t.record(0.2);
  expect(t.inline()).toBe(true);
  // One 10 ms stall: to the pool, for ~15 writes of 0.2 ms.
  t.record(10);
  expect(t.inline()).toBe(false);
  let writes = 0;
  while (!t.inline()) {
    t.record(0.2);
    writes++;
  }
  expect(writes).toBeGreaterThan(5);
  expect(writes).toBeLessThan(20);
  // A disk whose every write takes a millisecond stays on the pool.
  for (let i = 0; i < 100; i++) t.record(2 * INLINE_MAX_MS);
  expect(t.inline()).toBe(false);

  const file = join(dir(), COMMIT_LOG_FILE);
  const { log } = CommitLog.open(file);
  const where: boolean[] = [];
  log.onWrite = (inline) => where.push(inline);
  const recs = [record(1, 2, 'a'), record(3, 1, 'b'), record(4, 3, 'c'), record(7, 1, 'd')];
  await log.append(recs[0]);
  log.times.record(16 * 100); // as after a write of 100 ms: the next ones go to the pool
  await log.append(recs[1]);
  await log.append(recs[2]);
  for (let i = 0; i < 200; i++) log.times.record(0);
  await log.append(recs[3]);
  log.close();
  expect(where).toEqual([true, false, false, true]);
  expect(CommitLog.open(file).records).toEqual(recs);
});

test('a group of fresh readings is acknowledged from the log, reaches gateway.db with others, and a crash image replays it exactly [INV-1]', async () => {
  const d = dir();
  const registry = new Registry();
  const o = await open(d, {}, registry);
  // New series: numbered by the general path, in gateway.db at once.
  expect(await o.submit([r('d1', T0), r('d2', T0)])).toEqual({ accepted: 2, duplicates: 0 });
  expect(await rows(o)).toBe(2);
  // Fresh readings of numbered series: durable in the log; gateway.db gets them later.
  expect(await o.submit([r('d1', T0 + 1, 0.1), r('d2', T0 + 1, -2.5e-300)])).toEqual({ accepted: 2, duplicates: 0 });
  expect(await o.submit([r('d1', T0 + 2, 3), r('d1', T0 + 3, 4)])).toEqual({ accepted: 2, duplicates: 0 });
  expect(await rows(o)).toBe(2);
  expect(o.status()).toMatchObject({ lastSeq: 6, pending: 6 });
  expect(CommitLog.open(join(await crashImage(o, d), COMMIT_LOG_FILE)).records.map((x) => [x.first, x.count])).toEqual([[3, 2], [5, 2]]);

  // A kill -9 now: the restart puts the two logged groups into gateway.db before anything else.
  const image = await crashImage(o, d);
  const b = await open(image);
  expect(await seqs(b)).toEqual([
    { seq: 1, ts: T0, value: 1 }, { seq: 2, ts: T0, value: 1 }, { seq: 3, ts: T0 + 1, value: 0.1 },
    { seq: 4, ts: T0 + 1, value: -2.5e-300 }, { seq: 5, ts: T0 + 2, value: 3 }, { seq: 6, ts: T0 + 3, value: 4 },
  ]);
  expect(b.status()).toMatchObject({ lastSeq: 6, pending: 6 });
  // The partials as the groups left them, and the crashed epoch closed with every seq.
  expect(await b.reader.get('SELECT count, sum, first, last FROM partials WHERE device = ?', ['d1'])).toEqual({ count: 4, sum: 1 + 0.1 + 3 + 4, first: 1, last: 4 });
  expect(await b.reader.all('SELECT first_seq, last_seq, closed_at IS NOT NULL AS closed FROM epochs')).toEqual([{ first_seq: 1, last_seq: 6, closed: 1 }]);
  // Repeats of the replayed identities are dropped; the seq goes on from 6.
  expect(await b.submit([r('d1', T0 + 1), r('d1', T0 + 4)])).toEqual({ accepted: 1, duplicates: 1 });
  await b.applied();
  expect((await seqs(b)).map((x) => x.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
  // Replayed once: a second restart of the same files finds nothing more to apply.
  await b.close();
  outboxes = outboxes.filter((x) => x !== b);
  const c = await open(image);
  expect(await rows(c)).toBe(7);

  // The original goes on: its reader sees the logged groups once asked (or within APPLY_MS).
  await o.applied();
  expect(await rows(o)).toBe(6);
  expect(await histogramSum(registry, 'braid_commit_log_apply_readings')).toBe(4);
});

test('repeats: of a logged identity not yet in gateway.db, inside a group, and of old identities after a restart, are dropped with the first kept [INV-2]', async () => {
  const d = dir();
  const o = await open(d);
  expect(await o.submit([r('d1', T0)])).toEqual({ accepted: 1, duplicates: 0 });
  expect(await o.submit([r('d1', T0 + 1, 5)])).toEqual({ accepted: 1, duplicates: 0 });
  // Logged, not applied: held in memory; a group with a repeat leaves the log for the general path.
  expect(await o.submit([r('d1', T0 + 1, 6), r('d1', T0 + 2, 7), r('d1', T0 + 2, 8)])).toEqual({ accepted: 1, duplicates: 2 });
  await o.applied();
  expect((await seqs(o)).map((x) => [x.seq, x.value])).toEqual([[1, 1], [2, 5], [3, 7]]);

  // Past DEDUP_FLUSH_READINGS the identities go into dedup_keys: an older ts of the series then
  // takes the SQL path, which finds repeats there and lets new ones in.
  const many: Reading[] = [];
  for (let i = 0; i < DEDUP_FLUSH_READINGS; i++) many.push(r('d1', T0 + 10 + i));
  for (let i = 0; i < many.length; i += 500) await o.submit(many.slice(i, i + 500));
  expect(await o.submit([r('d1', T0 + 20), r('d1', T0 + 5)])).toEqual({ accepted: 1, duplicates: 1 });
  await o.applied();
  expect(await rows(o)).toBe(3 + DEDUP_FLUSH_READINGS + 1);

  // After a restart every identity of gateway.db is below dedupHi: repeats are found in SQL.
  const b = await open(await crashImage(o, d));
  expect(await b.submit([r('d1', T0 + 1), r('d1', T0 + 5), r('d1', T0 + 10 + DEDUP_FLUSH_READINGS)])).toEqual({ accepted: 1, duplicates: 2 });
});

test('identities a general-path commit copies into dedup_keys bound the log\'s dedup too: their repeat is dropped [INV-2]', async () => {
  const o = await open(dir());
  await o.submit([r('d1', T0)]);
  // 4,095 identities held, then a group with a new series (the general path) copies them and its own.
  const held = DEDUP_FLUSH_READINGS - 1;
  for (let i = 1; i < held; i += 500) await o.submit(Array.from({ length: Math.min(500, held - i) }, (_, k) => r('d1', T0 + i + k)));
  expect(await o.submit([r('d1', T0 + 9000), r('d2', T0)])).toEqual({ accepted: 2, duplicates: 0 });
  await o.applied();
  expect(await o.reader.get('SELECT COUNT(*) AS n FROM dedup_keys')).toEqual({ n: held + 2 });
  // Their repeats, alone: each is in dedup_keys only.
  expect(await o.submit([r('d1', T0 + 9000)])).toEqual({ accepted: 0, duplicates: 1 });
  expect(await o.submit([r('d2', T0)])).toEqual({ accepted: 0, duplicates: 1 });
});

test('randomized: fresh, late, repeated and new-series readings in groups of every size, with flushes and crash restarts: each identity stored once, its first value kept, seq contiguous [INV-1] [INV-2]', async () => {
  let seed = 20261207;
  const rand = (n: number) => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed % n; };
  let d = dir();
  let o = await open(d);
  /** Identity (device, ts) -> the value stored: what the outbox must hold in the end. */
  const stored = new Map<string, number>();
  const newest = new Map<string, number>();
  /** Each device's stored ts, oldest first: repeats are drawn from them. */
  const history = new Map<string, number[]>();
  let devices = 4;
  let total = 0;
  for (let round = 0; round < 400; round++) {
    // Small groups (the log's), middling ones, and some past LOG_MAX_READINGS.
    const size = rand(10);
    const n = size < 4 ? 1 + rand(3) : size < 9 ? 4 + rand(57) : 130 + rand(200);
    const group: Reading[] = [];
    for (let i = 0; i < n; i++) {
      if (rand(60) === 0) devices++;
      const device = `dev-${rand(devices)}`;
      const top = newest.get(device) ?? T0;
      const past = history.get(device) ?? [];
      const kind = rand(20);
      // Mostly the next reading of the device; some late (older, new or not), some repeats of any age.
      const ts = kind === 0 ? top - rand(5000)
        : kind <= 2 && past.length ? past[rand(past.length)]
          : kind === 3 ? top - rand(50)
            : top + 1 + rand(3);
      newest.set(device, Math.max(top, ts));
      group.push(r(device, ts, rand(1000) / 8));
    }
    let accepted = 0;
    for (const x of group) {
      const id = `${x.device}|${x.ts}`;
      if (stored.has(id)) continue;
      stored.set(id, x.value);
      if (!history.has(x.device)) history.set(x.device, []);
      history.get(x.device)!.push(x.ts);
      accepted++;
    }
    total += group.length;
    expect(await o.submit(group)).toEqual({ accepted, duplicates: group.length - accepted });
    if (round % 100 === 99) {
      // A kill -9 now: the restart goes on from the files.
      d = await crashImage(o, d);
      o = await open(d);
    }
  }
  expect(total).toBeGreaterThan(2 * DEDUP_FLUSH_READINGS);
  await o.applied();
  const rows = await o.reader.all<{ seq: number; device: string; ts: number; value: number }>('SELECT seq, device, ts, value FROM outbox ORDER BY seq');
  expect(rows.map((x) => x.seq)).toEqual(rows.map((_, i) => i + 1));
  expect(new Map(rows.map((x) => [`${x.device}|${x.ts}`, x.value]))).toEqual(stored);
  expect(rows.length).toBe(stored.size);
}, 60_000);

test('a record holds the readings, not their partials: a group of many series is logged in a page; one past LOG_MAX_READINGS commits in gateway.db at once', async () => {
  const d = dir();
  const o = await open(d);
  const devices = Array.from({ length: 120 }, (_, i) => `device-with-a-long-name-${i}`);
  await o.submit(devices.map((x) => r(x, T0)));
  // 120 series, a fleet's group: the record is the readings (~30 B each), the partials made again at a replay.
  await o.submit(devices.map((x) => r(x, T0 + 1)));
  expect(await rows(o)).toBe(120);
  const logged = CommitLog.open(join(await crashImage(o, d), COMMIT_LOG_FILE));
  expect(logged.records.map((x) => [x.first, x.count, x.params[PARAM.partials]])).toEqual([[121, 120, null]]);
  expect(CommitLog.encode(logged.records[0]).length).toBeLessThanOrEqual(LOG_MAX_RECORD_BYTES);
  logged.log.close();
  // Past LOG_MAX_READINGS: a SQLite commit at once.
  const many = Array.from({ length: LOG_MAX_READINGS + 1 }, (_, i) => r(devices[i % devices.length], T0 + 2 + Math.floor(i / devices.length)));
  await o.submit(many);
  expect(await rows(o)).toBe(120 + 120 + many.length);
});

/** Every partial row, in key order: what the speed layer holds. */
const partials = (db: Db) => db.all('SELECT device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts, updated_at FROM partials ORDER BY device, metric, minute, epoch');

test('randomized: a crash image replays records without their partials to the partials the groups wrote, across epochs that close and readings that fall into rows gateway.db holds [INV-1] [INV-2]', async () => {
  let seed = 20261208;
  const rand = (n: number) => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed % n; };
  let now = T0;
  const d = dir();
  const o = await Outbox.open({ dataDir: d, logger: nullLogger(), registry: new Registry(), now: () => now }, { pruneCron: null, refillWaitMs: 0, epochMs: 60_000 });
  outboxes.push(o);
  const devices = Array.from({ length: 12 }, (_, i) => `dev-${i}`);
  const metrics = ['temp', 'hum'];
  // Every series numbered first (the general path).
  await o.submit(devices.flatMap((device) => metrics.map((metric) => r(device, T0 - 120_000, 0, metric))));
  const clock = new Map<string, number>(devices.map((x) => [x, T0 - 120_000]));
  let images = 0;
  let closes = 0;
  for (let round = 0; round < 300; round++) {
    now += rand(4000);
    const group: Reading[] = [];
    for (let i = 1 + rand(40); i > 0; i--) {
      const device = devices[rand(devices.length)];
      // Fresh readings (above every identity of their series), some minutes behind the clock: rows of earlier minutes grow too.
      const ts = clock.get(device)! + 1 + rand(20_000);
      clock.set(device, ts);
      // Values whose sums and m2 round: the replay must make the same doubles.
      group.push(r(device, ts, (rand(2_000_000) - 1_000_000) / 7 + 1e9 * rand(2), metrics[rand(metrics.length)]));
    }
    expect((await o.submit(group)).accepted).toBe(group.length);
    if (round % 37 === 36) {
      // A kill -9 now: the image replays what gateway.db lacks; its partials are those the groups wrote.
      const image = await crashImage(o, d);
      const held = await Db.open(join(image, 'gateway.db'));
      const lastSeq = (await held.get<{ seq: number }>('SELECT MAX(seq) AS seq FROM outbox_rows'))!.seq;
      await held.close();
      const log = CommitLog.open(join(image, COMMIT_LOG_FILE));
      log.log.close();
      const replayed = replayable(log.records, lastSeq);
      const b = await open(image);
      await o.applied();
      expect(await partials(b.reader)).toEqual(await partials(o.reader));
      await b.close();
      outboxes = outboxes.filter((x) => x !== b);
      if (replayed.length) images++;
      if (replayed.some((x) => x.params[4] !== null)) closes++;
    }
  }
  // The images had records to replay, some of them across an epoch's close.
  expect(images).toBeGreaterThan(4);
  expect(closes).toBeGreaterThan(0);
  expect((await o.reader.get<{ n: number }>('SELECT COUNT(DISTINCT epoch) AS n FROM partials'))!.n).toBeGreaterThan(5);
}, 60_000);

test('every other write job sees the logged groups in gateway.db first; the epoch closes after them', async () => {
  const o = await open(dir());
  await o.submit([r('d1', T0)]);
  await o.submit([r('d1', T0 + 1), r('d1', T0 + 2)]);
  expect(await rows(o)).toBe(1);
  expect(await o.writes.run((db) => db.get<{ n: number }>('SELECT COUNT(*) AS n FROM outbox_rows'))).toEqual({ n: 3 });
  await o.close();
  outboxes = [];
});

test('an apply holds no acknowledgement: groups the log takes while one runs are acknowledged; every other write job waits for it and sees them all', async () => {
  const d = dir();
  const o = await open(d);
  await o.submit([r('d1', T0)]);
  let ts = T0;
  const group = (n: number) => Array.from({ length: n }, () => r('d1', ++ts));
  // Just under APPLY_READINGS waiting in the log: the next group starts an apply in the background.
  for (let left = APPLY_READINGS - 1; left > 0; left -= Math.min(64, left)) await o.submit(group(Math.min(64, left)));
  expect(await rows(o)).toBe(1);
  // Another connection holds gateway.db's write lock: that apply waits for it (busy_timeout).
  const blocker = await Db.open(join(d, 'gateway.db'));
  await blocker.exec('BEGIN IMMEDIATE');
  let released = false;
  try {
    expect(await o.submit(group(1))).toEqual({ accepted: 1, duplicates: 0 });
    // Acknowledged from the log while the apply waits, not after it.
    const later = o.submit(group(2)).then((x) => ({ x, released }));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([later, new Promise((resolve) => { timer = setTimeout(resolve, 3000); })]);
    clearTimeout(timer);
    // A write job queued now runs once the apply has ended, with the groups logged meanwhile in too.
    const job = o.writes.run((db) => db.get<{ n: number }>('SELECT COUNT(*) AS n FROM outbox_rows')).then((x) => ({ x, released }));
    released = true;
    await blocker.exec('COMMIT');
    expect(await later).toEqual({ x: { accepted: 2, duplicates: 0 }, released: false });
    expect(await job).toEqual({ x: { n: 1 + APPLY_READINGS + 2 }, released: true });
  } finally {
    if (!released) await blocker.exec('ROLLBACK').catch(() => undefined);
    await blocker.close();
  }
  expect(o.commitsFailingSince()).toBeNull();
  expect((await seqs(o)).map((x) => x.seq)).toEqual(Array.from({ length: 1 + APPLY_READINGS + 2 }, (_, i) => i + 1));
});

test('an apply that fails keeps the readings (in the log, and applied by the next write job once it can) and marks the commits failing', async () => {
  const d = dir();
  const registry = new Registry();
  const o = await open(d, {}, registry);
  await o.submit([r('d1', T0)]);
  await o.writes.db.exec("CREATE TEMP TRIGGER refuse BEFORE INSERT ON outbox_rows BEGIN SELECT RAISE(ABORT, 'refused'); END");
  // Acknowledged from the log: gateway.db is not needed for that.
  expect(await o.submit([r('d1', T0 + 1), r('d1', T0 + 2)])).toEqual({ accepted: 2, duplicates: 0 });
  await expect(o.applied()).rejects.toThrow(/refused/);
  expect(o.commitsFailingSince()).not.toBeNull();
  expect(await metricValue(registry, 'braid_commit_failures_total')).toBe(1);
  // A write job meanwhile fails too: it would not see the readings.
  await expect(o.writes.run(async () => 'ran')).rejects.toThrow(/refused/);
  // A group the log takes meanwhile is acknowledged, and the commits stay failing.
  const failingSince = o.commitsFailingSince();
  expect(await o.submit([r('d1', T0 + 3)])).toEqual({ accepted: 1, duplicates: 0 });
  expect(o.commitsFailingSince()).toBe(failingSince);

  // A kill -9 now loses nothing acknowledged.
  const b = await open(await crashImage(o, d));
  expect((await seqs(b)).map((x) => x.seq)).toEqual([1, 2, 3, 4]);

  // The log fills (a page for each group waiting): the next group must wait for the apply,
  // which fails, so it is refused, not acknowledged; nothing acknowledged is lost.
  let acked = 4;
  let refused: unknown = null;
  for (let i = 0; i < LOG_PREALLOC_BYTES / LOG_PAGE + 10 && refused === null; i++) {
    try {
      await o.submit([r('d1', T0 + 10 + i)]);
      acked++;
    } catch (err) {
      refused = err;
    }
  }
  expect(String(refused)).toMatch(/refused/);
  // A page each: the group of seq 2-3, then groups of one, up to the log's end.
  expect(acked).toBe(1 + 2 + (LOG_PREALLOC_BYTES / LOG_PAGE - 1));
  expect(o.commitsFailingSince()).toBe(failingSince);
  await o.writes.db.exec('DROP TRIGGER refuse');
  await o.applied();
  expect((await seqs(o)).map((x) => x.seq)).toEqual(Array.from({ length: acked }, (_, i) => i + 1));
  expect(o.commitsFailingSince()).toBeNull();
  // Taken again once the apply succeeds.
  expect(await o.submit([r('d1', T0 + 5000)])).toEqual({ accepted: 1, duplicates: 0 });
});

test('a stop whose apply fails closes cleanly and leaves the records to the next start', async () => {
  const d = dir();
  const o = await open(d);
  await o.submit([r('d1', T0)]);
  await o.submit([r('d1', T0 + 1), r('d1', T0 + 2)]);
  await o.writes.db.exec("CREATE TEMP TRIGGER refuse BEFORE INSERT ON outbox_rows BEGIN SELECT RAISE(ABORT, 'refused'); END");
  outboxes = [];
  await o.close();
  const b = await open(d);
  expect((await seqs(b)).map((x) => x.seq)).toEqual([1, 2, 3]);
});

test('commitLog false: every group commits in gateway.db before it resolves; a log left by an earlier run is replayed first', async () => {
  const d = dir();
  const o = await open(d);
  await o.submit([r('d1', T0)]);
  await o.submit([r('d1', T0 + 1)]);
  const image = await crashImage(o, d);
  const b = await open(image, { commitLog: false });
  expect(await rows(b)).toBe(2);
  await b.submit([r('d1', T0 + 2)]);
  expect(await rows(b)).toBe(3);
});
