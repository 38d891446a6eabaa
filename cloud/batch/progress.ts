/** Progress of a run: what GET /api/v1/batch shows and what `braid batch run` prints on stderr. */

export interface BatchProgress {
  phase: 'starting' | 'building' | 'publishing' | 'sinks' | 'done';
  /** The day being built. */
  day: string | null;
  daysDone: number;
  daysTotal: number;
  /** Master rows read so far (catalog counts of the files read) and in all. */
  rowsRead: number;
  rowsTotal: number;
  elapsedMs: number;
  /** Master rows per second so far. */
  rowsPerSec: number;
  /** Estimated time left, from the rows left at the rate so far; null before the first day. */
  etaMs: number | null;
}

export class ProgressTracker {
  private state: Omit<BatchProgress, 'elapsedMs' | 'rowsPerSec' | 'etaMs'> = {
    phase: 'starting', day: null, daysDone: 0, daysTotal: 0, rowsRead: 0, rowsTotal: 0,
  };

  constructor(private readonly startedAt: number, private readonly now: () => number) {}

  update(p: Partial<ProgressTracker['state']>): BatchProgress {
    Object.assign(this.state, p);
    return this.get();
  }

  get(): BatchProgress {
    const elapsedMs = Math.max(0, this.now() - this.startedAt);
    const rowsPerSec = elapsedMs > 0 ? (this.state.rowsRead * 1000) / elapsedMs : 0;
    const left = this.state.rowsTotal - this.state.rowsRead;
    const etaMs = this.state.daysDone > 0 && rowsPerSec > 0 ? Math.round((left / rowsPerSec) * 1000) : null;
    return { ...this.state, elapsedMs, rowsPerSec, etaMs };
  }
}

function human(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(Math.round(n));
}

function duration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** One line: `batch: 3/10 days, 1.20M/4.00M rows read, 850.0k rows/s, ETA 3s (2024-11-23)`. */
export function progressLine(p: BatchProgress): string {
  const eta = p.etaMs === null ? 'ETA ?' : `ETA ${duration(p.etaMs)}`;
  const day = p.day && p.phase === 'building' ? ` (${p.day})` : p.phase !== 'building' ? ` (${p.phase})` : '';
  return `batch: ${p.daysDone}/${p.daysTotal} days, ${human(p.rowsRead)}/${human(p.rowsTotal)} rows read, ${human(p.rowsPerSec)} rows/s, ${eta}${day}`;
}
