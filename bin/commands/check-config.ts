/**
 * `--check-config` of `braid gateway`, `braid cloud` and `braid batch run`: load the configuration
 * exactly as the run would (the same function, the same file, environment and flags), lint it, print
 * it and exit, starting nothing and touching no data. systemd's ExecStartPre runs it, so a bad
 * config fails the unit with a message in the journal instead of a crash loop.
 *
 * stdout: the effective configuration as JSON, secrets redacted (so `> effective.json` works), or
 * with --json one object `{ok, config, findings, sources}`. stderr: the findings and `config OK`.
 * Exit 0 when there is no error (warnings allowed), 2 otherwise.
 */
import { totalmem } from 'node:os';
import { Option } from 'commander';
import { z } from 'zod';
import { envName, leafPaths, loadConfig, problemsMessage, validateConfig } from '../../shared/config.js';
import { ConfigInvalidError } from '../../shared/errors.js';
import { compact } from './common.js';
import { lintConfig, type Finding, type Rule } from './config-lint.js';

/** How a redacted secret shows: that it is set, never what it is. */
export const REDACTED = '[set]';

type Obj = Record<string, unknown>;

export interface CheckConfigSources {
  file?: string;
  /** The flag values as key paths, undefined where a flag was not given (as passed to configFrom). */
  flags: Obj;
  env?: NodeJS.ProcessEnv;
}

export interface CheckResult {
  ok: boolean;
  config: Obj | null;
  findings: Finding[];
  sources: { file: string | null; env: string[]; flags: string[] };
  error?: string;
}

function getPath(o: unknown, path: string[]): unknown {
  let v = o;
  for (const p of path) v = v && typeof v === 'object' ? (v as Obj)[p] : undefined;
  return v;
}

function setPath(o: Obj, path: string[], value: unknown): void {
  let t = o;
  for (const p of path.slice(0, -1)) t = t[p] as Obj;
  t[path[path.length - 1]] = value;
}

/**
 * A URL's password shows as [set], so a `https://user:pw@host` in cloud.url or influx.url does not
 * leak; in a comma-separated list (cloud.url's nodes) each URL's.
 */
function redactUrl(value: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) return value;
  if (value.includes(',')) return value.split(',').map(redactOneUrl).join(',');
  return redactOneUrl(value);
}

function redactOneUrl(value: string): string {
  try {
    const u = new URL(value);
    if (!u.password) return value;
    u.password = REDACTED;
    return u.toString();
  } catch {
    return value;
  }
}

/** A deep copy of `config` with the keys the schema marks `secret` replaced by [set] (null stays null). */
export function redactConfig(schema: z.ZodObject, config: Obj): Obj {
  const out = structuredClone(config);
  for (const leaf of leafPaths(schema)) {
    const value = getPath(out, leaf.path);
    const secret = (z.globalRegistry.get(leaf.schema) as { secret?: boolean } | undefined)?.secret === true;
    if (secret && value !== null && value !== undefined) setPath(out, leaf.path, REDACTED);
    else if (typeof value === 'string') setPath(out, leaf.path, redactUrl(value));
  }
  return out;
}

function flagPaths(o: Obj, prefix: string[] = []): string[] {
  return Object.entries(o).flatMap(([k, v]) => (v && typeof v === 'object' && !Array.isArray(v) ? flagPaths(v as Obj, [...prefix, k]) : [[...prefix, k].join('.')]));
}

/** Load and lint; never throws for a bad config (the result says why). */
export function runCheck<S extends z.ZodObject>(
  schema: S,
  rules: ReadonlyArray<Rule<z.infer<S>>>,
  load: () => z.infer<S>,
  sources: CheckConfigSources,
): CheckResult {
  const env = sources.env ?? process.env;
  const knownEnv = new Set(leafPaths(schema).map((l) => envName(l.path)));
  const used = {
    file: sources.file ?? null,
    env: [...knownEnv].filter((n) => env[n] !== undefined).sort(),
    flags: flagPaths(compact(sources.flags)),
  };
  let config: z.infer<S>;
  const ctx = { env, knownEnv, totalMemBytes: totalmem(), now: Date.now() };
  try {
    config = load();
  } catch (err) {
    if (!(err instanceof ConfigInvalidError)) throw err;
    return { ok: false, config: null, findings: [], sources: used, error: allProblems(schema, rules, sources, env, ctx) ?? err.message };
  }
  const findings = lintConfig(rules, config, ctx);
  return {
    ok: !findings.some((f) => f.level === 'error'),
    config: redactConfig(schema, config as Obj),
    findings,
    sources: used,
  };
}

/** A lint error as one line of a ConfigInvalidError, worded like a schema error. */
function findingLine(f: Finding): string {
  return `config key "${f.key}": ${f.message} (${f.rule})`;
}

/**
 * Every problem of a config the schema refused, in one message: the schema's (every bad key), then
 * the lint errors of the other keys, found on the config with the bad keys at their defaults.
 */
