/**
 * Test support for the merged query: master data run through the real batch job, speed partials in
 * a real SQLite table of the test's own (a SpeedSource, as cloud/speed's store is one), and the
 * brute-force answer from the deduplicated readings with shared/summary.ts.
 *
 * The data: phase 1 readings (three gateways, six devices, a 15 s grid over three days, so devices
 * tie on ts; 10% delivered by a second gateway too) are sealed and covered by E; phase 2 readings
 * (new epochs, above E) reach only the speed table, on the same grid (ties with batch readings of
 * other devices) and over the same days plus one more (late readings into batch buckets). The
 * table also holds partials of epochs at or below E, which the query must not count.
 */
import { join } from 'node:path';
import sqlite3 from 'sqlite3';
import { startBatchRun, type BatchJobOptions, type BatchRunResult, type ViewSink } from '../../cloud/batch/index.js';
import type { SpeedPartial, SpeedPartialsRequest, SpeedSource } from '../../cloud/query/index.js';
import { Db } from '../../shared/sqlite.js';
import { add, derive, EMPTY, type Agg, type Summary } from '../../shared/summary.js';
import { bucketStart, DAY_MS, iso, MINUTE_MS } from '../../shared/time.js';
import { coveredReadings, GatewaySim, MasterFixture, rng, type FixtureReading } from './master-fixture.js';

export const DAY0 = Date.UTC(2024, 10, 22);
export const BATCH_OPTIONS = (dataDir: string): BatchJobOptions => ({ dataDir, memoryLimit: '512MB', threads: 2, retainVersionsMs: 3600_000 });
export const DEVICES = ['d1', 'd2', 'd3', 'd4', 'd5', 'd6'];
/** Speed-only device whose readings tie on ts with the first and last batch readings of many hours. */
export const TIE_DEVICE = 'd0';
export const GATEWAYS = ['gw-a', 'gw-b', 'gw-c'];
export const METRICS = ['temp', 'hum'];

/** A real SQLite table of partials and one of gateway contacts: a SpeedSource with the store's semantics. */
export class SpeedTable implements SpeedSource {
  /** Every watermark the query asked with, in order. */
  readonly calls: SpeedPartialsRequest[] = [];

  private constructor(readonly db: Db) {}

  static async open(file: string): Promise<SpeedTable> {
    const db = await Db.open(file, sqlite3.OPEN_READWRITE | sqlite3.OPEN_CREATE);
    await db.exec(`
      CREATE TABLE IF NOT EXISTS partials (gateway TEXT, device TEXT, metric TEXT, minute INTEGER, epoch INTEGER,
        count INTEGER, sum REAL, min REAL, max REAL, m2 REAL, first REAL, first_ts INTEGER, last REAL, last_ts INTEGER,
        PRIMARY KEY (gateway, device, metric, minute, epoch));
      CREATE TABLE IF NOT EXISTS contact (gateway TEXT PRIMARY KEY, at INTEGER);`);
    return new SpeedTable(db);
  }

