/**
 * Alerts at the gateway (docs/alerts.md, "At the gateway"): the device rules the cloud sends with
 * its speed-push answers are evaluated here too, on the gateway's own speed partials, so they fire
 * while the cloud is unreachable.
 *
 * - Rules: each speed push names the version the gateway holds; the cloud answers the rules only
 *   when its version differs. They are kept in gateway.db (alert_rules), so a restart while the
 *   cloud is away keeps them.
 * - Evaluation, every alerts.evalIntervalMs: the same rule semantics (shared/alerts/window.ts: the
 *   window-aligned bucket holding now, else the one before) and the same state machine
 *   (shared/alerts/state.ts) as the cloud. The changed states and the transitions are committed in
 *   one gateway.db transaction; only then is each transition published to the device on
 *   `devices/{id}/alerts` (QoS 1, retained: a device that connects later hears its alerts' current
 *   state, the `alerts` list of the payload) and queued for the cloud.
 * - Delivery: the transitions wait in gateway.db (alert_outbox) until the cloud acknowledges them
 *   (POST /api/v1/ingest/alerts, answered 2xx after its store committed them), sent oldest first
 *   with the forwarder's backoff (edge/cloudclient). Each carries an id the gateway never reuses
 *   (this gateway.db's instance and the row id), so a re-send is recorded once.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Registry } from 'prom-client';
import { compileRule, type CompiledRule } from '../../shared/alerts/rules.js';
import { type AlertStateName, type AlertStateRow, type AlertTransition, stepAlert } from '../../shared/alerts/state.js';
import { pickWindowValue, thresholdHolds, type ThresholdCompiled, windowBuckets } from '../../shared/alerts/window.js';
import type { Logger } from '../../shared/logger.js';
import type { Db, WriteQueue } from '../../shared/sqlite.js';
import { EMPTY, derive, fromColumns, merge, type Summary, type SummaryColumns } from '../../shared/summary.js';
import { CloudSender, IDLE, NOW, type CloudNodes, type Next, gzipJson, postGzip } from '../cloudclient/index.js';
import { AlertSendTimeoutError, AlertSendUnreachableError } from './errors.js';
import { getMeta, setMeta } from '../store/schema.js';
import { createGatewayAlertMetrics, type GatewayAlertMetrics } from './metrics.js';

export const ALERTS_INGEST_PATH = '/api/v1/ingest/alerts';
/** Resolved alerts are forgotten this long after they resolved (as in the cloud). */
export const GATEWAY_RESOLVED_KEEP_MS = 3_600_000;
/** Transitions in one request to the cloud. */
const SEND_MAX = 500;

export function alertsTopic(device: string): string {
  return `devices/${device}/alerts`;
}

export interface GatewayAlertOptions {
  /** How often the rules are evaluated, in ms (config `alerts.evalIntervalMs`). */
  evalIntervalMs: number;
  /** Unsent transitions kept; past it the oldest are dropped, counted (config `alerts.maxPendingTransitions`). */
  maxPendingTransitions: number;
  token: string | null;
  requestTimeoutMs: number;
  retryInitialMs: number;
  retryMaxMs: number;
  retryAfterMaxMs: number;
  closeGraceMs: number;
}

export interface GatewayAlertDeps {
  reader: Db;
  writes: WriteQueue;
  logger: Logger;
  registry: Registry;
  gatewayId: string;
  /** Publish from the broker (QoS 1); resolves once handed to aedes. */
  publish: (topic: string, payload: Buffer, retain: boolean) => Promise<void>;
  /** The cloud's nodes (shared with the forwarder); null: no cloud, the transitions wait. */
  nodes: CloudNodes | null;
  now?: () => number;
}

/** The payload published to `devices/{id}/alerts`. */
export interface DeviceAlertMessage {
  rule: string;
  device: string;
  state: AlertStateName;
  from: AlertStateName | null;
  at: number;
  value: number | null;
  condition: string | null;
  /** Every alert of this device the gateway holds now (resolved ones for an hour). */
  alerts: Array<{ rule: string; state: AlertStateName; since: number; value: number | null }>;
}

