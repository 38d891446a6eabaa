/**
 * The outbox's group commit (edge/outbox/committer.ts) on a real gateway.db: the one-round-trip
 * path (one exec of SQL around JSON literals) stores every value exactly as the general path
 * binds it, falls back to the general path on a repeat (seen before or inside the group) with
 * the first occurrence kept [INV-2], waits for the refills of windowed publishers only until they
 * arrive, and new databases get 1 KiB pages while an existing one keeps its own; the identities
 * reach dedup_keys in batches and every repeat is still dropped on the way [INV-2].
 */
import { Registry } from 'prom-client';
import { Outbox, type OutboxOptions, type Reading } from '../../edge/outbox/index.js';
import { DEDUP_FLUSH_READINGS, exactDouble, LINGER_FULL_READINGS } from '../../edge/outbox/committer.js';
import { dropOldest } from '../../edge/outbox/budget.js';
import { DEDUP_FLUSHED_KEY } from '../../edge/store/schema.js';
import { Db } from '../../shared/sqlite.js';
import { nullLogger } from '../../shared/logger.js';
import { merge, of, type Summary } from '../../shared/summary.js';
import { minuteOf } from '../../shared/time.js';
import { ACKED_SEQ_KEY, applyAck } from '../../edge/forwarder/batch.js';
import { commitCount, tempDir } from '../support/gateway.js';

const T0 = Date.UTC(2026, 11, 5, 12, 0, 0);

let dir: ReturnType<typeof tempDir>;
let outboxes: Outbox[] = [];
let registry: Registry;

beforeEach(() => {
  dir = tempDir('braid-commit-');
  registry = new Registry();
});

afterEach(async () => {
  for (const o of outboxes) await o.close();
  outboxes = [];
  dir.remove();
});

async function open(opts: Partial<OutboxOptions> = {}): Promise<Outbox> {
  const o = await Outbox.open({ dataDir: dir.path, logger: nullLogger(), registry, now: () => T0 }, { pruneCron: null, ...opts });
  outboxes.push(o);
  return o;
}

const r = (device: string, metric: string, ts: number, value = 1): Reading => ({ device, metric, ts, value });

interface OutboxRow { seq: number; epoch: number; device: string; metric: string; ts: number; value: number }
interface PartialRow { device: string; metric: string; minute: number; count: number; sum: number; min: number; max: number; m2: number; first: number; first_ts: number; last: number; last_ts: number }

/** Doubles that decimal text does not always bring back exactly, and the edges of the format. */
function awkwardDoubles(n: number): number[] {
  const out = [0.1, -0.1, 21.5, 1e20, -1e20, 2 ** 53, 2 ** 53 + 2, -(2 ** 60), 5e-324, -5e-324, 2.2250738585072014e-308,
    2.225073858507201e-308, Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE * 3, 7.398896930364166e-75, 33.62815494317692,
    1.994448219608702, 5.664129083752667e+299];
  const f = new Float64Array(1);
  const u = new Uint32Array(f.buffer);
  let seed = 12345;
  const next = () => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed; };
  while (out.length < n) {
    u[0] = next();
    u[1] = next();
    if (Number.isFinite(f[0])) out.push(f[0]);
  }
  return out;
}

test('exactDouble: m * 2^e gives back every finite double, and nothing for NaN or infinities', () => {
  for (const v of awkwardDoubles(5000)) {
    const [m, e] = exactDouble(v)!.split(',').map(Number);
    expect(Number.isSafeInteger(m)).toBe(true);
    // Two steps, as SQLite's m * pow(2, e) would not overflow where 2 ** e alone does.
    const back = e < -1000 ? (m * 2 ** (e + 1000)) * 2 ** -1000 : e > 900 ? (m * 2 ** 900) * 2 ** (e - 900) : m * 2 ** e;
    expect(back === v || (back === 0 && v === 0)).toBe(true);
  }
  expect(exactDouble(NaN)).toBeNull();
  expect(exactDouble(Infinity)).toBeNull();
  expect(exactDouble(-0)).toBe('0,0');
});

