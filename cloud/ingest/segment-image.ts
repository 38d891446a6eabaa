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
import { seqRanges } from './plan.js';
import type { Range } from './ranges.js';
import type { ReadingTuple } from './validate.js';

/** A gateway's seqs in the segment as appended (unsorted runs; normalize() before use) and its row count. */
export interface GatewayRuns { runs: Range[]; rows: number }

/** Rows a day's columns start with when the segment's size is not known; they grow by doubling. */
const INITIAL_DAY_ROWS = 16_384;

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

  /** One staging line: `rows` of `gateway`, in the order the line holds them; `bytes`, the line's length. */
  add(gateway: string, rows: ReadingTuple[], bytes = 0): void {
    this.bytes += bytes;
    let st = this.perGateway.get(gateway);
    if (!st) this.perGateway.set(gateway, st = { runs: [], rows: 0 });
    // A new day's columns: what is left of the segment (the most rows that day can ever hold) for
    // the segment's first two days (today, and the next one around midnight); a third and later
    // day (a backlog spread over days) starts small, so no segment reserves more than twice its size.
    const left = Math.max(rows.length, this.maxRows - this.rows);
    st.rows += rows.length;
    this.rows += rows.length;
    // A loop, not push(...): a line may hold 100k rows, past what a spread call can pass.
    for (const r of seqRanges(rows)) st.runs.push(r);
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
  }
}
