/** Shared by the deploy tests: the repository paths, the example configs, and `braid` as a child process. */
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');
export const DEPLOY = join(ROOT, 'deploy');
export const BRAID = join(ROOT, 'bin/braid.js');

export const readText = (path: string): string => readFileSync(join(ROOT, path), 'utf8');
export const readJson = <T = Record<string, unknown>>(path: string): T => JSON.parse(readText(path)) as T;

export interface Run { code: number | null; stdout: string; stderr: string }

/** The environment without BRAID_* (a developer's shell must not leak into a test) or jest's NODE_OPTIONS. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BRAID_') && k !== 'NODE_OPTIONS') env[k] = v;
  return { ...env, ...extra };
}

/** Run a command to its end (killed after `timeoutMs`: a check that starts a server instead would hang). */
export function run(file: string, args: string[], env: Record<string, string> = {}, timeoutMs = 20_000): Promise<Run> {
  return new Promise((res) => {
    execFile(file, args, { cwd: ROOT, env: cleanEnv(env), timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null) : 0;
      res({ code, stdout, stderr });
    });
  });
}

/** `node bin/braid.js ...` as an operator runs it. */
export const braid = (args: string[], env: Record<string, string> = {}): Promise<Run> => run(process.execPath, [BRAID, ...args], env);

/** Every leaf key path of a parsed JSON object ("mqtt.port"). */
export function jsonLeafPaths(o: unknown, prefix: string[] = []): string[] {
  if (o && typeof o === 'object' && !Array.isArray(o)) {
    return Object.entries(o as Record<string, unknown>).flatMap(([k, v]) => jsonLeafPaths(v, [...prefix, k]));
  }
  return [prefix.join('.')];
}

/** The variables an env file (systemd EnvironmentFile=, compose .env) sets, commented-out ones left out. */
export function envFile(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readText(path).split('\n')) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) out[m[1]] = m[2];
  }
  return out;
}

export type Unit = Record<string, Record<string, string[]>>;

/** systemd's unit syntax, as far as these files use it: sections, `Key=value`, repeated keys, comments. */
export function parseUnit(text: string): Unit {
  const unit: Unit = {};
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) { section = s[1]; unit[section] ??= {}; continue; }
    const eq = line.indexOf('=');
    const key = line.slice(0, eq);
    ((unit[section] ??= {})[key] ??= []).push(line.slice(eq + 1));
  }
  return unit;
}

const PROMQL_KEYWORDS = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'inf', 'nan']);

/**
 * The metric names a PromQL expression reads: what is left of it without strings, label matchers,
 * ranges, label lists (`by (...)`, `on (...)`), function names, keywords, numbers and Grafana's
 * `$variables`. Hand-written rather than a PromQL parser: enough for the rules and panels we ship,
 * and anything it cannot place comes out as a "name" the caller then fails to find.
 */
export function promqlMetricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names: string[] = [];
  for (const m of s.matchAll(/(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    if (PROMQL_KEYWORDS.has(m[0].toLowerCase())) continue;
    if (/^\s*\(/.test(s.slice(m.index + m[0].length))) continue; // a function or an aggregation
    names.push(m[0]);
  }
  return [...new Set(names)];
}
