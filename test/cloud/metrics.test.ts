/**
 * The cloud's batch and serving metrics move with reality, scraped from a real cloud (createCloud,
 * what `braid cloud` runs) with a read key: runs counted by result (published, noop, failed), their
 * duration and rows, the last success read from cloud.db (a run of another process included), the
 * live views' version and age, and each registered gateway's last contact from real speed pushes.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCloud, type CloudApp } from '../../cloud/app.js';
import { DEFAULT_BATCH_JOB_OPTIONS, startBatchRun } from '../../cloud/batch/index.js';
import { addApiKey, removeGateway } from '../../cloud/store/credentials.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { scrapedValue } from '../../shared/metrics.js';
import { addGatewayToken, ingestBody, makeReadings, postIngest, testCloudConfig } from '../support/cloud.js';
import { type TestGateway, eventually, startTestGateway, tempDir } from '../support/gateway.js';

let dir: { path: string; remove: () => void };
let cloud: CloudApp | null = null;
let gateway: TestGateway | null = null;
let url = '';
let readKey = '';
let adminKey = '';

beforeEach(async () => {
  dir = tempDir('braid-cloud-metrics-');
  const db = await openCloudDb(join(dir.path, 'cloud.db'));
  try {
    readKey = await addApiKey(db, 'prometheus', 'read');
    adminKey = await addApiKey(db, 'ops', 'admin');
  } finally {
    await db.close();
  }
});

afterEach(async () => {
  await gateway?.close();
  gateway = null;
  await cloud?.server.close();
  cloud = null;
  dir.remove();
});

async function startCloud(): Promise<void> {
  // Segments sealed within a fraction of a second, so a batch run finds the readings in master/.
  cloud = createCloud(testCloudConfig(dir.path, { ingest: { sealMaxAgeMs: 200 } }));
  url = (await cloud.server.start()).url;
}

/** GET /metrics as Prometheus does it: with a read key. */
async function scrape(): Promise<string> {
  expect((await fetch(`${url}/metrics`)).status).toBe(401);
  const res = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${readKey}` } });
  expect(res.status).toBe(200);
  return res.text();
}

/** Whether the exposition has a sample of `name` with these labels (a gauge may show only # HELP and # TYPE). */
function hasSample(text: string, name: string, labels: Record<string, string> = {}): boolean {
  return text.split('\n').some((line) => {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? \S+$/.exec(line);
    return m !== null && m[1] === name && Object.entries(labels).every(([k, v]) => (m[2] ?? '').split(',').includes(`${k}="${v}"`));
  });
}

interface RunInfo { id: number; outcome: string; startedAt: number; endedAt: number | null; kind: string }

/** POST /api/v1/batch/run, then wait until GET /api/v1/batch shows it ended. */
async function runBatch(): Promise<RunInfo> {
  const res = await fetch(`${url}/api/v1/batch/run`, {
    method: 'POST', headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' }, body: '{}',
  });
  expect(res.status).toBe(202);
  const { id } = await res.json() as { id: number };
  const ended = await eventually(async () => {
    const status = await (await fetch(`${url}/api/v1/batch`, { headers: { authorization: `Bearer ${adminKey}` } })).json() as { runs: RunInfo[] };
    const run = status.runs.find((r) => r.id === id);
    // The counters move when the scheduler sees the run end, just after it is recorded.
    return run && run.outcome !== 'running' && cloud!.scheduler().running === null ? run : null;
  }, 30_000);
  return ended!;
}

test('batch runs are counted by result, and the views version, age and last success follow them', async () => {
  await startCloud();
  let text = await scrape();
  // Before any run: version 0, no age and no last success (a 0 would read as "views from 1970").
  expect(scrapedValue(text, 'braid_views_version')).toBe(0);
  expect(hasSample(text, 'braid_views_age_seconds')).toBe(false);
  expect(hasSample(text, 'braid_batch_last_success_timestamp_seconds')).toBe(false);
  expect(hasSample(text, 'braid_batch_runs_total')).toBe(false);
  expect(text).toContain('# TYPE braid_batch_runs_total counter');

  // 30 readings of one closed epoch: a run covers them all.
  const token = await addGatewayToken(dir.path, 'gw-1');
  const readings = makeReadings(1, 30);
  const ingest = await postIngest(url, token, ingestBody('gw-1', readings, { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 30 }] }));
  expect(ingest.status).toBe(200);
  await eventually(async () => scrapedValue(await scrape(), 'braid_master_sealed_readings_total') === 30, 10_000);

  const first = await runBatch();
  expect(first).toMatchObject({ outcome: 'ok', kind: 'full' }); // no manifest yet: the first run is full
  text = await scrape();
  expect(scrapedValue(text, 'braid_batch_runs_total', { result: 'published' })).toBe(1);
  expect(scrapedValue(text, 'braid_batch_runs_total', { kind: 'full', result: 'published' })).toBe(1);
  expect(scrapedValue(text, 'braid_batch_runs_total')).toBe(1);
  expect(scrapedValue(text, 'braid_batch_run_seconds_count', { kind: 'full' })).toBe(1);
  expect(scrapedValue(text, 'braid_batch_run_seconds_sum', { kind: 'full' })).toBeCloseTo((first.endedAt! - first.startedAt) / 1000, 3);
  expect(scrapedValue(text, 'braid_batch_rows_read_total')).toBe(30);
  expect(scrapedValue(text, 'braid_batch_last_success_timestamp_seconds')).toBe(first.endedAt! / 1000);
  expect(scrapedValue(text, 'braid_views_version')).toBe(1);
  const manifest = JSON.parse(await readFile(join(dir.path, 'views', 'manifest.json'), 'utf8')) as { createdAt: string };
  const age = scrapedValue(text, 'braid_views_age_seconds');
  expect(age).toBeGreaterThanOrEqual(0);
  expect(age).toBeLessThanOrEqual((Date.now() - Date.parse(manifest.createdAt)) / 1000);

  // Nothing new since: a noop run, still a success; the views keep their version and age on.
  const second = await runBatch();
  text = await scrape();
  expect(scrapedValue(text, 'braid_batch_runs_total', { kind: 'incremental', result: 'noop' })).toBe(1);
  expect(scrapedValue(text, 'braid_batch_runs_total')).toBe(2);
  expect(scrapedValue(text, 'braid_batch_rows_read_total')).toBe(30);
  expect(scrapedValue(text, 'braid_batch_last_success_timestamp_seconds')).toBe(second.endedAt! / 1000);
  expect(scrapedValue(text, 'braid_views_version')).toBe(1);
  expect(scrapedValue(text, 'braid_views_age_seconds')).toBeGreaterThanOrEqual(age);

  // A manifest that does not parse: the incremental run fails, is counted as failed, and the last
  // success stays where it was; the serving side keeps the last good manifest.
  const good = await readFile(join(dir.path, 'views', 'manifest.json'), 'utf8');
  await writeFile(join(dir.path, 'views', 'manifest.json'), '{"version": "broken"');
  const failed = await runBatch();
  expect(failed.outcome).toBe('failed');
  text = await scrape();
  expect(scrapedValue(text, 'braid_batch_runs_total', { kind: 'incremental', result: 'failed' })).toBe(1);
  expect(scrapedValue(text, 'braid_batch_runs_total')).toBe(3);
  expect(scrapedValue(text, 'braid_batch_run_seconds_count')).toBe(2); // failed runs have no duration sample
  expect(scrapedValue(text, 'braid_batch_last_success_timestamp_seconds')).toBe(second.endedAt! / 1000);
  expect(scrapedValue(text, 'braid_views_version')).toBe(1);
  await writeFile(join(dir.path, 'views', 'manifest.json'), good);

  // A run of another process (what `braid batch run` is) is not this process's to count, but its
  // success is in cloud.db, so the last success and the views move.
  const more = makeReadings(31, 40);
  expect((await postIngest(url, token, ingestBody('gw-1', more, { epochs: [{ epoch: 2, firstSeq: 31, lastSeq: 40 }] }))).status).toBe(200);
  await eventually(async () => scrapedValue(await scrape(), 'braid_master_sealed_readings_total') === 40, 10_000);
  const cli = await (await startBatchRun({ ...DEFAULT_BATCH_JOB_OPTIONS, dataDir: dir.path, threads: 1 }, { trigger: 'cli' })).done;
  expect(cli.published).toBe(true);
  text = await scrape();
  expect(scrapedValue(text, 'braid_batch_runs_total')).toBe(3);
  expect(scrapedValue(text, 'braid_batch_last_success_timestamp_seconds')).toBe(cli.endedAt / 1000);
  expect(scrapedValue(text, 'braid_views_version')).toBe(cli.version);
  expect(cli.version).toBe(2);

  // After a restart the counters start over, the last success and the views do not.
  await cloud!.server.close();
  await startCloud();
  text = await scrape();
  expect(hasSample(text, 'braid_batch_runs_total')).toBe(false);
  expect(scrapedValue(text, 'braid_batch_last_success_timestamp_seconds')).toBe(cli.endedAt / 1000);
  expect(scrapedValue(text, 'braid_views_version')).toBe(2);
}, 90_000);

test('each registered gateway has its last contact age, from its real speed pushes', async () => {
  const token = await addGatewayToken(dir.path, 'gw-test');
  await addGatewayToken(dir.path, 'gw-silent'); // registered, never heard from
  await startCloud();
  const started = Date.now();
  gateway = await startTestGateway({ cloud: { url, token }, speed: { pushIntervalMs: 100 } });

  let text = (await eventually(async () => {
    const t = await scrape();
    return hasSample(t, 'braid_gateway_last_contact_age_seconds', { gateway: 'gw-test' }) ? t : null;
  }, 10_000))!;
  const fresh = scrapedValue(text, 'braid_gateway_last_contact_age_seconds', { gateway: 'gw-test' });
  expect(fresh).toBeGreaterThanOrEqual(0);
  expect(fresh).toBeLessThanOrEqual((Date.now() - started) / 1000);
  expect(hasSample(text, 'braid_gateway_last_contact_age_seconds', { gateway: 'gw-silent' })).toBe(false);

  // The gateway stops: its age grows with the silence.
  await gateway.close();
  gateway = null;
  const stoppedAt = Date.now();
  await new Promise((r) => setTimeout(r, 1100));
  text = await scrape();
  expect(scrapedValue(text, 'braid_gateway_last_contact_age_seconds', { gateway: 'gw-test' }))
    .toBeGreaterThanOrEqual((Date.now() - stoppedAt) / 1000 - 0.001);

  // Decommissioned (token removed): its series goes, so no alert fires for it forever.
  const db = await openCloudDb(join(dir.path, 'cloud.db'));
  try {
    await removeGateway(db, 'gw-test');
  } finally {
    await db.close();
  }
  text = await scrape();
  expect(hasSample(text, 'braid_gateway_last_contact_age_seconds')).toBe(false);
}, 60_000);

test('the process metrics have the standard names of the Prometheus client libraries, no braid_ prefix', async () => {
  await startCloud();
  const text = await scrape();
  for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_open_fds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_heap_size_used_bytes']) {
    expect({ name, sample: hasSample(text, name) }).toEqual({ name, sample: true });
  }
  expect(text).toContain('# TYPE process_cpu_seconds_total counter');
  expect(text).not.toMatch(/^braid_process_/m);
});
