/**
 * Alerts in the cloud (docs/alerts.md): the rule routes, the evaluation loop on the merged answers
 * and the notifications to Alertmanager. A plugin (routes) and a service (the loop) of CloudServer,
 * registered by registerAlerts (cloud/alerts/index.ts).
 *
 * A round, every alerts.evalIntervalMs, runs under the store's alerts lock (one evaluator across
 * nodes; a node that does not get it skips its turn): read the rules and the states, evaluate each
 * rule (a threshold rule: one merged query of its window-aligned buckets; a silence rule: the
 * registry's last-seen), step every alert's state machine (state.ts), commit the changes and the
 * transitions in one transaction, then send what Alertmanager should hear. A send that fails is
 * logged, counted and retried at the next round; it never fails the round.
 */
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { errorReply } from '../../shared/http-errors.js';
import { type Logger, nullLogger } from '../../shared/logger.js';
import { pickWindowValue, thresholdHolds, windowBuckets } from '../../shared/alerts/window.js';
import type { CloudConfig } from '../config.js';
import type { QueryService } from '../query/service.js';
import type { CloudContext, CloudService } from '../server.js';
import type { AlertStateRow, AlertStore, AlertTransition } from '../store/alerts.js';
import { postAlerts, toAmAlert } from './alertmanager.js';
import { type IntakeMetrics, registerAlertIntake } from './intake.js';
import { mergeGatewayTransition } from './merge.js';
import { registerAlertRoutes } from './routes.js';
import { type CompiledRule, compileRule } from './rules.js';
import { registerSilenceRoute } from './silences.js';
import { type AlertScope, parseScope, scopeKey } from './scope.js';
import { stepAlert } from './state.js';
import type { GatewayStatusRow } from '../store/speed.js';

/** A resolved alert is listed this long after it resolved, then forgotten (its transitions stay in the history). */
export const RESOLVED_KEEP_MS = 3_600_000; // 1 hour
/** ...and at most this long when Alertmanager never took its resolution. */
export const RESOLVED_MAX_KEEP_MS = 86_400_000; // 1 day
/** Gateway transitions merged per round at most (the rest at the next). */
const INTAKE_PER_ROUND = 5_000;
/** Merged queries of one round at once. */
const QUERY_CONCURRENCY = 8;
/**
 * Longest the cloud leaves an alert as a gateway's transition set it, waiting for a speed push that
 * gateway sent after it (AlertService.held): a gateway that went quiet meanwhile is judged on what
 * the cloud has after this.
 */
export const GATEWAY_HOLD_MAX_MS = 120_000;
/** Alerts per POST to Alertmanager. */
const NOTIFY_CHUNK = 500;

export interface AlertMetrics {
  rules: Gauge;
  evaluations: Counter<'result'>;
  seconds: Histogram;
  alerts: Gauge<'state'>;
  notifications: Counter<'result'>;
  rejected: Counter<'code'>;
}

function metricsOn(registry: Registry): AlertMetrics {
  const get = <T>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
  const registers = [registry];
  return {
    rules: get('braid_alert_rules', () => new Gauge({ name: 'braid_alert_rules', help: 'Alert rules in the rule set', registers })),
    evaluations: get('braid_alert_evaluations_total', () => new Counter({
      name: 'braid_alert_evaluations_total', labelNames: ['result'] as const, registers,
      help: 'Rule evaluations by this node (result: ok, failed: its query or registry read failed, its alerts left as they were)',
    })),
    seconds: get('braid_alert_evaluation_seconds', () => new Histogram({
      name: 'braid_alert_evaluation_seconds', registers, buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      help: 'Time of one evaluation round of every rule (queries, state commit and notifications)',
    })),
    alerts: get('braid_alerts', () => new Gauge({
      name: 'braid_alerts', labelNames: ['state'] as const, registers,
      help: 'Alerts by state (pending, firing, resolved in the last hour) after the last round this node evaluated',
    })),
    notifications: get('braid_alert_notifications_total', () => new Counter({
      name: 'braid_alert_notifications_total', labelNames: ['result'] as const, registers,
      help: 'Alerts sent to Alertmanager (result: sent, failed: unreachable, timed out or refused; retried at the next round)',
    })),
    rejected: get('braid_alert_requests_rejected_total', () => new Counter({
      name: 'braid_alert_requests_rejected_total', labelNames: ['code'] as const, registers,
      help: 'Requests to the alert routes answered 4xx, by error code (a rule set refused: BRAID_ERR_BAD_REQUEST)',
    })),
  };
}

