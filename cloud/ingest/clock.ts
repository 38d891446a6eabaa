/**
 * Each gateway's clock as the cloud sees it: its offset from the cloud's clock, measured on every
 * ingest request and speed push it sends (`sentAt` against the time the request arrived), and the
 * readings it sends stamped further into the cloud's future than `ingest.maxFutureMs` (stored as
 * sent, since acknowledged data is never dropped, but counted and named per gateway).
 *
 * The estimate. A sample is `sentAt - receivedAt` = offset - delay, where the delay (the request's
 * one-way latency, plus any time the body waited: gzip, a retry that resends an older body) is
 * never negative. Every sample therefore underestimates the offset, by its own delay, and the
 * best one is the largest: the max over a recent window (NTP's minimum-delay filter, one-way).
 * An EWMA would average the delays in instead: biased low by the mean latency and dragged down by
 * every retry and queueing spike. What bias remains is the smallest delay in the window (a
 * millisecond on a LAN, tens over a WAN), nothing against a threshold in minutes. The window, 60 s
 * (some 60 speed pushes at the default 1 s cadence, plus the ingest requests), bounds how long a
 * corrected clock takes to show: a step forward shows at the next request, a step back within
 * the window. Positive means the gateway's clock is ahead of the cloud's.
 *
 * The estimate lives in each cloud process (the requests it received); it is written to
 * `gateway_clock` in cloud.db with the transactions those requests commit anyway, which is where
 * GET /api/v1/gateways reads it, whichever process answers.
 */
import { type Db, chunkRows, placeholders } from '../../shared/sqlite.js';
import type { ReadingColumns } from './columns.js';

/** The window of the max filter, in ms. */
export const CLOCK_WINDOW_MS = 60_000;
/** Gateways tracked at most; past it the least recently heard from is forgotten. */
const MAX_GATEWAYS = 100_000;

interface Sample { at: number; offset: number }

/**
 * Per gateway, a sliding-window max: a deque of samples with ascending `at` and strictly descending
 * `offset` (a sample that a newer, larger one outranks can never be the max again), so the max is
 * the head and each sample is pushed and dropped once. The newest sample is always kept: a gateway
 * quiet for longer than the window keeps its last estimate.
 */
export class GatewayClocks {
  private readonly windows = new Map<string, Sample[]>();
  private readonly windowMs: number;

  constructor(windowMs = CLOCK_WINDOW_MS) {
    this.windowMs = windowMs;
  }

  /** Add a request's sample (none when it carried no sentAt); returns the gateway's estimate, in ms. */
  sample(gateway: string, sentAt: number | null, receivedAt: number): number | null {
    if (sentAt === null) return this.offset(gateway, receivedAt);
    const offset = sentAt - receivedAt;
    let s = this.windows.get(gateway);
    if (s) this.windows.delete(gateway); // re-inserted below: the map's order is least recently heard first
    else {
      s = [];
      if (this.windows.size >= MAX_GATEWAYS) this.windows.delete(this.windows.keys().next().value!);
    }
    this.windows.set(gateway, s);
    while (s.length > 0 && s[s.length - 1].offset <= offset) s.pop();
    s.push({ at: receivedAt, offset });
    return this.head(s, receivedAt);
  }

  /** The gateway's estimate in ms (positive: its clock is ahead), or null before its first sample. */
  offset(gateway: string, now: number): number | null {
    const s = this.windows.get(gateway);
    return s ? this.head(s, now) : null;
  }

  /** Every gateway's estimate. */
  all(now: number): Map<string, number> {
    const out = new Map<string, number>();
    for (const [g, s] of this.windows) out.set(g, this.head(s, now));
    return out;
  }

  private head(s: Sample[], now: number): number {
    while (s.length > 1 && s[0].at < now - this.windowMs) s.shift();
    return s[0].offset;
  }
}

/** What a batch carried past the cloud's future limit: how many, and the one stamped furthest ahead. */
export interface FutureReadings { count: number; device: string; metric: string; ts: number }