function allProblems<S extends z.ZodObject>(
  schema: S, rules: ReadonlyArray<Rule<z.infer<S>>>, sources: CheckConfigSources, env: NodeJS.ProcessEnv, ctx: Parameters<typeof lintConfig>[2],
): string | null {
  let v: ReturnType<typeof validateConfig<S>>;
  try {
    v = validateConfig(schema, { file: sources.file, env, flags: compact(sources.flags) });
  } catch {
    return null; // an unreadable file: the load's own message says it
  }
  if (!v.problems.length) return null;
  const bad = new Set(v.problems.map((p) => p.key));
  const more = v.fallback
    ? lintConfig(rules, v.fallback, ctx).filter((f) => f.level === 'error' && !bad.has(f.key)).map((f) => ({ message: findingLine(f) }))
    : [];
  return problemsMessage([...v.problems, ...more]);
}

/**
 * The configuration a long-running command runs with, checked before it opens anything: the schema
 * and the lint errors of --check-config, all in one ConfigInvalidError (exit 2; the systemd units do
 * not restart on it). Returns the lint warnings for the caller to log.
 */
export function configForRun<S extends z.ZodObject>(
  schema: S, rules: ReadonlyArray<Rule<z.infer<S>>>, sources: CheckConfigSources,
): { config: z.infer<S>; warnings: Finding[] } {
  let config: z.infer<S> | null = null;
  const env = sources.env ?? process.env;
  const load = () => (config = loadConfig(schema, { file: sources.file, env, flags: compact(sources.flags) }));
  const result = runCheck(schema, rules, load, sources);
  if (result.error !== undefined) throw new ConfigInvalidError(result.error);
  const errors = result.findings.filter((f) => f.level === 'error');
  if (errors.length) throw new ConfigInvalidError(problemsMessage(errors.map((f) => ({ message: findingLine(f) }))));
  return { config: config!, warnings: result.findings };
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/**
 * Print a check as the CLI does and set the exit code (0 ok, 2 bad config). A schema error without
 * --json is rethrown, so it reads exactly as it does when the real run stops on it.
 */
export function printCheck(result: CheckResult, o: { json?: boolean; command: string }): void {
  if (o.json) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } else if (result.error !== undefined) {
    throw new ConfigInvalidError(result.error);
  } else {
    process.stdout.write(`${JSON.stringify(result.config, null, 2)}\n`);
    const from = [
      result.sources.file ? `file ${result.sources.file}` : 'no config file',
      result.sources.env.length ? `environment ${result.sources.env.join(', ')}` : null,
      result.sources.flags.length ? `flags for ${result.sources.flags.join(', ')}` : null,
    ].filter(Boolean).join('; ');
    const lines = [`braid ${o.command}: config from defaults < ${from}`];
    for (const f of result.findings) lines.push(`${f.level} [${f.rule}] ${f.key}: ${f.message}`);
    const errors = result.findings.filter((f) => f.level === 'error').length;
    const warnings = result.findings.length - errors;
    lines.push(errors
      ? `config has ${plural(errors, 'error')}${warnings ? ` and ${plural(warnings, 'warning')}` : ''} (exit 2)`
      : `config OK${warnings ? ` (${plural(warnings, 'warning')})` : ''}`);
    process.stderr.write(`${lines.join('\n')}\n`);
  }
  if (!result.ok) process.exitCode = 2;
}

/**
 * printCheck, then for a PostgreSQL store.url the store itself (`braid cloud` and `braid batch run`):
 * connected to read only, its schema version against this code's (cloud/store/check.ts). Exit 1 when
 * it is out of reach, 2 when it is newer than this code or the config is bad, 0 otherwise.
 */
export async function printCheckWithStore(result: CheckResult, o: { json?: boolean; command: string }, storeUrl: () => string): Promise<void> {
  const url = (result.config as { store?: { url?: string } } | null)?.store?.url;
  if (!result.ok || url === undefined || url === 'sqlite') {
    printCheck(result, o);
    return;
  }
  const { checkStore } = await import('../../cloud/store/check.js');
  // The printed config has the password redacted; the check needs the real URL.
  const s = await checkStore(storeUrl());
  if (o.json) {
    process.stdout.write(`${JSON.stringify({ ...result, ok: result.ok && s.ok, store: s }, null, 2)}\n`);
  } else {
    printCheck(result, o);
    process.stderr.write(`store: ${s.message}\n`);
  }
  if (!s.ok) process.exitCode = s.exitCode;
}

/** The `--check-config [format]` flag: `--check-config` prints text, `--check-config json` one JSON object. */
export function checkConfigOption(): Option {
  return new Option('--check-config [format]', 'load and lint the configuration as a run would, print it (secrets redacted) and exit: 0 ok, 2 bad; format text (default) or json')
    .choices(['text', 'json']);
}

/** Whether --check-config was given, and as JSON (`--check-config json`, or `--json` where a command has it). */
export function checkMode(value: string | boolean | undefined, json?: boolean): { json: boolean } | null {
  if (value === undefined || value === false) return null;
  return { json: value === 'json' || json === true };
}
