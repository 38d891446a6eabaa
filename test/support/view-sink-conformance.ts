/**
 * The conformance suite every view sink runs (aedes' test/abstract-persistence.js style): fixture
 * views written as Parquet files (the Files contract of DESIGN.md), sent to a real server, read back.
 *
 * A sink's point for a view row: measurement = view, tags = device|gateway and metric, time = bucket
 * (ms), fields count, sum, min, max, m2, mean (= sum/count), stddev (population, sqrt(m2/count)),
 * first, last, first_ts, last_ts (ms).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { VIEW_NAMES, type ViewChanges, type ViewName, type ViewSink } from '../../cloud/batch/sink.js';
import { tempDir } from './gateway.js';
import type { StoredPoint } from './influx.js';

const DAY = 86_400_000;
const WIDTH: Record<string, number> = { '1m': 60_000, '1h': 3_600_000, '1d': DAY };
const INTEGER_FIELDS = new Set(['count', 'first_ts', 'last_ts']);

/** Tag values that need escaping in most protocols (space, comma, equals, quote, non-ASCII, a backslash). */
export const FIXTURE_DEVICES = ['d-1', 'd 2', 'd,3=x"q', 'dé\\4'];
export const FIXTURE_GATEWAYS = ['gw-1', 'gw 2,b'];
export const FIXTURE_METRICS = ['temp', 'rel hum'];

export interface FixtureRow {
  key: string | null; metric: string; bucket: number; count: number; sum: number; min: number; max: number;
  m2: number; first: number; first_ts: number; last: number; last_ts: number;
}

/** Deterministic pseudo-random numbers (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The rows of one view for one UTC day starting at `day`; `bump` shifts every sum (a corrected rerun). */
export function fixtureRows(view: string, day: number, bump = 0): FixtureRow[] {
  const [scope, step] = view.split('_') as [string, string];
  const keys = scope === 'device' ? FIXTURE_DEVICES : scope === 'gateway' ? FIXTURE_GATEWAYS : [null];
  const width = WIDTH[step];
  const buckets = step === '1m' ? [0, 1, 600] : step === '1h' ? [0, 13] : [0];
  const rnd = prng(day / 1000 + view.length * 7919);
  const rows: FixtureRow[] = [];
  let i = 0;
  for (const key of keys) for (const metric of FIXTURE_METRICS) for (const b of buckets) {
    const bucket = day + b * width;
    const count = i % 5 === 0 ? 1 : 1 + Math.floor(rnd() * 1000);
    const min = -50 + rnd() * 100;
    const max = count === 1 ? min : min + rnd() * 10;
    // awkward doubles: 0.1 + 0.2, tiny m2s and huge sums (exponent form), the latter two in series of
    // their own: VictoriaMetrics shares one decimal exponent per block, blurring small neighbours
    const huge = scope === 'fleet' && metric === 'rel hum';
    const sum = (huge ? 1.5e300 * (1 + rnd()) : i % 7 === 3 ? 0.1 + 0.2 : ((min + max) / 2) * count) + bump;
    const tiny = scope === 'gateway' && metric === 'temp';
    const m2 = count === 1 ? 0 : tiny ? 1.2345678901234567e-7 * (1 + rnd()) : rnd() * 100;
    const firstTs = bucket + Math.floor(rnd() * (width / 2));
    rows.push({ key, metric, bucket, count, sum, min, max, m2, first: min + (max - min) * rnd(), first_ts: firstTs, last: max, last_ts: firstTs + Math.floor(rnd() * (width / 2)) });
    i += 1;
  }
  return rows;
}

const sql = (s: string) => `'${s.replace(/'/g, "''")}'`;
/** From a string: a bare literal is a DECIMAL to DuckDB, whose cast to DOUBLE can miss by an ulp. */
const dbl = (n: number) => `CAST('${String(n)}' AS DOUBLE)`;
/** TIMESTAMP_MS: Parquet TIMESTAMP(MILLIS), as the batch job writes. */
const ts = (ms: number) => `CAST(epoch_ms(CAST(${ms} AS BIGINT)) AS TIMESTAMP_MS)`;

/**
 * Write the fixture views as Parquet, one file per view and day (`views/<view>/day=YYYY-MM-DD.parquet`),
 * for the two whole UTC days before today: recent, since a server may refuse old or future samples.
 */
export async function writeFixtureViews(dir: string, o: { now?: number; bump?: number } = {}): Promise<{ changes: ViewChanges; rows: Record<ViewName, FixtureRow[]> }> {
  const today = Math.floor((o.now ?? Date.now()) / DAY) * DAY;
  const days = [today - 2 * DAY, today - DAY];
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  const views = {} as Record<ViewName, string[]>;
  const all = {} as Record<ViewName, FixtureRow[]>;
  try {
    for (const view of VIEW_NAMES) {
      views[view] = [];
      all[view] = [];
      const keyCol = view.startsWith('device') ? 'device' : view.startsWith('gateway') ? 'gateway' : null;
      for (const day of days) {
        const rows = fixtureRows(view, day, o.bump ?? 0);
        const file = join(dir, view, `day=${new Date(day).toISOString().slice(0, 10)}.parquet`);
        mkdirSync(join(dir, view), { recursive: true });
        const values = rows.map((r) => `(${keyCol ? `${sql(r.key!)}, ` : ''}${sql(r.metric)}, ${ts(r.bucket)}, CAST(${r.count} AS BIGINT), ${dbl(r.sum)}, ${dbl(r.min)}, ${dbl(r.max)}, ${dbl(r.m2)}, ${dbl(r.first)}, ${ts(r.first_ts)}, ${dbl(r.last)}, ${ts(r.last_ts)})`);
        const cols = `${keyCol ? `${keyCol}, ` : ''}metric, bucket, count, sum, min, max, m2, first, first_ts, last, last_ts`;
        await conn.run(`COPY (SELECT * FROM (VALUES ${values.join(', ')}) AS t(${cols})) TO ${sql(file)} (FORMAT parquet)`);
        views[view].push(file);
        all[view].push(...rows);
      }
    }
  } finally {
    conn.closeSync();
    instance.closeSync();
  }
  return { changes: { version: 1, watermark: { 'gw-1': 1 }, days: days.map((d) => new Date(d).toISOString().slice(0, 10)), views }, rows: all };
}

