/**
 * Test support for alerts: a real Prometheus Alertmanager (Debian `prometheus-alertmanager`) on a
 * free loopback port with a temp config and storage dir, clustering off; speed pushes of readings
 * in the current minute as a gateway sends them; the alert routes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { eventually, requireBinary, tempDir } from '../support/gateway.js';

export const ALERTMANAGER_BIN = '/usr/bin/prometheus-alertmanager';

/** Whether Alertmanager is installed: a visible skip otherwise, a failure under CI=true. */
export const haveAlertmanager = (): boolean => requireBinary('prometheus-alertmanager', 'prometheus-alertmanager');

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

export interface TestAlertmanager {
  url: string;
  /** GET /api/v2/alerts: the alerts it holds (active ones, and resolved ones it has not dropped yet). */
  alerts(): Promise<Array<{ labels: Record<string, string>; annotations: Record<string, string>; startsAt: string; endsAt: string; status: { state: string } }>>;
  stop(): Promise<void>;
}

export async function startAlertmanager(o: { port?: number } = {}): Promise<TestAlertmanager> {
  const dir = tempDir('braid-alertmanager-');
  const port = o.port ?? await freePort();
  const config = join(dir.path, 'alertmanager.yml');
  writeFileSync(config, 'route:\n  receiver: none\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: none\n');
  const proc: ChildProcess = spawn(ALERTMANAGER_BIN, [
    `--config.file=${config}`, `--storage.path=${join(dir.path, 'data')}`, `--web.listen-address=127.0.0.1:${port}`,
    '--cluster.listen-address=', '--log.level=warn',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
  const url = `http://127.0.0.1:${port}`;
  try {
    await eventually(async () => {
      if (proc.exitCode !== null) throw new Error(`alertmanager exited ${proc.exitCode}: ${stderr}`);
      const res = await fetch(`${url}/-/ready`).catch((e: Error & { cause?: Error }) => { throw new Error(`${e.message}: ${e.cause?.message}`); });
      if (!res.ok) throw new Error(`not ready: ${res.status}`);
      return true;
    }, 20_000, 100);
  } catch (err) {
    proc.kill('SIGKILL');
    (err as Error).message += `; alertmanager's stderr: ${stderr.slice(-2000)}`;
    dir.remove();
    throw err;
  }
  return {
    url,
    alerts: async () => (await (await fetch(`${url}/api/v2/alerts`)).json()) as Awaited<ReturnType<TestAlertmanager['alerts']>>,
    stop: async () => {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await exited;
      }
      dir.remove();
    },
  };
}

/**
 * A speed partial of `values` read by `device` in the minute of `at` (epoch ms), in the push tuple
 * format (device, metric, minute, epoch, count, sum, min, max, m2, first, firstTs, last, lastTs):
 * the readings one second apart from the minute's start.
 */
export function partialOf(device: string, metric: string, at: number, epoch: number, values: number[]): unknown[] {
  const minute = Math.floor(at / 60_000) * 60_000;
  const n = values.length;
  const sum = values.reduce((a, b) => a + b, 0);
  const mean = sum / n;
  const m2 = values.reduce((a, v) => a + (v - mean) ** 2, 0);
  return [device, metric, minute, epoch, n, sum, Math.min(...values), Math.max(...values), m2, values[0], minute + 1000, values[n - 1], minute + n * 1000];
}

/** PUT /api/v1/alerts/rules. */
export async function putRules(url: string, key: string | null, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${url}/api/v1/alerts/rules`, {
    method: 'PUT', headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) }, body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

export interface AlertEntry { rule: string; scope: Record<string, unknown>; state: string; since: string; value: number | null }

export async function listAlerts(url: string, key: string): Promise<AlertEntry[]> {
  const res = await fetch(`${url}/api/v1/alerts`, { headers: { authorization: `Bearer ${key}` } });
  if (!res.ok) throw new Error(`GET /api/v1/alerts: ${res.status}`);
  return ((await res.json()) as { alerts: AlertEntry[] }).alerts;
}

export async function alertHistory(url: string, key: string, q = ''): Promise<Array<{ rule: string; scope: Record<string, unknown>; from: string | null; to: string; at: string; value: number | null }>> {
  const res = await fetch(`${url}/api/v1/alerts/history${q}`, { headers: { authorization: `Bearer ${key}` } });
  if (!res.ok) throw new Error(`GET /api/v1/alerts/history: ${res.status}`);
  return ((await res.json()) as { history: Array<{ rule: string; scope: Record<string, unknown>; from: string | null; to: string; at: string; value: number | null }> }).history;
}

/** A metric's value from a /metrics text (0 when absent); `labels` as written in the exposition (`result="sent"`). */
export function metricValue(text: string, name: string, labels = ''): number {
  const re = new RegExp(`^${name}${labels ? `\\{${labels.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\}` : ''} (\\S+)$`, 'm');
  const m = re.exec(text);
  return m ? Number(m[1]) : 0;
}
