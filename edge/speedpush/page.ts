/**
 * The SQLite side of the speed push (docs/serving.md): which partials the next push carries, and
 * where the pusher stands (its position and the watermark the cloud told it, in the meta table).
 *
 * The position has two parts. `done`: every partial of the epochs up to it has been acknowledged
 * in its final form. A partial is written only while its epoch is open (the group commit's upsert;
 * the retention only deletes), and an epoch's close is committed after its last group, so the rows
 * of an epoch seen closed are final. Each push reads the partials of the epochs above `done` (and
 * above the watermark): the open one and those closed since, found by the index on `epoch`, whose
 * entries never move (ensurePushIndex). `cursor`: of those, the rows updated at or after it
 * (`updated_at`) go, oldest first.
 *
 * Why a cursor plus "ties": `updated_at` is the committing transaction's clock in ms, and commits
 * are serialised, so a commit not yet visible to a read carries an updated_at >= every visible one
 * — but possibly EQUAL to the highest one seen (two commits in one ms). So after a push the cursor
 * is the highest updated_at pushed, the next read takes `updated_at >= cursor`, and the rows at
 * exactly the cursor that were already pushed (same key, same count: a partial only grows while
 * its epoch is open) are skipped. The ties live in memory: after a restart the rows of that one ms
 * are pushed again, which the cloud's upsert absorbs [idempotent].
 */
import { type Db, type WriteQueue, transaction } from '../../shared/sqlite.js';
import { getMeta, setMeta } from '../store/schema.js';
import type { SummaryColumns } from '../../shared/summary.js';

/** meta key: updated_at of the newest partial the cloud has acknowledged. */
export const CURSOR_KEY = 'speed_push_cursor';
/** meta key: the highest epoch all of whose partials the cloud has acknowledged in their final form (Position.done). */
export const DONE_KEY = 'speed_push_done_epoch';
/** meta key: E[g], the last epoch the cloud's live batch views cover; partials of epochs <= it are not pushed. */
export const WATERMARK_KEY = 'speed_watermark';

/** `[device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts]`, as on the wire. */
export type PartialTuple = [string, string, number, number, number, number, number, number, number, number, number, number, number];

export interface PartialRow extends SummaryColumns {
  device: string;
  metric: string;
  minute: number;
  epoch: number;
  updated_at: number;
  /** The row's rowid: the order rows of one ms are read in, and a backlog's within an epoch. */
  rid: number;
}

/** Where the pusher stands. */
export interface Position {
  /** Of the epochs above `done`, the rows updated before it are acknowledged as they stand. */
  cursor: number;
  /** The rows at exactly the cursor already pushed (key -> count). */
  ties: Map<string, number>;
  /** Every partial of the epochs up to it is acknowledged in its final form. */
  done: number;
}

export interface Page {
  rows: PartialRow[];
  /** The position once the cloud has acknowledged these rows. */
  next: Position;
  /** The page hit the limit: more may be waiting. */
  full: boolean;
  /** The cursor moved (false: the same rows would come again, do not loop on them). */
  advanced: boolean;
}

const NAMES = ['device', 'metric', 'minute', 'epoch', 'count', 'sum', 'min', 'max', 'm2', 'first', 'first_ts', 'last', 'last_ts', 'updated_at'];
const COLUMNS = `${NAMES.join(', ')}, rowid AS rid`;
/**
 * A page's rows: those of the epochs above (done, watermark) found by the push index, updated at or
 * after the cursor, the first LIMIT by (updated_at, rowid). Only the keys are sorted, then each row
 * is read by its rowid (and sorted again in JS, ~1 ms for thousands: a subquery's order is not
 * promised): sorting the whole rows, or returning them in the index's order, took 34-37 ms for the
 * 4,000 rows of a 1,000-device fleet's open epoch where this takes 25 ms (docs/benchmarks.md,
 * gateway session 22).
 */
export const PAGE_SQL = `SELECT ${NAMES.map((c) => `p.${c}`).join(', ')}, p.rowid AS rid
  FROM (SELECT rowid AS r FROM partials WHERE epoch > ? AND updated_at >= ? ORDER BY updated_at, rowid LIMIT ?) s
  CROSS JOIN partials p ON p.rowid = s.r`;
const byUpdatedAt = (a: PartialRow, b: PartialRow) => a.updated_at - b.updated_at || a.rid - b.rid;
/** The push reads the epochs above it: those done from `pos`, and those the cloud's views cover. */
const floorOf = (pos: Position, watermark: number) => Math.max(pos.done, watermark);

