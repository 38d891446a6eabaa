/**
 * Retention (edge/outbox/retention.ts through Outbox.runRetention) on a fake clock: dedup
 * identities leave after the 24 h window unless first seen recently [INV-2], speed partials after
 * retentionMinutes [INV-6], bookkeeping after 7 days, the newest epoch never.
 */
import { Registry } from 'prom-client';
import { Outbox, type OutboxOptions, type Reading } from '../../edge/outbox/index.js';
import { nullLogger } from '../../shared/logger.js';
import { MINUTE_MS, minuteOf } from '../../shared/time.js';
import { tempDir } from '../support/gateway.js';
import { CURSOR_KEY, WATERMARK_KEY } from '../../edge/speedpush/index.js';

const HOUR = 3600_000;
const DAY = 24 * HOUR;
const T0 = Date.UTC(2025, 2, 10, 12, 0, 0);

let dir: ReturnType<typeof tempDir>;
let clock: number;
let outboxes: Outbox[] = [];

beforeEach(() => {
  dir = tempDir('braid-retention-');
  clock = T0;
});

afterEach(async () => {
  for (const o of outboxes) await o.close();
  outboxes = [];
  dir.remove();
});

async function open(opts: Partial<OutboxOptions> = {}): Promise<Outbox> {
  const o = await Outbox.open({ dataDir: dir.path, logger: nullLogger(), registry: new Registry(), now: () => clock }, {
    dedupWindowMs: DAY, retentionMinutes: 25 * 60, pruneCron: null, epochMs: 60_000, epochIdleMs: 2_000, ...opts,
  });
  outboxes.push(o);
  return o;
}

const r = (device: string, metric: string, ts: number, value = 1): Reading => ({ device, metric, ts, value });

async function all<T>(o: Outbox, sql: string, params: unknown[] = []): Promise<T[]> {
  return o.reader.all<T>(sql, params);
}

test('dedup: identities older than the window go, a late reading first seen recently stays, a repeat inside the window is dropped', async () => {
  clock = T0 - 25 * HOUR;
  let o = await open();
  // Seen 25 h ago, event time 26 h ago: older than the window on both counts.
  expect(await o.submit([r('d1', 'temp', T0 - 26 * HOUR)])).toEqual({ accepted: 1, duplicates: 0 });

  clock = T0;
  expect(await o.submit([
    r('d1', 'temp', T0 - HOUR), // recent
    r('d1', 'temp', T0 - 30 * HOUR), // late: event time past the window, first seen now
    r('d2', 'hum', T0 - 23 * HOUR),
  ])).toEqual({ accepted: 3, duplicates: 0 });

  clock = T0 + 2 * HOUR;
  const pruned = await o.runRetention();
  expect(pruned.dedup).toBe(1);
  const left = await all<{ ts: number }>(o, 'SELECT ts FROM dedup ORDER BY ts');
  expect(left.map((x) => x.ts)).toEqual([T0 - 30 * HOUR, T0 - 23 * HOUR, T0 - HOUR]);

  // Repeats of identities still in the window are dropped after the run; the forgotten one is new again.
  expect(await o.submit([r('d1', 'temp', T0 - HOUR, 9), r('d1', 'temp', T0 - 30 * HOUR, 9), r('d2', 'hum', T0 - 23 * HOUR, 9)]))
    .toEqual({ accepted: 0, duplicates: 3 });
  expect(await o.submit([r('d1', 'temp', T0 - 26 * HOUR, 9)])).toEqual({ accepted: 1, duplicates: 0 });

  // A restart does not forget: the window lives in gateway.db.
  await o.close();
  o = await open();
  expect(await o.submit([r('d1', 'temp', T0 - 30 * HOUR, 5)])).toEqual({ accepted: 0, duplicates: 1 });

  // 24 h after the late reading was first seen, it goes too.
  clock = T0 + DAY + 1;
  await o.runRetention();
  const after = await all<{ ts: number; seen_at: number }>(o, 'SELECT ts, seen_at FROM dedup ORDER BY ts');
  expect(after).toEqual([{ ts: T0 - 26 * HOUR, seen_at: T0 + 2 * HOUR }]);
});

