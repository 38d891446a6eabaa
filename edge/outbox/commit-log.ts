/**
 * The commit log: where the usual group commit is durable [INV-1]. A group of fresh readings is
 * one record, the parameters of its group commit statement (committer.ts GROUP_COMMIT_SQL), written
 * with O_DSYNC (the write returns once the data is on the disk, one hop to the thread pool) at a
 * 4 KiB page boundary, padded to whole pages, in a preallocated file (`commit.log` in the data
 * dir): one write of a page or two a commit where SQLite's commit writes a frame of 1 KiB per page
 * it changes (page 1, the outbox's last leaf and its parent, the partials, ...) and then fsyncs
 * (docs/benchmarks.md, gateway, session 18). The PUBACKs of the group follow that write; the
 * statements go into gateway.db afterwards, many records in one transaction (Committer.applyPending).
 *
 * The write is made on the main thread while the log's writes take under INLINE_MAX_MS (an
 * average, WriteTimes), and on the thread pool otherwise: a write of a page to a fast disk takes
 * less than the two hops to a pool thread and back, which held a commit at mosquitto_pub's default
 * window ~0.15 ms longer (docs/benchmarks.md, gateway, session 19); a slow disk (an SD card: ms a
 * write) must not hold the event loop that long at every commit.
 *
 * A record is applied once gateway.db holds its seqs (synchronous=FULL: durable when COMMIT
 * returns). When every record written is applied, the next one goes at offset 0 again, over records
 * that gateway.db holds already. Opening the gateway reads the log from the start: the records
 * after gateway.db's last seq, contiguous in seq, are applied before anything else (replay); a
 * record whose seqs gateway.db holds is one applied before, one with other seqs is older than the
 * log's start and ends the read, as does a page without a whole record (a write cut by a crash:
 * its PUBACKs never left).
 *
 * Record: the magic (8 bytes, with bytes UTF-8 text never holds, so no payload is taken for a
 * header), the payload's length (u32 LE), its CRC-32 (u32 LE), then the payload: the statement's
 * parameters as JSON. The magic names the parameters' form ('BRL1'): a change to GROUP_COMMIT_SQL's
 * parameters takes a new magic, and a replay of the old records in their own form.
 *
 * A gateway of an earlier version does not read the log: a clean stop applies all of it first
 * (Committer.close); after a crash, start this version once before going back.
 */
