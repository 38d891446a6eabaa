/**
 * The batch view readers: Parquet (embedded DuckDB) and InfluxDB 1.6.7 (real influxd, fed by the
 * real InfluxDB sink) run one conformance suite. Then what is particular to each: the Parquet
 * reader's cache and day pruning, InfluxDB's `holds` (the sink's version), and the sink's
 * first_device/last_device string fields.
 */
import { existsSync, renameSync, truncateSync } from 'node:fs';
import { DuckDBInstance } from '@duckdb/node-api';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { readManifest, startBatchRun, viewPartOfPath, type Manifest } from '../../cloud/batch/index.js';
import { cloudConfigSchema } from '../../cloud/config.js';
import {
  buildSeriesFile, FileManifestSource, InfluxViewReader, ParquetViewReader, SERIES_READ_INLINE_MS, SeriesFile, SeriesIds, SeriesLayoutError, viewFiles, type ViewReadRequest,
} from '../../cloud/query/index.js';
import { createInfluxSink, quoteStringField, toLine, type InfluxConfig } from '../../cloud/sinks/influx/index.js';
import { loadConfig } from '../../shared/config.js';
import { IoTimes } from '../../shared/io-times.js';
import { nullLogger } from '../../shared/logger.js';
import { DAY_MS, HOUR_MS } from '../../shared/time.js';
import { listFiles } from '../support/cloud.js';
import { requireBinary, tempDir } from '../support/gateway.js';
import { startInfluxd } from '../support/influx.js';
import { GatewaySim, MasterFixture } from '../support/master-fixture.js';
import { viewReaderConformance } from '../support/view-reader-conformance.js';

const influxConfig = (influx: Partial<InfluxConfig>): InfluxConfig => loadConfig(cloudConfigSchema, { env: {}, flags: { influx } }).influx;
const QUICK = { retryInitialMs: 5, retryMaxMs: 20, jitter: 0.5 };
const haveInfluxd = requireBinary('influxd', 'influxdb');

viewReaderConformance('Parquet (DuckDB)', {
  start: async () => ({
    harness: { sinks: [], reader: (dataDir) => ParquetViewReader.open({ viewsDir: join(dataDir, 'views'), connections: 2 }) },
    stop: async () => {},
  }),
});

viewReaderConformance('Parquet (DuckDB), no row cache', {
  start: async () => ({
    harness: { sinks: [], reader: (dataDir) => ParquetViewReader.open({ viewsDir: join(dataDir, 'views'), connections: 1, cacheRows: 0 }) },
    stop: async () => {},
  }),
});

viewReaderConformance('Parquet (DuckDB), compacted copies of the hourly and daily views', {
  start: async () => {
    const compact = tempDir('braid-compact-');
    return {
      harness: {
        sinks: [],
        reader: async (dataDir) => {
          const r = await ParquetViewReader.open({ viewsDir: join(dataDir, 'views'), connections: 2, compactDir: compact.path, compactAfterFiles: 0 });
          const m = await readManifest(join(dataDir, 'views'));
          if (m) await r.compactFor(m); // every read over a day or more now goes to the copies
          return r;
        },
      },
      stop: async () => compact.remove(),
    };
  },
});

viewReaderConformance('Parquet (DuckDB), series files of every device view file and copy', {
  start: async () => {
    const cache = tempDir('braid-series-');
    return {
      harness: {
        sinks: [],
        reader: async (dataDir) => {
          const r = await ParquetViewReader.open({
            viewsDir: join(dataDir, 'views'), connections: 2, compactDir: join(cache.path, 'views'), compactAfterFiles: 0,
            seriesDir: join(cache.path, 'series'), seriesHotDays: 1000,
          });
          const m = await readManifest(join(dataDir, 'views'));
          if (m) await r.compactFor(m); // compactions, then series files of every device view file and copy
          if (r.seriesSize.files === 0) throw new Error('no series file was built');
          return r;
        },
      },
      stop: async () => cache.remove(),
    };
  },
});

viewReaderConformance('InfluxDB 1.6.7 (InfluxQL /query)', {
  skip: !haveInfluxd,
  start: async () => {
    const server = await startInfluxd();
    const sink = createInfluxSink(influxConfig({ url: server.url, api: 'auto', batchSize: 500 }), nullLogger(), new Registry(), QUICK);
    return {
      harness: {
        sinks: [sink],
        reader: async () => new InfluxViewReader({
          url: server.url, database: 'braid', username: null, password: null, token: null, timeoutMs: 10_000,
          chunkSize: 100, // several chunks per answer
          sinkState: async () => null,
        }),
      },
      stop: server.stop,
    };
  },
});

