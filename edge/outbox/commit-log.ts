/**
 * The commit log: where the usual group commit is durable [INV-1]. A group of fresh readings is
 * one record, the parameters of its group commit statement (committer.ts GROUP_COMMIT_SQL), written
 * with O_DSYNC (the write returns once the data is on the disk) at a 4 KiB page boundary, padded
 * to whole pages, in a preallocated file (`commit.log` in the data dir): one write of a page or
 * two a commit where SQLite's commit writes a frame of 1 KiB per page it changes (page 1, the
 * outbox's last leaf and its parent, the partials, ...) and then fsyncs (docs/benchmarks.md,
 * gateway, session 18). The PUBACKs of the group follow that write; the records go into gateway.db
 * afterwards, many in one statement (Committer.applyPending).
 *
 * The write is made on the main thread while the log's writes take under INLINE_MAX_MS (an
 * average, shared/io-times.ts), and on the thread pool otherwise: a write of a page to a fast disk takes
 * less than the two hops to a pool thread and back, which held a commit at mosquitto_pub's default
 * window ~0.15 ms longer (docs/benchmarks.md, gateway, session 19); a slow disk (an SD card: ms a
 * write) must not hold the event loop that long at every commit.
 *
 * A record is applied once gateway.db holds its seqs (synchronous=FULL: durable when COMMIT
 * returns). The file is a ring: a record goes after the last one written, or at offset 0 when it
 * does not fit before the end (and at 0 whenever every record written is applied), never over a
 * record not yet applied: those are written while the committer's apply runs in the background,
 * so the log is seldom all applied at once (full(): the next group waits for the apply). Opening
 * the gateway reads every page that begins a whole record (others: payload pages, a record cut
 * by a crash, one partly written over), and applies the records after gateway.db's last seq,
 * contiguous in seq, before anything else (replay); a record whose seqs gateway.db holds is one
 * applied before. A record cut by a crash is the last one written: its PUBACKs never left, and
 * none was written after it (the committer writes one record at a time).
 *
 * Record: the magic (8 bytes, with bytes UTF-8 text never holds, so no payload is taken for a
 * header), the payload's length (u32 LE), its CRC-32 (u32 LE), then the payload: the statement's
 * parameters as JSON. The magic names the parameters' form: a change to GROUP_COMMIT_SQL's
 * parameters takes a new magic, and a replay of the old records in their own form.
 * - 'BRL2' (written): every parameter but the partials' (PARAM.partials, null). The partials are
 *   what the readings make of the open epoch's, so the replay makes them again (committer.ts
 *   withPartials); without them a group of a hundred series is a page or two, not six, and a
 *   fleet's groups go through the log too (docs/benchmarks.md, gateway, session 23).
 * - 'BRL1' (read): every parameter, the partials' too (sessions 18-22).
 *
 * A gateway of an earlier version does not read the log, reads it from offset 0 in file order
 * only (session 18's, before the ring), or reads only 'BRL1' records (sessions 19-22): a clean stop
 * applies all of it first (Committer.close); after a crash, start this version once before going back.
 */