import { closeSync, constants, existsSync, fstatSync, fsyncSync, openSync, readSync, write as fsWrite, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { crc32 } from 'node:zlib';

const MAGIC = Buffer.from([0xff, 0xfe, 0x42, 0x52, 0x4c, 0x31, 0xfe, 0xff]);
const HEADER_BYTES = MAGIC.length + 8;
/** Records start at the filesystem's page boundaries and fill whole pages. */
export const LOG_PAGE = 4096;
/**
 * The log's size as made (zeros, written a page at a time): appends inside it change no file size,
 * so O_DSYNC writes only the data. Past it the log grows (rare: every record written is applied
 * first once REWIND_BYTES are used, Committer).
 */
export const LOG_PREALLOC_BYTES = 4 * 1024 * 1024;
/** Once this much of the log holds records, the next append waits for them to be applied and starts again at 0. */
export const LOG_REWIND_BYTES = 3 * 1024 * 1024;

/** Writes go on the main thread while the log's writes take less than this on average (ms). */
export const INLINE_MAX_MS = 0.5;

/**
 * How long the log's writes take, on average (exponentially weighted, 1/16 a write): a write on
 * the main thread is timed around the call, one on the thread pool from its dispatch to its
 * callback (the hops included). One write that stalls (a device flush) sends the next to the pool
 * until the average is back under INLINE_MAX_MS: ~15 writes of 0.2 ms after a 10 ms stall.
 */
export class WriteTimes {
  private avg = 0;

  record(ms: number): void {
    this.avg += (ms - this.avg) / 16;
  }

  /** Whether the next write goes on the main thread. */
  inline(): boolean {
    return this.avg < INLINE_MAX_MS;
  }
}

/** One group commit's statement parameters, with the seqs it gives. */
export interface LogRecord {
  /** The first seq of the group (the statement's `first`). */
  first: number;
  /** Readings (seqs) in the group. */
  count: number;
  /** The parameters of GROUP_COMMIT_INSERT, in order. */
  params: unknown[];
}

export class CommitLog {
  private readonly fd: number;
  private offset = 0;
  /** Highest seq written to the log, and highest seq gateway.db holds durably. */
  private written = 0;
  private applied = 0;
  private closed = false;
  /** How long its writes take (where the next one is made). */
  readonly times = new WriteTimes();
  /** Called after each write: whether it was made on the main thread, and its time in ms. */
  onWrite: (inline: boolean, ms: number) => void = () => {};

  private constructor(fd: number) {
    this.fd = fd;
  }

  /**
   * Open (or make) the log at `file` and read its records: every whole record from offset 0 in
   * file order (the caller picks those to replay, replayable).
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

  /** Where the next record goes: offset 0 once everything written is applied. */
  private rewindIfApplied(): void {
    if (this.offset > 0 && this.applied >= this.written) this.offset = 0;
  }

  /** Whether the next append must wait for the records written to be applied (LOG_REWIND_BYTES used). */
  full(): boolean {
    return this.offset >= LOG_REWIND_BYTES && this.applied < this.written;
  }

  /** A record as written: header, payload, zeros to the end of its last page. */
  static encode(record: LogRecord): Buffer {
    const payload = Buffer.from(JSON.stringify(record.params), 'utf8');
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
    this.rewindIfApplied();
    const size = buf.length;
    const at = this.offset;
    const started = performance.now();
    const done = (inline: boolean, n: number) => {
      const ms = performance.now() - started;
      this.times.record(ms);
      this.onWrite(inline, ms);
      if (n !== size) throw new Error(`commit log: short write (${n} of ${size} bytes)`);
      this.offset = at + size;
      this.written = record.first + record.count - 1;
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
    if (seq > this.applied) this.applied = seq;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}

/** The bytes a record of a `length`-byte payload takes in the log: whole pages. */
const recordBytes = (length: number) => Math.ceil((HEADER_BYTES + length) / LOG_PAGE) * LOG_PAGE;

/** Every whole record of the log from offset 0, in file order, up to the first page without one. */
function readRecords(fd: number): LogRecord[] {
  const size = fstatSync(fd).size;
  const out: LogRecord[] = [];
  const head = Buffer.alloc(HEADER_BYTES);
  for (let at = 0; at + HEADER_BYTES <= size;) {
    if (readSync(fd, head, 0, HEADER_BYTES, at) !== HEADER_BYTES || !head.subarray(0, MAGIC.length).equals(MAGIC)) break;
    const length = head.readUInt32LE(MAGIC.length);
    if (at + HEADER_BYTES + length > size) break;
    const payload = Buffer.alloc(length);
    if (readSync(fd, payload, 0, length, at + HEADER_BYTES) !== length || crc32(payload) !== head.readUInt32LE(MAGIC.length + 4)) break;
    let params: unknown;
    try {
      params = JSON.parse(payload.toString('utf8'));
    } catch {
      break;
    }
    const record = recordOf(params);
    if (!record) break;
    out.push(record);
    at += recordBytes(length);
  }
  return out;
}

/** The record of a statement's parameters (first at 3, the readings' JSON at 0), or null if they are not such. */
function recordOf(params: unknown): LogRecord | null {
  if (!Array.isArray(params) || typeof params[0] !== 'string' || !Number.isSafeInteger(params[3])) return null;
  let rows: unknown;
  try {
    rows = JSON.parse(params[0]);
  } catch {
    return null;
  }
  if (!Array.isArray(rows) || rows.length === 0) return null;
  return { first: params[3] as number, count: rows.length, params };
}

/**
 * The records to apply after gateway.db's last seq `lastSeq`: those that continue it, contiguous
 * in seq, in file order. Records gateway.db holds are passed over; any other ends the list.
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