  async insert(metric: string, partials: SpeedPartial[]): Promise<void> {
    await this.db.exec('BEGIN');
    for (const p of partials) {
      await this.db.run('INSERT OR REPLACE INTO partials VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [p.gateway, p.device, metric, p.minute, p.epoch, p.count, p.sum, p.min, p.max, p.m2, p.first, p.first_ts, p.last, p.last_ts]);
    }
    await this.db.exec('COMMIT');
  }

  async contact(gateway: string, at: number): Promise<void> {
    await this.db.run('INSERT OR REPLACE INTO contact VALUES (?, ?)', [gateway, at]);
  }

  async readSpeedPartials(req: SpeedPartialsRequest): Promise<SpeedPartial[]> {
    this.calls.push(structuredClone(req));
    const where = ['metric = ?', 'minute >= ?', 'minute < ?'];
    const params: unknown[] = [req.metric, req.fromMs, req.toMs];
    if (req.device !== undefined) { where.push('device = ?'); params.push(req.device); }
    if (req.gateway !== undefined) { where.push('gateway = ?'); params.push(req.gateway); }
    const rows = await this.db.all<SpeedPartial>(`SELECT gateway, device, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts
      FROM partials WHERE ${where.join(' AND ')}`, params);
    return rows.filter((r) => r.epoch > (Object.hasOwn(req.watermark, r.gateway) ? req.watermark[r.gateway] : 0));
  }

  async gatewayLastContact(): Promise<Record<string, number>> {
    const rows = await this.db.all<{ gateway: string; at: number }>('SELECT gateway, at FROM contact');
    return Object.fromEntries(rows.map((r) => [r.gateway, r.at]));
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

/** Speed partials of `readings` (one gateway's epoch, device, metric, minute each), summaries by shared/summary.ts. */
export function partialsOf(readings: FixtureReading[]): Map<string, SpeedPartial[]> {
  const acc = new Map<string, { p: Pick<SpeedPartial, 'gateway' | 'device' | 'minute' | 'epoch'>; s: Summary; metric: string }>();
  const sorted = [...readings].sort((a, b) => a.ts - b.ts);
  for (const r of sorted) {
    const minute = bucketStart(r.ts, MINUTE_MS);
    const k = `${r.gateway}|${r.device}|${r.metric}|${minute}|${r.epoch}`;
    const cur = acc.get(k) ?? { p: { gateway: r.gateway, device: r.device, minute, epoch: r.epoch }, s: { ...EMPTY }, metric: r.metric };
    cur.s = add(cur.s, r.value, r.ts, r.device);
    acc.set(k, cur);
  }
  const out = new Map<string, SpeedPartial[]>();
  for (const { p, s, metric } of acc.values()) {
    const list = out.get(metric) ?? [];
    list.push({ ...p, count: s.count, sum: s.sum, min: s.min, max: s.max, m2: s.m2, first: s.first, first_ts: s.firstTs, last: s.last, last_ts: s.lastTs });
    out.set(metric, list);
  }
  return out;
}

export interface QueryFixture {
  /** Phase 1, as delivered (duplicates included); covered by E. */
  phase1: FixtureReading[];
  /** Phase 1 deduplicated: what the views hold. */
  batch: FixtureReading[];
  /** Phase 2: only in the speed table (epochs above E), no identity of phase 1. */
  speed: FixtureReading[];
  watermark: Record<string, number>;
  run: BatchRunResult;
  gateways: GatewaySim[];
  fx: MasterFixture;
}

/** Phase 1 into master/, the batch job, phase 2 into `table` (with partials below E as decoys). */
export async function buildQueryFixture(dataDir: string, table: SpeedTable, o: { seed?: number; n1?: number; n2?: number; sinks?: ViewSink[] } = {}): Promise<QueryFixture> {
  const rand = rng(o.seed ?? 7);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)];
  const gws = GATEWAYS.map((id) => new GatewaySim(id));
  const fx = await MasterFixture.open(dataDir);
  const grid = (days: number) => DAY0 + Math.floor(rand() * ((days * DAY_MS) / 15_000)) * 15_000;
  const value = (metric: string) => (metric === 'hum' ? 1e6 + rand() * 10 : Math.round(rand() * 1000) / 10 - 20);
  const phase1: FixtureReading[] = [];
  const ids = new Set<string>();
  for (let i = 0; i < (o.n1 ?? 3000); i++) {
    const g = pick(gws);
    const metric = pick(METRICS);
    const r = g.reading(pick(DEVICES), metric, grid(3), value(metric));
    phase1.push(r);
    ids.add(`${r.device}|${r.metric}|${r.ts}`);
    if (rand() < 0.1) phase1.push(pick(gws.filter((x) => x !== g)).reading(r.device, r.metric, r.ts, r.value + 1));
    if (rand() < 0.03) g.closeEpoch();
  }
  for (const g of gws) g.closeEpoch();
  for (let i = 0; i < phase1.length; i += 500) await fx.seal(phase1.slice(i, i + 500));
  for (const g of gws) await g.report(fx);
  const run = await (await startBatchRun(BATCH_OPTIONS(dataDir), { trigger: 'cli' }, { sinks: o.sinks })).done;
  const watermark = run.watermark;

  const speed: FixtureReading[] = [];
  for (let i = 0; i < (o.n2 ?? 800); i++) {
    const g = pick(gws);
    const metric = pick(METRICS);
    const device = pick(DEVICES);
    const ts = grid(4);
    const id = `${device}|${metric}|${ts}`;
    if (ids.has(id)) continue;
    ids.add(id);
    speed.push(g.reading(device, metric, ts, value(metric)));
    if (rand() < 0.02) g.closeEpoch();
  }
  // Ties across sides: device d0 (sorting before every other) reads at the ts of the first and of
  // the last batch reading of a gateway's hour: first must come from the speed side, last from the
  // batch side, which the merge can tell only by the views' first_device/last_device.
  const batch = coveredReadings(phase1, watermark);
  const edges = new Map<string, { first: FixtureReading; last: FixtureReading }>();
  for (const r of batch) {
    if (r.metric !== 'temp') continue;
    const k = `${r.gateway}|${bucketStart(r.ts, 3_600_000)}`;
    const e = edges.get(k);
    const before = (a: FixtureReading, b: FixtureReading) => a.ts < b.ts || (a.ts === b.ts && a.device < b.device);
    if (!e) edges.set(k, { first: r, last: r });
    else {
      if (before(r, e.first)) e.first = r;
      if (before(e.last, r)) e.last = r;
    }
  }
  let i = 0;
  for (const { first, last } of edges.values()) {
    if (i++ % 3 !== 0) continue;
    for (const edge of [first, last]) {
      const id = `${TIE_DEVICE}|temp|${edge.ts}`;
      if (ids.has(id)) continue;
      ids.add(id);
      speed.push(gws.find((g) => g.id === edge.gateway)!.reading(TIE_DEVICE, 'temp', edge.ts, value('temp')));
    }
  }
  // Decoys: partials of covered epochs (the views hold their readings); counted, they would double.
  const decoys = coveredReadings(phase1, watermark).filter((_, i) => i % 5 === 0);
  for (const [metric, partials] of partialsOf([...speed, ...decoys])) await table.insert(metric, partials);
  return { phase1, batch, speed, watermark, run, gateways: gws, fx };
}

export interface ExpectedPoint {
  t: string;
  summary: Summary;
  count: number;
  batch: number;
  speed: number;
  provisional: boolean;
}

export type TestScope = { device: string } | { gateway: string } | { fleet: true };

/** The brute-force answer: buckets of `stepMs` in [fromMs, toMs) over both sides' readings. */
export function expectedPoints(f: { batch: FixtureReading[]; speed: FixtureReading[] }, metric: string, scope: TestScope,
  stepMs: number, fromMs: number, toMs: number, stale: (gateway: string) => boolean): ExpectedPoint[] {
  const inScope = (r: FixtureReading) => r.metric === metric
    && ('device' in scope ? r.device === scope.device : 'gateway' in scope ? r.gateway === scope.gateway : true);
  const buckets = new Map<number, ExpectedPoint>();
  const all = [...f.batch.map((r) => ({ r, side: 'batch' as const })), ...f.speed.map((r) => ({ r, side: 'speed' as const }))]
    .filter((x) => inScope(x.r) && x.r.ts >= fromMs && x.r.ts < toMs);
  for (const { r, side } of all) {
    const start = bucketStart(r.ts, stepMs);
    const b = buckets.get(start) ?? { t: iso(start), summary: { ...EMPTY }, count: 0, batch: 0, speed: 0, provisional: false };
    b.summary = add(b.summary, r.value, r.ts, r.device);
    b.count += 1;
    b[side] += 1;
    if (side === 'speed' && stale(r.gateway)) b.provisional = true;
    buckets.set(start, b);
  }
  return [...buckets.entries()].sort(([a], [b]) => a - b).map(([, p]) => p);
}

/** Differences between an answer's points and the expected ones for `agg` (empty when equal). */
export function pointDiffs(got: Array<{ t: string; value: number | null; count: number; batch: number; speed: number; provisional: boolean }>,
  want: ExpectedPoint[], agg: Agg, rel = 1e-9): string[] {
  const out: string[] = [];
  if (got.length !== want.length) out.push(`${got.length} points, expected ${want.length}`);
  for (let i = 0; i < Math.min(got.length, want.length); i++) {
    const g = got[i];
    const w = want[i];
    const v = derive(w.summary, agg);
    const exact = agg === 'count' || agg === 'min' || agg === 'max' || agg === 'first' || agg === 'last';
    const ok = g.value !== null && v !== null && (exact ? g.value === v : Math.abs(g.value - v) <= rel * Math.max(1, Math.abs(g.value), Math.abs(v)));
    if (g.t !== w.t || !ok || g.count !== w.count || g.batch !== w.batch || g.speed !== w.speed || g.provisional !== w.provisional) {
      out.push(`${w.t}: got ${JSON.stringify(g)}, want value ${v} count ${w.count} batch ${w.batch} speed ${w.speed} provisional ${w.provisional} (t ${g.t})`);
    }
  }
  return out;
}

export const speedDbFile = (dir: string) => join(dir, 'speed-test.db');
