/**
 * A threshold rule's value at `now` (docs/alerts.md, "Evaluation"), one definition for the cloud
 * (merged answers) and the gateway (its speed partials): the aggregate of the window-aligned bucket
 * holding `now` (in progress) if it holds readings, else of the one before; null when neither does
 * (the condition is then false: a device that stops reporting is a silence rule's business).
 */
import { bucketStart } from '../time.js';
import { compare, type CompiledRule } from './rules.js';

export type ThresholdCompiled = Extract<CompiledRule, { kind: 'threshold' }>;

/** The two buckets a rule reads at `now`: [prev, cur), [cur, cur + windowMs). */
export function windowBuckets(now: number, windowMs: number): { prev: number; cur: number; end: number } {
  const cur = bucketStart(now, windowMs);
  return { prev: cur - windowMs, cur, end: cur + windowMs };
}

/** The value from the two buckets' aggregates (null: no reading in it). */
export function pickWindowValue(cur: number | null, prev: number | null): number | null {
  return cur ?? prev;
}

/** Whether the rule's condition holds for `value`. */
export function thresholdHolds(c: ThresholdCompiled, value: number | null): boolean {
  return value !== null && compare(value, c.rule.op, c.rule.threshold);
}