test('values, times and partials are stored exactly, names with quotes and non-ASCII included', async () => {
  const o = await open();
  const values = awkwardDoubles(3000);
  const metrics = ['temp', "it's", 'ünï', 'a"b\\c'];
  const readings = values.map((v, i) => r(`dev-${i % 3}`, metrics[i % metrics.length], T0 - 3600_000 + i * 997, v));
  // One group: submitted together, committed together.
  const results = await Promise.all([readings.slice(0, 1000), readings.slice(1000)].map((part) => o.submit(part)));
  expect(results).toEqual([{ accepted: 1000, duplicates: 0 }, { accepted: 2000, duplicates: 0 }]);

  const rows = await o.reader.all<OutboxRow>('SELECT seq, epoch, device, metric, ts, value FROM outbox ORDER BY seq');
  expect(rows).toHaveLength(readings.length);
  rows.forEach((row, i) => {
    const want = readings[i];
    expect({ seq: row.seq, device: row.device, metric: row.metric, ts: row.ts }).toEqual({ seq: i + 1, device: want.device, metric: want.metric, ts: want.ts });
    if (!(Object.is(row.value, want.value) || (row.value === 0 && want.value === 0))) throw new Error(`value of seq ${row.seq}: ${row.value} stored for ${want.value}`);
  });

  const expected = new Map<string, Summary>();
  for (const x of readings) {
    const k = `${x.device}|${x.metric}|${minuteOf(x.ts)}`;
    const s = of(x.value, x.ts, x.device);
    expected.set(k, expected.has(k) ? merge(expected.get(k)!, s) : s);
  }
  const partials = await o.reader.all<PartialRow>('SELECT device, metric, minute, count, sum, min, max, m2, first, first_ts, last, last_ts FROM partials');
  expect(partials).toHaveLength(expected.size);
  for (const p of partials) {
    const s = expected.get(`${p.device}|${p.metric}|${p.minute}`)!;
    expect(p).toEqual({ device: p.device, metric: p.metric, minute: p.minute, count: s.count, sum: s.sum, min: s.min, max: s.max, m2: s.m2, first: s.first, first_ts: s.firstTs, last: s.last, last_ts: s.lastTs });
  }
});

test('repeats: an identity seen before and one repeated inside the group are dropped, the first occurrence kept, seq contiguous', async () => {
  const o = await open();
  expect(await o.submit([r('d1', 'temp', T0 - 5000, 1), r('d1', 'temp', T0 - 4000, 2)])).toEqual({ accepted: 2, duplicates: 0 });

  const group = await Promise.all([
    o.submit([r('d1', 'temp', T0 - 3000, 3)]),
    o.submit([r('d1', 'temp', T0 - 5000, 99)]), // seen in the first commit
    o.submit([r('d2', 'temp', T0 - 3000, 4), r('d2', 'temp', T0 - 3000, 98)]), // repeated inside the group
    o.submit([r('d1', 'temp', T0 - 3000, 97), r('d1', 'hum', T0 - 3000, 5)]), // the first submit's identity, and a new one
  ]);
  expect(group).toEqual([
    { accepted: 1, duplicates: 0 },
    { accepted: 0, duplicates: 1 },
    { accepted: 1, duplicates: 1 },
    { accepted: 1, duplicates: 1 },
  ]);
  const rows = await o.reader.all<OutboxRow>('SELECT seq, device, metric, ts, value FROM outbox ORDER BY seq');
  expect(rows.map((x) => [x.seq, x.device, x.metric, x.value])).toEqual([
    [1, 'd1', 'temp', 1], [2, 'd1', 'temp', 2], [3, 'd1', 'temp', 3], [4, 'd2', 'temp', 4], [5, 'd1', 'hum', 5],
  ]);
  expect(o.status().lastSeq).toBe(5);
  // The open epoch's row is written at opening and closing only: closed, it spans seq 1..5.
  expect(await (o as unknown as { committer: { closeEpochIfDue: (idleMs: number, at: number) => Promise<boolean> } }).committer.closeEpochIfDue(0, 0)).toBe(true);
  const epochs = await o.reader.all<{ last_seq: number }>('SELECT last_seq FROM epochs');
  expect(epochs).toEqual([{ last_seq: 5 }]);
  const counts = await o.reader.all<{ device: string; metric: string; count: number; sum: number }>('SELECT device, metric, count, sum FROM partials ORDER BY device, metric');
  expect(counts).toEqual([
    { device: 'd1', metric: 'hum', count: 1, sum: 5 },
    { device: 'd1', metric: 'temp', count: 3, sum: 6 },
    { device: 'd2', metric: 'temp', count: 1, sum: 4 },
  ]);
  expect((await registry.getSingleMetric('braid_readings_duplicate_total')!.get()).values[0].value).toBe(3);

  // After a group that fell back, the next one takes the one-round-trip path again and goes on from seq 6.
  expect(await o.submit([r('d3', 'temp', T0 - 1000, 6)])).toEqual({ accepted: 1, duplicates: 0 });
  expect((await o.reader.get<{ seq: number; value: number }>('SELECT seq, value FROM outbox WHERE device = ?', ['d3']))).toEqual({ seq: 6, value: 6 });
});

