/**
 * A staging segment's readings as the sealer needs them: columns per UTC day of `ts` (DayColumns)
 * and, per gateway, the seq runs and the row count the file holds. Built either by the committer
 * as it appends lines to its open segment (the readings are parsed already; the seal then neither
 * re-reads nor re-parses the file), or from the file itself by readSegment (a segment adopted after
 * a crash, claimed from another node, or whose image was dropped). Both give the same image of the
 * same lines: the file stays the durable record [INV-1], the image only saves reading it back.
 */
import { DAY_MS } from '../../shared/time.js';
import { DayColumns } from './parquet.js';
import { type ReadingColumns, type ReadingTuple, seqRangesOf } from './columns.js';
import type { Range } from './ranges.js';

/** A gateway's seqs in the segment as appended (unsorted runs; normalize() before use) and its row count. */
export interface GatewayRuns { runs: Range[]; rows: number }

/** Rows a day's columns start with when the segment's size is not known; they grow by doubling. */
const INITIAL_DAY_ROWS = 16_384;
const EMPTY = new Int32Array(0);

function seqRangesOfTuples(rows: ReadingTuple[]): Range[] {
  const out: Range[] = [];
  for (const r of rows) {
    const last = out[out.length - 1];
    if (last && r[0] === last.to + 1) last.to = r[0];
    else out.push({ from: r[0], to: r[0] });
  }
  return out;
}

export class SegmentImage {
  readonly days = new Map<number, DayColumns>();
  readonly perGateway = new Map<string, GatewayRuns>();
  /** Rows added, repeats included. */
  rows = 0;
  /** Bytes of the lines added (as the committer wrote them): a file of another size is not this image's. */
  bytes = 0;
  private last: DayColumns | null = null;
  private readonly maxRows: number;

  /**
   * `maxRows`: the most rows the segment will hold (ingest.sealMaxReadings, for the committer's open
   * segment). The columns of its first two days are then made as large as what is left of it, never
   * grown: no copy of the columns in a group commit (their memory is not zeroed, so the OS takes it
   * page by page as rows arrive). 0: unknown (a file read back); the columns start small and grow.
   */
  constructor(maxRows = 0) {
    this.maxRows = maxRows;
  }

  /** The columns of `day`, made on first use (see the constructor for their size). */
  private dayColumns(day: number, rows: number): DayColumns {
    let cols = this.days.get(day);
    if (!cols) {
      // A new day's columns: what is left of the segment (the most rows that day can ever hold) for
      // the segment's first two days (today, and the next one around midnight); a third and later
      // day (a backlog spread over days) starts small, so no segment reserves more than twice its size.
      const left = Math.max(rows, this.maxRows - this.rows);
      this.days.set(day, cols = new DayColumns(day, this.maxRows > 0 && this.days.size < 2 ? left : INITIAL_DAY_ROWS));
    }
    return cols;
  }

  private count(gateway: string, runs: Range[], rows: number, bytes: number): void {
    this.bytes += bytes;
    let st = this.perGateway.get(gateway);
    if (!st) this.perGateway.set(gateway, st = { runs: [], rows: 0 });
    st.rows += rows;
    // A loop, not push(...): a line may hold 100k rows, past what a spread call can pass.
    for (const r of runs) st.runs.push(r);
  }

  /**
   * One staging line's rows as columns (the committer's): the request's device and metric ids are
   * mapped to the day's dictionary ids once per line, then each row is six stores into typed arrays.
   */
  add(gateway: string, rows: ReadingColumns, bytes = 0): void {
    const n = rows.length;
    const runs = seqRangesOf(rows);
    let cols: DayColumns | null = null;
    let day = NaN;
    let gid = 0;
    let dmap: Int32Array = EMPTY;
    let mmap: Int32Array = EMPTY;
    // Per day of this line: its columns, the gateway's id there and the line's ids mapped to its dictionaries.
    const seen = new Map<number, { cols: DayColumns; gid: number; dmap: Int32Array; mmap: Int32Array }>();
    const { seq, epoch, ts, value, device, metric } = rows;
    for (let i = 0; i < n; i++) {
      const t = ts[i];
      const d = Math.floor(t / DAY_MS);
      if (d !== day) {
        day = d;
        let s = seen.get(d);
        if (!s) {
          const c = this.dayColumns(d, n - i);
          c.reserve(n - i);
          s = { cols: c, gid: c.gateway.id(gateway), dmap: new Int32Array(rows.devices.length).fill(-1), mmap: new Int32Array(rows.metrics.length).fill(-1) };
          seen.set(d, s);
        }
        ({ cols, gid, dmap, mmap } = s);
      }
      const dv = device[i];
      let di = dmap[dv];
      if (di < 0) dmap[dv] = di = cols!.device.id(rows.devices[dv]);
      const mv = metric[i];
      let mi = mmap[mv];
      if (mi < 0) mmap[mv] = mi = cols!.metric.id(rows.metrics[mv]);
      cols!.appendIds(gid, seq[i], epoch[i], di, mi, t, value[i]);
    }
    this.rows += n;
    this.last = cols ?? this.last;
    this.count(gateway, runs, n, bytes);
  }

  /** One staging line read back from its file: `rows` of `gateway`, in the order the line holds them; `bytes`, the line's length. */
  addTuples(gateway: string, rows: ReadingTuple[], bytes = 0): void {
    const left = Math.max(rows.length, this.maxRows - this.rows);
    let cols = this.last;
    for (const [seq, epoch, device, metric, ts, value] of rows) {
      const day = Math.floor(ts / DAY_MS);
      if (cols?.day !== day) {
        cols = this.days.get(day) ?? null;
        if (!cols) this.days.set(day, cols = new DayColumns(day, this.maxRows > 0 && this.days.size < 2 ? left : INITIAL_DAY_ROWS));
      }
      cols.append(gateway, seq, epoch, device, metric, ts, value);
    }
    this.last = cols;
    this.rows += rows.length;
    this.count(gateway, seqRangesOfTuples(rows), rows.length, bytes);
  }
}