describe('ParquetViewReader', () => {
  let dir: ReturnType<typeof tempDir>;
  let manifest: Manifest;
  const DAY0 = Date.UTC(2024, 10, 22);

  beforeAll(async () => {
    dir = tempDir('braid-parquet-reader-');
    const fx = await MasterFixture.open(dir.path);
    const g = new GatewaySim('gw-1');
    const rows = [0, 1, 2, 3].flatMap((d) => [g.reading('d1', 'temp', DAY0 + d * DAY_MS + 60_000, d), g.reading('d2', 'temp', DAY0 + d * DAY_MS + 60_000, 10 + d)]);
    await fx.seal(rows);
    g.closeEpoch();
    await g.report(fx);
    await fx.close();
    // Run on the 24th: the 23rd to the 25th are recent (device_1m in hour files), the 22nd is not (a day file).
    await (await startBatchRun({ dataDir: dir.path, memoryLimit: '256MB', threads: 1, retainVersionsMs: 3600_000 }, { trigger: 'cli' }, { now: () => DAY0 + 2 * DAY_MS + 1 })).done;
    manifest = (await readManifest(join(dir.path, 'views')))!;
  });
  afterAll(() => dir?.remove());

  it('picks the files whose day (an hour for a minute view\'s hour file) overlaps [from, to) from the manifest alone', () => {
    const days = (from: number, to: number) => viewFiles(manifest, 'device_1h', from, to).map((p) => p.slice(-18, -8));
    expect(days(DAY0, DAY0 + 4 * DAY_MS)).toEqual(['2024-11-22', '2024-11-23', '2024-11-24', '2024-11-25']);
    expect(days(DAY0 + DAY_MS - 1, DAY0 + DAY_MS + 1)).toEqual(['2024-11-22', '2024-11-23']);
    expect(days(DAY0 + DAY_MS, DAY0 + 2 * DAY_MS)).toEqual(['2024-11-23']);
    expect(days(DAY0 - 10 * DAY_MS, DAY0)).toEqual([]);
    expect(days(DAY0 + 4 * DAY_MS, DAY0 + 9 * DAY_MS)).toEqual([]);
    // device_1m: the 22nd a day file, the recent days a file an hour with rows (each day's rows lie in its hour 0).
    const hours = (from: number, to: number) => viewFiles(manifest, 'device_1m', from, to).map((p) => viewPartOfPath(p));
    expect(hours(DAY0, DAY0 + 4 * DAY_MS)).toEqual([{ day: '2024-11-22', hour: null }, ...[1, 2, 3].map((d) => ({ day: `2024-11-2${2 + d}`, hour: 0 }))]);
    expect(hours(DAY0 + DAY_MS - 1, DAY0 + DAY_MS + 1)).toEqual([{ day: '2024-11-22', hour: null }, { day: '2024-11-23', hour: 0 }]);
    expect(hours(DAY0 + DAY_MS + HOUR_MS, DAY0 + 2 * DAY_MS)).toEqual([]);
    expect(hours(DAY0 + DAY_MS + HOUR_MS - 1, DAY0 + DAY_MS + HOUR_MS)).toEqual([{ day: '2024-11-23', hour: 0 }]);
    expect(hours(DAY0 + HOUR_MS, DAY0 + DAY_MS)).toEqual([{ day: '2024-11-22', hour: null }]);
  });

  it('keeps the rows of (file, key, metric) it read, bounded by cacheRows, and answers the same from them', async () => {
    const reader = await ParquetViewReader.open({ viewsDir: join(dir.path, 'views'), connections: 1, cacheRows: 5 });
    try {
      const req = { view: 'device_1m' as const, key: { device: 'd1' }, metric: 'temp', fromMs: DAY0, toMs: DAY0 + 2 * DAY_MS, manifest };
      const first = await reader.read(req);
      expect(first.map((r) => r.sum)).toEqual([0, 1]);
      expect(reader.cacheSize).toEqual({ entries: 2, rows: 4 }); // a row and a slot per file
      expect(await reader.read(req)).toEqual(first);
      await reader.read({ ...req, fromMs: DAY0 + 2 * DAY_MS, toMs: DAY0 + 4 * DAY_MS });
      expect(reader.cacheSize.rows).toBeLessThanOrEqual(5); // the oldest entries went
      expect(await reader.read({ ...req, key: { device: 'd2' } })).toMatchObject([{ sum: 10 }, { sum: 11 }]);
    } finally {
      await reader.close();
      await reader.close(); // idempotent
    }
    await expect(reader.read({ view: 'fleet_1d', metric: 'temp', fromMs: DAY0, toMs: DAY0 + DAY_MS, manifest })).rejects.toThrow(/closed/);
  });

  it('long ranges read one compacted copy per view and version, built in the background; older versions\' copies go', async () => {
    const compact = tempDir('braid-compact-');
    const built: string[] = [];
    const open = () => ParquetViewReader.open({
      viewsDir: join(dir.path, 'views'), connections: 2, compactDir: compact.path, compactAfterFiles: 2,
      onCompacted: (e) => built.push(`${e.view}@${e.version}:${e.err ? e.err.message : e.rows}`),
    });
    const year = { key: { device: 'd1' }, metric: 'temp', fromMs: DAY0 - 300 * DAY_MS, toMs: DAY0 + 60 * DAY_MS, manifest };
    let reader = await open();
    try {
      const fromDays = await reader.read({ ...year, view: 'device_1d' }); // 4 day files: answered from them, compaction queued
      expect(fromDays.map((r) => [r.bucket, r.sum])).toEqual([0, 1, 2, 3].map((d) => [DAY0 + d * DAY_MS, d]));
      await reader.compactFor(manifest);
      // Every hourly and daily view with more than 2 day files; not the minute views (a range of one is bounded by maxBuckets).
      expect(built.sort()).toEqual(['device_1d', 'device_1h', 'fleet_1d', 'fleet_1h', 'gateway_1d', 'gateway_1h'].map((v) => `${v}@${manifest.version}:${v.startsWith('device') ? 8 : 4}`));
      const copy = join(compact.path, `v${manifest.version}`, 'device_1d.parquet');
      expect(listFiles(compact.path).map((f) => f.slice(compact.path.length + 1)).filter((f) => !f.startsWith('tmp')).sort())
        .toEqual(['device_1d', 'device_1h', 'fleet_1d', 'fleet_1h', 'gateway_1d', 'gateway_1h'].map((v) => `v${manifest.version}/${v}.parquet`));
      // The same rows from the copy, for any range and key; short ranges still read their day files.
      expect(await reader.read({ ...year, view: 'device_1d' })).toEqual(fromDays);
      expect((await reader.read({ ...year, view: 'device_1h', key: { device: 'd2' } })).map((r) => r.sum)).toEqual([10, 11, 12, 13]);
      expect((await reader.read({ ...year, view: 'fleet_1d', key: undefined, fromMs: DAY0 + DAY_MS })).map((r) => r.sum)).toEqual([12, 14, 16]);
      await reader.close();

      // A new process finds the copy on disk; a read then needs it alone: with the view's day files
      // out of reach (renamed away), the long range still answers and a short one cannot.
      built.length = 0;
      reader = await open();
      const dayFiles = viewFiles(manifest, 'device_1d', DAY0, DAY0 + 4 * DAY_MS).map((p) => join(dir.path, 'views', p));
      for (const f of dayFiles) renameSync(f, `${f}.away`);
      try {
        expect(await reader.read({ ...year, view: 'device_1d' })).toEqual(fromDays);
        expect(built).toEqual([]);
        await expect(reader.read({ ...year, view: 'device_1d', fromMs: DAY0, toMs: DAY0 + DAY_MS })).rejects.toThrow();
      } finally {
        for (const f of dayFiles) renameSync(`${f}.away`, f);
      }
      expect(existsSync(copy)).toBe(true);

      // Two newer versions later, this version's copies are gone (the previous version's stay for
      // queries still reading it).
      const later = (v: number) => ({ ...manifest, version: manifest.version + v });
      await reader.compactFor(later(1));
      await reader.compactFor(later(2));
      expect(existsSync(copy)).toBe(false);
      expect(existsSync(join(compact.path, `v${manifest.version + 1}`, 'device_1d.parquet'))).toBe(true);
      expect(existsSync(join(compact.path, `v${manifest.version + 2}`, 'device_1d.parquet'))).toBe(true);
    } finally {
      await reader.close();
      compact.remove();
    }
  });

  it('device reads come from series files of the newest days and of the compacted copies: the rows DuckDB reads; a budget, and older versions\' files go', async () => {
    const cache = tempDir('braid-series-');
    const events: string[] = [];
    const duck = await ParquetViewReader.open({ viewsDir: join(dir.path, 'views'), connections: 1, cacheRows: 0 });
    const open = (o: { seriesMaxBytes?: number } = {}) => ParquetViewReader.open({
      viewsDir: join(dir.path, 'views'), connections: 2, cacheRows: 0, compactDir: join(cache.path, 'views'), compactAfterFiles: 2,
      seriesDir: join(cache.path, 'series'), seriesHotDays: 2, ...o,
      onSeries: (e) => events.push(`${e.view}:${e.result}:${e.rows}`),
    });
    let reader = await open();
    const reqs: ViewReadRequest[] = [];
    for (const device of ['d1', 'd2', 'nobody']) {
      for (const metric of ['temp', 'hum']) {
        reqs.push({ view: 'device_1m', key: { device }, metric, fromMs: DAY0 + 3 * DAY_MS, toMs: DAY0 + 4 * DAY_MS, manifest }); // a hot day
        reqs.push({ view: 'device_1m', key: { device }, metric, fromMs: DAY0 + 2 * DAY_MS + 60_000, toMs: DAY0 + 4 * DAY_MS, manifest }); // cut: the first minute out
        reqs.push({ view: 'device_1m', key: { device }, metric, fromMs: DAY0, toMs: DAY0 + 4 * DAY_MS, manifest }); // hot and cold days
        reqs.push({ view: 'device_1d', key: { device }, metric, fromMs: DAY0 - 300 * DAY_MS, toMs: DAY0 + 60 * DAY_MS, manifest }); // the copy
        reqs.push({ view: 'device_1h', key: { device }, metric, fromMs: DAY0 - 300 * DAY_MS, toMs: DAY0 + DAY_MS + 1, manifest });
      }
    }
    try {
      await reader.compactFor(manifest);
      // The 2 newest days of each device view (6 day files, a row of d1 and d2 each), then the copies of device_1d and device_1h (8 rows each).
      expect(events.sort()).toEqual(['device_1d:built:2', 'device_1d:built:2', 'device_1d:built:8', 'device_1h:built:2', 'device_1h:built:2', 'device_1h:built:8', 'device_1m:built:2', 'device_1m:built:2']);
      expect(reader.seriesSize).toMatchObject({ files: 8, pending: 0 });
      const want = await Promise.all(reqs.map((r) => duck.read(r)));
      expect(want.flat().length).toBeGreaterThan(20);
      expect(await Promise.all(reqs.map((r) => reader.read(r)))).toEqual(want);

      // The series file answers alone: with the hot day's device_1m file out of reach, its day still
      // reads (DuckDB alone cannot); the cold days still need theirs.
      const hotFile = join(dir.path, 'views', viewFiles(manifest, 'device_1m', DAY0 + 3 * DAY_MS, DAY0 + 4 * DAY_MS)[0]);
      renameSync(hotFile, `${hotFile}.away`);
      try {
        expect(await reader.read(reqs[0])).toEqual(want[0]);
        expect(want[0]).toMatchObject([{ bucket: DAY0 + 3 * DAY_MS + 60_000, sum: 3, count: 1, firstDevice: 'd1', lastDevice: 'd1' }]);
        await expect(duck.read(reqs[0])).rejects.toThrow();
      } finally {
        renameSync(`${hotFile}.away`, hotFile);
      }
      await reader.close();

      // A new process opens the files on disk; one cut short is built again.
      const onDisk = join(cache.path, 'series', `v${manifest.version}`, 'device_1d.series');
      truncateSync(onDisk, 100);
      events.length = 0;
      reader = await open();
      await reader.compactFor(manifest);
      expect(reader.seriesSize).toMatchObject({ files: 8, pending: 0 });
      expect(await Promise.all(reqs.map((r) => reader.read(r)))).toEqual(want);
      await reader.close();

      // Over the byte budget: none is built, nor opened from an earlier process; DuckDB answers.
      events.length = 0;
      reader = await open({ seriesMaxBytes: 100 });
      await reader.compactFor(manifest);
      expect(new Set(events.map((e) => e.split(':')[1]))).toEqual(new Set(['skipped']));
      expect(reader.seriesSize.files).toBe(0);
      expect(listFiles(join(cache.path, 'series')).filter((f) => f.endsWith('.series'))).toEqual([]);
      expect(await Promise.all(reqs.map((r) => reader.read(r)))).toEqual(want);
      await reader.close();

      // Newer versions naming the same day files share their series files; the copies are per version,
      // and two versions later this version's are closed and removed.
      reader = await open();
      const later = (v: number) => ({ ...manifest, version: manifest.version + v });
      await reader.compactFor(manifest);
      await reader.compactFor(later(1));
      expect(reader.seriesSize).toMatchObject({ files: 10, pending: 0 });
      await reader.compactFor(later(2));
      expect(existsSync(join(cache.path, 'series', `v${manifest.version}`))).toBe(false);
      expect(existsSync(join(cache.path, 'series', `v${manifest.version + 2}`, 'device_1d.series'))).toBe(true);
      expect(reader.seriesSize).toMatchObject({ files: 10, pending: 0 });
      // A version that names other day files: the ones no kept version names go.
      const moved = { ...manifest, version: manifest.version + 3, views: { ...manifest.views, device_1m: manifest.views.device_1m!.slice(0, 2) } };
      await reader.compactFor(moved);
      await reader.compactFor({ ...moved, version: manifest.version + 4 });
      // device_1m's files of the 2 newest days go (no kept version names them); the hourly and daily
      // ones of those days stay, with each version's 2 copies: 4 + 4.
      expect(reader.seriesSize).toMatchObject({ files: 8, pending: 0 });
      expect(await Promise.all(reqs.map((r) => reader.read({ ...r, manifest: { ...moved, version: manifest.version + 4 } }))))
        .toEqual(await Promise.all(reqs.map((r) => duck.read({ ...r, manifest: moved }))));
      expect(await Promise.all(reqs.map((r) => reader.read({ ...r, manifest: later(2) })))).toEqual(want);
    } finally {
      await reader.close();
      await duck.close();
      cache.remove();
    }
  });

  it('a view file whose rows are not grouped by device and metric in bucket order, or hold a NULL, gets no series file', async () => {
    const work = tempDir('braid-series-layout-');
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    const row = (device: string, bucket: number, sum: string) => `('${device}', 'temp', epoch_ms(${bucket}::BIGINT), 1::BIGINT, ${sum}::DOUBLE, 1.0, 1.0, 0.0, 1.0, epoch_ms(${bucket}::BIGINT), 1.0, epoch_ms(${bucket}::BIGINT))`;
    const write = async (name: string, rows: string[]) => {
      const file = join(work.path, `${name}.parquet`);
      await conn.run(`COPY (SELECT * FROM (VALUES ${rows.join(', ')}) AS t(device, metric, bucket, "count", "sum", "min", "max", m2, "first", first_ts, "last", last_ts)) TO '${file}' (FORMAT parquet)`);
      return file;
    };
    try {
      const good = await write('good', [row('a', 0, '1'), row('a', 60_000, '2'), row('b', 0, '3')]);
      expect(await buildSeriesFile(conn, good, join(work.path, 'good.series'))).toMatchObject({ rows: 3, series: 2 });
      // Two files numbering their series in one SeriesIds: each reads its own rows, and none of a
      // series numbered by the other file only (an id past its directory, or one it does not hold).
      const ids = new SeriesIds();
      const file = await SeriesFile.open(join(work.path, 'good.series'), ids);
      const other = await write('other', [row('b', 0, '5'), row('b', 60_000, '6'), row('c', 0, '7')]);
      await buildSeriesFile(conn, other, join(work.path, 'other.series'));
      const second = await SeriesFile.open(join(work.path, 'other.series'), ids);
      expect(ids.size).toBe(3);
      expect((await file.read('a', 'temp', 0, 120_000)).map((r) => [r.bucket, r.sum])).toEqual([[0, 1], [60_000, 2]]);
      expect((await file.read('a', 'temp', 60_000, 120_000)).map((r) => r.sum)).toEqual([2]);
      expect((await file.read('b', 'temp', 0, 120_000)).map((r) => r.sum)).toEqual([3]);
      expect(await file.read('c', 'temp', 0, 120_000)).toEqual([]);
      expect(await file.read('d', 'temp', 0, 120_000)).toEqual([]);
      expect((await second.read('b', 'temp', 0, 120_000)).map((r) => [r.bucket, r.sum])).toEqual([[0, 5], [60_000, 6]]);
      expect((await second.read('c', 'temp', 0, 120_000)).map((r) => r.sum)).toEqual([7]);
      expect(await second.read('a', 'temp', 0, 120_000)).toEqual([]);
      // Reads on the main thread while they are fast, on the thread pool once they are slow: the
      // same rows either way, and each read's time recorded where the next one goes.
      const times = new IoTimes(SERIES_READ_INLINE_MS);
      const third = await SeriesFile.open(join(work.path, 'other.series'), ids, times);
      expect(times.inline()).toBe(true);
      const inline = await third.read('b', 'temp', 0, 120_000);
      for (let i = 0; i < 64; i++) times.record(10 * SERIES_READ_INLINE_MS);
      expect(times.inline()).toBe(false);
      expect(await third.read('b', 'temp', 0, 120_000)).toEqual(inline);
      expect(inline.map((r) => r.sum)).toEqual([5, 6]);
      await third.close();
      await file.close();
      await second.close();
      for (const [name, rows, why] of [
        ['split', [row('a', 0, '1'), row('b', 0, '2'), row('a', 60_000, '3')], /not contiguous/],
        ['unordered', [row('a', 60_000, '1'), row('a', 0, '2')], /out of order/],
        ['repeated', [row('a', 0, '1'), row('a', 0, '2')], /out of order/],
        ['null', [row('a', 0, 'NULL')], /NULL/],
      ] as const) {
        const f = await write(name, [...rows]);
        await expect(buildSeriesFile(conn, f, join(work.path, `${name}.series`))).rejects.toThrow(SeriesLayoutError);
        await expect(buildSeriesFile(conn, f, join(work.path, `${name}.series`))).rejects.toThrow(why);
        expect(existsSync(join(work.path, `${name}.series`))).toBe(false);
        expect(existsSync(join(work.path, `${name}.series.tmp`))).toBe(false);
      }
    } finally {
      conn.closeSync();
      db.closeSync();
      work.remove();
    }
  });

  it('the manifest source parses the file once per change: a stat per query', async () => {
    const src = new FileManifestSource(join(dir.path, 'views'));
    const a = await src.current();
    expect(await src.current()).toBe(a);
    expect(a?.version).toBe(manifest.version);
    expect(await new FileManifestSource(join(dir.path, 'nowhere')).current()).toBeNull();
  });
});