/** Run `jobs` with at most `n` at once. */
async function pool<T>(items: T[], n: number, job: (t: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (i < items.length) await job(items[i++]);
  }));
}

interface Evaluated { cond: boolean; value: number | null; forMs: number }

export interface RoundResult {
  ran: boolean;
  rules: number;
  transitions: AlertTransition[];
  ms: number;
}

export class AlertService implements CloudService {
  private ctx: CloudContext | null = null;
  private o: CloudConfig['alerts'] | null = null;
  private store: AlertStore | null = null;
  private log: Logger = nullLogger();
  private metrics: AlertMetrics | null = null;
  private intake: IntakeMetrics | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private round: Promise<RoundResult> | null = null;
  /**
   * Alerts a gateway's transition set, by key, until the cloud holds a speed push that gateway sent
   * after it: the gateway judged them on its own partials, which reach the cloud with its next push
   * (every second), while its transition may come first. Judged on the cloud's data before that, a
   * firing the gateway raised found no reading, was resolved and fired again at the push, and
   * Alertmanager heard all three (a gateway's resolve the other way round). Until then the rule's
   * evaluation leaves the alert as it is, as for a rule whose query failed; at most
   * GATEWAY_HOLD_MAX_MS. `at` is the transition's time and the push's `sentAt` (both the gateway's
   * clock); `merged` the round's (the cloud's clock). In memory: after a restart, or on another
   * node of a cluster, the next rounds judge as before.
   */
  private held = new Map<string, { gateway: string; at: number; merged: number }>();

  constructor(private readonly query: () => QueryService, private readonly now: () => number = Date.now) {}

  /** The CloudPlugin: routes. */
  readonly plugin = async (app: FastifyInstance, ctx: CloudContext): Promise<void> => {
    this.ctx = ctx;
    this.o = ctx.config.alerts;
    this.store = ctx.store.alerts;
    this.log = ctx.logger.child({ component: 'alerts' });
    const metrics = metricsOn(ctx.registry);
    this.metrics = metrics;
    const refused = (err: Error) => {
      const { status, body } = errorReply(err);
      if (status >= 400 && status < 500) metrics.rejected.inc({ code: body.code });
    };
    this.intake = await registerAlertIntake(app, {
      store: this.store, registry: ctx.registry, now: this.now, requireGateway: ctx.auth.requireRole('gateway'),
      limits: { maxBodyBytes: ctx.config.ingest.maxBodyBytes, maxInflatedBytes: ctx.config.ingest.maxInflatedBytes },
    });
    registerAlertRoutes(app, {
      store: this.store, maxRules: this.o.maxRules, historyPerRule: this.o.historyPerRule, now: this.now,
      read: ctx.auth.requireRole('read'), admin: ctx.auth.requireRole('admin'),
      onRulesReplaced: (n) => metrics.rules.set(n),
      refused,
    });
    registerSilenceRoute(app, {
      store: this.store, alertmanagerUrl: this.o.alertmanagerUrl, timeoutMs: this.o.notifyTimeoutMs, read: ctx.auth.requireRole('read'),
      registry: ctx.registry, now: this.now, refused,
    });
  };

