/**
 * Which partials the next speed push carries (edge/speedpush/page.ts), on a real gateway.db: the
 * cursor on updated_at with its ties (several commits in one ms), pages cut inside one ms, the
 * watermark, a clock stepped back; the epochs done once closed and pushed; the push's index on
 * epoch (the older index on updated_at dropped); and randomized model checks that no update is
 * ever lost, with epochs closing among the commits.
 */
import fc from 'fast-check';
import { PAGE_SQL, PUSH_INDEX_SQL, ensurePushIndex, findBacklog, type Page, type PartialRow, type Position, partialKey, readBacklogPage, readPage } from '../../edge/speedpush/page.js';
import { WriteQueue } from '../../shared/sqlite.js';
import { gatewayDbEach } from '../support/gateway-db.js';

const gdb = gatewayDbEach('braid-sp-page-');

/** Upsert partial (device, minute, epoch) with `count`, stamped `at`, as the group commit does (the row keeps its rowid). */
async function put(device: string, minute: number, epoch: number, count: number, at: number): Promise<void> {
  await gdb.db.run(`INSERT INTO partials (device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts, updated_at)
    VALUES (?, 'temp', ?, ?, ?, ?, 1, 1, 0, 1, ?, 1, ?, ?)
    ON CONFLICT (device, minute, metric, epoch) DO UPDATE SET count = excluded.count, sum = excluded.sum, updated_at = excluded.updated_at`,
  [device, minute * 60_000, epoch, count, count, minute * 60_000, minute * 60_000, at]);
}

const START: Position = { cursor: 0, ties: new Map(), done: 0 };
const names = (p: Page) => p.rows.map((r) => `${r.device}:${r.count}`);

test('a commit in the same ms as the last pushed one is found; rows already pushed at the cursor are not sent again', async () => {
  await put('a', 1, 1, 1, 100);
  await put('b', 1, 1, 1, 100);
  const p1 = await readPage(gdb.reader, START, 0, 100, 1000);
  expect(names(p1)).toEqual(['a:1', 'b:1']);
  expect(p1.next.cursor).toBe(100);
  // Another commit, stamped the same ms, lands after the read.
  await put('c', 1, 1, 1, 100);
  const p2 = await readPage(gdb.reader, p1.next, 0, 100, 1000);
  expect(names(p2)).toEqual(['c:1']);
  // Nothing new: nothing sent, the position stays.
  const p3 = await readPage(gdb.reader, p2.next, 0, 100, 1000);
  expect(p3.rows).toEqual([]);
  expect(p3.next).toBe(p2.next);
});

test('a row at the cursor that grew in the same ms is sent again', async () => {
  await put('a', 1, 1, 1, 100);
  const p1 = await readPage(gdb.reader, START, 0, 100, 1000);
  await put('a', 1, 1, 2, 100);
  const p2 = await readPage(gdb.reader, p1.next, 0, 100, 1000);
  expect(names(p2)).toEqual(['a:2']);
  expect(p2.advanced).toBe(true);
});

test('a page limit inside one ms pages through it without loss or repeat', async () => {
  for (const d of ['a', 'b', 'c', 'd', 'e']) await put(d, 1, 1, 1, 100);
  await put('f', 1, 1, 1, 101);
  let pos = START;
  const seen: string[] = [];
  for (let i = 0; i < 10; i++) {
    const p = await readPage(gdb.reader, pos, 0, 2, 1000);
    if (!p.rows.length) break;
    expect(p.advanced).toBe(true);
    seen.push(...names(p));
    pos = p.next;
  }
  expect(seen).toEqual(['a:1', 'b:1', 'c:1', 'd:1', 'e:1', 'f:1']);
});

test('epochs at or below the watermark are left out', async () => {
  await put('a', 1, 1, 1, 100);
  await put('a', 1, 2, 1, 100);
  await put('a', 2, 3, 1, 101);
  const p = await readPage(gdb.reader, START, 2, 100, 1000);
  expect(p.rows.map((r) => r.epoch)).toEqual([3]);
});

test('rows stamped after now (the clock stepped back) cap the cursor at now; a page that cannot move reports it', async () => {
  await put('a', 1, 1, 1, 5000);
  const p1 = await readPage(gdb.reader, START, 0, 100, 1000);
  expect(names(p1)).toEqual(['a:1']);
  expect(p1.next.cursor).toBe(1000);
  // New rows stamped by the stepped-back clock, above the capped cursor, are found.
  await put('b', 1, 1, 1, 1001);
  const p2 = await readPage(gdb.reader, p1.next, 0, 100, 1001);
  expect(names(p2)).toEqual(['b:1', 'a:1']);
  // A full page that cannot move the cursor says so (the pusher then waits instead of looping).
  const p3 = await readPage(gdb.reader, { cursor: 1001, ties: new Map([[partialKey({ device: 'b', metric: 'temp', minute: 60_000, epoch: 1 }), 1]]), done: 0 }, 0, 1, 1001);
  expect(names(p3)).toEqual(['a:1']);
  expect(p3.full).toBe(true);
  expect(p3.advanced).toBe(false);
});