import { closeSync, constants, existsSync, fstatSync, fsyncSync, openSync, readSync, write as fsWrite, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { crc32 } from 'node:zlib';
import { IoTimes } from '../../shared/io-times.js';

/** 'BRL2': the records written, without the partials' parameter. */
const MAGIC = Buffer.from([0xff, 0xfe, 0x42, 0x52, 0x4c, 0x32, 0xfe, 0xff]);
/** 'BRL1': records with every parameter (sessions 18-22), still read. */
const MAGIC_V1 = Buffer.from([0xff, 0xfe, 0x42, 0x52, 0x4c, 0x31, 0xfe, 0xff]);
const HEADER_BYTES = MAGIC.length + 8;
/**
 * Where the parameters of GROUP_COMMIT_INSERT that the log and the replay read sit in a record's
 * `params` (committer.ts groupCommitTrigger names them all): the readings' JSON, the open epoch
 * after the group, its first seq, the last seq of an epoch it opens (else null), and the partials'
 * JSON, not written ('BRL2') and null in a record read.
 */
export const PARAM = { rows: 0, epoch: 2, first: 3, openLast: 4, partials: 7 } as const;
/** Records start at the filesystem's page boundaries and fill whole pages. */
export const LOG_PAGE = 4096;
/**
 * The log's size, made once with zeros a page at a time: appends inside it change no file size,
 * so O_DSYNC writes only the data. About 25 s of records at mosquitto_pub's default window, where
 * an apply takes 4,096 readings (~100 records) every ~100 ms.
 */
export const LOG_PREALLOC_BYTES = 4 * 1024 * 1024;

/** Writes go on the main thread while the log's writes take less than this on average (ms). */
export const INLINE_MAX_MS = 0.5;

/** One group commit's statement parameters, with the seqs it gives. */
export interface LogRecord {
  /** The first seq of the group (the statement's `first`). */
  first: number;
  /** Readings (seqs) in the group. */
  count: number;
  /**
   * The parameters of GROUP_COMMIT_INSERT, in order. The partials' (PARAM.partials) is null in a
   * record read back from a 'BRL2' log: the replay makes it again.
   */
  params: unknown[];
}

export class CommitLog {
  private readonly fd: number;
  /** Where the last record written ends. */
  private offset = 0;
  /** The records written and not yet in gateway.db, oldest first: where each starts, and its last seq. */
  private unapplied: Array<{ at: number; last: number }> = [];
  private closed = false;
  /** How long its writes take (where the next one is made). */
  readonly times = new IoTimes(INLINE_MAX_MS);
  /** Called after each write: whether it was made on the main thread, and its time in ms. */
  onWrite: (inline: boolean, ms: number) => void = () => {};

  private constructor(fd: number) {
    this.fd = fd;
  }

  /**
   * Open (or make) the log at `file` and read its records: every whole record, in seq order (the
   * caller picks those to replay, replayable, and applies them before the first append, which goes
   * at offset 0).
   */
  static open(file: string): { log: CommitLog; records: LogRecord[] } {
    const made = !existsSync(file);
    // Made and read on a descriptor of its own: the zeros go in one fsync, not a sync per write.
    const plain = openSync(file, constants.O_RDWR | constants.O_CREAT, 0o600);
    let records: LogRecord[];
    try {
      const size = fstatSync(plain).size;
      if (size < LOG_PREALLOC_BYTES) {
        // A page at a time: a file written in one call may sit in large folios in the page cache,
        // and write_bytes then counts a whole folio for each page a commit dirties (benchmarks.md, session 15).
        const zeros = Buffer.alloc(LOG_PAGE);
        for (let at = size - (size % LOG_PAGE); at < LOG_PREALLOC_BYTES; at += LOG_PAGE) writeSync(plain, zeros, 0, LOG_PAGE, at);
        fsyncSync(plain);
      }
      if (made) {
        const dir = openSync(dirname(file), 'r');
        try { fsyncSync(dir); } finally { closeSync(dir); }
      }
      records = readRecords(plain);
    } finally {
      closeSync(plain);
    }
    return { log: new CommitLog(openSync(file, constants.O_RDWR | constants.O_DSYNC)), records };
  }

  /**
   * Where a record of `size` bytes goes: after the last one written, or at 0 when it does not fit
   * before the end or when every record written is applied; null when the records not yet applied
   * leave no room for it.
   */
  private placeFor(size: number): number | null {
    if (!this.unapplied.length) return size <= LOG_PREALLOC_BYTES ? 0 : null;
    const tail = this.unapplied[0].at;
    const head = this.offset;
    // Not wrapped (the oldest waiting record before the last one's end): free past head and before tail.
    if (head > tail) return head + size <= LOG_PREALLOC_BYTES ? head : size <= tail ? 0 : null;
    // Wrapped: free from head up to the oldest waiting record.
    return head + size <= tail ? head : null;
  }

  /** Whether a record of `size` bytes has no room until the records written are applied (the committer applies them first). */
  full(size = LOG_PAGE): boolean {
    return this.placeFor(size) === null;
  }

  /** A record as written: header, payload, zeros to the end of its last page. */
  static encode(record: LogRecord): Buffer {
    const payload = Buffer.from(JSON.stringify(record.params.map((x, i) => (i === PARAM.partials ? null : x))), 'utf8');
    const buf = Buffer.alloc(recordBytes(payload.length));
    MAGIC.copy(buf, 0);
    buf.writeUInt32LE(payload.length, MAGIC.length);
    buf.writeUInt32LE(crc32(payload), MAGIC.length + 4);
    payload.copy(buf, HEADER_BYTES);
    return buf;
  }

  /**
   * Write a record (`buf`: encode's); resolves once it is on the disk. A failed write leaves the
   * offset where it was: the next record goes over whatever part of this one reached the file.
   */
  append(record: LogRecord, buf = CommitLog.encode(record)): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the commit log is closed'));
    const size = buf.length;
    const at = this.placeFor(size);
    if (at === null) return Promise.reject(new Error(`commit log: no room for a record of ${size} bytes until the records written are in gateway.db`));
    const started = performance.now();
    const done = (inline: boolean, n: number) => {
      const ms = performance.now() - started;
      this.times.record(ms);
      this.onWrite(inline, ms);
      if (n !== size) throw new Error(`commit log: short write (${n} of ${size} bytes)`);
      this.offset = at + size;
      this.unapplied.push({ at, last: record.first + record.count - 1 });
    };
    if (this.times.inline()) {
      try {
        done(true, writeSync(this.fd, buf, 0, size, at));
        return Promise.resolve();
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return new Promise((resolve, reject) => {
      fsWrite(this.fd, buf, 0, size, at, (err, n) => {
        if (err) return reject(err);
        try {
          done(false, n);
          resolve();
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  /** gateway.db holds every seq up to `seq` durably: those records may be written over. */
  appliedUpTo(seq: number): void {
    let n = 0;
    while (n < this.unapplied.length && this.unapplied[n].last <= seq) n++;
    if (n) this.unapplied.splice(0, n);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}

/** The bytes a record of a `length`-byte payload takes in the log: whole pages. */
const recordBytes = (length: number) => Math.ceil((HEADER_BYTES + length) / LOG_PAGE) * LOG_PAGE;

/**
 * Every whole record of the log, in seq order: each page is read for one that starts there (a
 * payload page never does: the magic has bytes UTF-8 text never holds), and one that fails its
 * check (cut by a crash, partly written over) is passed over, a page at a time.
 */
function readRecords(fd: number): LogRecord[] {
  const size = fstatSync(fd).size;
  const out: LogRecord[] = [];
  const head = Buffer.alloc(HEADER_BYTES);
  for (let at = 0; at + HEADER_BYTES <= size;) {
    const record = readRecord(fd, head, at, size);
    at += record ? recordBytes(record.length) : LOG_PAGE;
    if (record) out.push(record.record);
  }
  return out.sort((a, b) => a.first - b.first);
}

/** The whole record starting at `at`, with its payload's length, or null. */
function readRecord(fd: number, head: Buffer, at: number, size: number): { record: LogRecord; length: number } | null {
  if (readSync(fd, head, 0, HEADER_BYTES, at) !== HEADER_BYTES) return null;
  const magic = head.subarray(0, MAGIC.length);
  if (!magic.equals(MAGIC) && !magic.equals(MAGIC_V1)) return null;
  const length = head.readUInt32LE(MAGIC.length);
  if (at + HEADER_BYTES + length > size) return null;
  const payload = Buffer.alloc(length);
  if (readSync(fd, payload, 0, length, at + HEADER_BYTES) !== length || crc32(payload) !== head.readUInt32LE(MAGIC.length + 4)) return null;
  let params: unknown;
  try {
    params = JSON.parse(payload.toString('utf8'));
  } catch {
    return null;
  }
  const record = recordOf(params, magic.equals(MAGIC_V1));
  return record ? { record, length } : null;
}

/**
 * The record of a statement's parameters (PARAM: the first seq, the readings' JSON; the partials'
 * JSON in a 'BRL1' record, `withPartials`, null otherwise), or null if they are not such.
 */
function recordOf(params: unknown, withPartials: boolean): LogRecord | null {
  if (!Array.isArray(params) || typeof params[PARAM.rows] !== 'string' || !Number.isSafeInteger(params[PARAM.first])) return null;
  if (withPartials ? typeof params[PARAM.partials] !== 'string' : params[PARAM.partials] !== null) return null;
  let rows: unknown;
  try {
    rows = JSON.parse(params[PARAM.rows]);
  } catch {
    return null;
  }
  if (!Array.isArray(rows) || rows.length === 0) return null;
  return { first: params[PARAM.first] as number, count: rows.length, params };
}

/**
 * The records to apply after gateway.db's last seq `lastSeq`: those that continue it, contiguous
 * in seq, from `records` in seq order (readRecords'). Records gateway.db holds are passed over;
 * a gap ends the list.
 */
export function replayable(records: LogRecord[], lastSeq: number): LogRecord[] {
  const out: LogRecord[] = [];
  let next = lastSeq + 1;
  for (const r of records) {
    if (out.length === 0 && r.first + r.count - 1 <= lastSeq) continue;
    if (r.first !== next) break;
    out.push(r);
    next += r.count;
  }
  return out;
}