export function partialKey(r: Pick<PartialRow, 'device' | 'metric' | 'minute' | 'epoch'>): string {
  return `${r.device}\u0000${r.metric}\u0000${r.minute}\u0000${r.epoch}`;
}

export function toTuple(r: PartialRow): PartialTuple {
  return [r.device, r.metric, r.minute, r.epoch, r.count, r.sum, r.min, r.max, r.m2, r.first, r.first_ts, r.last, r.last_ts];
}

/**
 * The push's index: the partials' epoch (and the rowid every entry ends with). A row's entry is
 * made with the row, at the index's right end (a new row is of the open epoch, the highest), and
 * never moves: a commit that updates a partial leaves it where it is. The index it replaces held
 * `updated_at`, and every commit moved the entries of the rows it updated: a gateway of 1,000
 * devices x 4 metrics a second wrote 568-571 B a reading with it, 439-443 B with this one
 * (bench:gateway's fleet phase; docs/benchmarks.md, gateway session 22). That index is dropped,
 * in the same transaction.
 */
export async function ensurePushIndex(writes: WriteQueue): Promise<void> {
  await writes.run(async (db) => {
    const names = (await db.all<{ name: string }>("SELECT name FROM sqlite_schema WHERE type = 'index' AND name IN ('partials_epoch', 'partials_updated_at')")).map((r) => r.name);
    if (names.length === 1 && names[0] === 'partials_epoch') return;
    await transaction(db, async (d) => {
      if (names.includes('partials_updated_at')) await d.exec('DROP INDEX partials_updated_at');
      if (!names.includes('partials_epoch')) await d.exec(PUSH_INDEX_SQL);
    });
  });
}

/** The push's index (ensurePushIndex), as sqlite_schema keeps its SQL. */
export const PUSH_INDEX_SQL = 'CREATE INDEX partials_epoch ON partials (epoch)';

