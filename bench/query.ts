/**
 * `npm run bench:query`: the merged query's latency over a year of views built by the batch path,
 * beside InfluxDB 1.6.7 answering the same questions from the same readings, in the same run.
 *
 * The data (docs/benchmarks.md, "Query"): DEVICES x 10 metrics x 365 days, written as master
 * Parquet the way ingest's seal leaves it (bench/lib/cloud-master.ts), then `braid batch run
 * --full` builds the views. Issue 4 asks for 1-minute views over the whole year (5 billion rows);
 * this machine holds a scaled-down shape with the same files per query: the last day dense (one
 * reading per series per minute, so a day at 1m reads a full day file of device_1m), the 364 days
 * before it sparse (one reading per series every 6 hours, so every day file of every view exists and
 * a year at 1d reads 365 days of device_1d).
 *
 * The peer: influxd 1.6.7 (Debian) holding the same readings, read back from the master files, as
 * raw points (measurement `telemetry`, tags device and gateway, one field per metric): what a fleet
 * would query without batch views. Both answer each question over HTTP one at a time, interleaved;
 * the answers are compared (bucket times and counts equal, averages within 1e-9 relative).
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { newStream, writeMaster, type FleetShape, type WriteReport } from './lib/cloud-master.js';
import { machineInfo, type MachineInfo } from './lib/machine.js';
import { HOST } from './lib/net.js';
import { ROOT, childEnv } from './lib/peers.js';
import { cpuSecondsOf, memoryOf, startProc, type Proc } from './lib/procs.js';
import { OUT, publishReport } from './lib/report.js';
import { isStopping, logger, runBench, workDir } from './lib/run.js';
import { envNumber, envScale, envTimeoutMs, envWriteDocs, exitOnHelp } from './lib/settings.js';
import { int, mb, ms, quantile } from './lib/stats.js';
import { freePort, startInfluxd, type TestServer } from '../test/support/influx.js';
import { mulberry32 } from '../test/support/random.js';
import { DAY_MS, HOUR_MS } from '../shared/time.js';

// ---------------------------------------------------------------------------------------------
// Settings

const env = process.env;
const num = (name: string, dflt: number) => envNumber(name, dflt, { zeroOk: true });
exitOnHelp(`npm run bench:query: the merged query beside InfluxDB 1.6.7 (docs/benchmarks.md)
  BENCH_SCALE=1            scale the device count (0.05 for a quick run of the plumbing)
  BENCH_QUERY_DEVICES=1000 devices at scale 1
  BENCH_QUERY_N=200        measured queries per question and system (fleet questions: a quarter)
  BENCH_KEEP=1             keep the work dir
  BENCH_QUERY_DATA=DIR     keep the master, views and InfluxDB's data in DIR and reuse them in later
                           runs (the same devices and dense day; the cloud's caches are removed first)
  BENCH_ALT_ROOT=DIR       also run the braid cloud of another checkout (with its node_modules) on a
                           copy of the same views, asked every question beside this one: before/after
  BENCH_WRITE_DOCS=1|0     write docs/benchmarks.md (default: only a full-scale run does)
`);
const SCALE = envScale();
const DATA = env.BENCH_QUERY_DATA || null;
const ALT_ROOT = env.BENCH_ALT_ROOT || null;
/** What a reused data dir was built for (BENCH_QUERY_DATA). */
interface DataShape { devices: number; denseDay: number }
const REUSED: DataShape | null = DATA && existsSync(join(DATA, 'shape.json')) ? JSON.parse(readFileSync(join(DATA, 'shape.json'), 'utf8')) as DataShape : null;
const DEVICES = REUSED?.devices ?? Math.max(8, Math.round(num('BENCH_QUERY_DEVICES', 1000) * SCALE));
const METRICS = ['temp', 'hum', 'pressure', 'co2', 'voltage', 'current', 'rssi', 'battery', 'vibration', 'lux'];
const GATEWAYS = 4;
const SPARSE_MS = 6 * HOUR_MS;
const YEAR_DAYS = 365;
const N = Math.max(10, Math.round(num('BENCH_QUERY_N', 200)));
const WARMUP = 5;
const FULL = DEVICES === 1000 && !env.BENCH_QUERY_N;
const WRITE_DOCS = envWriteDocs(FULL);
const TARGET = { deviceP99Ms: 50, fleetP99Ms: 250, vsInflux: 5 };

