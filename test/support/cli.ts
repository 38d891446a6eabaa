/** `braid ...` as a child process of its own, for the CLI tests: stdout, stderr and the exit code. */
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');
export const BRAID = join(ROOT, 'bin/braid.js');

export interface CliRun { code: number | null; stdout: string; stderr: string }

/**
 * Run `braid <args>` from the repository root, with this process's environment less every
 * `BRAID_*` variable and NODE_OPTIONS (jest's), plus `env`; killed after `timeoutMs`.
 */
export function runBraid(args: string[], env: Record<string, string> = {}, timeoutMs = 20_000): Promise<CliRun> {
  const e: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BRAID_') && k !== 'NODE_OPTIONS') e[k] = v;
  const child = spawn(process.execPath, [BRAID, ...args], { cwd: ROOT, env: { ...e, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((res) => child.once('close', (code) => { clearTimeout(t); res({ code, stdout, stderr }); }));
}