interface StateDbRow { rule: string; device: string; state: AlertStateName; since: number; value: number | null; active_since: number | null; clearing_since: number | null }
interface OutboxRow { id: number; rule: string; device: string; from_state: AlertStateName | null; to_state: AlertStateName; at: number; value: number | null }

export interface GatewayRoundResult { rules: number; transitions: AlertTransition[]; ms: number }

const key = (rule: string, device: string) => `${rule}\u0000${device}`;
const deviceOf = (scope: string) => scope.slice('device:'.length);

function describeRule(c: ThresholdCompiled): string {
  const r = c.rule;
  return `${r.agg}(${r.metric}) over ${r.window} ${r.op} ${r.threshold} for ${r.for}`;
}

export class GatewayAlerts {
  private readonly d: GatewayAlertDeps;
  private readonly o: GatewayAlertOptions;
  private readonly log: Logger;
  private readonly now: () => number;
  readonly metrics: GatewayAlertMetrics;
  private readonly sender: CloudSender;
  private version: string | null = null;
  private rules: ThresholdCompiled[] = [];
  /** The rules by device: one read of a device's partials per round. */
  private byDevice = new Map<string, ThresholdCompiled[]>();
  private states = new Map<string, AlertStateRow>();
  private instance = '';
  private pendingCount = 0;
  private timer: NodeJS.Timeout | null = null;
  private round: Promise<GatewayRoundResult> | null = null;
  private closed = false;
  /** Rules received while a round runs: applied before the next one. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(deps: GatewayAlertDeps, options: GatewayAlertOptions) {
    this.d = deps;
    this.o = options;
    this.log = deps.logger.child({ component: 'alerts' });
    this.now = deps.now ?? Date.now;
    this.metrics = createGatewayAlertMetrics(deps.registry, () => this.pendingCount);
    this.sender = new CloudSender({
      name: 'alert sender', what: 'alert transitions', sizeField: 'batchSize', log: this.log, metrics: this.metrics, now: this.now,
      options: {
        idleMs: 5_000, closeGraceMs: options.closeGraceMs, maxSize: SEND_MAX, retryInitialMs: options.retryInitialMs,
        retryMaxMs: options.retryMaxMs, retryAfterMaxMs: options.retryAfterMaxMs, jitter: 0.2,
      },
    });
  }

  /** The version of the rules held ('' none yet): sent with each speed push. */
  rulesVersion(): string {
    return this.version ?? '';
  }

  get heldRules(): number {
    return this.rules.length;
  }

  /** Load the rules, states and unsent transitions; publish the held states (retained); start evaluating and sending. */
  async start(): Promise<void> {
    if (!this.sender.begin()) return;
    const db = this.d.reader;
    let instance = await getMeta(db, 'alerts_instance');
    if (!instance) {
      instance = randomBytes(6).toString('hex');
      const v = instance;
      await this.d.writes.run((w) => setMeta(w, 'alerts_instance', v));
    }
    this.instance = instance;
    const held = await db.get<{ version: string; rules: string }>('SELECT version, rules FROM alert_rules WHERE id = 1');
    if (held) this.adopt(held.version, JSON.parse(held.rules) as unknown[]);
    for (const r of await db.all<StateDbRow>('SELECT * FROM alert_states')) {
      this.states.set(key(r.rule, r.device), {
        rule: r.rule, scope: `device:${r.device}`, state: r.state, since: Number(r.since), value: r.value, activeSince: r.active_since,
        clearingSince: r.clearing_since, sentState: null, sentAt: null,
      });
    }
    this.pendingCount = (await db.get<{ n: number }>('SELECT count(*) AS n FROM alert_outbox'))?.n ?? 0;
    this.log.info({ rules: this.rules.length, version: this.version, alerts: this.states.size, pending: this.pendingCount }, 'gateway alerts loaded');
    // A restart loses aedes' retained messages: the devices learn the held states again.
    const devices = new Set([...this.states.values()].map((s) => deviceOf(s.scope)));
    for (const device of devices) {
      const latest = [...this.states.values()].filter((s) => deviceOf(s.scope) === device).sort((a, b) => b.since - a.since)[0];
      await this.publish({ rule: latest.rule, scope: latest.scope, from: null, to: latest.state, at: latest.since, value: latest.value });
    }
    const loop = async () => {
      if (this.closed) return;
      await this.evaluate();
      if (!this.closed) this.timer = setTimeout(() => void loop(), this.o.evalIntervalMs);
    };
    this.timer = setTimeout(() => void loop(), Math.min(this.o.evalIntervalMs, 1_000));
    if (this.d.nodes !== null) this.sender.run(() => this.step());
  }