/** The epochs table as the committer keeps it: `open` is the open epoch (null: none), every epoch below it closed. */
async function epochs(upTo: number, open: number | null): Promise<void> {
  await gdb.db.run('DELETE FROM epochs');
  for (let e = 1; e <= upTo; e++) {
    await gdb.db.run('INSERT INTO epochs (epoch, first_seq, last_seq, opened_at, closed_at) VALUES (?, ?, ?, 0, ?)', [e, e, e, e === open ? null : 1]);
  }
}

test('a page that is not full makes the epochs closed before it done; a full one does not; the next pages read only the epochs above', async () => {
  await put('a', 1, 1, 1, 100);
  await put('b', 1, 2, 1, 101);
  await put('c', 2, 3, 1, 102);
  await epochs(3, 3);
  const full = await readPage(gdb.reader, START, 0, 2, 1000);
  expect(names(full)).toEqual(['a:1', 'b:1']);
  expect(full.next.done).toBe(0);
  const p = await readPage(gdb.reader, full.next, 0, 100, 1000);
  expect(names(p)).toEqual(['c:1']);
  expect(p.next).toMatchObject({ cursor: 102, done: 2 });
  // Epoch 3 closes and nothing changed since: an empty page, and epoch 3 is done.
  await epochs(3, null);
  const empty = await readPage(gdb.reader, p.next, 0, 100, 1000);
  expect(empty.rows).toEqual([]);
  expect(empty.next).toEqual({ ...p.next, done: 3 });
  // Rows of done epochs are not read, whatever their stamp (none can change once closed); a new epoch's are.
  await put('a', 1, 1, 9, 200);
  await put('d', 2, 4, 1, 201);
  await epochs(4, 4);
  expect(names(await readPage(gdb.reader, empty.next, 0, 100, 1000))).toEqual(['d:1']);
  // Without an epochs table (no epoch known closed) every epoch stays open to the push.
  await gdb.db.run('DELETE FROM epochs');
  expect((await readPage(gdb.reader, START, 0, 100, 1000)).next.done).toBe(0);
});

test('a backlog: the closed epochs whole, the open one below hi, read down by (epoch, rowid); rows changed since go upwards from hi', async () => {
  await put('a', 1, 1, 1, 100);
  await put('b', 1, 1, 1, 101);
  await put('c', 2, 2, 1, 102);
  await put('d', 2, 3, 1, 103);
  await put('e', 3, 3, 1, 104);
  await epochs(3, 3);
  const found = await findBacklog(gdb.reader, START, 0, 1000);
  expect(found).toEqual({
    backlog: { low: START, closed: 2, hi: 104, below: null },
    fresh: { cursor: 104, ties: new Map(), done: 2 },
  });
  // The open epoch's rows updated after hi, and new ones, are the upper part's, not the backlog's.
  await put('d', 2, 3, 2, 105);
  const seen: string[] = [];
  let b = found!.backlog;
  for (let i = 0; i < 10; i++) {
    const page = await readBacklogPage(gdb.reader, b, 0, 2);
    seen.push(...names(page as unknown as Page));
    b = page.next;
    if (page.done) break;
  }
  // e, stamped at hi itself, is the upper part's too (a commit after the read may share its ms).
  expect(seen).toEqual(['c:1', 'b:1', 'a:1']);
  expect(names(await readPage(gdb.reader, found!.fresh, 0, 100, 1000))).toEqual(['e:1', 'd:2']);
  // Nothing waiting but rows of the open epoch stamped at the cursor, already pushed: no backlog.
  const pos: Position = { cursor: 105, ties: new Map([[partialKey({ device: 'd', metric: 'temp', minute: 120_000, epoch: 3 }), 2]]), done: 2 };
  expect(await findBacklog(gdb.reader, pos, 0, 1000)).toBeNull();
  // Rows stamped after now (the clock went back): no backlog, they go oldest first.
  expect(await findBacklog(gdb.reader, START, 0, 104)).toBeNull();
});

