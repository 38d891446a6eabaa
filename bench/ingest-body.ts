/**
 * The ingest main thread's per-request work on a body, without HTTP, disk or SQLite: parse and
 * validate a 5000-reading body as bench:cloud's clients send it, hold it while ~25 others wait for
 * their group commit (the queue the paced load builds), then add it to the open segment's image.
 * CPU per reading and the GC's share (PerformanceObserver 'gc' entries: count and time by kind) of
 * this checkout beside another one's (BENCH_ALT_ROOT, e.g. a checkout of main) in the same run,
 * interleaved, each repeated; medians reported.
 *
 *   node --import tsx bench/ingest-body.ts                      # this checkout only
 *   BENCH_ALT_ROOT=/path/to/main node --import tsx bench/ingest-body.ts
 *   BENCH_BODIES=2000 BENCH_REPEAT=5 BENCH_QUEUE=25
 *
 * Run each variant in a child process of its own (fresh heap); this file is also the child.
 */
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const env = process.env;
const BODIES = Number(env.BENCH_BODIES ?? 2000);
const QUEUE = Number(env.BENCH_QUEUE ?? 25);
const REPEAT = Number(env.BENCH_REPEAT ?? 5);
const ROWS = 5000;
const METRICS = ['temp', 'hum', 'co2', 'pm25', 'volt'];

interface Result { root: string; usPerReading: number; gcMs: number; gcCount: number; gcMax: number; majorCount: number; majorMs: number }

async function child(root: string): Promise<Result> {
  const L = { maxReadings: 100_000, maxRecords: 100_000 };
  const { SegmentImage } = await import(`${root}/cloud/ingest/segment-image.ts`);
  let parse: (b: Buffer) => { readings: unknown };
  let add: (img: unknown, b: { readings: unknown }) => void;
  try {
    const m = await import(`${root}/cloud/ingest/fast-body.ts`);
    parse = (b) => m.parseIngestBody(b, L);
  } catch {
    // A checkout before fast-body.ts: the route's JSON.parse + validateIngestBody.
    const v = await import(`${root}/cloud/ingest/validate.ts`);
    const body = await import(`${root}/cloud/ingest/body.ts`);
    parse = (b) => v.validateIngestBody(body.parseJsonBody(b, 'an ingest batch'), L);
  }
  add = (img, b) => (img as { add: (g: string, r: unknown, n: number) => void }).add('gw-7', b.readings, 0);
  // The bodies bench/clients/ingest-load.ts builds: 40 devices x 5 metrics, one reading each a second.
  const bodies: Buffer[] = [];
  for (let b = 0; b < 20; b++) {
    const rows = Array.from({ length: ROWS }, (_, j) => {
      const i = b * ROWS + j;
      const s = i % 200;
      return [i + 1, 1 + Math.floor(i / 600), `dev-${String(Math.floor(s / 5)).padStart(5, '0')}`, METRICS[s % 5], 1_733_450_000_000 + Math.floor(i / 200) * 1000 + s, Math.round(Math.random() * 1e4) / 100];
    });
    bodies.push(Buffer.from(JSON.stringify({ v: 1, gateway: 'gw-7', firstSeq: b * ROWS + 1, lastSeq: (b + 1) * ROWS, readings: rows, epochs: [], gaps: [], sentAt: 1_733_450_000_000 }), 'utf8'));
  }
  const gcs: Array<{ kind: number; ms: number }> = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcs.push({ kind: (e as unknown as { detail: { kind: number } }).detail.kind, ms: e.duration });
  });
  obs.observe({ entryTypes: ['gc'] });
  let img = new SegmentImage(1_000_000);
  const q: Array<{ readings: unknown }> = [];
  const cpu0 = process.cpuUsage();
  for (let k = 0; k < BODIES; k++) {
    q.push(parse(bodies[k % bodies.length]));
    if (q.length > QUEUE) {
      add(img, q.shift()!);
      if (img.rows >= 1_000_000) img = new SegmentImage(1_000_000);
    }
    if (k % QUEUE === 0) await new Promise((r) => setImmediate(r));
  }
  const cpu = process.cpuUsage(cpu0);
  await new Promise((r) => setTimeout(r, 50));
  obs.disconnect();
  // NODE_PERFORMANCE_GC_MAJOR = 4 (mark-compact).
  const major = gcs.filter((g) => g.kind === 4);
  return {
    root, usPerReading: (cpu.user + cpu.system) / (BODIES * ROWS),
    gcMs: gcs.reduce((n, g) => n + g.ms, 0), gcCount: gcs.length, gcMax: Math.max(0, ...gcs.map((g) => g.ms)),
    majorCount: major.length, majorMs: major.reduce((n, g) => n + g.ms, 0),
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

if (process.argv[2] === '--child') {
  process.stdout.write(JSON.stringify(await child(process.argv[3])));
} else {
  const here = resolve(fileURLToPath(import.meta.url), '../..');
  const roots = [here, ...(env.BENCH_ALT_ROOT ? [resolve(env.BENCH_ALT_ROOT)] : [])];
  const runs = new Map<string, Result[]>(roots.map((r) => [r, []]));
  for (let i = 0; i < REPEAT; i++) {
    // Each round starts with the next variant.
    for (let j = 0; j < roots.length; j++) {
      const root = roots[(i + j) % roots.length];
      const out = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', root], { cwd: here, encoding: 'utf8' });
      runs.get(root)!.push(JSON.parse(out) as Result);
    }
  }
  console.log(`${BODIES} bodies of ${ROWS} readings, ${QUEUE} waiting; medians of ${REPEAT} runs each (ranges in brackets)`);
  console.log('| checkout | CPU us/reading | GC ms | GCs | longest GC ms | mark-compacts (ms) |');
  console.log('|---|---:|---:|---:|---:|---:|');
  const f = (rs: Result[], k: keyof Result, d = 1) => `${median(rs.map((r) => r[k] as number)).toFixed(d)} [${Math.min(...rs.map((r) => r[k] as number)).toFixed(d)}-${Math.max(...rs.map((r) => r[k] as number)).toFixed(d)}]`;
  for (const [root, rs] of runs) {
    console.log(`| ${root} | ${f(rs, 'usPerReading', 3)} | ${f(rs, 'gcMs', 0)} | ${f(rs, 'gcCount', 0)} | ${f(rs, 'gcMax', 1)} | ${f(rs, 'majorCount', 0)} (${f(rs, 'majorMs', 0)}) |`);
  }
}