  start(): void {
    if (!this.ctx) throw new Error('AlertService.start() before its plugin was registered');
    const loop = async () => {
      if (this.closed) return;
      await this.evaluate();
      if (!this.closed) this.timer = setTimeout(() => void loop(), this.o!.evalIntervalMs);
    };
    this.timer = setTimeout(() => void loop(), Math.min(1_000, this.o!.evalIntervalMs));
  }

  /** One round now (or the one in progress); never rejects: a failed round is logged and counted. */
  evaluate(): Promise<RoundResult> {
    this.round ??= this.runRound().catch((err) => {
      this.log.warn({ err }, 'alert evaluation round failed; the next one retries');
      return { ran: false, rules: 0, transitions: [], ms: 0 };
    }).finally(() => { this.round = null; });
    return this.round;
  }

  private async runRound(): Promise<RoundResult> {
    const store = this.store!;
    const t0 = performance.now();
    const r = await store.exclusive(() => this.evaluateLocked());
    if (!r.ran) {
      this.log.debug('another node holds the alerts lock; this round skipped');
      return { ran: false, rules: 0, transitions: [], ms: 0 };
    }
    const ms = performance.now() - t0;
    this.metrics!.seconds.observe(ms / 1000);
    return { ...r.value, ran: true, ms };
  }

  private async evaluateLocked(): Promise<{ rules: number; transitions: AlertTransition[] }> {
    const store = this.store!;
    const o = this.o!;
    const m = this.metrics!;
    const set = await store.rules();
    const compiled: CompiledRule[] = [];
    set.rules.forEach((raw, i) => {
      try {
        compiled.push(compileRule(raw, `rules[${i}]`));
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'a stored alert rule is not valid any more; skipped');
      }
    });
    m.rules.set(compiled.length);
    const now = this.now();
    const evaluated = new Map<string, Evaluated & { rule: string; scope: string }>();
    const failed = new Set<string>();
    const put = (rule: string, scope: AlertScope, e: Evaluated) => {
      const key = scopeKey(scope);
      evaluated.set(`${rule}\u0000${key}`, { ...e, rule, scope: key });
    };

    // Silence rules (and held alerts) read the registry once per round.
    let statuses: ReturnType<CloudContext['store']['registry']['gatewayStatuses']> | null = null;
    const gatewayStatuses = () => (statuses ??= this.ctx!.store.registry.gatewayStatuses());
    let registry: Promise<{ devices: Map<string, number>; gateways: Map<string, number> }> | null = null;
    const lastSeen = () => (registry ??= (async () => {
      const [devices, byGateway] = await Promise.all([this.ctx!.store.registry.listDevices(), gatewayStatuses()]);
      return {
        devices: new Map(devices.map((d) => [d.id, d.lastSeen])),
        gateways: new Map([...byGateway].map(([g, s]) => [g, s.lastPushAt])),
      };
    })());
    const since = set.updatedAt ?? now;

    await pool(compiled, QUERY_CONCURRENCY, async (c) => {
      try {
        if (c.kind === 'threshold') {
          const r = c.rule;
          const scope: AlertScope = r.device !== undefined ? { device: r.device } : r.gateway !== undefined ? { gateway: r.gateway } : { fleet: true };
          const value = await this.windowValue(c, now);
          put(r.name, scope, { cond: thresholdHolds(c, value), value, forMs: c.forMs });
        } else {
          const seen = await lastSeen();
          const r = c.rule;
          const judge = (last: number | undefined, scope: AlertScope) => {
            // Never heard from: silent since the rule set was last replaced.
            const silentMs = now - (last ?? Math.min(since, now));
            put(r.name, scope, { cond: silentMs >= c.silentForMs, value: Math.round(silentMs / 1000), forMs: 0 });
          };
          if (r.device !== undefined) judge(seen.devices.get(r.device), { device: r.device });
          else if (r.gateway !== undefined) judge(seen.gateways.get(r.gateway), { gateway: r.gateway });
          else for (const [d, last] of seen.devices) judge(last, { device: d });
        }
        m.evaluations.inc({ result: 'ok' });
      } catch (err) {
        failed.add(c.rule.name);
        m.evaluations.inc({ result: 'failed' });
        this.log.warn({ err, rule: c.rule.name }, 'alert rule could not be evaluated; its alerts are left as they were');
      }
    });