test('dedup: more identities share one ts than a retention chunk holds (a fleet stamping whole seconds)', async () => {
  const o = await open();
  const ts = T0 - 2 * HOUR;
  // 20 001 identities at one ts: more than RETENTION_CHUNK_ROWS (20 000).
  const readings: Reading[] = [];
  for (let d = 0; d < 1001; d++) for (let m = 0; m < 20; m++) readings.push(r(`dev-${d}`, `m${m}`, ts));
  expect((await o.submit(readings)).accepted).toBe(readings.length);
  clock = T0 + 2 * HOUR;
  await o.submit([r('late', 'temp', ts)]); // first seen 2 h later: stays

  clock = T0 + DAY + HOUR;
  const run = o.runRetention();
  const guard = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('runRetention did not finish in 10 s')), 10_000).unref());
  const pruned = await Promise.race([run, guard]);
  expect(pruned.dedup).toBe(20_020);
  expect(await all(o, 'SELECT device, ts FROM dedup')).toEqual([{ device: 'late', ts }]);
  expect(await o.submit([r('dev-0', 'm0', ts)])).toEqual({ accepted: 1, duplicates: 0 });
});

test('dedup: a chunked prune keeps a late reading whose identity sorts among old ones', async () => {
  const o = await open();
  const old: Reading[] = [];
  for (let i = 0; i < 45_000; i++) old.push(r(`d${i % 50}`, 'temp', T0 - 40 * HOUR + i));
  expect((await o.submit(old)).accepted).toBe(45_000);
  clock = T0 + 20 * HOUR; // old identities were seen at T0: gone at T0 + 24 h
  // Late readings first seen now, with event times in the middle of the old range.
  expect((await o.submit([r('late', 'temp', T0 - 40 * HOUR + 30_000), r('late', 'hum', T0 - 40 * HOUR + 1)])).accepted).toBe(2);

  clock = T0 + DAY + 1;
  const pruned = await o.runRetention();
  expect(pruned.dedup).toBe(45_000);
  const left = await all<{ device: string; metric: string }>(o, 'SELECT device, metric FROM dedup ORDER BY metric');
  expect(left).toEqual([{ device: 'late', metric: 'hum' }, { device: 'late', metric: 'temp' }]);
  expect(await o.submit([r('late', 'temp', T0 - 40 * HOUR + 30_000)])).toEqual({ accepted: 0, duplicates: 1 });
});

test('partials: minutes older than retentionMinutes are pruned, newer ones kept', async () => {
  const o = await open({ retentionMinutes: 25 * 60 });
  const ages = [26 * HOUR, 25 * HOUR + 2 * MINUTE_MS, 25 * HOUR - 2 * MINUTE_MS, 24 * HOUR, HOUR, 0];
  await o.submit(ages.map((a, i) => r('d1', 'temp', T0 - a, i)));
  expect(await all(o, 'SELECT minute FROM partials')).toHaveLength(ages.length);

  const pruned = await o.runRetention();
  expect(pruned.partials).toBe(2);
  const left = await all<{ minute: number }>(o, 'SELECT minute FROM partials ORDER BY minute');
  expect(left.map((x) => x.minute)).toEqual(ages.slice(2).map((a) => minuteOf(T0 - a)).sort((a, b) => a - b));
  // The outbox keeps every reading: retention is the speed layer's, not the outbox's.
  expect(await all(o, 'SELECT seq FROM outbox')).toHaveLength(ages.length);

  clock = T0 + HOUR;
  expect((await o.runRetention()).partials).toBe(1);
});