const work = workDir('braid-bench-query-');
const log = logger('bench:query');

// The year: the dense day is yesterday (UTC), the sparse days the 364 before it.
const DENSE_DAY = REUSED?.denseDay ?? Math.floor(Date.now() / DAY_MS) * DAY_MS - DAY_MS;
const YEAR_START = DENSE_DAY - (YEAR_DAYS - 1) * DAY_MS;
const deviceName = (d: number) => `dev-${String(d).padStart(5, '0')}`;
const gatewayName = (g: number) => `gw-${String(g).padStart(2, '0')}`;

// ---------------------------------------------------------------------------------------------
// Questions

type Scope = { device: string } | { gateway: string } | { fleet: true };
interface Question { name: string; kind: 'device' | 'fleet'; step: string; stepMs: number; from: number; to: number; scope: (r: () => number) => Scope; target: number; repeat: number }

const QUESTIONS: Question[] = [
  { name: 'device, a day at 1m', kind: 'device', step: '1m', stepMs: 60_000, from: DENSE_DAY, to: DENSE_DAY + DAY_MS, scope: (r) => ({ device: deviceName(Math.floor(r() * DEVICES)) }), target: TARGET.deviceP99Ms, repeat: N },
  { name: 'device, a year at 1d', kind: 'device', step: '1d', stepMs: DAY_MS, from: YEAR_START, to: DENSE_DAY + DAY_MS, scope: (r) => ({ device: deviceName(Math.floor(r() * DEVICES)) }), target: TARGET.deviceP99Ms, repeat: N },
  { name: 'gateway, a day at 1h', kind: 'fleet', step: '1h', stepMs: HOUR_MS, from: DENSE_DAY, to: DENSE_DAY + DAY_MS, scope: (r) => ({ gateway: gatewayName(Math.floor(r() * GATEWAYS)) }), target: TARGET.fleetP99Ms, repeat: Math.max(10, Math.round(N / 4)) },
  { name: 'fleet, a day at 1h', kind: 'fleet', step: '1h', stepMs: HOUR_MS, from: DENSE_DAY, to: DENSE_DAY + DAY_MS, scope: () => ({ fleet: true }), target: TARGET.fleetP99Ms, repeat: Math.max(10, Math.round(N / 4)) },
  { name: 'fleet, a year at 1d', kind: 'fleet', step: '1d', stepMs: DAY_MS, from: YEAR_START, to: DENSE_DAY + DAY_MS, scope: () => ({ fleet: true }), target: TARGET.fleetP99Ms, repeat: Math.max(10, Math.round(N / 4)) },
];

/** One bucket of an answer, in either system: start (ms), count, mean. */
interface Bucket { t: number; count: number; avg: number }

async function askBraid(url: string, key: string, metric: string, scope: Scope, q: Question): Promise<Bucket[]> {
  const p = new URLSearchParams({ metric, from: String(q.from), to: String(q.to), step: q.step, agg: 'avg' });
  if ('device' in scope) p.set('device', scope.device);
  if ('gateway' in scope) p.set('gateway', scope.gateway);
  const res = await fetch(`${url}/api/v1/query?${p}`, { headers: { authorization: `Bearer ${key}` } });
  const body = await res.json() as { points?: Array<{ t: string; value: number; count: number }>; message?: string };
  if (res.status !== 200 || !body.points) throw new Error(`braid query ${p}: ${res.status} ${body.message ?? ''}`);
  return body.points.map((b) => ({ t: Date.parse(b.t), count: b.count, avg: b.value }));
}

async function askInflux(url: string, metric: string, scope: Scope, q: Question): Promise<Bucket[]> {
  const where = 'device' in scope ? `"device" = '${scope.device}' AND ` : 'gateway' in scope ? `"gateway" = '${scope.gateway}' AND ` : '';
  const sql = `SELECT count("${metric}"), mean("${metric}") FROM "telemetry" WHERE ${where}time >= ${q.from}ms AND time < ${q.to}ms GROUP BY time(${q.step}) fill(none)`;
  const res = await fetch(`${url}/query?db=bench&epoch=ms&q=${encodeURIComponent(sql)}`);
  const body = await res.json() as { results: Array<{ series?: Array<{ values: Array<[number, number, number]> }>; error?: string }> };
  const r = body.results?.[0];
  if (res.status !== 200 || r?.error) throw new Error(`influx query ${sql}: ${res.status} ${r?.error ?? ''}`);
  return (r.series?.[0]?.values ?? []).map(([t, count, avg]) => ({ t, count, avg }));
}