    const states = await store.states();
    const byKey = new Map(states.map((s) => [`${s.rule}\u0000${s.scope}`, s]));
    // Written once per alert: the last state of the round (a gateway's transition, then the evaluation).
    const putRows = new Map<string, AlertStateRow>();
    const transitions: AlertTransition[] = [];
    // What gateways raised since the last round, merged first: the evaluation goes on from there.
    const intake = await store.pendingGatewayTransitions(INTAKE_PER_ROUND);
    for (const t of intake) {
      const key = `${t.rule}\u0000device:${t.device}`;
      const merged = mergeGatewayTransition(byKey.get(key), t);
      if (merged) {
        byKey.set(key, merged.next);
        putRows.set(key, merged.next);
        transitions.push(merged.transition);
        this.held.set(key, { gateway: t.gateway, at: t.at, merged: now });
      }
      this.intake!.transitions.inc({ result: merged ? 'merged' : 'same_episode' });
    }
    const remove: Array<{ rule: string; scope: string }> = [];
    const after = new Map<string, AlertStateRow>();
    const apply = (key: string, rule: string, scope: string, e: Evaluated) => {
      const prev = byKey.get(key);
      const step = stepAlert(rule, scope, prev, e.cond, e.value, now, e.forMs);
      if (step.transition) transitions.push(step.transition);
      if (step.next) {
        if (step.changed) putRows.set(key, step.next);
        after.set(key, step.next);
      }
    };
    // Held alerts whose gateway has pushed since (or held too long) are judged again.
    if (this.held.size) {
      // Unread (the store out of reach): they stay held this round, as the rules whose query failed.
      const byGateway = await gatewayStatuses().catch(() => new Map<string, GatewayStatusRow>());
      for (const [key, h] of this.held) {
        const sentAt = byGateway.get(h.gateway)?.sentAt ?? null;
        if ((sentAt !== null && sentAt > h.at) || now - h.merged >= GATEWAY_HOLD_MAX_MS || !byKey.has(key)) this.held.delete(key);
      }
    }
    for (const [key, e] of evaluated) {
      const prev = byKey.get(key);
      if (this.held.has(key) && prev) after.set(key, prev);
      else apply(key, e.rule, e.scope, e);
    }
    // Alerts no rule evaluated this round (a rule removed, or one that now names another scope):
    // their condition is false, so they resolve like any other (a firing one after the hysteresis).
    for (const [key, s] of byKey) {
      if (evaluated.has(key) || failed.has(s.rule)) {
        if (!after.has(key) && failed.has(s.rule)) after.set(key, s);
        continue;
      }
      apply(key, s.rule, s.scope, { cond: false, value: null, forMs: 0 });
    }
    // Resolved alerts are forgotten an hour after they resolved, once Alertmanager heard it (or
    // none is configured any more), and after a day in any case (its firing endsAt ran out long ago).
    for (const [key, s] of after) {
      const heard = s.sentState !== 'firing' || !o.alertmanagerUrl;
      if (s.state === 'resolved' && ((now - s.since >= RESOLVED_KEEP_MS && heard) || now - s.since >= RESOLVED_MAX_KEEP_MS)) {
        remove.push({ rule: s.rule, scope: s.scope });
        putRows.delete(key);
        after.delete(key);
      }
    }
    await store.commit({
      put: [...putRows.values()], remove, transitions, historyPerRule: o.historyPerRule,
      intakeApplied: intake.map((t) => ({ gateway: t.gateway, id: t.id })),
    });
    for (const t of transitions) this.log.info({ rule: t.rule, scope: t.scope, from: t.from, to: t.to, value: t.value }, 'alert transition');

