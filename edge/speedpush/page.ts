/**
 * The SQLite side of the speed push (docs/serving.md): which partials the next push carries, and
 * where the pusher stands (its cursor on `partials.updated_at` and the watermark the cloud told it,
 * both in the meta table).
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
  /** The row's rowid: after updated_at, the order the push reads rows in (ensureCursorIndex). */
  rid: number;
}

/** Where the pusher stands: the cursor, and the rows at exactly the cursor already pushed (key -> count). */
export interface Position {
  cursor: number;
  ties: Map<string, number>;
}

export interface Page {
  rows: PartialRow[];
  /** The position once the cloud has acknowledged these rows. */
  next: Position;
  /** The page hit the limit: more may be waiting. */
  full: boolean;
  /** The position moved (false: the same rows would come again, do not loop on them). */
  advanced: boolean;
}

const COLUMNS = 'device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts, updated_at, rowid AS rid';
// The cursor index's own order (updated_at, then the rowid every index entry ends with): no sort.
const ORDER = 'ORDER BY updated_at, rowid';

export function partialKey(r: Pick<PartialRow, 'device' | 'metric' | 'minute' | 'epoch'>): string {
  return `${r.device}\u0000${r.metric}\u0000${r.minute}\u0000${r.epoch}`;
}

export function toTuple(r: PartialRow): PartialTuple {
  return [r.device, r.metric, r.minute, r.epoch, r.count, r.sum, r.min, r.max, r.m2, r.first, r.first_ts, r.last, r.last_ts];
}

/**
 * The push reads partials in (updated_at, rowid) order, up and down; without this index each read
 * would scan every partial of the retention (a day of device x metric x minute x epoch). Its
 * entries are updated_at and the rowid alone, so neither order needs a sort. Every commit moves
 * the entries of the rows it updates (a new updated_at), and entries holding the partial's key
 * as well (gateway.db v4 made it so) were ~3x the size: with a cloud, a fleet of 1,000 devices x
 * 4 metrics wrote 752 B a reading on the commit path against 636 B with these, and 578 B without
 * the index (bench/outbox-commit.ts --fleet 1000 --windows 240 --cursor-index; docs/benchmarks.md,
 * gateway session 16). An index of the older form is made again, in one transaction.
 */
export async function ensureCursorIndex(writes: WriteQueue): Promise<void> {
  await writes.run(async (db) => {
    const index = await db.get<{ sql: string }>("SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = 'partials_updated_at'");
    if (index?.sql === CURSOR_INDEX_SQL) return;
    await transaction(db, async (d) => {
      if (index) await d.exec('DROP INDEX partials_updated_at');
      await d.exec(CURSOR_INDEX_SQL);
    });
  });
}

/** The cursor index (ensureCursorIndex), as sqlite_schema keeps its SQL. */
export const CURSOR_INDEX_SQL = 'CREATE INDEX partials_updated_at ON partials (updated_at)';

