/**
 * Alert rules (DESIGN.md "Alerts", docs/alerts.md): their validation, pure. Two kinds:
 * - threshold: `{"name","metric","agg","window","op","threshold","for"[,"device"|"gateway"]}`, an
 *   aggregate of the merged query over a window-aligned bucket compared to a threshold, true for
 *   `for` before it fires; no device or gateway: the fleet;
 * - silence: `{"name","silentFor"[,"device"|"gateway"]}`, a device or gateway the registry has not
 *   heard from for `silentFor`; neither named: every device the registry knows, each its own alert.
 * Every refusal is a BadRequestError whose message starts with the field's path (`rules[2].window: ...`).
 */
import { BadRequestError } from '../errors.js';
import { AGGS, type Agg } from '../summary.js';
import { parseDuration } from '../time.js';

export const OPS = ['>', '>=', '<', '<='] as const;
export type Op = (typeof OPS)[number];

interface RuleBase { name: string; device?: string; gateway?: string }
export interface ThresholdRule extends RuleBase { metric: string; agg: Agg; window: string; op: Op; threshold: number; for: string }
export interface SilenceRule extends RuleBase { silentFor: string }
export type AlertRule = ThresholdRule | SilenceRule;

/** A rule with its durations in ms, as the evaluator uses it. */
export type CompiledRule =
  | { kind: 'threshold'; rule: ThresholdRule; windowMs: number; forMs: number }
  | { kind: 'silence'; rule: SilenceRule; silentForMs: number };

/** Bounds of the durations, ms. */
export const RULE_BOUNDS = {
  /** A window is whole minutes (the merged query's finest bucket), 1m to 1d. */
  windowMin: 60_000, windowMax: 86_400_000,
  /** `for`: 0 (fires at the first evaluation that finds it true) to 1d. */
  forMax: 86_400_000,
  /** silentFor: 30s (devices' last-seen is kept to 5 s) to 30d. */
  silentMin: 30_000, silentMax: 30 * 86_400_000,
  /** Names, metrics, device and gateway ids: characters at most. */
  idMax: 256,
} as const;

const THRESHOLD_KEYS = new Set(['name', 'metric', 'agg', 'window', 'op', 'threshold', 'for', 'device', 'gateway']);
const SILENCE_KEYS = new Set(['name', 'silentFor', 'device', 'gateway']);