describe('InfluxDB view store particulars', () => {
  it('holds a manifest only once the sink has taken its version with no day pending', async () => {
    let state: { version: number; pending: string[] } | null = null;
    const r = new InfluxViewReader({ url: 'http://127.0.0.1:9', database: 'braid', username: null, password: null, token: null, timeoutMs: 1000, chunkSize: 10, sinkState: async () => state });
    const m = (version: number) => ({ version, createdAt: '', watermark: {}, views: {} }) as unknown as Manifest;
    expect(await r.holds(m(3))).toBe(false);
    state = { version: 3, pending: ['2024-11-22'] };
    expect(await r.holds(m(3))).toBe(false);
    state = { version: 2, pending: [] };
    expect(await r.holds(m(3))).toBe(false);
    state = { version: 3, pending: [] };
    expect(await r.holds(m(3))).toBe(true);
    expect(await r.holds(m(4))).toBe(false);
    await r.close();
  });

  it('a server that is down fails the read (the query then answers from Parquet)', async () => {
    const r = new InfluxViewReader({ url: 'http://127.0.0.1:9', database: 'braid', username: null, password: null, token: null, timeoutMs: 1000, chunkSize: 10, sinkState: async () => null });
    await expect(r.read({ view: 'fleet_1h', metric: 'temp', fromMs: 0, toMs: 1, manifest: {} as Manifest })).rejects.toThrow();
    await r.close();
  });

  it('the sink writes first_device/last_device as string fields, escaped; none for VictoriaMetrics', () => {
    const row = {
      tags: { metric: 'temp' }, bucket: 0, count: 2, sum: 3, min: 1, max: 2, m2: 0.5, first: 1, firstTs: 5, last: 2, lastTs: 9,
      firstDevice: 'd"1\\', lastDevice: 'dé 2,=',
    };
    expect(toLine('fleet_1h', row)).toEqual({ line: 'fleet_1h,metric=temp count=2i,sum=3,min=1,max=2,m2=0.5,mean=1.5,stddev=0.5,first=1,last=2,first_ts=5i,last_ts=9i,first_device="d\\"1\\\\",last_device="dé 2,=" 0' });
    const vm = toLine('fleet_1h', row, { stringFields: false });
    expect('line' in vm ? vm.line : '').toMatch(/last_ts=9i 0$/);
    expect(quoteStringField('a\\"b')).toBe('"a\\\\\\"b"');
  });
});