/** Why two answers differ, or null when they agree (times and counts equal, means within 1e-9 relative). */
function differs(a: Bucket[], b: Bucket[]): string | null {
  if (a.length !== b.length) return `${a.length} buckets vs ${b.length}`;
  for (let i = 0; i < a.length; i++) {
    if (a[i].t !== b[i].t || a[i].count !== b[i].count) return `bucket ${i}: ${JSON.stringify(a[i])} vs ${JSON.stringify(b[i])}`;
    if (Math.abs(a[i].avg - b[i].avg) > 1e-9 * Math.max(1, Math.abs(a[i].avg))) return `bucket ${i}: avg ${a[i].avg} vs ${b[i].avg}`;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Building the data

function braid(args: string[], name: string, root = ROOT): Proc {
  if (isStopping()) throw new Error('stopping: not starting another process');
  return startProc(name, process.execPath, [join(root, 'bin/braid.js'), ...args], { cwd: root, env: childEnv() });
}

async function lastLineOf(args: string[], name: string, prefix: string): Promise<string> {
  const p = braid(args, name);
  const { code } = await p.exited;
  const line = p.lines[p.lines.length - 1]?.trim();
  if (code !== 0 || !line?.startsWith(prefix)) throw new Error(`${name} failed (exit ${code}): ${p.stderrTail()}`);
  return line;
}

interface Build { compactMs?: number | null; series?: string; reused?: boolean; sparse: WriteReport; dense: WriteReport; batch: { wallMs: number; cpuSec: number; hwm: number; rowsRead: number }; viewBytes: number; viewRows: Record<string, number> }

async function buildData(dataDir: string): Promise<Build> {
  mkdirSync(dataDir, { recursive: true });
  const sparseShape: FleetShape = { devices: DEVICES, metrics: METRICS, intervalMs: SPARSE_MS, gateways: GATEWAYS, dupShare: 0, segmentMs: DAY_MS, startMs: YEAR_START };
  const state = newStream(sparseShape);
  log(`master: ${DEVICES} devices x ${METRICS.length} metrics, ${YEAR_DAYS - 1} sparse days (a reading per series every ${SPARSE_MS / HOUR_MS} h)`);
  const sparse = await writeMaster(dataDir, sparseShape, state, (YEAR_DAYS - 1) * (DAY_MS / SPARSE_MS), 'sparse');
  log(`  ${int(sparse.readings)} readings in ${sparse.files} files (${mb(sparse.bytes)}) in ${ms(sparse.ms)}`);
  // The dense day continues the same stream (seqs, epochs): its steps are minutes from DENSE_DAY.
  const denseShape: FleetShape = { ...sparseShape, intervalMs: 60_000, segmentMs: HOUR_MS, startMs: DENSE_DAY - state.step * 60_000 };
  log('master: the last day dense (a reading per series per minute)');
  const dense = await writeMaster(dataDir, denseShape, state, DAY_MS / 60_000, 'dense');
  log(`  ${int(dense.readings)} readings in ${dense.files} files (${mb(dense.bytes)}) in ${ms(dense.ms)}`);

  log('views: braid batch run --full');
  const t0 = performance.now();
  const p = braid(['batch', 'run', '--full', '--data-dir', dataDir, '--json', '--no-progress', '--log-level', 'warn'], 'braid batch run --full');
  let hwm = 0;
  let cpuSec = 0;
  const poll = setInterval(() => {
    try {
      hwm = Math.max(hwm, memoryOf(p.pid).hwm || 0);
      const c = cpuSecondsOf(p.pid);
      if (Number.isFinite(c)) cpuSec = c;
    } catch { /* exited */ }
  }, 200);
  const { code } = await p.exited;
  clearInterval(poll);
  const line = p.lines.find((l) => l.startsWith('{'));
  if (code !== 0 || !line) throw new Error(`braid batch run --full failed (exit ${code}): ${p.stderrTail()}`);
  const json = JSON.parse(line) as { rowsRead: number };
  const wallMs = performance.now() - t0;
  log(`  ${int(json.rowsRead)} rows read in ${ms(wallMs)}`);
  const manifest = JSON.parse(readFileSync(join(dataDir, 'views/manifest.json'), 'utf8')) as { views: Record<string, string[]> };
  const duck = await DuckDBInstance.create(':memory:');
  const conn = await duck.connect();
  const viewRows: Record<string, number> = {};
  let viewBytes = 0;
  try {
    for (const [view, files] of Object.entries(manifest.views)) {
      const paths = files.map((f) => join(dataDir, 'views', f));
      const list = paths.map((f) => `'${f.replaceAll("'", "''")}'`).join(',');
      const r = await conn.runAndReadAll(`SELECT SUM(num_rows)::BIGINT AS n FROM parquet_file_metadata([${list}])`);
      viewRows[view] = Number(r.getRowObjects()[0].n);
      for (const f of paths) viewBytes += statSync(f).size;
    }
  } finally {
    conn.closeSync();
  }
  return { sparse, dense, batch: { wallMs, cpuSec, hwm, rowsRead: json.rowsRead }, viewBytes, viewRows };
}

/** The same readings into influxd: read back from the master files, 10k lines a request, two writers. */
async function loadInflux(influx: TestServer, dataDir: string): Promise<{ points: number; ms: number }> {
  const create = await fetch(`${influx.url}/query`, { method: 'POST', body: new URLSearchParams({ q: 'CREATE DATABASE bench' }) });
  if (!create.ok) throw new Error(`influx CREATE DATABASE: ${create.status} ${await create.text()}`);
  const t0 = performance.now();
  const duck = await DuckDBInstance.create(':memory:');
  const conn = await duck.connect();
  const glob = join(dataDir, 'master/day=*/*.parquet').replaceAll("'", "''");
  const result = await conn.stream(`SELECT gateway, device, metric, ts, value FROM read_parquet('${glob}', hive_partitioning = false) ORDER BY ts`);
  const inflight = new Set<Promise<void>>();
  let points = 0;
  const post = async (body: string) => {
    for (let attempt = 0; ; attempt++) {
      const res = await fetch(`${influx.url}/write?db=bench&precision=ms`, { method: 'POST', body });
      if (res.status === 204) return;
      const text = await res.text();
      // 5xx (cache full while it snapshots): back off and send again; 4xx is a bug here.
      if (res.status < 500 || attempt > 50) throw new Error(`influx write: ${res.status} ${text}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  let lines: string[] = [];
  const flush = async () => {
    if (!lines.length) return;
    const body = lines.join('\n');
    lines = [];
    const p = post(body).finally(() => inflight.delete(p));
    inflight.add(p);
    while (inflight.size >= 2) await Promise.race(inflight);
  };
  try {
    for (;;) {
      const chunk = await result.fetchChunk();
      if (!chunk || chunk.rowCount === 0) break;
      for (const [gateway, device, metric, ts, value] of chunk.getRows()) {
        const t = ts instanceof Object && 'micros' in (ts as object) ? Number((ts as { micros: bigint }).micros / 1000n) : Number(ts);
        lines.push(`telemetry,device=${device},gateway=${gateway} ${metric}=${Number(value)} ${t}`);
        points++;
        if (lines.length >= 10_000) await flush();
      }
      if (points % 1_000_000 < chunk.rowCount) log(`  influx: ${int(points)} points`);
    }
    await flush();
    await Promise.all(inflight);
  } finally {
    conn.closeSync();
  }
  return { points, ms: performance.now() - t0 };
}

/** influxd 1.6.7 on a data dir kept in BENCH_QUERY_DATA (startInfluxd's config): the points loaded once. */
async function startInfluxdIn(dir: string): Promise<TestServer> {
  mkdirSync(dir, { recursive: true });
  const [http, rpc] = [await freePort(), await freePort()];
  const conf = join(dir, 'influxdb.conf');
  writeFileSync(conf, [
    'reporting-disabled = true', `bind-address = "127.0.0.1:${rpc}"`,
    '[meta]', `  dir = "${join(dir, 'meta')}"`,
    '[data]', `  dir = "${join(dir, 'data')}"`, `  wal-dir = "${join(dir, 'wal')}"`, '  query-log-enabled = false',
    '[monitor]', '  store-enabled = false', '[http]', `  bind-address = "127.0.0.1:${http}"`, '  log-enabled = false',
    '[admin]', '  enabled = false', '[[udp]]', '  enabled = false', '[continuous_queries]', '  enabled = false', '',
  ].join('\n'));
  const proc = startProc('influxd', 'influxd', ['-config', conf], { cwd: dir });
  const url = `http://127.0.0.1:${http}`;
  for (const until = Date.now() + 60_000; ;) {
    if (proc.child.exitCode !== null) throw new Error(`influxd exited: ${proc.stderrTail()}`);
    const ok = await fetch(`${url}/ping`).then((r) => r.status === 204, () => false);
    if (ok) break;
    if (Date.now() > until) throw new Error(`influxd did not answer: ${proc.stderrTail()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, dir, output: () => proc.stderrTail(), pid: proc.pid, stop: () => proc.stop(10_000) };
}

/**
 * Wait until the cloud has built (or failed) its 6 compacted views and, where it makes them
 * (braid_query_series_pending), its series files; the time it took, or null on timeout.
 */
async function waitForCompactions(url: string, key: string): Promise<{ ms: number | null; series: string }> {
  const t0 = performance.now();
  let series = 'none';
  while (performance.now() - t0 < 15 * 60_000) {
    const text = await (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${key}` } })).text();
    const count = (name: string) => [...text.matchAll(new RegExp(`^${name}\\{result="(\\w+)"\\} (\\d+)`, 'gm'))].map((m) => [m[1], Number(m[2])] as const);
    const done = count('braid_query_view_compactions_total').reduce((n, [, v]) => n + v, 0);
    const files = count('braid_query_series_files_total');
    const pending = /^braid_query_series_pending (\d+)/m.exec(text);
    series = files.filter(([, v]) => v > 0).map(([r, v]) => `${v} ${r}`).join(', ') || 'none';
    const seriesDone = !pending || (Number(pending[1]) === 0 && files.some(([, v]) => v > 0));
    if (done >= 6 && seriesDone) return { ms: performance.now() - t0, series };
    await new Promise((r) => setTimeout(r, 250));
  }
  return { ms: null, series };
}

// ---------------------------------------------------------------------------------------------
// Measuring

/** Longest wait for the servers to go quiet before the questions (settle). */
const SETTLE_MAX_MS = 120_000;

/**
 * Wait until none of `pids` used more than 5% of a core over a second (or SETTLE_MAX_MS), and say
 * how long that took: a server still busy with its start (influxd opening the shards of a data dir
 * kept in BENCH_QUERY_DATA, a cloud finishing its background builds) would be measured beside it,
 * and a p99 of 200 questions is the second slowest (two runs of 2026-12-07 had InfluxDB's p99 of a
 * device's day at 252-277 ms against 37-40 ms in the others, Braid's 86-332 ms against 17-23 ms).
 */
async function settle(pids: number[]): Promise<{ ms: number | null; cpu: string }> {
  const t0 = performance.now();
  let last = pids.map(cpuSecondsOf);
  for (;;) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = pids.map(cpuSecondsOf);
    const used = now.map((c, i) => c - last[i]);
    last = now;
    const cpu = `CPU over the last second: ${used.map((u) => `${(u * 100).toFixed(0)}%`).join(', ')} of a core`;
    if (used.every((u) => u <= 0.05)) return { ms: performance.now() - t0, cpu };
    if (performance.now() - t0 > SETTLE_MAX_MS) return { ms: null, cpu };
  }
}

type Who = 'braid' | 'alt' | 'influx';
interface Measured { question: Question; braid: number[]; alt: number[]; influx: number[]; braidBuckets: number; influxBuckets: number; checked: number; mismatch: string | null }

async function measure(braidUrl: string, key: string, influxUrl: string, alt: { url: string; key: string } | null): Promise<Measured[]> {
  const out: Measured[] = [];
  const systems: Who[] = alt ? ['braid', 'alt', 'influx'] : ['braid', 'influx'];
  for (const [qi, q] of QUESTIONS.entries()) {
    const r = mulberry32(1000 + qi); // the same questions in every run
    const m: Measured = { question: q, braid: [], alt: [], influx: [], braidBuckets: 0, influxBuckets: 0, checked: 0, mismatch: null };
    for (let i = 0; i < WARMUP + q.repeat; i++) {
      if (isStopping()) throw new Error('stopped');
      const metric = METRICS[Math.floor(r() * METRICS.length)];
      const scope = q.scope(r);
      // Interleaved, each first in turn: all see the same noise.
      const order = systems.map((_, j) => systems[(i + j) % systems.length]);
      const answers: Partial<Record<Who, Bucket[]>> = {};
      for (const who of order) {
        const t0 = performance.now();
        answers[who] = who === 'braid' ? await askBraid(braidUrl, key, metric, scope, q)
          : who === 'alt' ? await askBraid(alt!.url, alt!.key, metric, scope, q) : await askInflux(influxUrl, metric, scope, q);
        const took = performance.now() - t0;
        if (i >= WARMUP) m[who].push(took);
      }
      m.braidBuckets = answers.braid!.length;
      m.influxBuckets = answers.influx!.length;
      // Every fifth answer is compared bucket by bucket (and the other checkout's with this one's).
      if (i % 5 === 0 && !m.mismatch) {
        m.checked++;
        const d = differs(answers.braid!, answers.influx!) ?? (alt ? differs(answers.braid!, answers.alt!) : null);
        if (d) m.mismatch = `${metric} ${JSON.stringify(scope)}: ${d}`;
      }
    }
    const p99 = (xs: number[]) => quantile([...xs].sort((a, b) => a - b), 0.99);
    log(`  ${q.name}: braid p99 ${ms(p99(m.braid))}${alt ? `, alt p99 ${ms(p99(m.alt))}` : ''}, influx p99 ${ms(p99(m.influx))}${m.mismatch ? `; ANSWERS DIFFER: ${m.mismatch}` : ''}`);
    out.push(m);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Report

function report(machine: MachineInfo, build: Build, influxLoad: { points: number; ms: number }, results: Measured[], procs: { cloud: { rss: number; cpuSec: number }; alt?: { rss: number; cpuSec: number }; influx: { rss: number; cpuSec: number } }, totalMs: number, influxVersion: string): string {
  const L: string[] = [];
  const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
  const q = (xs: number[], p: number) => quantile(sorted(xs), p);
  L.push(`Measured ${machine.date.slice(0, 10)} (${machine.date}), total run time ${(totalMs / 1000).toFixed(0)} s${SCALE !== 1 ? `, BENCH_SCALE=${SCALE}` : ''}.`, '');
  L.push('| Machine | |', '|---|---|');
  L.push(`| CPU | ${machine.nproc} cores, ${machine.cpu} |`, `| RAM | ${machine.ramGiB} GiB |`, `| Kernel | ${machine.kernel} |`,
    `| Disk (data dirs) | ${machine.disk} |`, `| Node.js | ${machine.node} |`, `| InfluxDB | ${influxVersion} |`, '');
  const readings = build.sparse.readings + build.dense.readings;
  L.push(`Data: ${int(DEVICES)} devices x ${METRICS.length} metrics, ${GATEWAYS} gateways, ${YEAR_DAYS} days: ${int(readings)} readings `
    + `(${int(build.sparse.readings)} sparse over ${YEAR_DAYS - 1} days, ${int(build.dense.readings)} on the dense day ${new Date(DENSE_DAY).toISOString().slice(0, 10)}); `
    + `master ${mb(build.sparse.bytes + build.dense.bytes)} in ${build.sparse.files + build.dense.files} files.`, '');
  L.push(`Views: ${build.reused ? `(built by an earlier run, reused from BENCH_QUERY_DATA) ` : ''}\`braid batch run --full\` read ${int(build.batch.rowsRead)} rows in ${ms(build.batch.wallMs)} (CPU ${build.batch.cpuSec.toFixed(0)} s, peak RSS ${mb(build.batch.hwm)}); `
    + `${mb(build.viewBytes)} of views: ${Object.entries(build.viewRows).map(([v, n]) => `${v} ${int(n)} rows`).join(', ')}.`, '');
  L.push(`Compacted copies of the six hourly and daily views (what a range over more than 31 days reads; built by the cloud in the background after it first reads a manifest): ${build.compactMs == null ? 'not finished' : `ready ${ms(build.compactMs)} after the first query`}; series files of the device views (hot days and compacted copies, read by device queries): ${build.series ?? 'none'}.`, '');
  L.push(`InfluxDB: the same ${int(influxLoad.points)} readings written as raw points in ${ms(influxLoad.ms)} (${int(influxLoad.points / (influxLoad.ms / 1000))} points/s).`, '');
  L.push('| question | buckets | Braid p50 | Braid p99 | InfluxDB p50 | InfluxDB p99 | InfluxDB p99 / Braid p99 | target | verdict | answers |');
  L.push('|---|---|---|---|---|---|---|---|---|---|');
  let allMet = true;
  for (const m of results) {
    const bp99 = q(m.braid, 0.99);
    const ip99 = q(m.influx, 0.99);
    const ratio = ip99 / bp99;
    const met = bp99 <= m.question.target && ratio >= TARGET.vsInflux;
    allMet &&= met;
    L.push(`| ${m.question.name} (${m.braid.length} queries) | ${m.braidBuckets} | ${ms(q(m.braid, 0.5))} | ${ms(bp99)} | ${ms(q(m.influx, 0.5))} | ${ms(ip99)} | ${ratio.toFixed(1)}x `
      + `| p99 <= ${m.question.target} ms, >= ${TARGET.vsInflux}x | ${met ? 'met' : '**short**'} | ${m.mismatch ? `**differ**: ${m.mismatch}` : `equal (${m.checked} compared)`} |`);
  }
  L.push('');
  if (ALT_ROOT) {
    L.push(`Before and after in the same run: the braid cloud of \`${ALT_ROOT}\` (BENCH_ALT_ROOT) on a copy of the same views, asked every question beside this checkout's and InfluxDB, each first in turn.`, '');
    L.push('| question | Braid p50 | Braid p99 | before p50 | before p99 | before p99 / Braid p99 | InfluxDB p99 / before p99 |', '|---|---|---|---|---|---|---|');
    for (const m of results) {
      L.push(`| ${m.question.name} | ${ms(q(m.braid, 0.5))} | ${ms(q(m.braid, 0.99))} | ${ms(q(m.alt, 0.5))} | ${ms(q(m.alt, 0.99))} | ${(q(m.alt, 0.99) / q(m.braid, 0.99)).toFixed(1)}x | ${(q(m.influx, 0.99) / q(m.alt, 0.99)).toFixed(1)}x |`);
    }
    L.push('');
  }
  L.push(`Processes after the queries: braid cloud RSS ${mb(procs.cloud.rss)}, CPU ${procs.cloud.cpuSec.toFixed(1)} s; `
    + `${procs.alt ? `the other checkout's cloud RSS ${mb(procs.alt.rss)}, CPU ${procs.alt.cpuSec.toFixed(1)} s; ` : ''}influxd RSS ${mb(procs.influx.rss)}, CPU ${procs.influx.cpuSec.toFixed(1)} s.`);
  L.push(`Every target: ${allMet ? 'met' : 'not all met (see the verdicts)'}.`);
  return L.join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const t0 = performance.now();
  mkdirSync(OUT, { recursive: true });
  const machine = await machineInfo(work);
  log(`scale ${SCALE}: ${DEVICES} devices; work dir ${work}`);
  let dataDir = join(work, 'cloud');
  let build: Build;
  if (DATA && REUSED) {
    dataDir = join(DATA, 'cloud');
    build = { ...JSON.parse(readFileSync(join(DATA, 'build.json'), 'utf8')) as Build, reused: true };
    log(`reusing the master and views in ${DATA} (dense day ${new Date(DENSE_DAY).toISOString().slice(0, 10)})`);
  } else {
    if (DATA) dataDir = join(DATA, 'cloud');
    build = await buildData(dataDir);
    if (DATA) {
      writeFileSync(join(DATA, 'build.json'), JSON.stringify(build));
      writeFileSync(join(DATA, 'shape.json'), JSON.stringify({ devices: DEVICES, denseDay: DENSE_DAY } satisfies DataShape));
    }
  }
  // Node-local caches (compacted copies, series files) are built afresh in every run.
  rmSync(join(dataDir, 'cache'), { recursive: true, force: true });

  const startCloud = async (dir: string, root: string, name: string) => {
    const key = await lastLineOf(['cloud', 'key', 'add', `bench-${Date.now()}`, '--role', 'read', '--data-dir', dir], `${name} key add`, 'brk_');
    const configFile = join(work, `${name}.json`);
    writeFileSync(configFile, JSON.stringify({ http: { host: HOST }, batch: { cron: null }, log: { level: 'warn' } }));
    const proc = braid(['cloud', '--config', configFile, '--data-dir', dir, '--http-port', '0'], name, root);
    const url = (await proc.waitLine(/^cloud ready: (http:\/\/\S+)/, 60_000))[1];
    return { proc, url, key };
  };
  // The other checkout reads a copy of the data dir (one process owns a data dir): the views and
  // master hard-linked (immutable files), cloud.db copied.
  let altDir: string | null = null;
  if (ALT_ROOT) {
    altDir = join(work, 'alt-cloud');
    rmSync(altDir, { recursive: true, force: true });
    mkdirSync(altDir, { recursive: true });
    for (const name of readdirSync(dataDir)) {
      if (name === 'cache' || name === 'tmp' || name.endsWith('.lock')) continue;
      const from = join(dataDir, name);
      if (name === 'master' || name === 'views') execFileSync('cp', ['-al', from, join(altDir, name)]);
      else cpSync(from, join(altDir, name), { recursive: true });
    }
  }
  const cloud = await startCloud(dataDir, ROOT, 'braid cloud');
  const { url, key } = cloud;
  const alt = ALT_ROOT && altDir ? await startCloud(altDir, ALT_ROOT, 'braid cloud (BENCH_ALT_ROOT)') : null;

  // The cloud compacts the hourly and daily views for long ranges when it first reads a manifest
  // (cloud/query/views/parquet.ts): one query starts it; the measured queries come after it.
  for (const c of [cloud, ...(alt ? [alt] : [])]) {
    const c0 = performance.now();
    await askBraid(c.url, c.key, METRICS[0], { fleet: true }, QUESTIONS[QUESTIONS.length - 1]);
    const w = await waitForCompactions(c.url, c.key);
    log(`  ${c === cloud ? 'braid' : 'alt'}: views compacted for long ranges in ${ms(w.ms ?? performance.now() - c0)}${w.ms === null ? ' (not all: timed out)' : ''}; series files: ${w.series}`);
    if (c === cloud) {
      build.compactMs = w.ms;
      build.series = w.series;
    }
  }

  log('influxd 1.6.7: loading the same readings');
  const influxDir = DATA ? join(DATA, 'influxd') : null;
  const loadedFile = influxDir ? join(influxDir, 'loaded.json') : null;
  const influx = influxDir ? await startInfluxdIn(influxDir) : await startInfluxd();
  try {
    const influxVersion = (await fetch(`${influx.url}/ping`)).headers.get('x-influxdb-version') ?? 'unknown';
    let influxLoad: { points: number; ms: number };
    if (loadedFile && existsSync(loadedFile)) {
      influxLoad = JSON.parse(readFileSync(loadedFile, 'utf8')) as { points: number; ms: number };
      log(`  reusing the ${int(influxLoad.points)} points loaded into ${influxDir} by an earlier run`);
    } else {
      influxLoad = await loadInflux(influx, dataDir);
      if (loadedFile) writeFileSync(loadedFile, JSON.stringify(influxLoad));
    }
    log(`  ${int(influxLoad.points)} points in ${ms(influxLoad.ms)}`);
    const settled = await settle([influx.pid, cloud.proc.pid, ...(alt ? [alt.proc.pid] : [])]);
    log(`  the servers settled ${settled.ms == null ? `not within ${SETTLE_MAX_MS / 1000} s` : `in ${ms(settled.ms)}`} (${settled.cpu})`);
    log('queries (each question: both systems one at a time, interleaved)');
    const results = await measure(url, key, influx.url, alt);
    const procs = {
      cloud: { rss: memoryOf(cloud.proc.pid).rss, cpuSec: cpuSecondsOf(cloud.proc.pid) },
      ...(alt ? { alt: { rss: memoryOf(alt.proc.pid).rss, cpuSec: cpuSecondsOf(alt.proc.pid) } } : {}),
      influx: { rss: memoryOf(influx.pid).rss, cpuSec: cpuSecondsOf(influx.pid) },
    };
    const md = report(machine, build, influxLoad, results, procs, performance.now() - t0, influxVersion);
    publishReport(md, {
      log, docs: { name: 'query', heading: '## Query: `npm run bench:query`\n\n### Results' }, writeDocs: WRITE_DOCS, fullRun: 'a full-scale run',
      files: { 'query-latest.md': `${md}\n` },
    });
    if (results.some((m) => m.mismatch)) {
      log('FAILED: Braid and InfluxDB answered differently');
      process.exitCode = 1;
    }
  } finally {
    await influx.stop();
  }
}

await runBench(main, { log, work, timeoutMs: envTimeoutMs(2400) });