test('refill wait: the next commit waits for the devices the last one acknowledged several messages of, and goes as soon as each has sent again', async () => {
  // A wait far longer than the test: the commit can only come from the refills arriving.
  const o = await open({ refillWaitMs: 60_000 });
  await Promise.all([o.submit([r('a', 'temp', T0 - 9000)]), o.submit([r('a', 'temp', T0 - 8000)]), o.submit([r('b', 'temp', T0 - 9000)]),
    o.submit([r('c', 'temp', T0 - 9000)]), o.submit([r('c', 'temp', T0 - 8000)])]);
  expect(await commitCount(registry)).toBe(1);
  // a and c had two messages in that commit, b one: the next commit waits for a and c, not for b.
  const next = [o.submit([r('b', 'temp', T0 - 7000)]), o.submit([r('a', 'temp', T0 - 7000)])];
  await new Promise((res) => setTimeout(res, 50));
  expect(o.status().lastSeq).toBe(5);
  next.push(o.submit([r('c', 'temp', T0 - 7000)]), o.submit([r('c', 'temp', T0 - 6000)]));
  expect(await Promise.all(next)).toEqual([1, 1, 1, 1].map((accepted) => ({ accepted, duplicates: 0 })));
  expect(await commitCount(registry)).toBe(2);
  expect(o.status().lastSeq).toBe(9);
  // c had two messages in that commit: d's reading waits for c, and close() commits it at once.
  const last = o.submit([r('d', 'temp', T0 - 5000)]);
  await o.close();
  expect(await last).toEqual({ accepted: 1, duplicates: 0 });
  const db = await Db.open(`${dir.path}/gateway.db`);
  try {
    expect((await db.get<{ n: number }>('SELECT COUNT(*) AS n FROM outbox'))!.n).toBe(10);
  } finally {
    await db.close();
  }
});