const bad = (path: string, msg: string) => new BadRequestError(`${path}: ${msg}`);
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function text(r: Record<string, unknown>, key: string, path: string, required: boolean): string | undefined {
  const v = r[key];
  if (v === undefined) {
    if (required) throw bad(`${path}.${key}`, 'required');
    return undefined;
  }
  if (typeof v !== 'string') throw bad(`${path}.${key}`, `must be a string, got ${JSON.stringify(v)}`);
  if (v.length === 0 || v.length > RULE_BOUNDS.idMax) throw bad(`${path}.${key}`, `must be 1 to ${RULE_BOUNDS.idMax} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f]/.test(v)) throw bad(`${path}.${key}`, 'must not contain control characters');
  return v;
}

/** `0`, `0s`... is 0; else parseDuration; the message names the path. */
function duration(v: string, path: string): number {
  if (/^0(ms|s|m|h|d)?$/.test(v.trim())) return 0;
  try {
    return parseDuration(v, path);
  } catch (err) {
    throw bad(path, `'${v}' is not a duration like 30s, 5m, 1h`);
  }
}

function within(ms: number, min: number, max: number, path: string, v: string): void {
  const f = (x: number) => (x === 0 ? '0s' : x % 86_400_000 === 0 ? `${x / 86_400_000}d` : x % 60_000 === 0 ? `${x / 60_000}m` : `${x / 1000}s`);
  if (ms < min || ms > max) throw bad(path, `'${v}' must be from ${f(min)} to ${f(max)}`);
}

/** Validate one rule; `path` is `rules[i]`. */
export function compileRule(raw: unknown, path: string): CompiledRule {
  if (!isObject(raw)) throw bad(path, 'must be an object');
  const name = text(raw, 'name', path, true)!;
  const device = text(raw, 'device', path, false);
  const gateway = text(raw, 'gateway', path, false);
  if (device !== undefined && gateway !== undefined) throw bad(`${path}.gateway`, 'give device or gateway (or neither, for the fleet), not both');
  const scope = { ...(device !== undefined ? { device } : {}), ...(gateway !== undefined ? { gateway } : {}) };
  if (raw.silentFor !== undefined) {
    for (const k of Object.keys(raw)) if (!SILENCE_KEYS.has(k)) throw bad(`${path}.${k}`, `not a field of a silence rule (${[...SILENCE_KEYS].join(', ')})`);
    const silentFor = text(raw, 'silentFor', path, true)!;
    const silentForMs = duration(silentFor, `${path}.silentFor`);
    within(silentForMs, RULE_BOUNDS.silentMin, RULE_BOUNDS.silentMax, `${path}.silentFor`, silentFor);
    return { kind: 'silence', rule: { name, silentFor, ...scope }, silentForMs };
  }
  for (const k of Object.keys(raw)) if (!THRESHOLD_KEYS.has(k)) throw bad(`${path}.${k}`, `not a field of a threshold rule (${[...THRESHOLD_KEYS].join(', ')}) or of a silence rule (silentFor)`);
  const metric = text(raw, 'metric', path, true)!;
  const agg = text(raw, 'agg', path, true)! as Agg;
  if (!AGGS.includes(agg)) throw bad(`${path}.agg`, `'${agg}' is not one of ${AGGS.join(', ')}`);
  const window = text(raw, 'window', path, true)!;
  const windowMs = duration(window, `${path}.window`);
  if (windowMs % 60_000 !== 0) throw bad(`${path}.window`, `'${window}' must be a whole number of minutes (the merged query's finest bucket is 1m)`);
  within(windowMs, RULE_BOUNDS.windowMin, RULE_BOUNDS.windowMax, `${path}.window`, window);
  const op = text(raw, 'op', path, true)! as Op;
  if (!OPS.includes(op)) throw bad(`${path}.op`, `'${op}' is not one of ${OPS.join(' ')}`);
  const threshold = raw.threshold;
  if (threshold === undefined) throw bad(`${path}.threshold`, 'required');
  if (typeof threshold !== 'number' || !Number.isFinite(threshold)) throw bad(`${path}.threshold`, `must be a finite number, got ${JSON.stringify(threshold)}`);
  const forText = text(raw, 'for', path, true)!;
  const forMs = duration(forText, `${path}.for`);
  within(forMs, 0, RULE_BOUNDS.forMax, `${path}.for`, forText);
  return { kind: 'threshold', rule: { name, metric, agg, window, op, threshold, for: forText, ...scope }, windowMs, forMs };
}

/** Validate a PUT body `{"rules":[...]}`: every rule, unique names, at most maxRules. */
export function compileRuleSet(body: unknown, maxRules: number): CompiledRule[] {
  if (!isObject(body)) throw bad('body', 'must be a JSON object {"rules":[...]}');
  for (const k of Object.keys(body)) if (k !== 'rules') throw bad(k, 'unknown field (the body is {"rules":[...]})');
  if (!Array.isArray(body.rules)) throw bad('rules', 'required, an array');
  if (body.rules.length > maxRules) throw bad('rules', `${body.rules.length} rules, more than alerts.maxRules (${maxRules})`);
  const seen = new Map<string, number>();
  return body.rules.map((r, i) => {
    const c = compileRule(r, `rules[${i}]`);
    const first = seen.get(c.rule.name);
    if (first !== undefined) throw bad(`rules[${i}].name`, `'${c.rule.name}' is already the name of rules[${first}]; names are unique`);
    seen.set(c.rule.name, i);
    return c;
  });
}

export function compare(value: number, op: Op, threshold: number): boolean {
  switch (op) {
    case '>': return value > threshold;
    case '>=': return value >= threshold;
    case '<': return value < threshold;
    case '<=': return value <= threshold;
  }
}