test('bookkeeping: reported epochs, sent gaps and quarantine go after 7 days; the newest epoch stays and numbering continues', async () => {
  let o = await open({ epochMs: 60_000 });
  // Three epochs: advancing the clock past epochMs closes the open one at the next commit.
  for (let e = 0; e < 3; e++) {
    await o.submit([r('d1', 'temp', T0 + e * HOUR), r('d1', 'hum', T0 + e * HOUR)]);
    clock += 2 * MINUTE_MS;
  }
  // A commit of repeats only closes the third epoch without opening a fourth.
  await o.submit([r('d1', 'temp', T0)]);
  o.quarantine({ device: 'd1', topic: 'devices/d1/telemetry', reason: 'json', message: 'bad', payload: Buffer.from('{') });
  await o.submit([r('d9', 'x', T0)]); // commits the quarantine entry, opens epoch 4
  await o.close();
  clock += 2 * MINUTE_MS;
  o = await open(); // the restart closes epoch 4
  let epochs = await all<{ epoch: number; first_seq: number; last_seq: number; closed_at: number | null }>(o, 'SELECT epoch, first_seq, last_seq, closed_at FROM epochs ORDER BY epoch');
  expect(epochs.map((e) => [e.epoch, e.first_seq, e.last_seq])).toEqual([[1, 1, 2], [2, 3, 4], [3, 5, 6], [4, 7, 7]]);
  expect(epochs.every((e) => e.closed_at !== null)).toBe(true);
  // The cloud acknowledged them all (the forwarder's job, done by hand here).
  await o.writes.run(async (db) => {
    await db.run('UPDATE epochs SET reported = 1');
    await db.run(`INSERT INTO gaps (created_at, reason, from_seq, to_seq, count, min_ts, max_ts, devices, sent) VALUES (?, 'disk_budget', 100, 101, 2, 0, 0, '[]', 1), (?, 'disk_budget', 102, 103, 2, 0, 0, '[]', 0)`, [clock, clock]);
  });

  clock += 6 * DAY;
  expect((await o.runRetention()).bookkeeping).toBe(0);
  clock += DAY + HOUR;
  const pruned = await o.runRetention();
  // Epochs 1-3, the sent gap, the quarantined payload; not the newest epoch, not the unsent gap.
  expect(pruned.bookkeeping).toBe(5);
  epochs = await all(o, 'SELECT epoch, first_seq, last_seq, closed_at FROM epochs ORDER BY epoch');
  expect(epochs.map((e) => e.epoch)).toEqual([4]);
  expect(await all(o, 'SELECT from_seq FROM gaps')).toEqual([{ from_seq: 102 }]);
  expect(await all(o, 'SELECT id FROM quarantine')).toEqual([]);
  expect(o.status().quarantined).toBe(0);

  // Numbering continues across a restart from the one epoch left.
  await o.close();
  o = await open();
  expect(o.status()).toMatchObject({ lastSeq: 7, epoch: 4, epochOpen: false });
  await o.submit([r('d1', 'temp', clock)]);
  expect(o.status()).toMatchObject({ lastSeq: 8, epoch: 5, epochOpen: true });
  expect(await all(o, 'SELECT seq, epoch FROM outbox WHERE seq = 8')).toEqual([{ seq: 8, epoch: 5 }]);
});

test('quarantine: the bound counts what retention left, not what it deleted', async () => {
  const o = await open({ quarantineMaxRows: 5 });
  const q = (n: number) => ({ device: 'd1', topic: 'devices/d1/telemetry', reason: 'json', message: `bad ${n}`, payload: Buffer.from(`{${n}`) });
  for (let i = 0; i < 5; i++) o.quarantine(q(i));
  await o.submit([r('d1', 'temp', T0)]);
  expect(o.status().quarantined).toBe(5);

  clock += 8 * DAY;
  await o.runRetention();
  expect(await all(o, 'SELECT id FROM quarantine')).toEqual([]);
  expect(o.status().quarantined).toBe(0);

  // Three new payloads fit under the bound of five: all three are kept, none counted as dropped.
  for (let i = 5; i < 8; i++) o.quarantine(q(i));
  await o.submit([r('d1', 'temp', clock)]);
  const left = await all<{ message: string }>(o, 'SELECT message FROM quarantine ORDER BY id');
  expect(left.map((x) => x.message)).toEqual(['bad 5', 'bad 6', 'bad 7']);
  expect(o.status().quarantined).toBe(3);
  const dropped = await o.metrics.quarantineDropped.get();
  expect(dropped.values.reduce((a, v) => a + v.value, 0)).toBe(0);
});

test('partials: with a cloud, an old partial is kept until pushed or covered by the views (a reading days late)', async () => {
  const o = await open({ keepUnpushedPartials: true });
  // Days late: its minute is past the retention the moment it arrives.
  await o.submit([r('d1', 'temp', T0 - 3 * DAY)]);
  clock = T0 + 1000;
  await o.runRetention();
  expect(await all(o, 'SELECT device FROM partials')).toHaveLength(1); // not pushed yet: kept

  // The speed pusher's cursor moves past it: the cloud has it, retention may take it.
  await o.writes.run((db) => db.run(`INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)`, [CURSOR_KEY, String(clock + 1)]));
  await o.runRetention();
  expect(await all(o, 'SELECT device FROM partials')).toHaveLength(0);

  // Unpushed, but of an epoch the cloud's views already cover (<= the watermark it told): taken too.
  await o.submit([r('d2', 'temp', T0 - 4 * DAY)]);
  await o.writes.run((db) => db.run(`INSERT OR REPLACE INTO meta (key, value) VALUES (?, '0')`, [CURSOR_KEY]));
  await o.runRetention();
  expect(await all(o, 'SELECT device FROM partials')).toHaveLength(1);
  const [{ epoch }] = await all<{ epoch: number }>(o, 'SELECT epoch FROM partials');
  await o.writes.run((db) => db.run(`INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)`, [WATERMARK_KEY, String(epoch)]));
  await o.runRetention();
  expect(await all(o, 'SELECT device FROM partials')).toHaveLength(0);
});
