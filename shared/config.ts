/**
 * Configuration loading for every long-running command: defaults < config file (JSON) < BRAID_*
 * environment < flags. Validated once with a zod schema; a bad value or an unknown key is a
 * ConfigInvalidError whose message names the key and where it came from.
 *
 * Environment names are derived from the key path: `mqtt.port` is BRAID_MQTT_PORT,
 * `outbox.maxBytes` is BRAID_OUTBOX_MAX_BYTES; the value `null` sets a nullable key to null.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigInvalidError } from './errors.js';

type Source = 'file' | 'env' | 'flag';
type Obj = Record<string, unknown>;

export function envName(path: string[], prefix = 'BRAID'): string {
  return [prefix, ...path.map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase())].join('_');
}

/** Unwrap optional/default/nullable wrappers to the schema that says what a leaf is. */
function inner(schema: z.ZodType): z.ZodType {
  let s: z.ZodType = schema;
  for (let i = 0; i < 10; i++) {
    const def = (s as unknown as { def: { type: string; innerType?: z.ZodType } }).def;
    if (def.innerType && ['optional', 'default', 'nullable', 'prefault', 'readonly', 'catch'].includes(def.type)) s = def.innerType;
    else break;
  }
  return s;
}

function kind(schema: z.ZodType): string {
  return (inner(schema) as unknown as { def: { type: string } }).def.type;
}

function shapeOf(schema: z.ZodType): Record<string, z.ZodType> | undefined {
  const s = inner(schema);
  return kind(s) === 'object' ? (s as z.ZodObject).shape as Record<string, z.ZodType> : undefined;
}

/** Every leaf key path of an object schema. */
export function leafPaths(schema: z.ZodType, prefix: string[] = []): Array<{ path: string[]; schema: z.ZodType }> {
  const shape = shapeOf(schema);
  if (!shape) return [{ path: prefix, schema }];
  return Object.entries(shape).flatMap(([k, v]) => leafPaths(v, [...prefix, k]));
}

/** Turn an environment string into the leaf's type; strings that do not fit are left for zod to reject. */
function coerce(text: string, schema: z.ZodType): unknown {
  // `null` turns off a nullable key (BRAID_BATCH_CRON=null); zod names the key if it is not nullable.
  if (text.trim().toLowerCase() === 'null') return null;
  const k = kind(schema);
  if (k === 'number' && text.trim() !== '' && Number.isFinite(Number(text))) return Number(text);
  if (k === 'boolean') {
    if (/^(1|true|yes|on)$/i.test(text)) return true;
    if (/^(0|false|no|off)$/i.test(text)) return false;
  }
  if (k === 'array' || k === 'object' || k === 'record') {
    try { return JSON.parse(text); } catch { return text; }
  }
  if (text === '' && (schema as unknown as { def: { type: string } }).def.type !== 'string') return undefined;
  return text;
}

function setPath(target: Obj, path: string[], value: unknown): void {
  let o = target;
  for (const p of path.slice(0, -1)) {
    if (typeof o[p] !== 'object' || o[p] === null) o[p] = {};
    o = o[p] as Obj;
  }
  o[path[path.length - 1]] = value;
}