describe('the linger (outbox.groupCommitMs): devices sending one message at a time share commits; a window never waits', () => {
  const later = (ms: number) => new Promise((res) => setTimeout(res, ms));

  test('readings of single-message devices arriving within the linger share one commit, which starts once the oldest has waited it out', async () => {
    const o = await open({ groupCommitMs: 1000, refillWaitMs: 0 });
    const t0 = performance.now();
    const a = o.submit([r('a', 'temp', T0 - 9000)]);
    await later(50);
    expect(o.status().lastSeq).toBe(0);
    const b = o.submit([r('b', 'temp', T0 - 9000), r('b', 'hum', T0 - 9000)]);
    expect(await Promise.all([a, b])).toEqual([{ accepted: 1, duplicates: 0 }, { accepted: 2, duplicates: 0 }]);
    // The linger runs from the oldest queued reading (a's), not from the last one.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(1000 - 2);
    expect(await commitCount(registry)).toBe(1);
    expect(o.status().lastSeq).toBe(3);
  });

  test('what arrives while a commit runs lingers too, from its own arrival: a fleet of single-message devices is not committed a message or two at a time', async () => {
    const o = await open({ groupCommitMs: 1000, refillWaitMs: 0 });
    const a = o.submit([r('a', 'temp', T0 - 9000)]);
    // A write job ahead of a's commit holds it, as a slow commit would.
    let release!: () => void;
    let holding!: () => void;
    const held = new Promise<void>((res) => { holding = res; });
    void o.writes.run(() => new Promise<void>((res) => { release = res; holding(); }));
    await held;
    await later(1100); // a's linger is over: its commit waits behind the job
    const b = o.submit([r('b', 'temp', T0 - 9000)]);
    const bAt = performance.now();
    release();
    expect(await a).toEqual({ accepted: 1, duplicates: 0 });
    await later(50);
    // b arrived during a's commit: it waits its own linger, not the next turn.
    expect(o.status().lastSeq).toBe(1);
    expect(await b).toEqual({ accepted: 1, duplicates: 0 });
    expect(performance.now() - bAt).toBeGreaterThanOrEqual(1000 - 2);
    expect(await commitCount(registry)).toBe(2);
  });

  test('a device with a second message unsettled keeps a window: the commit goes at once, and while it is settled later ones wait no more', async () => {
    // A linger far longer than the test: only the window can end it.
    const o = await open({ groupCommitMs: 60_000, refillWaitMs: 0 });
    const first = o.submit([r('a', 'temp', T0 - 9000)]);
    const single = o.submit([r('b', 'temp', T0 - 9000)]);
    await later(50);
    expect(o.status().lastSeq).toBe(0);
    // a's second message while its first is unsettled.
    const second = o.submit([r('a', 'temp', T0 - 8000)]);
    expect(await Promise.all([first, single, second])).toEqual([1, 1, 1].map((accepted) => ({ accepted, duplicates: 0 })));
    expect(await commitCount(registry)).toBe(1);
    // That commit held two of a's messages: a keeps a window, and its next message alone commits at once.
    expect(await o.submit([r('a', 'temp', T0 - 7000)])).toEqual({ accepted: 1, duplicates: 0 });
    expect(await commitCount(registry)).toBe(2);
    // A commit with one message of a takes it off: its next message waits with the others.
    const next = o.submit([r('a', 'temp', T0 - 6000)]);
    await later(50);
    expect(o.status().lastSeq).toBe(4);
    // close() commits what lingers at once.
    await o.close();
    expect(await next).toEqual({ accepted: 1, duplicates: 0 });
    expect(await commitCount(registry)).toBe(3);
  });

  test(`${LINGER_FULL_READINGS} readings queued end the linger`, async () => {
    const o = await open({ groupCommitMs: 60_000, refillWaitMs: 0 });
    const few = o.submit(Array.from({ length: LINGER_FULL_READINGS - 1 }, (_, i) => r('a', `m${i}`, T0 - 9000)));
    await later(50);
    expect(o.status().lastSeq).toBe(0);
    const one = o.submit([r('b', 'temp', T0 - 9000)]);
    expect(await Promise.all([few, one])).toEqual([{ accepted: LINGER_FULL_READINGS - 1, duplicates: 0 }, { accepted: 1, duplicates: 0 }]);
    expect(await commitCount(registry)).toBe(1);
  });
});

test('readings queued while the retention gives their series\' number to another series get the series\' new number', async () => {
  const o = await open({ refillWaitMs: 0 });
  expect(await o.submit([r('d1', 'temp', T0 - 3000)])).toEqual({ accepted: 1, duplicates: 0 });
  const old = (await o.reader.get<{ id: number }>("SELECT id FROM series WHERE device = 'd1'"))!.id;
  let release!: () => void;
  const held = new Promise<void>((res) => { release = res; });
  // What the retention's series prune does, in one write job: the number goes to another series
  // (no outbox row refers to it: its reading acknowledged).
  const prune = o.writes.run(async (db) => {
    await held;
    await db.run('DELETE FROM outbox_rows');
    await db.run('DELETE FROM dedup_keys');
    await db.run('DELETE FROM series');
    await db.run("INSERT INTO series (id, device, metric) VALUES (?, 'd2', 'temp')", [old]);
    (o as unknown as { committer: { forgetSeries(): void } }).committer.forgetSeries();
  });
  // Submitted while d1 still has its old number and the prune's job holds the writer.
  const several = o.submit([r('d1', 'temp', T0 - 2000, 2), r('d1', 'temp', T0 - 1000, 3)]);
  const one = o.submit([r('d1', 'temp', T0 - 500, 4)]);
  release();
  await prune;
  expect(await Promise.all([several, one])).toEqual([{ accepted: 2, duplicates: 0 }, { accepted: 1, duplicates: 0 }]);
  const now = (await o.reader.get<{ id: number }>("SELECT id FROM series WHERE device = 'd1'"))!.id;
  expect(now).not.toBe(old);
  // The identities go to dedup_keys in batches; the retention copies those not there yet first.
  await o.runRetention();
  expect(await o.reader.all('SELECT key >> 20 AS ts, key & 1048575 AS id FROM dedup_keys ORDER BY key')).toEqual(
    [T0 - 2000, T0 - 1000, T0 - 500].map((ts) => ({ ts, id: now })));
  expect(await o.reader.all('SELECT seq, device, ts, value FROM outbox WHERE seq > 1 ORDER BY seq')).toEqual(
    [[2, T0 - 2000, 2], [3, T0 - 1000, 3], [4, T0 - 500, 4]].map(([seq, ts, value]) => ({ seq, device: 'd1', ts, value })));
});