function metaInt(text: string | undefined): number {
  const n = text === undefined ? 0 : Number(text);
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

export async function loadPosition(reader: Db): Promise<{ position: Position; watermark: number }> {
  return {
    position: { cursor: metaInt(await getMeta(reader, CURSOR_KEY)), ties: new Map() },
    watermark: metaInt(await getMeta(reader, WATERMARK_KEY)),
  };
}

/** Store what a 2xx acknowledged, in one transaction. */
export async function savePosition(writes: WriteQueue, cursor: number, watermark: number): Promise<void> {
  await writes.tx(async (db) => {
    await setMeta(db, CURSOR_KEY, cursor);
    await setMeta(db, WATERMARK_KEY, watermark);
  });
}

/**
 * The next push's partials: those of epochs above `watermark` updated at or after the cursor,
 * minus the ties already pushed, oldest first, at most `limit`. `now` caps the next cursor: a
 * clock stepped back stamps new rows below rows already seen, and a cursor held at `now` still
 * finds them (the rows stamped "in the future" are then pushed again until the clock catches up).
 */
export async function readPage(reader: Db, pos: Position, watermark: number, limit: number, now: number): Promise<Page> {
  const n = Math.max(1, limit);
  const atCursor = await reader.all<PartialRow>(
    `SELECT ${COLUMNS} FROM partials WHERE updated_at = ? AND epoch > ? ${ORDER} LIMIT ?`, [pos.cursor, watermark, n + pos.ties.size]);
  const fresh = atCursor.filter((r) => pos.ties.get(partialKey(r)) !== r.count);
  const after = fresh.length >= n ? [] : await reader.all<PartialRow>(
    `SELECT ${COLUMNS} FROM partials WHERE updated_at > ? AND epoch > ? ${ORDER} LIMIT ?`, [pos.cursor, watermark, n - fresh.length]);
  const rows = fresh.concat(after).slice(0, n);
  if (rows.length === 0) return { rows, next: pos, full: false, advanced: false };

  const cursor = Math.min(rows[rows.length - 1].updated_at, now);
  const ties = cursor === pos.cursor ? new Map(pos.ties) : new Map<string, number>();
  for (const r of rows) if (r.updated_at === cursor) ties.set(partialKey(r), r.count);
  const advanced = cursor > pos.cursor || (cursor === pos.cursor && ties.size > pos.ties.size) || rows.some((r) => r.updated_at === cursor && pos.ties.has(partialKey(r)));
  return { rows, next: { cursor, ties }, full: rows.length === n, advanced };
}

/**
 * A backlog pushed newest first (after an outage, a burst): the partials changed between `low` and
 * `hi`, read downwards from `hi`, while those changed since `hi` go first, upwards from a cursor of
 * their own (pusher.ts). A push after an outage of any length then carries the newest readings
 * first, and the oldest of the backlog last.
 *
 * Why it is exact: `hi` is the highest updated_at visible when the backlog was found, and commits
 * are serialised, so every commit after that read is stamped >= hi and belongs to the upper part.
 * The rows below hi are frozen, except that one may be updated again: it then leaves for the upper
 * part, stamped >= hi. So the range [low, hi) is read downwards by its full key with no ties to
 * track; a row read at count 5 that then grows to 7 above hi may reach the cloud after the 7: its
 * upsert keeps the larger count [idempotent].
 */
export interface Backlog {
  /** The position the backlog starts above (what is acknowledged below it, rows at its cursor in its ties). */
  low: Position;
  /** The upper end, exclusive: the highest updated_at visible when the backlog was found. */
  hi: number;
  /** Where the last row read downwards stands (`[updated_at, rowid]`), null before the first. */
  below: [number, number] | null;
}

export interface BacklogPage {
  rows: PartialRow[];
  /** Where the next read down starts once the cloud has acknowledged these rows. */
  next: Backlog;
  /** Every row of the backlog is in this page or was in an earlier one. */
  done: boolean;
}

const DESC = 'ORDER BY updated_at DESC, rowid DESC';

/** The highest updated_at of any partial, null when there is none (the index on updated_at answers it). */
export async function highestUpdatedAt(reader: Db): Promise<number | null> {
  const row = await reader.get<{ at: number | null }>('SELECT MAX(updated_at) AS at FROM partials');
  return row?.at ?? null;
}

/** The next `limit` rows of the backlog, newest first, of epochs above `watermark`. */
export async function readBacklogPage(reader: Db, b: Backlog, watermark: number, limit: number): Promise<BacklogPage> {
  const n = Math.max(0, limit);
  if (n === 0) return { rows: [], next: b, done: false };
  const top = b.below === null
    ? { sql: 'updated_at < ?', params: [b.hi] as unknown[] }
    : { sql: '(updated_at, rowid) < (?, ?)', params: [...b.below] as unknown[] };
  const raw = await reader.all<PartialRow>(
    `SELECT ${COLUMNS} FROM partials WHERE ${top.sql} AND updated_at >= ? AND epoch > ? ${DESC} LIMIT ?`,
    [...top.params, b.low.cursor, watermark, n]);
  const done = raw.length < n;
  if (raw.length === 0) return { rows: [], next: b, done };
  const last = raw[raw.length - 1];
  // Rows at exactly the low cursor that went before the backlog was found are not sent again.
  const rows = raw.filter((r) => r.updated_at !== b.low.cursor || b.low.ties.get(partialKey(r)) !== r.count);
  return { rows, next: { ...b, below: [last.updated_at, last.rid] }, done };
}