/** The readings of `rows` stamped after `limit` (epoch ms), or null when none are. */
export function futureReadings(rows: ReadingColumns, limit: number): FutureReadings | null {
  let out: FutureReadings | null = null;
  const ts = rows.ts;
  for (let i = 0; i < rows.length; i++) {
    const t = ts[i];
    if (t <= limit) continue;
    if (!out) out = { count: 0, device: rows.devices[rows.device[i]], metric: rows.metrics[rows.metric[i]], ts: t };
    out.count++;
    if (t > out.ts) { out.device = rows.devices[rows.device[i]]; out.metric = rows.metrics[rows.metric[i]]; out.ts = t; }
  }
  return out;
}

/** Store a gateway's current offset estimate; run inside the caller's transaction. */
export async function recordClockOffset(db: Db, gateway: string, offsetMs: number, now: number): Promise<void> {
  await recordClockOffsets(db, [{ gateway, offsetMs }], now);
}

/**
 * The upsert of gateways' offset estimates for `values`, a VALUES list of rows of three parameters
 * (`clockOffsetParams`) in the store's placeholder style: SQLite's and PostgreSQL's alike.
 */
export function clockOffsetsUpsert(values: string): string {
  return `INSERT INTO gateway_clock (gateway, offset_ms, offset_at) VALUES ${values}
     ON CONFLICT (gateway) DO UPDATE SET offset_ms = excluded.offset_ms, offset_at = excluded.offset_at`;
}

/** The parameters of `clockOffsetsUpsert` for these gateways (each once). */
export function clockOffsetParams(offsets: ReadonlyArray<{ gateway: string; offsetMs: number }>, now: number): unknown[] {
  const params: unknown[] = [];
  for (const o of offsets) params.push(o.gateway, Math.round(o.offsetMs), now);
  return params;
}

/** Store several gateways' offset estimates (each gateway once), one statement per 300 of them; run inside the caller's transaction. */
export async function recordClockOffsets(db: Db, offsets: Array<{ gateway: string; offsetMs: number }>, now: number): Promise<void> {
  for (const chunk of chunkRows(offsets, 3, 900)) await db.run(clockOffsetsUpsert(placeholders(chunk.length, 3)), clockOffsetParams(chunk, now));
}

/** Add a batch's future readings to the gateway's count, keeping the furthest-ahead one as its example. */
export async function recordFutureReadings(db: Db, gateway: string, f: FutureReadings, now: number): Promise<void> {
  await db.run(
    `INSERT INTO gateway_clock (gateway, future_readings, future_device, future_metric, future_ts, future_at) VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT (gateway) DO UPDATE SET future_readings = future_readings + excluded.future_readings,
       future_device = excluded.future_device, future_metric = excluded.future_metric, future_ts = excluded.future_ts, future_at = excluded.future_at`,
    [gateway, f.count, f.device, f.metric, f.ts, now]);
}

export interface GatewayClockRow {
  offsetMs: number | null;
  offsetAt: number | null;
  futureReadings: number;
  lastFuture: { device: string; metric: string; ts: number; at: number } | null;
}

/** Every gateway's row of `gateway_clock`. */
export async function gatewayClockRows(db: Db): Promise<Map<string, GatewayClockRow>> {
  const rows = await db.all<{ gateway: string; offset_ms: number | null; offset_at: number | null; future_readings: number; future_device: string | null; future_metric: string | null; future_ts: number | null; future_at: number | null }>(
    'SELECT gateway, offset_ms, offset_at, future_readings, future_device, future_metric, future_ts, future_at FROM gateway_clock');
  return new Map(rows.map((r) => [r.gateway, {
    offsetMs: r.offset_ms,
    offsetAt: r.offset_at,
    futureReadings: r.future_readings,
    lastFuture: r.future_device !== null && r.future_metric !== null && r.future_ts !== null && r.future_at !== null
      ? { device: r.future_device, metric: r.future_metric, ts: r.future_ts, at: r.future_at } : null,
  }]));
}
