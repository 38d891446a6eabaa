/**
 * Test support for the demo: `braid demo` (or `npm start`) in a child process, its printed lines
 * parsed, a clean stop by SIGINT, and a check that nothing it opened is still listening.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { connect } from 'node:net';

export interface DemoProcess {
  proc: ChildProcess;
  output: () => { stdout: string; stderr: string };
  /** Resolves with the value of each `Prefix: value` line once they are all printed. */
  lines: (prefixes: string[], timeoutMs: number) => Promise<Record<string, string>>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Every host:port the demo printed (cloud, MQTT, gateway REST). */
  ports: () => Array<{ host: string; port: number }>;
}

/** The environment without BRAID_* of the developer's shell and without jest's NODE_OPTIONS. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BRAID_') && k !== 'NODE_OPTIONS') env[k] = v;
  return { ...env, ...extra };
}

const live = new Set<ChildProcess>();

export function spawnDemo(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = cleanEnv()): DemoProcess {
  // Its own process group: a SIGKILL at teardown reaches `npm start`'s node child too.
  const proc = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  live.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stdout!.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
  proc.stderr!.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('close', (code, signal) => { live.delete(proc); resolve({ code, signal }); });
  });
  const lines = (prefixes: string[], timeoutMs: number) => new Promise<Record<string, string>>((resolve, reject) => {
    const find = () => {
      const out: Record<string, string> = {};
      for (const p of prefixes) {
        const m = new RegExp(`^${p}: (\\S+)$`, 'm').exec(stdout);
        if (!m) return null;
        out[p] = m[1];
      }
      return out;
    };
    const timer = setTimeout(() => { cleanup(); reject(new Error(`no ${prefixes.join('/')} lines in ${timeoutMs} ms:\n${stdout}\n${stderr}`)); }, timeoutMs);
    const onData = () => { const f = find(); if (f) { cleanup(); resolve(f); } };
    const onExit = () => { cleanup(); reject(new Error(`exited before printing ${prefixes.join('/')}:\n${stdout}\n${stderr}`)); };
    const cleanup = () => { clearTimeout(timer); proc.stdout!.off('data', onData); proc.off('close', onExit); };
    proc.stdout!.on('data', onData);
    proc.once('close', onExit);
    onData();
  });
  const ports = () => [...stdout.matchAll(/(?:http|mqtt):\/\/(127\.0\.0\.1):(\d+)/g)]
    .map((m) => ({ host: m[1], port: Number(m[2]) }))
    .filter((p, i, all) => all.findIndex((q) => q.port === p.port) === i);
  return { proc, output: () => ({ stdout, stderr }), lines, exited, ports };
}

/** Whether something accepts TCP connections on host:port. */
export function listening(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/** SIGKILL every demo still running, with its process group (afterAll). */
export async function killAllDemos(): Promise<void> {
  await Promise.all([...live].map((p) => new Promise<void>((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) return resolve();
    p.once('close', () => resolve());
    try { process.kill(-p.pid!, 'SIGKILL'); } catch { p.kill('SIGKILL'); }
  })));
}
