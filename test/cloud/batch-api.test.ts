/**
 * The batch from outside: manifest atomicity under a polling reader, BatchScheduler (runNow, cron,
 * status, close), the REST routes, and `braid batch run`.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { BatchScheduler, registerBatchRoutes, startBatchRun, VIEW_NAMES, viewPartOfPath, type BatchSchedulerOptions, type ViewSink } from '../../cloud/batch/index.js';
import { DAY_MS } from '../../shared/time.js';
import { GatewaySim, MasterFixture, readViews, sameViews, type FixtureReading } from '../support/master-fixture.js';

const DAY0 = Date.UTC(2024, 10, 20);
const dirs: string[] = [];
let app: FastifyInstance | null = null;
let scheduler: BatchScheduler | null = null;

afterEach(async () => {
  await app?.close();
  app = null;
  await scheduler?.close();
  scheduler = null;
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'braid-batch-'));
  dirs.push(d);
  return d;
}

const options = (dataDir: string, o: Partial<BatchSchedulerOptions> = {}): BatchSchedulerOptions =>
  ({ dataDir, cron: null, memoryLimit: '512MB', threads: 2, retainVersionsMs: 3600_000, ...o });

/** Seal `perDay` readings on each of `days` days from gateway `g`, one closed epoch per call. */
async function append(fx: MasterFixture, g: GatewaySim, firstDay: number, days: number, perDay: number): Promise<FixtureReading[]> {
  const rows: FixtureReading[] = [];
  for (let d = 0; d < days; d++) {
    for (let i = 0; i < perDay; i++) rows.push(g.reading(`d${i % 7}`, i % 2 ? 'temp' : 'hum', firstDay + d * DAY_MS + i * 7_000, (i * 37) % 101));
  }
  g.closeEpoch();
  await fx.seal(rows);
  await g.report(fx);
  return rows;
}

describe('manifest atomicity', () => {
  it('a reader polling manifest.json during runs never fails nor sees a mix of versions', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const g = new GatewaySim('gw-a');
    await append(fx, g, DAY0, 4, 300);
    let stop = false;
    let polls = 0;
    const problems: string[] = [];
    const seen = new Set<number>();
    // [manifest atomicity] every poll: the manifest parses, every file it names exists and is whole
    // Parquet, no file is newer than the manifest, each day's hour and day views are one version,
    // and the three minute views have the same files (a day file, or hour files of a recent day),
    // each of that version or an older one (an incremental run keeps the hour files of the hours it
    // did not touch; a run compacts the hour files of a day no longer recent).
    const reader = (async () => {
      while (!stop) {
        await new Promise((r) => setImmediate(r));
        const file = join(dir, 'views', 'manifest.json');
        if (!existsSync(file)) continue;
        try {
          const m = JSON.parse(readFileSync(file, 'utf8')) as { version: number; views: Record<string, string[]> };
          seen.add(m.version);
          const dayVersion = new Map<string, number>();
          const minuteFiles = new Map<string, string[]>();
          for (const view of VIEW_NAMES) {
            const hourly = view.endsWith('_1m');
            if (hourly) minuteFiles.set(view, []);
            for (const p of m.views[view]) {
              const bytes = readFileSync(join(dir, 'views', p));
              if (bytes.subarray(0, 4).toString() !== 'PAR1' || bytes.subarray(-4).toString() !== 'PAR1') problems.push(`${p}: not whole`);
              const version = Number(p.split('/')[0].slice(1));
              const part = viewPartOfPath(p);
              if (version > m.version) problems.push(`${p}: newer than manifest ${m.version}`);
              if (!part || (!hourly && part.hour !== null)) problems.push(`${p}: not a view file of a day${hourly ? ' or an hour' : ''}`);
              else if (hourly) minuteFiles.get(view)!.push(`${p.split('/')[0]}/${part.day}/${part.hour ?? 'day'}`);
              else if ((dayVersion.get(part.day) ?? version) !== version) problems.push(`${part.day}: two versions in manifest ${m.version}`);
              else dayVersion.set(part.day, version);
            }
          }
          for (const view of VIEW_NAMES) {
            if (!view.endsWith('_1m') && m.views[view].length !== dayVersion.size) problems.push(`${view}: missing days in manifest ${m.version}`);
          }
          const [first, ...others] = [...minuteFiles.values()];
          for (const files of others) if (files.join() !== first.join()) problems.push(`minute views with different hour files in manifest ${m.version}`);
          for (const f of first) {
            const [vdir, day] = f.split('/');
            if (!dayVersion.has(day)) problems.push(`${f}: a day the hour and day views lack, in manifest ${m.version}`);
          }
          if (new Set(first.map((f) => f.split('/')[1])).size !== dayVersion.size) problems.push(`minute views: missing days in manifest ${m.version}`);
          polls++;
        } catch (err) {
          problems.push(String(err));
        }
      }
    })();
    // Each run a day later than the one before (on the evening of the day it appends to): the
    // recent days' minute views are hour files, merged hour by hour, and compacted into day files
    // once the days are no longer recent.
    for (let i = 0; i < 6; i++) {
      await append(fx, g, DAY0 + (i % 4) * DAY_MS, 1 + (i % 2), 200);
      await (await startBatchRun(options(dir), { trigger: 'cli', full: i === 3 }, { now: () => DAY0 + i * DAY_MS + 20 * 3600_000 })).done;
    }
    stop = true;
    await reader;
    await fx.close();
    expect(problems.slice(0, 5)).toEqual([]);
    expect(seen.size).toBeGreaterThan(3);
    expect(polls).toBeGreaterThan(20);
    // The temporary manifest never lingers.
    expect(existsSync(join(dir, 'views', 'manifest.json.tmp'))).toBe(false);
  }, 90_000);
});

