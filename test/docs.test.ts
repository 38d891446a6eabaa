/**
 * The operator documentation says what is true:
 * - docs/operations.md names every metric a running gateway and a running cloud (`braid cloud`:
 *   createCloud, with the InfluxDB sink configured so its metrics exist) serve on /metrics, in a
 *   table row with its type and its label names, and no page names a metric that does not exist;
 *   the process metrics are the client library's standard ones (process_*, nodejs_*);
 * - the DuckDB examples of docs/scale-out.md run against a master dataset written by the real
 *   ingest path (and a real batch run) and return what the page says they return, and its script
 *   that prints the batch SQL for Trino prints a query whose rows are the views' (run on DuckDB);
 * - every relative link of README.md and docs/*.md points to a file that exists (and a #fragment
 *   into a Markdown page to one of its headings);
 * - facts that come from code stay true: every config default a page states ("`k` (v)", a README
 *   table row) is the schema's, the speed push interval wherever prose gives it, the files
 *   architecture.md names for the watermark's `epoch <= E` / `epoch > E` cuts hold them, and every
 *   source path a page names exists.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { z } from 'zod';
import { keyDocs } from '../bin/gen-config-docs.js';
import { metricDocProblems } from '../bin/gen-metrics-docs.js';
import { cloudConfigSchema } from '../cloud/config.js';
import { gatewayConfigSchema } from '../edge/config.js';
import { DEFAULT_BATCH_JOB_OPTIONS, VIEW_NAMES, startBatchRun } from '../cloud/batch/index.js';
import { DAY_MS, HOUR_MS, MINUTE_MS, bucketStart } from '../shared/time.js';
import {
  type Reading, addGatewayToken, ingestBody, listFiles, postIngest, startTestCloud, testCloudConfig,
} from './support/cloud.js';
import { headingAnchors, isRelativeTarget, linkTargets, mentionedMetricNames, proseLines, taggedBlocks } from './support/docs.js';
import { tempDir } from './support/gateway.js';
import { type LiveMetrics, defaultMetricNames, liveMetrics, sampleNamesOf } from './support/live-metrics.js';

const ROOT = resolve(import.meta.dirname, '..');
const read = (rel: string) => readFileSync(join(ROOT, rel), 'utf8');

let dir: { path: string; remove: () => void };
beforeEach(() => { dir = tempDir('braid-docs-'); });
afterEach(() => dir.remove());

/** Names in docs that look like metrics but are not: a Hive table of the Spark example (scale-out.md). */
const NOT_METRICS = new Set(['braid_master']);