  /** Rules from a speed-push answer: kept in gateway.db, then evaluated from the next round on. */
  received(version: string, rules: unknown[]): Promise<void> {
    const run = this.chain.then(async () => {
      if (version === this.version) return;
      await this.d.writes.run((w) => w.run(
        `INSERT INTO alert_rules (id, version, rules, received_at) VALUES (1, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version, rules = excluded.rules, received_at = excluded.received_at`,
        [version, JSON.stringify(rules), this.now()],
      ));
      this.adopt(version, rules);
      this.log.info({ version, rules: this.rules.length }, 'alert rules received from the cloud');
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** The cloud answered someone else: a send backing off tries again now. */
  cloudReachable(): void {
    this.sender.retryNow();
  }

  /** For GET /api/v1/health's `alerts`: rules held, alerts held and firing, transitions not yet acknowledged by the cloud (unsent). */
  status(): { rules: number; version: string | null; alerts: number; firing: number; unsent: number; lastSuccessAt: number | null; consecutiveFailures: number } {
    const s = this.sender.status();
    return {
      rules: this.rules.length, version: this.version, alerts: this.states.size,
      firing: [...this.states.values()].filter((x) => x.state === 'firing').length,
      unsent: this.pendingCount, lastSuccessAt: s.lastSuccessAt, consecutiveFailures: s.consecutiveFailures,
    };
  }

  private adopt(version: string, raw: unknown[]): void {
    const compiled: ThresholdCompiled[] = [];
    raw.forEach((r, i) => {
      try {
        const c: CompiledRule = compileRule(r, `rules[${i}]`);
        if (c.kind === 'threshold' && c.rule.device !== undefined) compiled.push(c);
      } catch (err) {
        this.metrics.refused.inc();
        this.log.warn({ err: (err as Error).message }, 'an alert rule from the cloud is not valid here; skipped');
      }
    });
    this.version = version;
    this.rules = compiled;
    this.byDevice = new Map();
    for (const c of compiled) {
      const list = this.byDevice.get(c.rule.device!);
      if (list) list.push(c);
      else this.byDevice.set(c.rule.device!, [c]);
    }
    this.metrics.rules.set(compiled.length);
  }

  /** One round now (or the one in progress); never rejects. */
  evaluate(): Promise<GatewayRoundResult> {
    this.round ??= this.chain.then(() => this.runRound()).catch((err) => {
      this.log.warn({ err }, 'gateway alert round failed; the next one retries');
      return { rules: 0, transitions: [], ms: 0 };
    }).finally(() => { this.round = null; });
    return this.round;
  }

  /**
   * The values of one device's rules at `now`: one read of its partials over the widest span its
   * rules need (one index range per device, not per rule), then each rule's two buckets.
   */
  private async deviceValues(device: string, rules: ThresholdCompiled[], now: number): Promise<Array<number | null>> {
    const spans = rules.map((c) => windowBuckets(now, c.windowMs));
    const from = Math.min(...spans.map((b) => b.prev));
    const to = Math.max(...spans.map((b) => b.end));
    const rows = await this.d.reader.all<SummaryColumns & { metric: string; minute: number }>(
      `SELECT metric, minute, count, sum, min, max, m2, first, first_ts, last, last_ts FROM partials
       WHERE device = ? AND minute >= ? AND minute < ?`,
      [device, from, to],
    );
    const byMetric = new Map<string, typeof rows>();
    for (const r of rows) {
      const list = byMetric.get(r.metric);
      if (list) list.push(r);
      else byMetric.set(r.metric, [r]);
    }
    return rules.map((c, i) => {
      const { prev, cur, end } = spans[i];
      let inCur: Summary = { ...EMPTY };
      let inPrev: Summary = { ...EMPTY };
      for (const row of byMetric.get(c.rule.metric) ?? []) {
        if (row.minute >= cur && row.minute < end) inCur = merge(inCur, fromColumns(row, device));
        else if (row.minute >= prev && row.minute < cur) inPrev = merge(inPrev, fromColumns(row, device));
      }
      const value = (x: Summary) => (x.count > 0 ? derive(x, c.rule.agg) : null);
      return pickWindowValue(value(inCur), value(inPrev));
    });
  }

  private async runRound(): Promise<GatewayRoundResult> {
    const t0 = performance.now();
    const now = this.now();
    const rules = this.rules;
    const byDevice = this.byDevice;
    const transitions: AlertTransition[] = [];
    const put = new Map<string, AlertStateRow>();
    const remove = new Set<string>();
    const evaluated = new Set<string>();
    const failed = new Set<string>();
    const step = (k: string, rule: string, device: string, cond: boolean, value: number | null, forMs: number) => {
      const s = stepAlert(rule, `device:${device}`, this.states.get(k), cond, value, now, forMs);
      if (s.transition) transitions.push(s.transition);
      if (s.next && s.changed) put.set(k, s.next);
    };
    for (const [device, list] of byDevice) {
      try {
        const values = await this.deviceValues(device, list, now);
        list.forEach((c, i) => {
          const k = key(c.rule.name, device);
          evaluated.add(k);
          step(k, c.rule.name, device, thresholdHolds(c, values[i]), values[i], c.forMs);
        });
        this.metrics.evaluations.inc({ result: 'ok' }, list.length);
      } catch (err) {
        for (const c of list) failed.add(key(c.rule.name, device));
        this.metrics.evaluations.inc({ result: 'failed' }, list.length);
        this.log.warn({ err, device }, 'gateway alert rules of a device could not be evaluated; their alerts are left as they were');
      }
    }
    // Alerts of rules no longer held: false from now on, so they resolve like any other.
    for (const [k, s] of this.states) {
      if (evaluated.has(k) || failed.has(k)) continue;
      step(k, s.rule, deviceOf(s.scope), false, null, 0);
    }
    for (const [k, s] of this.states) {
      const next = put.get(k) ?? s;
      if (next.state === 'resolved' && now - next.since >= GATEWAY_RESOLVED_KEEP_MS) {
        put.delete(k);
        remove.add(k);
      }
    }
    if (put.size || remove.size || transitions.length) {
      const dropped = await this.d.writes.tx(async (w) => {
        for (const s of put.values()) {
          await w.run(`INSERT OR REPLACE INTO alert_states (rule, device, state, since, value, active_since, clearing_since) VALUES (?, ?, ?, ?, ?, ?, ?)`,
            [s.rule, deviceOf(s.scope), s.state, s.since, s.value, s.activeSince, s.clearingSince]);
        }
        for (const k of remove) {
          const [rule, device] = k.split('\u0000');
          await w.run('DELETE FROM alert_states WHERE rule = ? AND device = ?', [rule, device]);
        }
        for (const t of transitions) {
          await w.run('INSERT INTO alert_outbox (rule, device, from_state, to_state, at, value) VALUES (?, ?, ?, ?, ?, ?)',
            [t.rule, deviceOf(t.scope), t.from, t.to, t.at, t.value]);
        }
        if (transitions.length === 0) return 0;
        // Bounded [INV-6]: the oldest unsent transitions go first past the limit, counted.
        const over = this.pendingCount + transitions.length - this.o.maxPendingTransitions;
        if (over <= 0) return 0;
        return (await w.run('DELETE FROM alert_outbox WHERE id IN (SELECT id FROM alert_outbox ORDER BY id LIMIT ?)', [over])).changes;
      });
      for (const [k, s] of put) this.states.set(k, s);
      for (const k of remove) this.states.delete(k);
      this.pendingCount += transitions.length - dropped;
      if (dropped) {
        this.metrics.dropped.inc(dropped);
        this.log.warn({ dropped, limit: this.o.maxPendingTransitions }, 'unsent alert transitions dropped at alerts.maxPendingTransitions');
      }
    }
    // Published after the commit: a device hears only what gateway.db holds.
    for (const t of transitions) {
      this.metrics.transitions.inc({ to: t.to });
      this.log.info({ rule: t.rule, scope: t.scope, from: t.from, to: t.to, value: t.value }, 'gateway alert transition');
      await this.publish(t);
    }
    if (transitions.length) this.sender.poke();
    const ms = performance.now() - t0;
    this.metrics.seconds.observe(ms / 1000);
    return { rules: rules.length, transitions, ms };
  }

  private async publish(t: AlertTransition): Promise<void> {
    const device = deviceOf(t.scope);
    const c = this.rules.find((x) => x.rule.name === t.rule);
    const msg: DeviceAlertMessage = {
      rule: t.rule, device, state: t.to, from: t.from, at: t.at, value: t.value, condition: c ? describeRule(c) : null,
      alerts: [...this.states.values()].filter((s) => s.scope === t.scope).map((s) => ({ rule: s.rule, state: s.state, since: s.since, value: s.value })),
    };
    try {
      await this.d.publish(alertsTopic(device), Buffer.from(JSON.stringify(msg)), true);
      this.metrics.published.inc({ result: 'ok' });
    } catch (err) {
      this.metrics.published.inc({ result: 'failed' });
      this.log.warn({ err, device, rule: t.rule }, 'could not publish an alert to its device');
    }
  }

  /** One request of the oldest unsent transitions. */
  private async step(): Promise<Next> {
    const rows = await this.d.reader.all<OutboxRow>('SELECT * FROM alert_outbox ORDER BY id LIMIT ?', [this.sender.size]);
    if (rows.length === 0 || this.sender.closing) return IDLE;
    const body = {
      v: 1, gateway: this.d.gatewayId,
      transitions: rows.map((r) => ({ id: `${this.instance}:${r.id}`, rule: r.rule, device: r.device, from: r.from_state, to: r.to_state, at: Number(r.at), value: r.value })),
    };
    const bytes = await gzipJson(JSON.stringify(body));
    const nodes = this.d.nodes!;
    const url = nodes.current;
    try {
      await postGzip({
        url, token: this.o.token, timeoutMs: this.o.requestTimeoutMs, signal: this.sender.signal, now: this.now,
        path: ALERTS_INGEST_PATH, what: 'alert transitions', TimeoutError: AlertSendTimeoutError, UnreachableError: AlertSendUnreachableError,
      }, bytes);
      nodes.succeeded(url);
    } catch (err) {
      if (this.sender.abortedByClose()) return NOW;
      if (nodes.failed(url, err, 'alert sender') === 'next') return this.sender.failedOver(err);
      return this.sender.requestFailed(err, rows.length);
    }
    const last = rows[rows.length - 1].id;
    const deleted = await this.d.writes.run(async (w) => (await w.run('DELETE FROM alert_outbox WHERE id <= ?', [last])).changes);
    this.pendingCount = Math.max(0, this.pendingCount - deleted);
    this.metrics.forwarded.inc(rows.length);
    this.sender.answered();
    this.sender.progressed();
    return rows.length >= this.sender.size ? NOW : IDLE;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.round?.catch(() => undefined);
    await this.sender.close();
  }
}