describe('BatchScheduler', () => {
  it('runNow starts one run at a time; status shows it, the manifest and the history', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    await append(fx, new GatewaySim('gw-a'), DAY0, 2, 200);
    await fx.close();
    scheduler = new BatchScheduler(options(dir));
    const run = await scheduler.runNow('api');
    expect(run.id).toBe(1);
    await expect(scheduler.runNow('api')).rejects.toMatchObject({ code: 'BRAID_ERR_BATCH_RUNNING', statusCode: 409 });
    const during = await scheduler.status();
    expect(during.running).toMatchObject({ id: 1, trigger: 'api' });
    await run.done;
    const after = await scheduler.status();
    expect(after.running).toBeNull();
    expect(after.manifest).toMatchObject({ version: 1, watermark: { 'gw-a': 1 } });
    expect(after.runs[0]).toMatchObject({ id: 1, outcome: 'ok', kind: 'full', trigger: 'api', version: 1, partitions: 2, rowsRead: 400, watermark: { 'gw-a': 1 } });
  });

  it('runs on its cron schedule (UTC) and close() stops it', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    await append(fx, new GatewaySim('gw-a'), DAY0, 1, 50);
    await fx.close();
    scheduler = new BatchScheduler(options(dir, { cron: '* * * * * *' }));
    scheduler.start();
    expect((await scheduler.status()).schedule.nextRunAt).not.toBeNull();
    const deadline = Date.now() + 10_000;
    let runs = (await scheduler.status()).runs;
    while (!runs.some((r) => r.trigger === 'cron' && r.outcome === 'ok') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      runs = (await scheduler.status()).runs;
    }
    expect(runs.find((r) => r.trigger === 'cron')).toMatchObject({ outcome: 'ok', version: 1 });
    await scheduler.close();
    await expect(scheduler.runNow('api')).rejects.toMatchObject({ code: 'BRAID_ERR_CLOSED' });
  });

  it('close() aborts the run in progress and releases the lock', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    await append(fx, new GatewaySim('gw-a'), DAY0, 5, 500);
    await fx.close();
    scheduler = new BatchScheduler(options(dir));
    const run = await scheduler.runNow('api');
    await scheduler.close();
    await expect(run.done).rejects.toMatchObject({ code: 'BRAID_ERR_BATCH_ABORTED' });
    expect(existsSync(join(dir, 'batch.lock'))).toBe(false);
    expect(existsSync(join(dir, 'views', 'manifest.json'))).toBe(false);
    // The next run starts clean.
    const r = await (await startBatchRun(options(dir), { trigger: 'cli' })).done;
    expect(r.version).toBe(1);
  });

  it('a bad cron expression is a config error naming the key', () => {
    expect(() => new BatchScheduler(options('/nonexistent', { cron: 'every night' }))).toThrow(expect.objectContaining({ code: 'BRAID_ERR_CONFIG_INVALID' }));
  });

  it('a sink added later gets every live day, and one left out of a run misses nothing', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    const g = new GatewaySim('gw-a');
    await append(fx, g, DAY0, 3, 50);
    await (await startBatchRun(options(dir), { trigger: 'cli' })).done;
    const got: string[][] = [];
    const sink: ViewSink = { name: 'late', async write(c) { got.push(c.days); return { points: 1 }; } };
    await (await startBatchRun(options(dir), { trigger: 'cli' }, { sinks: [sink] })).done;
    expect(got).toEqual([['2024-11-20', '2024-11-21', '2024-11-22']]);
    await append(fx, g, DAY0 + 5 * DAY_MS, 1, 50);
    await (await startBatchRun(options(dir), { trigger: 'cli' })).done; // without the sink
    await append(fx, g, DAY0 + 6 * DAY_MS, 1, 50);
    await (await startBatchRun(options(dir), { trigger: 'cli' }, { sinks: [sink] })).done;
    expect(got[1]).toEqual(['2024-11-25', '2024-11-26']);
    await fx.close();
  });
});