/** Pages that may name a metric: README.md, deploy/README.md and docs/*.md. */
const pagesNamingMetrics = () => ['README.md', 'deploy/README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

describe('the metrics the docs name', () => {
  let live: LiveMetrics;
  let standard: Set<string>;
  beforeAll(async () => {
    live = await liveMetrics();
    standard = await defaultMetricNames();
  }, 30_000);

  test('are ours (braid_*) or the standard process metrics (process_*, nodejs_*), which both processes serve', () => {
    const names = [...live.families.keys()];
    expect(names.filter((n) => n.startsWith('braid_')).length).toBeGreaterThan(50);
    // A name that is neither braid_ nor one of the client library's own is a naming slip.
    expect(names.filter((n) => !n.startsWith('braid_') && !standard.has(n))).toEqual([]);
    expect(standard.size).toBeGreaterThan(20);
    for (const [side, served] of [['gateway', live.gateway], ['cloud', live.cloud]] as const) {
      expect({ side, missing: [...standard].filter((n) => !served.has(n)) }).toEqual({ side, missing: [] });
      expect({ side, prefixed: [...served.keys()].filter((n) => n.startsWith('braid_process_')) }).toEqual({ side, prefixed: [] });
    }
  });

  test('docs/operations.md documents every metric the gateway and the cloud serve, with its type and labels', () => {
    const doc = read('docs/operations.md');
    const names = [...live.families.keys()];
    expect(names.filter((n) => !new RegExp(`\\b${n}\\b`).test(doc))).toEqual([]);
    // In a table row, with the type served and every declared label named (bin/gen-metrics-docs.ts
    // prints rows to paste for what is missing).
    expect(metricDocProblems(live.families, doc)).toEqual([]);
    // Served types are the registries' (a family the registry knows but /metrics left out would hide here).
    for (const [name, f] of live.families) expect({ name, type: live.gateway.get(name) ?? live.cloud.get(name) }).toEqual({ name, type: f.type });
  });

  test('the table check finds a wrong type, a missing label and an undocumented metric', () => {
    const doc = read('docs/operations.md')
      .replace('| `braid_mqtt_connects_total` | counter |', '| `braid_mqtt_connects_total` | gauge |')
      .replace('| `braid_query_seconds` | histogram | `view`:', '| `braid_query_seconds` | histogram | `views`:')
      .replace(/^\| `braid_staging_readings` \|.*\n/m, '');
    expect(metricDocProblems(live.families, doc).sort()).toEqual([
      'braid_mqtt_connects_total: documented as gauge, registered as counter',
      'braid_query_seconds: label view not in its labels cell',
      'braid_staging_readings: in no metric table',
    ]);
  });

  test('no page names a metric that does not exist (README.md, deploy/README.md, docs/*.md)', () => {
    const known = sampleNamesOf(new Map([...live.families].map(([n, f]) => [n, f.type])));
    const stale: string[] = [];
    for (const page of pagesNamingMetrics()) {
      // The changelog names what was renamed, on purpose.
      const text = read(page).split(/^## Changelog$/m)[0];
      for (const n of mentionedMetricNames(text)) {
        // A prefix of families (`braid_commit_*`, `braid_*`) is fine if some family has it.
        if (known.has(n) || NOT_METRICS.has(n) || (n.endsWith('_') && [...known].some((k) => k.startsWith(n)))) continue;
        stale.push(`${page}: ${n}`);
      }
    }
    expect(stale).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// scale-out.md's DuckDB examples

const at = (iso: string) => Date.parse(iso);
const TIMES = Array.from({ length: 24 }, (_, i) => at('2024-11-24T22:00:00Z') + i * 10 * MINUTE_MS); // 22:00 .. 01:50

interface Row { gateway: string; seq: number; epoch: number; device: string; metric: string; ts: number; value: number }

/** Readings of one gateway with contiguous seqs from `firstSeq`, `epochOf(seq)` their epoch. */
function stream(gateway: string, firstSeq: number, rows: Array<Omit<Row, 'gateway' | 'seq' | 'epoch'>>, epochOf: (seq: number) => number): Row[] {
  return rows.map((r, i) => ({ ...r, gateway, seq: firstSeq + i, epoch: epochOf(firstSeq + i) }));
}

function spans(rows: Row[]): Array<{ epoch: number; firstSeq: number; lastSeq: number }> {
  const m = new Map<number, { epoch: number; firstSeq: number; lastSeq: number }>();
  for (const r of rows) {
    const s = m.get(r.epoch);
    if (s) s.lastSeq = Math.max(s.lastSeq, r.seq);
    else m.set(r.epoch, { epoch: r.epoch, firstSeq: r.seq, lastSeq: r.seq });
  }
  return [...m.values()];
}

async function ingest(url: string, token: string, rows: Row[], closed: boolean): Promise<void> {
  const tuples: Reading[] = rows.map((r) => [r.seq, r.epoch, r.device, r.metric, r.ts, r.value]);
  const res = await postIngest(url, token, ingestBody(rows[0].gateway, tuples, { epochs: closed ? spans(rows) : [] }));
  expect(res.status).toBe(200);
  expect(res.body).toMatchObject({ stored: rows.length, duplicates: 0 });
}

test('docs/scale-out.md: the DuckDB examples run on a master dataset made by ingest and return what they say', async () => {
  // gw-1: dev-1..3, temp and hum every 10 min across midnight UTC, three closed epochs.
  const gw1 = stream('gw-1', 1, ['dev-1', 'dev-2', 'dev-3'].flatMap((device) => ['temp', 'hum'].flatMap((metric) =>
    TIMES.map((ts, i) => ({ device, metric, ts, value: (metric === 'temp' ? 20 : 40) + i / 4 + device.length })))),
  (seq) => 1 + Math.floor((seq - 1) / 50));
  // gw-2: dev-4, and dev-3 after it moved there, sending its last hour of temp again (same identities).
  const moved = gw1.filter((r) => r.device === 'dev-3' && r.metric === 'temp' && r.ts >= at('2024-11-25T01:00:00Z'))
    .map(({ device, metric, ts, value }) => ({ device, metric, ts, value }));
  const gw2 = stream('gw-2', 1, [
    ...['temp', 'hum'].flatMap((metric) => TIMES.map((ts, i) => ({ device: 'dev-4', metric, ts, value: 10 + i }))),
    ...moved,
  ], () => 1);
  // Arrived after the batch run: gw-1's epoch 4 (not closed), dev-1's temp from 02:00.
  const late = stream('gw-1', gw1.length + 1, Array.from({ length: 6 }, (_, i) => ({
    device: 'dev-1', metric: 'temp', ts: at('2024-11-25T02:00:00Z') + i * 10 * MINUTE_MS, value: 30 + i,
  })), () => 4);

  const tokens = { 'gw-1': await addGatewayToken(dir.path, 'gw-1'), 'gw-2': await addGatewayToken(dir.path, 'gw-2') };
  let cloud = await startTestCloud(dir.path);
  try {
    await ingest(cloud.url, tokens['gw-1'], gw1, true);
    await ingest(cloud.url, tokens['gw-2'], gw2, true);
  } finally {
    await cloud.close(); // seals staging into master/
  }
  const run = await startBatchRun({ ...DEFAULT_BATCH_JOB_OPTIONS, dataDir: dir.path, threads: 1 }, { trigger: 'cli' });
  expect((await run.done).watermark).toEqual({ 'gw-1': 3, 'gw-2': 1 });
  cloud = await startTestCloud(dir.path);
  try {
    await ingest(cloud.url, tokens['gw-1'], late, false);
  } finally {
    await cloud.close();
  }
  expect(listFiles(join(dir.path, 'staging')).filter((f) => f.endsWith('.ndjson'))).toEqual([]);

  // What each example must return, computed from the readings sent.
  const all = [...gw1, ...gw2, ...late];
  const day = (ts: number) => new Date(bucketStart(ts, DAY_MS)).toISOString().slice(0, 10);
  const identities = new Map<string, Row>();
  for (const r of [...all].sort((a, b) => a.gateway.localeCompare(b.gateway) || a.seq - b.seq)) {
    const id = `${r.device}|${r.metric}|${r.ts}`;
    if (!identities.has(id)) identities.set(id, r);
  }
  const unique = [...identities.values()];
  const distinct = <T>(xs: T[]) => new Set(xs).size;
  const expected: Record<string, { rows: number; check?: (rows: Array<Record<string, unknown>>) => void }> = {
    days: {
      rows: distinct(all.map((r) => day(r.ts))),
      check: (rows) => expect(rows.map((r) => Number(r.readings))).toEqual(['2024-11-24', '2024-11-25'].map((d) => all.filter((r) => day(r.ts) === d).length)),
    },
    'device-day': { rows: all.filter((r) => r.device === 'dev-1' && day(r.ts) === '2024-11-25').length },
    dedup: {
      rows: 1,
      check: ([r]) => expect({ readings: Number(r.readings), devices: Number(r.devices) }).toEqual({ readings: unique.length, devices: 4 }),
    },
    hourly: {
      rows: distinct(unique.map((r) => `${r.device}|${r.metric}|${bucketStart(r.ts, HOUR_MS)}`)),
      check: (rows) => expect(rows.filter((r) => (r.hour as Date).getUTCMinutes() !== 0)).toEqual([]),
    },
    covered: {
      rows: 2,
      check: (rows) => expect(rows.map((r) => ({ gateway: r.gateway, watermark: Number(r.watermark), in: Number(r.in_views), above: Number(r.above_watermark) })))
        .toEqual([
          { gateway: 'gw-1', watermark: 3, in: gw1.length, above: late.length },
          { gateway: 'gw-2', watermark: 1, in: gw2.length, above: 0 },
        ]),
    },
  };

  const blocks = taggedBlocks(read('docs/scale-out.md'), 'duckdb-example');
  expect(blocks.map((b) => b.name).sort()).toEqual(Object.keys(expected).sort());
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  try {
    // As a user in the data dir: relative paths resolve there. A session zone that is not UTC (and
    // not a whole hour off) shows whether the page's own `SET TimeZone` is what makes it right.
    await conn.run(`SET file_search_path = '${dir.path.replace(/'/g, "''")}'`);
    await conn.run(`SET TimeZone = 'Asia/Kolkata'`);
    // One session, in page order, as someone pasting them into the duckdb shell would.
    for (const block of blocks) {
      const rows = (await conn.runAndReadAll(block.code)).getRowObjectsJS() as Array<Record<string, unknown>>;
      const want = expected[block.name];
      expect({ example: block.name, rows: rows.length }).toEqual({ example: block.name, rows: want.rows });
      want.check?.(rows);
    }

    // The batch-sql.ts script, as printed on the page, in its DuckDB flavour (the Trino one but for the
    // bit functions of the clean-minute certificate); DuckDB reads it over a hive.braid.master
    // relation with ts as a zone-less UTC timestamp (what Trino's Hive connector gives with
    // hive.parquet.time-zone=UTC).
    const [script] = taggedBlocks(read('docs/scale-out.md'), 'ts-example').filter((b) => b.name === 'batch-sql');
    expect(script.code).toContain(`from './cloud/batch/sql.js'`);
    const scriptFile = join(dir.path, 'batch-sql.ts');
    writeFileSync(scriptFile, script.code.replace(`'./cloud/batch/sql.js'`, JSON.stringify(join(ROOT, 'cloud/batch/sql.ts'))));
    const master = join(dir.path, 'master').replace(/'/g, "''");
    await conn.run(`ATTACH ':memory:' AS hive; CREATE SCHEMA hive.braid;
      CREATE VIEW hive.braid.master AS SELECT device, metric, make_timestamp(epoch_us(ts)) AS ts, value, gateway, seq, epoch, day
      FROM read_parquet('${master}/day=*/*.parquet', hive_partitioning = true)`);
    const manifest = JSON.parse(readFileSync(join(dir.path, 'views', 'manifest.json'), 'utf8')) as { watermark: Record<string, number>; views: Record<string, string[]> };
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.NODE_OPTIONS;
    const plain = (rows: unknown[]) => JSON.parse(JSON.stringify(rows, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))) as unknown[];
    for (const view of VIEW_NAMES) {
      const sql = execFileSync(process.execPath, ['--import', 'tsx', scriptFile, 'duckdb', '2024-11-25', JSON.stringify(manifest.watermark), view], { cwd: ROOT, env }).toString();
      // The day's file, or a minute view's hour files of the day.
      const files = manifest.views[view].filter((f) => f.includes('day=2024-11-25'));
      expect({ view, files: files.length > 0 }).toEqual({ view, files: true });
      const got = (await conn.runAndReadAll(`SELECT * FROM (${sql}) ORDER BY ALL`)).getRowObjectsJS();
      const list = files.map((f) => `'${join(dir.path, 'views', f).replace(/'/g, "''")}'`).join(', ');
      const want = (await conn.runAndReadAll(`SELECT * FROM read_parquet([${list}]) ORDER BY ALL`)).getRowObjectsJS();
      expect(want.length).toBeGreaterThan(0);
      expect({ view, rows: plain(got) }).toEqual({ view, rows: plain(want) });
    }
  } finally {
    conn.closeSync();
    instance.closeSync();
  }
}, 90_000);

// ---------------------------------------------------------------------------------------------
// Links

test('every relative link in README.md and docs/*.md points to a file that exists', () => {
  const pages = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
  const broken: string[] = [];
  let checked = 0;
  for (const page of pages) {
    const text = read(page);
    for (const target of linkTargets(text)) {
      const [path, fragment] = target.split('#', 2) as [string, string | undefined];
      if (target.startsWith('#')) {
        checked++;
        if (!headingAnchors(text).has(decodeURIComponent(fragment ?? ''))) broken.push(`${page}: ${target} (no such heading here)`);
        continue;
      }
      if (!isRelativeTarget(target)) continue;
      checked++;
      const file = resolve(dirname(join(ROOT, page)), decodeURIComponent(path.split('?')[0]));
      if (!existsSync(file)) {
        broken.push(`${page}: ${target} (no ${relative(ROOT, file)})`);
      } else if (fragment && file.endsWith('.md') && statSync(file).isFile() && !headingAnchors(readFileSync(file, 'utf8')).has(decodeURIComponent(fragment))) {
        broken.push(`${page}: ${target} (no heading #${fragment} in ${relative(ROOT, file)})`);
      }
    }
  }
  expect(broken).toEqual([]);
  expect(checked).toBeGreaterThan(20);
});

// ---------------------------------------------------------------------------------------------
// Facts the docs take from the code: defaults, and where a rule is enforced

/** README.md, deploy/README.md and docs/*.md but the generated configuration page, fenced blocks left out. */
const prosePages = () => pagesNamingMetrics().filter((p) => p !== 'docs/configuration.md')
  .map((page) => ({ page, lines: proseLines(read(page).split(/^## Changelog$/m)[0], { keepCode: true }) }));

/** Each config key's default, by key path, from both schemas (a key of both, like http.port, has two). */
function schemaDefaults(): Map<string, unknown[]> {
  const out = new Map<string, unknown[]>();
  for (const schema of [gatewayConfigSchema, cloudConfigSchema]) {
    for (const d of keyDocs(schema)) {
      const json = /^`(.*?)`/.exec(d.default)?.[1];
      let v: unknown;
      try { v = JSON.parse(json ?? ''); } catch { continue; } // gw-<hostname>: no literal default
      out.set(d.key, [...(out.get(d.key) ?? []), v]);
    }
  }
  return out;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, min: 60_000, minute: 60_000, minutes: 60_000, h: 3_600_000, hour: 3_600_000, hours: 3_600_000, d: 86_400_000, day: 86_400_000, days: 86_400_000 };
const UNIT_BYTES: Record<string, number> = { B: 1, KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30 };

/**
 * A value as the docs write it ("1 s", "60000", "1,000,000", "1 GiB", "`0 2 * * *`") in the unit
 * of the key (ms for *Ms, minutes for *Minutes, bytes for *Bytes), or undefined if it is prose.
 */
function docValue(key: string, text: string): unknown {
  const code = /^`([^`]*)`$/.exec(text);
  if (code) return code[1];
  const m = /^(\d[\d,]*(?:\.\d+)?)(?:\s*([A-Za-z]+))?$/.exec(text);
  if (!m) return undefined;
  const n = Number(m[1].replace(/,/g, ''));
  if (!m[2]) return n;
  const keyUnit = /Ms$/.test(key) ? 1 : /Minutes$/.test(key) ? 60_000 : /Bytes$/.test(key) ? 'bytes' : null;
  if (keyUnit === 'bytes') return UNIT_BYTES[m[2]] === undefined ? undefined : n * UNIT_BYTES[m[2]];
  if (keyUnit === null || UNIT_MS[m[2]] === undefined) return n; // "100 msg/s": the number is the value
  return (n * UNIT_MS[m[2]]) / keyUnit;
}

/**
 * Where a page states a key's default: "`k` (v)", "`k` = v", "`k`, v by default", "`k1` / `k2` (v1 / v2)" in prose, and
 * a table row "| `k1` / `k2` | v1 / v2 |". A key without a dot after a dotted one is of its group
 * (`outbox.epochMs` / `epochIdleMs`).
 */
function statedDefaults(line: string): Array<{ key: string; text: string }> {
  const out: Array<{ key: string; text: string }> = [];
  const keysOf = (chain: string) => {
    const keys = [...chain.matchAll(/`([\w.]+)`/g)].map((m) => m[1]);
    const group = keys[0].includes('.') ? keys[0].slice(0, keys[0].lastIndexOf('.') + 1) : '';
    return keys.map((k, i) => (i > 0 && !k.includes('.') ? group + k : k));
  };
  const pair = (keys: string[], values: string[]) => {
    if (keys.length !== values.length) return;
    keys.forEach((key, i) => out.push({ key, text: values[i].trim() }));
  };
  const row = /^\|\s*(`[\w.]+`(?:\s*\/\s*`[\w.]+`)*)\s*\|\s*([^|]+?)\s*\|/.exec(line);
  if (row) pair(keysOf(row[1]), row[2].split(' / '));
  for (const m of line.matchAll(/(`[\w.]+`(?:\s*\/\s*`[\w.]+`)*)\s*(?:\(([^():;]*?)(?:[):;]|, )|=\s*([^,;()]*?)(?:[,;()]|\.\s|\.$|$)|,\s*([^,;()`]+?)\s+by default)/g)) {
    pair(keysOf(m[1]), (m[2] ?? m[3] ?? m[4]).split(' / '));
  }
  return out;
}

test('every default the docs state for a config key is the schema\'s default', () => {
  const defaults = schemaDefaults();
  const wrong: string[] = [];
  let checked = 0;
  for (const { page, lines } of prosePages()) {
    for (const line of lines) {
      for (const { key, text } of statedDefaults(line)) {
        const want = defaults.get(key);
        if (!want) continue;
        // A string default ("2GB", a cron expression) only as a code span: "`http.host` = 127.0.0.1"
        // in a benchmark's settings is what it ran with, not a claim about the default.
        const v = want.some((w) => typeof w === 'string') ? /^`([^`]*)`$/.exec(text)?.[1] : docValue(key, text);
        if (v === undefined) continue;
        checked++;
        if (!want.some((w) => w === v)) wrong.push(`${page}: ${key} stated as "${text}", default ${want.map((w) => JSON.stringify(w)).join(' or ')}`);
      }
    }
  }
  expect(wrong).toEqual([]);
  expect(checked).toBeGreaterThan(20);
});

test('the speed push interval the docs state is speed.pushIntervalMs\' default, wherever they state it', () => {
  const interval = z.object({ speed: gatewayConfigSchema.shape.speed }).parse({ speed: {} }).speed.pushIntervalMs;
  const wrong: string[] = [];
  let checked = 0;
  // benchmarks.md measures other intervals on purpose (and the 2 s of the first runs).
  for (const { page, lines } of prosePages().filter((p) => p.page !== 'docs/benchmarks.md')) {
    // Sentences, across line breaks: "pushes ... every 2 s", "next push (2 s)", "push every 2,000 ms".
    for (const sentence of lines.join(' ').split(/(?<=\.)\s+/)) {
      if (!/\bpush/i.test(sentence)) continue;
      for (const m of sentence.matchAll(/(?:\bevery|\bpush\w*)\s+(?:`speed\.pushIntervalMs`\s*)?\(?(?:=\s*)?(\d[\d,]*(?:\.\d+)?\s*(?:ms|s))\b/g)) {
        checked++;
        const ms = docValue('pushIntervalMs', m[1].replace(/\s+/g, ' '));
        if (ms !== interval) wrong.push(`${page}: "${m[0]}" (default ${interval} ms)`);
      }
    }
  }
  expect(wrong).toEqual([]);
  expect(checked).toBeGreaterThan(2);
});

test('docs/architecture.md names the files where the watermark cuts really are', () => {
  const doc = read('docs/architecture.md');
  // "`epoch > E` (`cloud/speed/store.ts` ...)": the named file holds that comparison on epoch.
  const claims = [...doc.matchAll(/`epoch (>|<=) E`\s*\((?:`[^`]*`[^`(]*)*?`([\w/.-]+\.ts)`/g)].map((m) => ({ op: m[1], file: m[2] }));
  expect(claims.map((c) => c.op).sort()).toEqual(['<=', '>', '>']);
  for (const { op, file } of claims) {
    const source = read(file);
    expect({ file, op, holds: new RegExp(`\\bepoch\\s*${op}\\s*`).test(source) }).toEqual({ file, op, holds: true });
  }
});

test('every source path the docs name exists', () => {
  const missing: string[] = [];
  let checked = 0;
  for (const { page, lines } of prosePages()) {
    for (const line of lines) {
      for (const m of line.matchAll(/`((?:edge|cloud|shared|bin|test|bench|deploy)\/[\w./-]*)`/g)) {
        // What a bench run writes (git-ignored), and a file the page says is gone.
        if (m[1].startsWith('bench/.out/') || line.slice(m.index + m[0].length).startsWith(', now removed')) continue;
        checked++;
        if (!existsSync(join(ROOT, m[1]))) missing.push(`${page}: ${m[1]}`);
      }
    }
  }
  expect(missing).toEqual([]);
  expect(checked).toBeGreaterThan(50);
});