function metaInt(text: string | undefined): number {
  const n = text === undefined ? 0 : Number(text);
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

export async function loadPosition(reader: Db): Promise<{ position: Position; watermark: number }> {
  return {
    position: { cursor: metaInt(await getMeta(reader, CURSOR_KEY)), ties: new Map(), done: metaInt(await getMeta(reader, DONE_KEY)) },
    watermark: metaInt(await getMeta(reader, WATERMARK_KEY)),
  };
}

/** Store what a 2xx acknowledged, in one transaction. */
export async function savePosition(writes: WriteQueue, position: Position, watermark: number): Promise<void> {
  await writes.tx(async (db) => {
    await setMeta(db, CURSOR_KEY, position.cursor);
    await setMeta(db, DONE_KEY, position.done);
    await setMeta(db, WATERMARK_KEY, watermark);
  });
}

/**
 * The highest epoch up to which every epoch is closed (0: none). Read before the rows it vouches
 * for: the partials of those epochs were final when it was read, so in any later read too.
 */
export async function closedThrough(reader: Db): Promise<number> {
  const row = await reader.get<{ c: number | null }>(
    'SELECT COALESCE((SELECT MIN(epoch) - 1 FROM epochs WHERE closed_at IS NULL), (SELECT MAX(epoch) FROM epochs), 0) AS c');
  return Math.max(0, row?.c ?? 0);
}

/**
 * The next push's partials: those of epochs above `done` and `watermark` updated at or after the
 * cursor, minus the ties already pushed, oldest first, at most `limit`. `now` caps the next cursor:
 * a clock stepped back stamps new rows below rows already seen, and a cursor held at `now` still
 * finds them (the rows stamped "in the future" are then pushed again until the clock catches up).
 * A page that is not full carries every row left of the epochs closed before it was read: once
 * acknowledged, they are done.
 */
export async function readPage(reader: Db, pos: Position, watermark: number, limit: number, now: number): Promise<Page> {
  const n = Math.max(1, limit);
  const closed = await closedThrough(reader);
  // One read: the ties are rows at the cursor, the lowest updated_at taken, so n + ties rows hold n new ones.
  const raw = await reader.all<PartialRow>(PAGE_SQL, [floorOf(pos, watermark), pos.cursor, n + pos.ties.size]);
  raw.sort(byUpdatedAt);
  const rows = (pos.ties.size ? raw.filter((r) => r.updated_at !== pos.cursor || pos.ties.get(partialKey(r)) !== r.count) : raw).slice(0, n);
  const full = rows.length === n;
  const done = full ? pos.done : Math.max(pos.done, closed);
  if (rows.length === 0) return { rows, next: done === pos.done ? pos : { ...pos, done }, full: false, advanced: false };

  const cursor = Math.min(rows[rows.length - 1].updated_at, now);
  const ties = cursor === pos.cursor ? new Map(pos.ties) : new Map<string, number>();
  for (const r of rows) if (r.updated_at === cursor) ties.set(partialKey(r), r.count);
  const advanced = cursor > pos.cursor || (cursor === pos.cursor && ties.size > pos.ties.size) || rows.some((r) => r.updated_at === cursor && pos.ties.has(partialKey(r)));
  return { rows, next: { cursor, ties, done }, full, advanced };
}

/**
 * A backlog pushed newest first (after an outage, a burst): the partials waiting when it was found,
 * read down by (epoch, rowid), while those changed since go first, upwards from a position of
 * their own (`fresh`, pusher.ts). A push after an outage of any length then carries the newest
 * readings first, and the oldest of the backlog last.
 *
 * Why it is exact: the backlog is every row, from the low position on, of the epochs closed when
 * it was found (`closed`: final, they cannot change), and of the later ones (the open epoch) the
 * rows stamped below `hi`, the highest updated_at among them then. Commits are serialised, so
 * every commit after that read is stamped >= hi and belongs to the upper part: a row of the open
 * epoch updated again leaves the backlog for it, and a new row is made there. So the backlog is
 * read down by its epochs and rowids (the push index's order) with no ties to track; a row read at
 * count 5 that then grows to 7 may reach the cloud after the 7: its upsert keeps the larger count
 * [idempotent].
 */
export interface Backlog {
  /** The position the backlog starts above (what is acknowledged below it, rows at its cursor in its ties). */
  low: Position;
  /** Every epoch up to it was closed when the backlog was found. */
  closed: number;
  /** Of later epochs, the rows stamped below it are the backlog's. */
  hi: number;
  /** Where the last row read downwards stands (`[epoch, rowid]`), null before the first. */
  below: [number, number] | null;
}

export interface BacklogPage {
  rows: PartialRow[];
  /** Where the next read down starts once the cloud has acknowledged these rows. */
  next: Backlog;
  /** Every row of the backlog is in this page or was in an earlier one. */
  done: boolean;
}

/**
 * The backlog waiting above `low` (null: none, or only rows stamped after `now`, where the clock
 * went back: those go oldest first as before), and the position the rows changed since start from.
 */
export async function findBacklog(reader: Db, low: Position, watermark: number, now: number): Promise<{ backlog: Backlog; fresh: Position } | null> {
  const closed = await closedThrough(reader);
  const floor = floorOf(low, watermark);
  const top = await reader.get<{ at: number | null }>('SELECT MAX(updated_at) AS at FROM partials WHERE epoch > ?', [Math.max(closed, floor)]);
  const hi = Math.max(low.cursor, top?.at ?? 0);
  if (hi > now || (hi === low.cursor && closed <= floor)) return null;
  return {
    backlog: { low, closed, hi, below: null },
    fresh: { cursor: hi, ties: hi === low.cursor ? low.ties : new Map(), done: Math.max(low.done, closed) },
  };
}

/** The next `limit` rows of the backlog, newest first, of epochs above `watermark`. */
export async function readBacklogPage(reader: Db, b: Backlog, watermark: number, limit: number): Promise<BacklogPage> {
  const n = Math.max(0, limit);
  if (n === 0) return { rows: [], next: b, done: false };
  const top = b.below === null ? { sql: '', params: [] as unknown[] } : { sql: 'AND (epoch, rowid) < (?, ?)', params: [...b.below] as unknown[] };
  const raw = await reader.all<PartialRow>(
    `SELECT ${COLUMNS} FROM partials WHERE epoch > ? ${top.sql} AND updated_at >= ? AND (epoch <= ? OR updated_at < ?)
       ORDER BY epoch DESC, rowid DESC LIMIT ?`,
    [floorOf(b.low, watermark), ...top.params, b.low.cursor, b.closed, b.hi, n]);
  const done = raw.length < n;
  if (raw.length === 0) return { rows: [], next: b, done };
  const last = raw[raw.length - 1];
  // Rows at exactly the low cursor that went before the backlog was found are not sent again.
  const rows = raw.filter((r) => r.updated_at !== b.low.cursor || b.low.ties.get(partialKey(r)) !== r.count);
  return { rows, next: { ...b, below: [last.epoch, last.rid] }, done };
}