test('a new gateway.db has 1 KiB pages; one made with 4 KiB pages keeps them and takes readings', async () => {
  let o = await open();
  expect((await o.reader.get<{ page_size: number }>('PRAGMA page_size'))!.page_size).toBe(1024);
  await o.close();
  outboxes = [];
  dir.remove();
  dir = tempDir('braid-commit-');
  registry = new Registry();
  const old = await Db.open(`${dir.path}/gateway.db`);
  await old.exec('PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;');
  await old.close();
  o = await open();
  expect((await o.reader.get<{ page_size: number }>('PRAGMA page_size'))!.page_size).toBe(4096);
  expect(await o.submit([r('d1', 'temp', T0 - 1000, 1.25)])).toEqual({ accepted: 1, duplicates: 0 });
  expect(await o.reader.get('SELECT seq, value FROM outbox')).toEqual({ seq: 1, value: 1.25 });
});

test('a restart after a crash finds the open epoch\'s last seq: in the outbox, or in the acknowledged seq once the cloud took the rows', async () => {
  const o = await open();
  await o.submit([r('d1', 'temp', T0 - 3000)]); // opens epoch 1; its row is written now, with last_seq 1
  await o.submit([r('d1', 'temp', T0 - 2000), r('d1', 'temp', T0 - 1000)]); // seq 2 and 3: the row is not rewritten
  await o.submit([r('d2', 'temp', T0 - 1000)]); // seq 4
  // The cloud acknowledged 1..3 (the forwarder's transaction, by hand); then a kill -9: no close.
  await o.writes.tx(async (db) => {
    await db.run('DELETE FROM outbox WHERE seq <= 3');
    await db.run('INSERT INTO meta (key, value) VALUES (?, ?)', [ACKED_SEQ_KEY, '3']);
  });
  registry = new Registry();
  const again = await open();
  expect(again.status()).toMatchObject({ lastSeq: 4, epoch: 1, epochOpen: false });
  expect(await again.reader.all('SELECT epoch, first_seq, last_seq FROM epochs')).toEqual([{ epoch: 1, first_seq: 1, last_seq: 4 }]);

  // Every row acknowledged before the crash: the acknowledged seq alone says where seq goes on.
  await again.submit([r('d1', 'temp', T0 + 1000)]); // seq 5, epoch 2
  await again.writes.tx(async (db) => {
    await db.run('DELETE FROM outbox WHERE seq <= 5');
    await db.run('UPDATE meta SET value = ? WHERE key = ?', ['5', ACKED_SEQ_KEY]);
  });
  registry = new Registry();
  const third = await open();
  expect(third.status()).toMatchObject({ lastSeq: 5, epoch: 2, epochOpen: false });
  expect(await third.submit([r('d1', 'temp', T0 + 2000)])).toEqual({ accepted: 1, duplicates: 0 });
  expect(await third.reader.all('SELECT seq, epoch FROM outbox')).toEqual([{ seq: 6, epoch: 3 }]);
  expect(await third.reader.all('SELECT epoch, first_seq, last_seq FROM epochs WHERE epoch <= 2 ORDER BY epoch')).toEqual([
    { epoch: 1, first_seq: 1, last_seq: 4 }, { epoch: 2, first_seq: 5, last_seq: 5 },
  ]);
});

