/**
 * The AlertStore (cloud/store/alerts.ts) on PostgreSQL: migration 5's alert_* tables. The
 * evaluator's lock is a session advisory lock (ALERTS_LOCK_KEY) taken with pg_try_advisory_lock on
 * one pooled connection held for the evaluation: a second node's try fails at once and it skips
 * its turn; a node that dies drops its connection and with it the lock.
 */
import type pg from 'pg';
import {
  type AlertCommit, type AlertRuleSet, type AlertStateRow, type AlertStore, type AlertTransition, type GatewayTransition, INTAKE_KEEP_MS,
  type TransitionDbRow, intakeFromRow, stateFromRow, stateParams, transitionFromRow,
} from '../alerts.js';
import { pgTransaction } from './pool.js';
import { asStoreError } from './unavailable.js';

/** The advisory lock key of alert evaluation (one evaluator across nodes). */
export const ALERTS_LOCK_KEY = '7093839468342119001';

export class PgAlertStore implements AlertStore {
  readonly kind = 'postgres' as const;

  /** The pool is the caller's (createPgPool), migrated. */
  constructor(private readonly pool: pg.Pool) {}

  private async q<R extends pg.QueryResultRow>(what: string, sql: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(sql, params);
    } catch (err) {
      throw asStoreError(err, what);
    }
  }

  private async tx<T>(what: string, job: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    try {
      return await pgTransaction(this.pool, job);
    } catch (err) {
      throw asStoreError(err, what);
    }
  }

  async rules(): Promise<AlertRuleSet> {
    const rows = (await this.q<{ definition: string }>('alert rules', 'SELECT definition FROM alert_rules ORDER BY position')).rows;
    const meta = (await this.q<{ value: number }>('alert rules', `SELECT value FROM meta WHERE key = 'alert_rules_updated_at'`)).rows[0];
    return { rules: rows.map((r) => JSON.parse(r.definition)), updatedAt: meta ? Number(meta.value) : null };
  }

  async replaceRules(rules: Array<{ name: string } & Record<string, unknown>>, now: number): Promise<void> {
    await this.tx('replace alert rules', async (c) => {
      await c.query('DELETE FROM alert_rules');
      if (rules.length > 0) {
        await c.query(`INSERT INTO alert_rules (name, position, definition, updated_at)
          SELECT n, p - 1, d, $3 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(n, d, p)`,
        [rules.map((r) => r.name), rules.map((r) => JSON.stringify(r)), now]);
      }
      await c.query(`INSERT INTO meta (key, value) VALUES ('alert_rules_updated_at', to_jsonb($1::bigint))
        ON CONFLICT (key) DO UPDATE SET value = excluded.value`, [now]);
    });
  }

  async states(): Promise<AlertStateRow[]> {
    return (await this.q<Parameters<typeof stateFromRow>[0]>('alert states', 'SELECT * FROM alert_states ORDER BY rule COLLATE "C", scope COLLATE "C"')).rows.map(stateFromRow);
  }

  async commit(c: AlertCommit): Promise<void> {
    if (c.put.length === 0 && c.remove.length === 0 && c.transitions.length === 0 && !c.intakeApplied?.length) return;
    await this.tx('alert commit', async (db) => {
      if (c.intakeApplied?.length) {
        await db.query(`UPDATE alert_intake SET applied = 1 FROM unnest($1::text[], $2::text[]) AS k(g, i) WHERE gateway = k.g AND id = k.i`,
          [c.intakeApplied.map((k) => k.gateway), c.intakeApplied.map((k) => k.id)]);
      }
      for (const s of c.put) {
        await db.query(`INSERT INTO alert_states (rule, scope, state, since, value, active_since, clearing_since, sent_state, sent_at)
          VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
          ON CONFLICT (rule, scope) DO UPDATE SET state = excluded.state, since = excluded.since, value = excluded.value,
            active_since = excluded.active_since, clearing_since = excluded.clearing_since, sent_state = excluded.sent_state, sent_at = excluded.sent_at`, stateParams(s));
      }
      for (const k of c.remove) await db.query('DELETE FROM alert_states WHERE rule = $1 AND scope = $2', [k.rule, k.scope]);
      const rules = new Set<string>();
      for (const t of c.transitions) {
        rules.add(t.rule);
        await db.query('INSERT INTO alert_history (rule, scope, from_state, to_state, at, value) VALUES ($1, $2, $3, $4, $5, $6)', [t.rule, t.scope, t.from, t.to, t.at, t.value]);
      }
      for (const rule of rules) {
        await db.query(`DELETE FROM alert_history WHERE rule = $1 AND id <= (
          SELECT id FROM alert_history WHERE rule = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)`, [rule, c.historyPerRule]);
      }
    });
  }

  async history(q: { rule?: string; scope?: string; limit: number }): Promise<AlertTransition[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.rule !== undefined) { params.push(q.rule); where.push(`rule = $${params.length}`); }
    if (q.scope !== undefined) { params.push(q.scope); where.push(`scope = $${params.length}`); }
    params.push(q.limit);
    const r = await this.q<TransitionDbRow>('alert history',
      `SELECT * FROM alert_history ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT $${params.length}`, params);
    return r.rows.map(transitionFromRow);
  }

  async recordGatewayTransitions(rows: GatewayTransition[], now: number): Promise<{ recorded: number; duplicates: number }> {
    return this.tx('record gateway alert transitions', async (db) => {
      let recorded = 0;
      if (rows.length > 0) {
        const r = await db.query(`INSERT INTO alert_intake (gateway, id, rule, device, from_state, to_state, at, value, received_at)
          SELECT g, i, r, d, f, t, a, v, $9 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::float8[])
            AS x(g, i, r, d, f, t, a, v)
          ON CONFLICT (gateway, id) DO NOTHING`, [
          rows.map((t) => t.gateway), rows.map((t) => t.id), rows.map((t) => t.rule), rows.map((t) => t.device), rows.map((t) => t.from),
          rows.map((t) => t.to), rows.map((t) => t.at), rows.map((t) => t.value), now,
        ]);
        recorded = r.rowCount ?? 0;
      }
      await db.query('DELETE FROM alert_intake WHERE applied = 1 AND received_at < $1', [now - INTAKE_KEEP_MS]);
      return { recorded, duplicates: rows.length - recorded };
    });
  }

  async pendingGatewayTransitions(limit: number): Promise<GatewayTransition[]> {
    return (await this.q<Parameters<typeof intakeFromRow>[0]>('gateway alert transitions',
      'SELECT * FROM alert_intake WHERE applied = 0 ORDER BY at, gateway COLLATE "C", id COLLATE "C" LIMIT $1', [limit])).rows.map(intakeFromRow);
  }

  async exclusive<T>(fn: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }> {
    let client: pg.PoolClient;
    let got: boolean;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw asStoreError(err, 'alerts lock');
    }
    try {
      got = (await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [ALERTS_LOCK_KEY])).rows[0].ok;
    } catch (err) {
      client.release(err as Error);
      throw asStoreError(err, 'alerts lock');
    }
    if (!got) {
      client.release();
      return { ran: false };
    }
    let broken: Error | undefined;
    try {
      return { ran: true, value: await fn() };
    } finally {
      // A connection whose unlock failed may still hold the lock: destroyed, so the server ends the session and the lock.
      await client.query('SELECT pg_advisory_unlock($1::bigint)', [ALERTS_LOCK_KEY]).catch((e: Error) => { broken = e; });
      client.release(broken);
    }
  }
}
