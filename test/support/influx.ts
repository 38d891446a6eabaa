/**
 * Test support: real InfluxDB 1.6.7 (`influxd`, Debian package influxdb) and VictoriaMetrics
 * (`victoria-metrics`, Debian package victoria-metrics) on free 127.0.0.1 ports in temp dirs,
 * and a read back of what each holds. Use requireBinary() first: a missing binary skips, but
 * fails under CI=true.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { tempDir } from './gateway.js';

export interface TestServer {
  url: string;
  dir: string;
  /** What the process wrote, for a failing test's message. */
  output: () => string;
  /** The server's process id (for the benchmarks' RSS and CPU figures). */
  pid: number;
  stop: () => Promise<void>;
}

/** A port nobody listens on right now (bound, then released). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address() as { port: number };
  srv.close();
  await once(srv, 'close');
  return port;
}

async function waitFor(url: string, status: number, proc: ChildProcess, output: () => string, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`server exited (${proc.exitCode}) before ${url} answered:\n${output()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === status) return;
    } catch { /* not listening yet */ }
    if (Date.now() > until) throw new Error(`${url} did not answer ${status} in ${timeoutMs} ms:\n${output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function startProcess(cmd: string, args: string[], probe: (url: string) => string, probeStatus: number, port: number, dir: { path: string; remove: () => void }): Promise<TestServer> {
  const proc = spawn(cmd, args, { cwd: dir.path, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (b: Buffer) => { out = (out + b.toString()).slice(-8000); };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = once(proc, 'exit');
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    dir.remove();
  };
  try {
    await waitFor(probe(url), probeStatus, proc, () => out);
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, dir: dir.path, output: () => out, pid: proc.pid!, stop };
}

/** influxd 1.6.7 with its own config: loopback only, no reporting, no _internal monitor, HTTP on a free port. */
export async function startInfluxd(): Promise<TestServer> {
  const dir = tempDir('braid-influxd-');
  const [http, rpc] = [await freePort(), await freePort()];
  const conf = join(dir.path, 'influxdb.conf');
  writeFileSync(conf, [
    'reporting-disabled = true',
    `bind-address = "127.0.0.1:${rpc}"`,
    '[meta]', `  dir = "${join(dir.path, 'meta')}"`,
    '[data]', `  dir = "${join(dir.path, 'data')}"`, `  wal-dir = "${join(dir.path, 'wal')}"`, '  query-log-enabled = false',
    '[monitor]', '  store-enabled = false',
    '[http]', `  bind-address = "127.0.0.1:${http}"`, '  log-enabled = false',
    '[admin]', '  enabled = false',
    '[[udp]]', '  enabled = false',
    '[continuous_queries]', '  enabled = false',
    '',
  ].join('\n'));
  return startProcess('influxd', ['-config', conf], (u) => `${u}/ping`, 204, http, dir);
}

/**
 * victoria-metrics with -retentionPeriod 100y (the default month would drop older buckets without an
 * error) and -dedup.minScrapeInterval=1ms: without it a point sent again is stored twice; with it the
 * samples of one series and millisecond collapse into one, so a rerun converges.
 */
export async function startVictoriaMetrics(): Promise<TestServer> {
  const dir = tempDir('braid-vm-');
  const port = await freePort();
  return startProcess('victoria-metrics', [
    `-storageDataPath=${join(dir.path, 'data')}`, `-httpListenAddr=127.0.0.1:${port}`,
    '-retentionPeriod=100y', '-dedup.minScrapeInterval=1ms', '-loggerLevel=ERROR',
  ], (u) => `${u}/health`, 200, port, dir);
}

/** A read-back point: tags, time (epoch ms) and numeric fields. */
export interface StoredPoint {
  tags: Record<string, string>;
  ts: number;
  fields: Record<string, number>;
}

/** InfluxDB 1.x: `SELECT * FROM "<view>" GROUP BY *` through /query, times in ms. */
export async function readInfluxd(url: string, database: string, measurement: string): Promise<StoredPoint[]> {
  const q = new URLSearchParams({ db: database, epoch: 'ms', q: `SELECT * FROM "${measurement}" GROUP BY *` });
  const res = await fetch(`${url}/query?${q}`);
  const body = await res.json() as { results: { error?: string; series?: { tags?: Record<string, string>; columns: string[]; values: unknown[][] }[] }[] };
  if (!res.ok || body.results[0]?.error) throw new Error(`query failed: ${res.status} ${JSON.stringify(body)}`);
  const out: StoredPoint[] = [];
  for (const s of body.results[0]?.series ?? []) {
    for (const row of s.values) {
      const fields: Record<string, number> = {};
      s.columns.forEach((c, i) => { if (c !== 'time' && row[i] !== null) fields[c] = row[i] as number; });
      out.push({ tags: s.tags ?? {}, ts: row[0] as number, fields });
    }
  }
  return out;
}

/**
 * VictoriaMetrics keeps a line-protocol field as the series `<measurement>_<field>` with the tags as
 * labels; /api/v1/export gives the raw samples (after /internal/force_flush makes recent ones
 * searchable). Here they are folded back into points.
 */
export async function readVictoriaMetrics(url: string, measurement: string): Promise<StoredPoint[]> {
  await (await fetch(`${url}/internal/force_flush`)).arrayBuffer();
  const res = await fetch(`${url}/api/v1/export`, {
    method: 'POST', body: new URLSearchParams({ 'match[]': `{__name__=~"${measurement}_.+"}` }),
  });
  if (!res.ok) throw new Error(`export failed: ${res.status} ${await res.text()}`);
  const points = new Map<string, StoredPoint>();
  for (const line of (await res.text()).split('\n')) {
    if (!line.trim()) continue;
    const s = JSON.parse(line) as { metric: Record<string, string>; values: number[]; timestamps: number[] };
    const { __name__: name, ...tags } = s.metric;
    const field = name.slice(measurement.length + 1);
    s.timestamps.forEach((ts, i) => {
      const key = JSON.stringify([Object.entries(tags).sort(), ts]);
      const p = points.get(key) ?? { tags, ts, fields: {} };
      if (field in p.fields) throw new Error(`${name} has two samples at ${ts}: not deduplicated`);
      p.fields[field] = s.values[i];
      points.set(key, p);
    });
  }
  return [...points.values()];
}
