/**
 * Test support: a gateway in its own process (`node bin/braid.js gateway`), so a test can SIGKILL
 * or SIGTERM it and start another on the same data dir. Loopback, free ports, config through the
 * CLI's flags and BRAID_* environment overrides.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import sqlite3 from 'sqlite3';
import { DeviceRegistry } from '../../edge/registry/index.js';
import { Db } from '../../shared/sqlite.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(ROOT, 'bin', 'braid.js');
const READY_RE = /^gateway (\S+) ready: mqtt:\/\/([^:\s]+):(\d+) http:\/\/([^:\s]+):(\d+)$/m;

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ChildGateway {
  proc: ChildProcess;
  id: string;
  dataDir: string;
  mqttUrl: string;
  httpUrl: string;
  /** Resolves when the process has exited (never rejects). */
  exited: Promise<ChildExit>;
  /** stdout and stderr so far, for failure messages. */
  output: () => string;
  /** Send `signal` and wait for the exit. */
  stop: (signal: NodeJS.Signals) => Promise<ChildExit>;
}

export interface SpawnGatewayOptions {
  dataDir: string;
  id?: string;
  /** BRAID_* overrides, e.g. { BRAID_OUTBOX_EPOCH_IDLE_MS: '200' }. */
  env?: Record<string, string>;
  /** More `braid gateway` flags, e.g. ['--token-file', f]. */
  args?: string[];
  readyTimeoutMs?: number;
}

const live = new Set<ChildProcess>();

/** Start `braid gateway` on free loopback ports; resolves once it printed its ready line. */
export function spawnGateway(opts: SpawnGatewayOptions): Promise<ChildGateway> {
  const id = opts.id ?? 'gw-child';
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    // jest's --experimental-vm-modules is for jest, not for the gateway under test.
    NODE_OPTIONS: '',
    BRAID_MQTT_HOST: '127.0.0.1',
    BRAID_HTTP_HOST: '127.0.0.1',
    ...opts.env,
  };
  const proc = spawn(process.execPath, [BIN, 'gateway', '--data-dir', opts.dataDir, '--id', id, '--mqtt-port', '0', '--http-port', '0', '--log-level', 'warn', ...(opts.args ?? [])], {
    cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(proc);
  let out = '';
  proc.stdout!.setEncoding('utf8').on('data', (s: string) => { out += s; });
  proc.stderr!.setEncoding('utf8').on('data', (s: string) => { out += s; });
  const exited = new Promise<ChildExit>((resolve) => {
    proc.once('exit', (code, signal) => {
      live.delete(proc);
      resolve({ code, signal });
    });
  });
  const stop = async (signal: NodeJS.Signals) => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    return exited;
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`gateway did not get ready in ${opts.readyTimeoutMs ?? 15000} ms:\n${out}`));
    }, opts.readyTimeoutMs ?? 15000);
    const onData = () => {
      const m = READY_RE.exec(out);
      if (!m) return;
      clearTimeout(timer);
      proc.stdout!.off('data', onData);
      resolve({
        proc, id, dataDir: opts.dataDir, exited, stop,
        mqttUrl: `mqtt://${m[2]}:${m[3]}`,
        httpUrl: `http://${m[4]}:${m[5]}`,
        output: () => out,
      });
    };
    proc.stdout!.on('data', onData);
    void exited.then((e) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited before ready (code ${e.code}, signal ${e.signal}):\n${out}`));
    });
  });
}

/** SIGKILL every child gateway still running (afterEach). */
export async function killAllChildGateways(): Promise<void> {
  const procs = [...live];
  await Promise.all(procs.map((p) => new Promise<void>((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) return resolve();
    p.once('exit', () => resolve());
    p.kill('SIGKILL');
  })));
}

/** Register devices in `<dataDir>/registry.db` (what `braid device add` does; safe while a gateway runs). */
export async function addDevices(dataDir: string, devices: Array<[id: string, secret: string]>): Promise<void> {
  const reg = await DeviceRegistry.open(dataDir);
  try {
    for (const [id, secret] of devices) await reg.add(id, secret);
  } finally {
    await reg.close();
  }
}

/** Run one query on `<dataDir>/gateway.db` on a read-only connection of its own. */
export async function queryGatewayDb<T>(dataDir: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const db = await Db.open(join(dataDir, 'gateway.db'), sqlite3.OPEN_READONLY);
  try {
    await db.exec('PRAGMA busy_timeout = 10000');
    return await db.all<T>(sql, params);
  } finally {
    await db.close();
  }
}

/** `braid device add <id> --secret S --data-dir D` in a process of its own; resolves with the secret it printed last. */
export function addDeviceCli(dataDir: string, id: string, secret: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [BIN, 'device', 'add', id, '--secret', secret, '--data-dir', dataDir], {
      cwd: ROOT, env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    proc.stdout.setEncoding('utf8').on('data', (s: string) => { out += s; });
    proc.stderr.setEncoding('utf8').on('data', (s: string) => { out += s; });
    proc.once('error', reject);
    proc.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`braid device add ${id} exited ${code}:\n${out}`));
      resolve(out.trimEnd().split('\n').pop()!);
    });
  });
}