test('identities go to dedup_keys in batches: a repeat is dropped before (from memory, after a restart from the outbox), across the forwarder\'s ack and the disk budget\'s drop, and after; a failed commit leaves none', async () => {
  const count = async (o: Outbox) => (await o.reader.get<{ n: number }>('SELECT COUNT(*) AS n FROM dedup_keys'))!.n;
  const flushed = async (o: Outbox) => Number((await o.reader.get<{ value: string }>(`SELECT value FROM meta WHERE key = '${DEDUP_FLUSHED_KEY}'`))?.value ?? 0);
  // The SQL paths (the commit log's dedup is test/edge/commit-log.test.ts's).
  const o = await open({ refillWaitMs: 0, commitLog: false });
  const a = [r('d1', 'temp', T0 - 9000), r('d2', 'temp', T0 - 9000)];
  expect(await o.submit(a)).toEqual({ accepted: 2, duplicates: 0 }); // new series: the general path
  expect(await o.submit([r('d1', 'temp', T0 - 8000), r('d2', 'temp', T0 - 8000)])).toEqual({ accepted: 2, duplicates: 0 }); // the one statement
  expect(await count(o)).toBe(0);
  // Repeats of identities held in memory only, alone and beside a fresh reading (the fast path's group falls back).
  expect(await o.submit([r('d1', 'temp', T0 - 8000)])).toEqual({ accepted: 0, duplicates: 1 });
  expect(await o.submit([r('d2', 'temp', T0 - 7000), ...a])).toEqual({ accepted: 1, duplicates: 2 });
  expect(await o.reader.get('SELECT COUNT(*) AS n FROM dedup')).toEqual({ n: 5 });

  // A kill -9 (no close): the identities come back from the outbox rows not flushed.
  registry = new Registry();
  const b = await open({ refillWaitMs: 0, commitLog: false });
  expect(await b.submit([r('d1', 'temp', T0 - 9000), r('d2', 'temp', T0 - 7000)])).toEqual({ accepted: 0, duplicates: 2 });

  // The forwarder's ack of seq 1-3 and a drop of seq 4 at the disk budget copy their identities first.
  await applyAck(b.writes, { firstSeq: 1, lastSeq: 3, readings: [], epochs: [], gaps: [] }, 3, 0);
  expect(await count(b)).toBe(3);
  expect(await flushed(b)).toBe(3);
  await b.writes.tx((db) => dropOldest(db, 3, 1, T0));
  expect(await count(b)).toBe(4);
  expect(await b.reader.get('SELECT COUNT(*) AS n FROM outbox')).toEqual({ n: 1 });
  expect(await b.submit([r('d1', 'temp', T0 - 9000), r('d2', 'temp', T0 - 8000), r('d2', 'temp', T0 - 7000)])).toEqual({ accepted: 0, duplicates: 3 });

  // Past DEDUP_FLUSH_READINGS a group commit copies every identity it holds, its own too, in one statement.
  const many: Reading[] = [];
  for (let i = 0; i < DEDUP_FLUSH_READINGS; i++) many.push(r(`d${1 + (i % 2)}`, 'temp', T0 + i));
  for (let i = 0; i < many.length; i += 200) expect((await b.submit(many.slice(i, i + 200))).accepted).toBe(Math.min(200, many.length - i));
  expect(await flushed(b)).toBe(5 + DEDUP_FLUSH_READINGS);
  expect(await count(b)).toBe(5 + DEDUP_FLUSH_READINGS);
  // A repeat of a copied identity fails the one statement; the general path drops it.
  expect(await b.submit([r('d1', 'temp', T0), r('d2', 'temp', T0 + DEDUP_FLUSH_READINGS + 1)])).toEqual({ accepted: 1, duplicates: 1 });
  expect(await b.reader.get('SELECT COUNT(*) AS n FROM dedup')).toEqual({ n: 6 + DEDUP_FLUSH_READINGS });

  // A group whose commit fails leaves no identity behind: its resend commits.
  await b.writes.db.exec("CREATE TEMP TRIGGER refuse BEFORE INSERT ON outbox_rows BEGIN SELECT RAISE(ABORT, 'refused'); END");
  const again = [r('d1', 'temp', T0 - 100), r('d2', 'temp', T0 - 100)];
  await expect(b.submit(again)).rejects.toThrow(/refused/);
  await b.writes.db.exec('DROP TRIGGER refuse');
  expect(await b.submit(again)).toEqual({ accepted: 2, duplicates: 0 });
}, 60_000);
