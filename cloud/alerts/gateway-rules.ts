/**
 * The device rules a gateway evaluates too (docs/alerts.md, "At the gateway"), sent with the
 * speed-push answers: the threshold rules that name a device (the gateway evaluates them on its
 * own windows, so they fire while the cloud is away). Fleet and gateway rules aggregate over many
 * devices and gateways, and silence rules need the registry: those stay the cloud's alone.
 *
 * Every gateway gets the same set, whichever devices it serves now: a device that moves to another
 * gateway while the cloud is away is covered there too, and one version serves the whole fleet.
 * The version is a hash of the set: a push naming it gets `{version}` only, so an unchanged set
 * costs a few bytes. The set is read from the store at most once per `ttlMs` (a PUT on another
 * node reaches the gateways within about that plus one push interval).
 */
import { createHash } from 'node:crypto';
import type { AlertStore } from '../store/alerts.js';
import { compileRule } from '../../shared/alerts/rules.js';

export interface GatewayRuleSet { version: string; rules: Array<Record<string, unknown>> }

export class GatewayRules {
  private cached: { set: GatewayRuleSet; at: number } | null = null;
  private loading: Promise<GatewayRuleSet> | null = null;

  constructor(private readonly store: () => AlertStore, private readonly ttlMs = 1_000, private readonly now: () => number = Date.now) {}

  /** The answer's `alertRules` for a push that holds `held` ('' none). */
  async answer(held: string): Promise<{ version: string; rules?: Array<Record<string, unknown>> }> {
    const set = await this.current();
    return held === set.version ? { version: set.version } : set;
  }

  async current(): Promise<GatewayRuleSet> {
    const c = this.cached;
    if (c && this.now() - c.at < this.ttlMs) return c.set;
    this.loading ??= this.load().finally(() => { this.loading = null; });
    return this.loading;
  }

  private async load(): Promise<GatewayRuleSet> {
    const all = await this.store().rules();
    const rules = all.rules.filter((raw, i) => {
      try {
        const c = compileRule(raw, `rules[${i}]`);
        return c.kind === 'threshold' && c.rule.device !== undefined;
      } catch {
        return false; // not valid any more: the cloud's evaluator logs it
      }
    });
    const version = createHash('sha256').update(JSON.stringify(rules)).digest('base64url').slice(0, 22);
    const set = { version, rules };
    this.cached = { set, at: this.now() };
    return set;
  }
}