test('randomized: commits stamped by a coarse clock, epochs closing and pages of any size never lose an update, and never read a done epoch again [INV-3]', async () => {
  await fc.assert(fc.asyncProperty(
    fc.array(fc.oneof(
      fc.record({ kind: fc.constant('commit' as const), keys: fc.array(fc.nat(5), { minLength: 1, maxLength: 4 }), tick: fc.boolean() }),
      fc.record({ kind: fc.constant('close' as const) }),
      fc.record({ kind: fc.constant('push' as const), limit: fc.integer({ min: 1, max: 5 }) }),
    ), { maxLength: 40 }),
    async (ops) => {
      await gdb.db.run('DELETE FROM partials');
      let epoch = 1;
      await epochs(1, 1);
      const counts = new Map<string, number>();
      const pushed = new Map<string, number>();
      let clock = 1;
      let pos = START;
      const push = async (limit: number) => {
        const p = await readPage(gdb.reader, pos, 0, limit, clock);
        for (const r of p.rows as PartialRow[]) {
          expect(r.epoch).toBeGreaterThan(pos.done);
          pushed.set(partialKey(r), Math.max(pushed.get(partialKey(r)) ?? 0, r.count));
        }
        expect(p.next.done).toBeLessThan(epoch + (p.full ? 0 : 1));
        pos = p.next;
        return p;
      };
      for (const op of ops) {
        if (op.kind === 'push') { await push(op.limit); continue; }
        if (op.kind === 'close') { epoch++; await epochs(epoch, epoch); continue; }
        if (op.tick) clock++; // several commits share a ms unless the clock ticks
        for (const k of op.keys) {
          const key = partialKey({ device: `d${k}`, metric: 'temp', minute: 60_000, epoch });
          const n = (counts.get(key) ?? 0) + 1;
          counts.set(key, n);
          await put(`d${k}`, 1, epoch, n, clock);
        }
      }
      // Drain: keep pushing until a page comes back empty.
      for (let i = 0; i < 100; i++) if ((await push(3)).rows.length === 0) break;
      expect(pushed).toEqual(counts);
      expect(pos.done).toBe(epoch - 1);
    },
  ), { numRuns: 150 });
}, 60_000);

test('the push index is on epoch: the older index on updated_at is dropped; the page reads the epochs above done through it, the backlog without a sort', async () => {
  const indexes = async () => (await gdb.db.all<{ name: string; sql: string }>("SELECT name, sql FROM sqlite_schema WHERE name IN ('partials_epoch', 'partials_updated_at') ORDER BY name"));
  expect(await indexes()).toEqual([{ name: 'partials_epoch', sql: PUSH_INDEX_SQL }]);
  await gdb.db.exec('DROP INDEX partials_epoch; CREATE INDEX partials_updated_at ON partials (updated_at)');
  for (const d of ['b', 'a', 'c']) await put(d, 1, 1, 1, 100);
  await ensurePushIndex(new WriteQueue(gdb.db));
  expect(await indexes()).toEqual([{ name: 'partials_epoch', sql: PUSH_INDEX_SQL }]);
  // Again: already so, left as it is.
  await ensurePushIndex(new WriteQueue(gdb.db));
  expect(await indexes()).toEqual([{ name: 'partials_epoch', sql: PUSH_INDEX_SQL }]);
  const plan = async (sql: string, params: unknown[]) => (await gdb.reader.all<{ detail: string }>(`EXPLAIN QUERY PLAN ${sql}`, params)).map((x) => x.detail);
  // The page: the keys of the epochs above done found by the index and sorted, then each row by its rowid.
  expect(await plan(PAGE_SQL, [0, 0, 5])).toEqual([
    'CO-ROUTINE s', 'SEARCH partials USING INDEX partials_epoch (epoch>?)', 'USE TEMP B-TREE FOR ORDER BY', 'SCAN s', 'SEARCH p USING INTEGER PRIMARY KEY (rowid=?)']);
  expect(await plan('SELECT * FROM partials WHERE epoch > ? AND (epoch, rowid) < (?, ?) AND updated_at >= ? AND (epoch <= ? OR updated_at < ?) ORDER BY epoch DESC, rowid DESC LIMIT 5', [0, 9, 9, 0, 0, 200]))
    .toEqual(['SEARCH partials USING INDEX partials_epoch (epoch>? AND (epoch,rowid)<(?,?))']);
  // Rows of one ms come in the order they were first written (their rowids), up and down.
  expect(names(await readPage(gdb.reader, START, 0, 100, 1000))).toEqual(['b:1', 'a:1', 'c:1']);
  const down = await readBacklogPage(gdb.reader, { low: START, closed: 0, hi: 200, below: null }, 0, 2);
  expect(down.rows.map((r) => r.device)).toEqual(['c', 'a']);
  expect((await readBacklogPage(gdb.reader, down.next, 0, 2)).rows.map((r) => r.device)).toEqual(['b']);
});