    if (o.alertmanagerUrl) await this.notify([...after.values()], compiled, now);
    const counts = { pending: 0, firing: 0, resolved: 0 };
    for (const s of after.values()) counts[s.state]++;
    for (const [state, n] of Object.entries(counts)) m.alerts.set({ state }, n);
    return { rules: compiled.length, transitions };
  }

  /**
   * The rule's aggregate over its window: the merged query of the window-aligned bucket holding
   * `now` (in progress) and the one before; the current one if it holds readings, else the one
   * before; null when neither does (the condition is then false: a device that stops reporting is
   * a silence rule's business).
   */
  private async windowValue(c: Extract<CompiledRule, { kind: 'threshold' }>, now: number): Promise<number | null> {
    const r = c.rule;
    const { cur } = windowBuckets(now, c.windowMs);
    const answer = await this.query().query({
      metric: r.metric, ...(r.device !== undefined ? { device: r.device } : {}), ...(r.gateway !== undefined ? { gateway: r.gateway } : {}),
      from: String(cur - c.windowMs), to: String(cur + c.windowMs), step: r.window, agg: r.agg,
    });
    const at = (ms: number) => answer.points.find((p) => Date.parse(p.t) === ms && p.count > 0 && p.value !== null)?.value ?? null;
    return pickWindowValue(at(cur), at(cur - c.windowMs));
  }

  private async notify(states: AlertStateRow[], rules: CompiledRule[], now: number): Promise<void> {
    const o = this.o!;
    const due = states.filter((s) => (s.state === 'firing' && (s.sentState !== 'firing' || s.sentAt === null || now - s.sentAt >= o.resendMs))
      || (s.state === 'resolved' && s.sentState === 'firing'));
    if (due.length === 0) return;
    const byName = new Map(rules.map((c) => [c.rule.name, c]));
    const threshold = (name: string) => {
      const c = byName.get(name);
      if (!c) return '(rule removed)';
      return c.kind === 'threshold' ? `${c.rule.agg}(${c.rule.metric}) over ${c.rule.window} ${c.rule.op} ${c.rule.threshold} for ${c.rule.for}` : `silent for ${c.rule.silentFor}`;
    };
    const base = o.consoleUrl?.replace(/\/+$/, '') ?? null;
    const link = (s: AlertStateRow) => {
      if (!base) return null;
      const scope = parseScope(s.scope);
      const c = byName.get(s.rule);
      const metric = c?.kind === 'threshold' ? c.rule.metric : '';
      if ('device' in scope) return `${base}/#/device?${new URLSearchParams({ device: scope.device, ...(metric ? { metric } : {}) })}`;
      if ('gateway' in scope) return `${base}/#/gateways`;
      return `${base}/#/fleet-chart?${new URLSearchParams(metric ? { metric } : {})}`;
    };
    const ctx = { threshold, link, firingTtlMs: 4 * Math.max(o.resendMs, o.evalIntervalMs), now };
    for (let i = 0; i < due.length; i += NOTIFY_CHUNK) {
      const chunk = due.slice(i, i + NOTIFY_CHUNK);
      try {
        await postAlerts(o.alertmanagerUrl!, chunk.map((s) => toAmAlert(s, ctx)), o.notifyTimeoutMs);
      } catch (err) {
        // The rest wait for the next round too: a black-holed Alertmanager costs a round one
        // notifyTimeoutMs at most, whatever the number of alerts.
        const left = due.length - i;
        this.metrics!.notifications.inc({ result: 'failed' }, left);
        this.log.warn({ err: (err as Error).message, alerts: left }, 'could not send alerts to Alertmanager; retried at the next round');
        return;
      }
      this.metrics!.notifications.inc({ result: 'sent' }, chunk.length);
      const sent = chunk.map((s) => ({ ...s, sentState: s.state === 'firing' ? 'firing' as const : 'resolved' as const, sentAt: now }));
      await this.store!.commit({ put: sent, remove: [], transitions: [], historyPerRule: o.historyPerRule });
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.round?.catch(() => undefined);
  }
}