function deepMerge(a: Obj, b: Obj): Obj {
  const out: Obj = { ...a };
  for (const [k, v] of Object.entries(b)) {
    if (v === undefined) continue;
    const prev = out[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && prev && typeof prev === 'object' && !Array.isArray(prev)
      ? deepMerge(prev as Obj, v as Obj)
      : v;
  }
  return out;
}

export interface ConfigSources {
  /** Path of a JSON config file, if any. */
  file?: string;
  /** The environment to read BRAID_* from (process.env by default). */
  env?: NodeJS.ProcessEnv;
  /** Values from command-line flags, as key paths (`{ mqtt: { port: 1884 } }`). */
  flags?: Obj;
}

/** Where a key's value came from, for error messages. */
function origin(path: string[], layers: Array<[Source, Obj]>): string {
  for (const [src, obj] of [...layers].reverse()) {
    let o: unknown = obj;
    for (const p of path) o = o && typeof o === 'object' ? (o as Obj)[p] : undefined;
    if (o !== undefined) return src === 'env' ? `environment ${envName(path)}` : src === 'flag' ? 'command-line flag' : 'config file';
  }
  return 'default';
}

/** One bad key: its path and why, with where the value came from. */
export interface ConfigProblem {
  key: string;
  message: string;
}

export interface ConfigValidation<T> {
  /** The configuration, when every key is valid. */
  config: T | null;
  /** Every schema problem, in key order of the issues zod found (empty when `config` is set). */
  problems: ConfigProblem[];
  /**
   * With problems: the configuration with each bad key left at its default (unknown keys dropped),
   * when that parses, so cross-key checks (bin/commands/config-lint.ts) can still report the other
   * keys' problems in the same message. Never run with it.
   */
  fallback: T | null;
}

function deletePath(target: Obj, path: string[]): void {
  let o: unknown = target;
  for (const p of path.slice(0, -1)) {
    o = o && typeof o === 'object' ? (o as Obj)[p] : undefined;
    if (!o || typeof o !== 'object') return;
  }
  if (path.length) delete (o as Obj)[path[path.length - 1]];
}

function problemsOf(error: z.ZodError, layers: Array<[Source, Obj]>): { problems: ConfigProblem[]; paths: string[][] } {
  const problems: ConfigProblem[] = [];
  const paths: string[][] = [];
  for (const issue of error.issues) {
    const base = issue.path.map(String);
    const unknown = issue.code === 'unrecognized_keys' ? (issue as { keys?: string[] }).keys ?? [] : null;
    for (const path of unknown ? unknown.map((k) => [...base, k]) : [base]) {
      const key = path.join('.') || '(root)';
      const what = unknown ? 'unknown key' : issue.message;
      problems.push({ key, message: `config key "${key}": ${what} (from ${origin(path, layers)})` });
      paths.push(path);
    }
  }
  return { problems, paths };
}

/** Load, merge and validate a configuration, collecting every bad key instead of stopping at the first. */
export function validateConfig<S extends z.ZodObject>(schema: S, sources: ConfigSources = {}): ConfigValidation<z.infer<S>> {
  const layers: Array<[Source, Obj]> = [];
  if (sources.file) {
    let text: string;
    try {
      text = readFileSync(sources.file, 'utf8');
    } catch (err) {
      throw new ConfigInvalidError(`config file ${sources.file}: cannot read it (${(err as Error).message})`, { cause: err });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new ConfigInvalidError(`config file ${sources.file}: not valid JSON (${(err as Error).message})`, { cause: err });
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new ConfigInvalidError(`config file ${sources.file}: must hold a JSON object`);
    }
    layers.push(['file', parsed as Obj]);
  }
  const env = sources.env ?? process.env;
  const fromEnv: Obj = {};
  for (const leaf of leafPaths(schema)) {
    const text = env[envName(leaf.path)];
    if (text !== undefined) setPath(fromEnv, leaf.path, coerce(text, leaf.schema));
  }
  layers.push(['env', fromEnv]);
  layers.push(['flag', sources.flags ?? {}]);

  const merged = layers.reduce<Obj>((acc, [, obj]) => deepMerge(acc, obj), {});
  const result = schema.safeParse(merged);
  if (result.success) return { config: result.data, problems: [], fallback: null };
  const { problems, paths } = problemsOf(result.error, layers);
  const rest = structuredClone(merged);
  for (const path of paths) deletePath(rest, path);
  const again = schema.safeParse(rest);
  return { config: null, problems, fallback: again.success ? again.data : null };
}

/** Several problems as one message: the first as it always read, the others after it. */
export function problemsMessage(problems: ReadonlyArray<{ message: string }>): string {
  if (problems.length === 1) return problems[0].message;
  return `${problems.length} config errors: ${problems.map((p) => p.message).join('; ')}`;
}

/** Load, merge and validate a configuration. Throws ConfigInvalidError naming every bad key. */
export function loadConfig<S extends z.ZodObject>(schema: S, sources: ConfigSources = {}): z.infer<S> {
  const v = validateConfig(schema, sources);
  if (v.config) return v.config;
  throw new ConfigInvalidError(problemsMessage(v.problems));
}