describe('REST routes', () => {
  it('POST /api/v1/batch/run answers 202 with the run id, 409 while it runs (admin only); GET shows it (read key)', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    await append(fx, new GatewaySim('gw-a'), DAY0, 2, 100);
    await fx.close();
    scheduler = new BatchScheduler(options(dir));
    app = Fastify();
    const roles: string[] = [];
    // The role check as Authenticator.requireRole does it: admin implies read.
    const admits = { read: ['Bearer read-key', 'Bearer admin-key'], admin: ['Bearer admin-key'] };
    registerBatchRoutes(app, {
      scheduler,
      auth: (role) => async (req, reply) => {
        roles.push(`${req.method} ${req.url}: ${role}`);
        if (!admits[role].includes(req.headers.authorization ?? '')) await reply.code(403).send({ code: 'BRAID_ERR_FORBIDDEN', message: `needs ${role}` });
      },
    });
    // A real server on port 0 (light-my-request's inject does not load under jest's ESM mode).
    await app.listen({ port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    const call = async (method: string, path: string, key: string, body?: unknown) => {
      const res = await fetch(`${base}${path}`, {
        method, headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { statusCode: res.status, json: await res.json() as Record<string, unknown> };
    };
    expect((await call('POST', '/api/v1/batch/run', 'read-key')).statusCode).toBe(403);
    const started = await call('POST', '/api/v1/batch/run', 'admin-key');
    expect(started.statusCode).toBe(202);
    expect(started.json).toMatchObject({ id: 1, trigger: 'api', kind: 'incremental' });
    const again = await call('POST', '/api/v1/batch/run', 'admin-key', { full: true });
    expect(again.statusCode).toBe(409);
    expect(again.json).toMatchObject({ code: 'BRAID_ERR_BATCH_RUNNING' });
    expect((await call('POST', '/api/v1/batch/run', 'admin-key', { full: 'yes' })).statusCode).toBe(400);
    await scheduler.running?.done;
    const status = await call('GET', '/api/v1/batch', 'read-key');
    expect(status.statusCode).toBe(200);
    expect(status.json).toMatchObject({ running: null, manifest: { version: 1 }, runs: [{ id: 1, outcome: 'ok', kind: 'full' }] });
    expect(await call('GET', '/api/v1/batch', 'admin-key')).toEqual(status);
    // The route asks for the role: read to look, admin to act.
    expect(new Set(roles)).toEqual(new Set(['POST /api/v1/batch/run: admin', 'GET /api/v1/batch: read']));
  });
});

describe('braid batch run', () => {
  const braid = (args: string[]) => new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [join(process.cwd(), 'bin/braid.js'), ...args], { env: { ...process.env, BRAID_LOG_LEVEL: 'warn' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b) => { stdout += b; });
    child.stderr.on('data', (b) => { stderr += b; });
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });

  it('runs once, --full gives the same rows, and a held lock is BRAID_ERR_BATCH_RUNNING', async () => {
    const dir = await tempDir();
    const fx = await MasterFixture.open(dir);
    await append(fx, new GatewaySim('gw-a'), DAY0, 2, 100);
    await fx.close();
    // --no-progress: a run past 1 s (a loaded machine) prints progress lines on stderr, which must
    // otherwise be empty (no warning, no error).
    const first = await braid(['batch', 'run', '--no-progress', '--data-dir', dir]);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/batch run 1 ok \(full\): version 1 published; 2 days rebuilt, 200 master rows read/);
    const before = await readViews(dir);
    const full = await braid(['batch', 'run', '--full', '--json', '--data-dir', dir]);
    expect(full.code).toBe(0);
    expect(JSON.parse(full.stdout)).toMatchObject({ kind: 'full', version: 2, days: ['2024-11-20', '2024-11-21'] });
    expect(sameViews(await readViews(dir), before)).toEqual([]);

    await writeFile(join(dir, 'batch.lock'), JSON.stringify({ pid: process.pid, startedAt: Date.now() }));
    const locked = await braid(['batch', 'run', '--data-dir', dir]);
    expect(locked.code).toBe(1);
    expect(locked.stderr).toContain('[BRAID_ERR_BATCH_RUNNING]');
    expect(statSync(join(dir, 'batch.lock')).isFile()).toBe(true);
  }, 90_000);

  it('rejects a bad config value naming the key', async () => {
    const r = await braid(['batch', 'run', '--memory-limit', 'lots', '--data-dir', await tempDir()]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('batch.memoryLimit');
  });
});
