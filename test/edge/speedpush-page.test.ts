/**
 * Which partials the next speed push carries (edge/speedpush/page.ts), on a real gateway.db: the
 * cursor on updated_at with its ties (several commits in one ms), pages cut inside one ms, the
 * watermark, a clock stepped back; the cursor index (updated_at alone, an older form made again);
 * and a randomized model check that no update is ever lost.
 */
import fc from 'fast-check';
import { CURSOR_INDEX_SQL, ensureCursorIndex, type Page, type PartialRow, type Position, partialKey, readBacklogPage, readPage } from '../../edge/speedpush/page.js';
import { WriteQueue } from '../../shared/sqlite.js';
import { gatewayDbEach } from '../support/gateway-db.js';

const gdb = gatewayDbEach('braid-sp-page-');

/** Upsert partial (device, minute, epoch) with `count`, stamped `at`. */
async function put(device: string, minute: number, epoch: number, count: number, at: number): Promise<void> {
  await gdb.db.run(`INSERT OR REPLACE INTO partials (device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts, updated_at)
    VALUES (?, 'temp', ?, ?, ?, ?, 1, 1, 0, 1, ?, 1, ?, ?)`, [device, minute * 60_000, epoch, count, count, minute * 60_000, minute * 60_000, at]);
}

const START: Position = { cursor: 0, ties: new Map() };
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
  const p3 = await readPage(gdb.reader, { cursor: 1001, ties: new Map([[partialKey({ device: 'b', metric: 'temp', minute: 60_000, epoch: 1 }), 1]]) }, 0, 1, 1001);
  expect(names(p3)).toEqual(['a:1']);
  expect(p3.full).toBe(true);
  expect(p3.advanced).toBe(false);
});

test('randomized: commits stamped by a coarse clock, interleaved with pages of any size, never lose an update [INV-3]', async () => {
  await fc.assert(fc.asyncProperty(
    fc.array(fc.oneof(
      fc.record({ kind: fc.constant('commit' as const), keys: fc.array(fc.nat(7), { minLength: 1, maxLength: 4 }), tick: fc.boolean() }),
      fc.record({ kind: fc.constant('push' as const), limit: fc.integer({ min: 1, max: 5 }) }),
    ), { maxLength: 40 }),
    async (ops) => {
      await gdb.db.run('DELETE FROM partials');
      const counts = new Map<string, number>();
      const pushed = new Map<string, number>();
      let clock = 1;
      let pos = START;
      const push = async (limit: number) => {
        const p = await readPage(gdb.reader, pos, 0, limit, clock);
        for (const r of p.rows as PartialRow[]) pushed.set(partialKey(r), Math.max(pushed.get(partialKey(r)) ?? 0, r.count));
        pos = p.next;
        return p;
      };
      for (const op of ops) {
        if (op.kind === 'push') { await push(op.limit); continue; }
        if (op.tick) clock++; // several commits share a ms unless the clock ticks
        for (const k of op.keys) {
          const device = `d${k}`;
          const n = (counts.get(device) ?? 0) + 1;
          counts.set(device, n);
          await put(device, 1, 1, n, clock);
        }
      }
      // Drain: keep pushing until a page comes back empty.
      for (let i = 0; i < 100; i++) if ((await push(3)).rows.length === 0) break;
      for (const [device, n] of counts) {
        expect(pushed.get(partialKey({ device, metric: 'temp', minute: 60_000, epoch: 1 }))).toBe(n);
      }
    },
  ), { numRuns: 150 });
}, 60_000);

test('the cursor index holds updated_at alone: an index of the older form (the key after it) is made again; both reads follow it without a sort', async () => {
  const index = () => gdb.db.get<{ sql: string }>("SELECT sql FROM sqlite_schema WHERE name = 'partials_updated_at'");
  expect(await index()).toEqual({ sql: CURSOR_INDEX_SQL });
  await gdb.db.exec('DROP INDEX partials_updated_at; CREATE INDEX partials_updated_at ON partials (updated_at, device, metric, minute, epoch)');
  for (const d of ['b', 'a', 'c']) await put(d, 1, 1, 1, 100);
  await ensureCursorIndex(new WriteQueue(gdb.db));
  expect(await index()).toEqual({ sql: CURSOR_INDEX_SQL });
  // Again: already of this form, left as it is.
  await ensureCursorIndex(new WriteQueue(gdb.db));
  expect(await gdb.db.get("SELECT COUNT(*) AS n FROM sqlite_schema WHERE name = 'partials_updated_at'")).toEqual({ n: 1 });
  const plan = async (sql: string, params: unknown[]) => (await gdb.reader.all<{ detail: string }>(`EXPLAIN QUERY PLAN ${sql}`, params)).map((x) => x.detail);
  expect(await plan('SELECT * FROM partials WHERE updated_at > ? AND epoch > ? ORDER BY updated_at, rowid LIMIT 5', [0, 0]))
    .toEqual(['SEARCH partials USING INDEX partials_updated_at (updated_at>?)']);
  expect(await plan('SELECT * FROM partials WHERE (updated_at, rowid) < (?, ?) AND updated_at >= ? AND epoch > ? ORDER BY updated_at DESC, rowid DESC LIMIT 5', [200, 9, 0, 0]))
    .toEqual(['SEARCH partials USING INDEX partials_updated_at (updated_at>? AND (updated_at,rowid)<(?,?))']);
  // Rows of one ms come in the order they were first written (their rowids), up and down.
  expect(names(await readPage(gdb.reader, START, 0, 100, 1000))).toEqual(['b:1', 'a:1', 'c:1']);
  const down = await readBacklogPage(gdb.reader, { low: START, hi: 200, below: null }, 0, 2);
  expect(down.rows.map((r) => r.device)).toEqual(['c', 'a']);
  expect((await readBacklogPage(gdb.reader, down.next, 0, 2)).rows.map((r) => r.device)).toEqual(['b']);
});