/** The point a sink must store for a fixture row. */
export function expectedPoint(view: string, r: FixtureRow): StoredPoint {
  const tags: Record<string, string> = { metric: r.metric };
  if (r.key !== null) tags[view.startsWith('device') ? 'device' : 'gateway'] = r.key;
  return {
    tags, ts: r.bucket,
    fields: { count: r.count, sum: r.sum, min: r.min, max: r.max, m2: r.m2, mean: r.sum / r.count, stddev: Math.sqrt(r.m2 / r.count), first: r.first, last: r.last, first_ts: r.first_ts, last_ts: r.last_ts },
  };
}

const order = (p: StoredPoint) => JSON.stringify([Object.entries(p.tags).sort(), p.ts]);

/** Every expected point is stored once, with its tags, time and fields (floats within `tolerance`, relative). */
export function expectSamePoints(actual: StoredPoint[], expected: StoredPoint[], tolerance: number): void {
  const a = [...actual].sort((x, y) => order(x).localeCompare(order(y)));
  const e = [...expected].sort((x, y) => order(x).localeCompare(order(y)));
  expect(a.map(order)).toEqual(e.map(order));
  e.forEach((want, i) => {
    const got = a[i].fields;
    expect(Object.keys(got).sort()).toEqual(Object.keys(want.fields).sort());
    for (const [name, w] of Object.entries(want.fields)) {
      const g = got[name];
      const ok = INTEGER_FIELDS.has(name) || tolerance === 0 ? g === w : Math.abs(g - w) <= tolerance * Math.max(Math.abs(g), Math.abs(w)) + 1e-300;
      if (!ok) throw new Error(`${order(want)} field ${name}: stored ${g}, expected ${w}`);
    }
  });
}

export interface SinkHarness {
  /** A sink writing to the live server. */
  sink: ViewSink & { close?: () => Promise<void> };
  /** What the server holds for one view, as points. */
  readBack: (view: ViewName) => Promise<StoredPoint[]>;
}

export interface ConformanceOptions {
  /** Skip the suite (the server is not installed; requireBinary() said so visibly). */
  skip?: boolean;
  /** Start the server (once for the suite). */
  start: () => Promise<{ harness: () => SinkHarness; stop: () => Promise<void> }>;
  /** A sink pointed at a server that is not there, with short retry delays. */
  downSink: () => ViewSink & { close?: () => Promise<void> };
  /** Relative tolerance for float fields; 0 = bit for bit. */
  tolerance?: number;
  /** Whether a point sent again with other values replaces the stored one (a corrected rerun). */
  replacesValues?: boolean;
}

export function viewSinkConformance(name: string, o: ConformanceOptions): void {
  (o.skip ? describe.skip : describe)(`ViewSink conformance: ${name}`, () => {
    let server: Awaited<ReturnType<ConformanceOptions['start']>>;
    let h: SinkHarness;
    let dir: ReturnType<typeof tempDir>;
    beforeAll(async () => {
      server = await o.start();
      dir = tempDir('braid-views-');
    }, 60_000);
    beforeEach(() => { h = server.harness(); });
    afterEach(async () => { await h.sink.close?.(); });
    afterAll(async () => {
      await server?.stop();
      dir?.remove();
    });

    const checkAll = async (rows: Record<ViewName, FixtureRow[]>) => {
      for (const view of VIEW_NAMES) expectSamePoints(await h.readBack(view), rows[view].map((r) => expectedPoint(view, r)), o.tolerance ?? 0);
    };

    it('writes every view: each row comes back with its tags, time and fields', async () => {
      const { changes, rows } = await writeFixtureViews(join(dir.path, 'a'));
      const total = VIEW_NAMES.reduce((n, v) => n + rows[v].length, 0);
      await expect(h.sink.write(changes)).resolves.toEqual({ points: total });
      await checkAll(rows);
    });

    it('writing the same views again stores the same points with the same values (idempotent)', async () => {
      const { changes, rows } = await writeFixtureViews(join(dir.path, 'a'));
      const first = await h.sink.write(changes);
      await expect(h.sink.write(changes)).resolves.toEqual(first);
      await checkAll(rows);
    });

    // Only where the server can replace a point's values (not VictoriaMetrics: see replacesValues).
    if (o.replacesValues !== false) it('a corrected rerun replaces the stored values, adding no point', async () => {
      await h.sink.write((await writeFixtureViews(join(dir.path, 'a'))).changes);
      const { changes, rows } = await writeFixtureViews(join(dir.path, 'b'), { bump: 0.5 });
      await h.sink.write(changes);
      await checkAll(rows);
    });

    it('a server that is down fails the write visibly: BRAID_ERR_SINK_FAILED, retriable', async () => {
      const { changes } = await writeFixtureViews(join(dir.path, 'a'));
      const down = o.downSink();
      try {
        const err = await down.write(changes).then(() => undefined, (e: unknown) => e);
        expect(err).toMatchObject({ code: 'BRAID_ERR_SINK_FAILED' });
        expect((err as { canRetry: () => boolean }).canRetry()).toBe(true);
      } finally {
        await down.close?.();
      }
    });
  });
}
