/**
 * The alerts' state in the cloud store (docs/alerts.md): the rule set (replaced whole by PUT
 * /api/v1/alerts/rules), the state of each alert (a rule at one scope: pending, firing or resolved,
 * with what was last sent to Alertmanager) and the history of transitions, bounded per rule. Two
 * implementations: SQLite (here, cloud.db's alert_* tables) and PostgreSQL (cloud/store/pg/alerts.ts,
 * migration 5). Both pass test/support/store-conformance/alerts.ts.
 *
 * One evaluator at a time across nodes: `exclusive(fn)` runs fn only while holding the alerts lock
 * (PostgreSQL: a session advisory lock on one pooled connection, released at once if the node dies;
 * SQLite: the embedded cloud is one process, so an in-process lock per cloud.db file). A caller
 * that does not get it skips its turn: no double transition, no double notification.
 */
import type { AlertStateName, AlertStateRow, AlertTransition } from '../../shared/alerts/state.js';
import type { Db, WriteQueue } from '../../shared/sqlite.js';

export type { AlertStateName, AlertStateRow, AlertTransition } from '../../shared/alerts/state.js';

export interface AlertCommit {
  /** States written whole (inserted or replaced). */
  put: AlertStateRow[];
  /** States removed (a resolved alert past its keep time, or a rule removed). */
  remove: Array<{ rule: string; scope: string }>;
  transitions: AlertTransition[];
  /** History kept: the newest this many transitions per rule (older ones are deleted in the same transaction). */
  historyPerRule: number;
  /** Gateway transitions merged by this commit (marked applied in the same transaction). */
  intakeApplied?: Array<{ gateway: string; id: string }>;
}

/** A transition a gateway raised (POST /api/v1/ingest/alerts), as recorded. */
export interface GatewayTransition {
  gateway: string;
  /** The gateway's id of it, unique per gateway (its gateway.db's instance and row id). */
  id: string;
  rule: string;
  device: string;
  from: AlertStateName | null;
  to: AlertStateName;
  at: number;
  value: number | null;
}

/** Applied gateway transitions are kept this long (received_at) for the idempotency of re-sends. */
export const INTAKE_KEEP_MS = 7 * 86_400_000;

interface IntakeDbRow { gateway: string; id: string; rule: string; device: string; from_state: AlertStateName | null; to_state: AlertStateName; at: number; value: number | null }

export function intakeFromRow(r: IntakeDbRow): GatewayTransition {
  return { gateway: r.gateway, id: r.id, rule: r.rule, device: r.device, from: r.from_state, to: r.to_state, at: Number(r.at), value: r.value === null ? null : Number(r.value) };
}

export interface AlertRuleSet {
  /** The rules as PUT gave them (validated by cloud/alerts/rules.ts), in order. */
  rules: Array<{ name: string } & Record<string, unknown>>;
  /** When the set was last replaced, epoch ms; null: never. */
  updatedAt: number | null;
}

export interface AlertStore {
  readonly kind: 'sqlite' | 'postgres';
  rules(): Promise<AlertRuleSet>;
  /** Replace the whole rule set in one transaction (states are left to the evaluator: a removed rule's alerts resolve). */
  replaceRules(rules: Array<{ name: string } & Record<string, unknown>>, now: number): Promise<void>;
  /** Every state, ordered by rule, scope. */
  states(): Promise<AlertStateRow[]>;
  /** One transaction: states put and removed, transitions appended, history pruned to historyPerRule per rule. */
  commit(c: AlertCommit): Promise<void>;
  /** Transitions, newest first, at most `limit`; of one rule and of one scope (`device:d-1`) if given. */
  history(q: { rule?: string; scope?: string; limit: number }): Promise<AlertTransition[]>;
  /**
   * Record gateway transitions, each once by (gateway, id), in one transaction (a repeat is counted
   * a duplicate and changes nothing); applied ones older than INTAKE_KEEP_MS go.
   */
  recordGatewayTransitions(rows: GatewayTransition[], now: number): Promise<{ recorded: number; duplicates: number }>;
  /** Gateway transitions not yet merged by an evaluation round, oldest `at` first, at most `limit`. */
  pendingGatewayTransitions(limit: number): Promise<GatewayTransition[]>;
  /** Run `fn` as the only evaluator of this store's cloud; `{ ran: false }` at once when another holds the lock. */
  exclusive<T>(fn: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }>;
}

/** The in-process alert locks of SQLite stores, by cloud.db file (one process owns a data dir). */
const sqliteLocks = new Set<string>();

interface StateDbRow {
  rule: string; scope: string; state: AlertStateName; since: number; value: number | null; active_since: number | null;
  clearing_since: number | null; sent_state: 'firing' | 'resolved' | null; sent_at: number | null;
}

export function stateFromRow(r: StateDbRow): AlertStateRow {
  return {
    rule: r.rule, scope: r.scope, state: r.state, since: Number(r.since), value: r.value === null ? null : Number(r.value),
    activeSince: r.active_since === null ? null : Number(r.active_since), clearingSince: r.clearing_since === null ? null : Number(r.clearing_since),
    sentState: r.sent_state, sentAt: r.sent_at === null ? null : Number(r.sent_at),
  };
}

export interface TransitionDbRow { rule: string; scope: string; from_state: AlertStateName | null; to_state: AlertStateName; at: number; value: number | null }

export function transitionFromRow(r: TransitionDbRow): AlertTransition {
  return { rule: r.rule, scope: r.scope, from: r.from_state, to: r.to_state, at: Number(r.at), value: r.value === null ? null : Number(r.value) };
}

export const stateParams = (s: AlertStateRow): unknown[] => [
  s.rule, s.scope, s.state, s.since, s.value, s.activeSince, s.clearingSince, s.sentState, s.sentAt,
];

export class SqliteAlertStore implements AlertStore {
  readonly kind = 'sqlite' as const;

  /** `file` names cloud.db (the key of the in-process lock). */
  constructor(private readonly writes: WriteQueue, private readonly reader: Db, private readonly file: string) {}

  async rules(): Promise<AlertRuleSet> {
    const rows = await this.reader.all<{ definition: string; updated_at: number }>('SELECT definition, updated_at FROM alert_rules ORDER BY position');
    const meta = await this.reader.get<{ value: string }>(`SELECT value FROM meta WHERE key = 'alert_rules_updated_at'`);
    return { rules: rows.map((r) => JSON.parse(r.definition)), updatedAt: meta ? Number(JSON.parse(meta.value)) : null };
  }

  async replaceRules(rules: Array<{ name: string } & Record<string, unknown>>, now: number): Promise<void> {
    await this.writes.tx(async (db) => {
      await db.run('DELETE FROM alert_rules');
      for (const [i, r] of rules.entries()) {
        await db.run('INSERT INTO alert_rules (name, position, definition, updated_at) VALUES (?, ?, ?, ?)', [r.name, i, JSON.stringify(r), now]);
      }
      await db.run(`INSERT INTO meta (key, value) VALUES ('alert_rules_updated_at', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, [String(now)]);
    });
  }

  async states(): Promise<AlertStateRow[]> {
    return (await this.reader.all<StateDbRow>('SELECT * FROM alert_states ORDER BY rule, scope')).map(stateFromRow);
  }

  async commit(c: AlertCommit): Promise<void> {
    if (c.put.length === 0 && c.remove.length === 0 && c.transitions.length === 0 && !c.intakeApplied?.length) return;
    await this.writes.tx(async (db) => {
      for (const k of c.intakeApplied ?? []) await db.run('UPDATE alert_intake SET applied = 1 WHERE gateway = ? AND id = ?', [k.gateway, k.id]);
      for (const s of c.put) {
        await db.run(`INSERT OR REPLACE INTO alert_states (rule, scope, state, since, value, active_since, clearing_since, sent_state, sent_at)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, stateParams(s));
      }
      for (const k of c.remove) await db.run('DELETE FROM alert_states WHERE rule = ? AND scope = ?', [k.rule, k.scope]);
      const rules = new Set<string>();
      for (const t of c.transitions) {
        rules.add(t.rule);
        await db.run('INSERT INTO alert_history (rule, scope, from_state, to_state, at, value) VALUES (?, ?, ?, ?, ?, ?)', [t.rule, t.scope, t.from, t.to, t.at, t.value]);
      }
      for (const rule of rules) {
        await db.run(`DELETE FROM alert_history WHERE rule = ? AND id <= (
          SELECT id FROM alert_history WHERE rule = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`, [rule, rule, c.historyPerRule]);
      }
    });
  }

  async history(q: { rule?: string; scope?: string; limit: number }): Promise<AlertTransition[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.rule !== undefined) { where.push('rule = ?'); params.push(q.rule); }
    if (q.scope !== undefined) { where.push('scope = ?'); params.push(q.scope); }
    const rows = await this.reader.all<TransitionDbRow>(
      `SELECT * FROM alert_history ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`, [...params, q.limit]);
    return rows.map(transitionFromRow);
  }

  async recordGatewayTransitions(rows: GatewayTransition[], now: number): Promise<{ recorded: number; duplicates: number }> {
    return this.writes.tx(async (db) => {
      let recorded = 0;
      for (const t of rows) {
        recorded += (await db.run(`INSERT INTO alert_intake (gateway, id, rule, device, from_state, to_state, at, value, received_at)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gateway, id) DO NOTHING`, [t.gateway, t.id, t.rule, t.device, t.from, t.to, t.at, t.value, now])).changes;
      }
      await db.run('DELETE FROM alert_intake WHERE applied = 1 AND received_at < ?', [now - INTAKE_KEEP_MS]);
      return { recorded, duplicates: rows.length - recorded };
    });
  }

  async pendingGatewayTransitions(limit: number): Promise<GatewayTransition[]> {
    return (await this.reader.all<IntakeDbRow>('SELECT * FROM alert_intake WHERE applied = 0 ORDER BY at, gateway, id LIMIT ?', [limit])).map(intakeFromRow);
  }

  async exclusive<T>(fn: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }> {
    if (sqliteLocks.has(this.file)) return { ran: false };
    sqliteLocks.add(this.file);
    try {
      return { ran: true, value: await fn() };
    } finally {
      sqliteLocks.delete(this.file);
    }
  }
}
