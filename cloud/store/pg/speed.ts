/**
 * The SpeedStore and RegistryStore (cloud/store/speed.ts) on PostgreSQL, migration 1's tables: the
 * same statements as the SQLite store (cloud/speed/store.ts, registry-store.ts) in PostgreSQL's
 * dialect (GREATEST for MAX, upsert columns qualified by the table, JSONB parsed by the driver,
 * SUM cast back to BIGINT, text ordered byte-wise as SQLite orders it), held equal to it by
 * test/support/store-conformance/speed.ts.
 *
 * What SQLite's single writer gave for free, done here across nodes:
 * - A push and a prune of the same gateway: the push holds a shared advisory lock on the gateway
 *   while it reads speed_pruned and writes partials; the prune moves speed_pruned under the
 *   exclusive one. So a push either commits before the epoch moves (its rows are there for the
 *   delete) or reads the new epoch (and drops them) [INV-3]. Pushes of one gateway on two nodes
 *   share the lock.
 * - The same partial upserted by two nodes at once: ON CONFLICT waits for the other's row and
 *   re-checks the count guard on the committed row, so the larger count wins either way.
 * - Row locks are taken in one order (gateways, then partials by key, devices by id) so two
 *   groups touching the same rows rarely deadlock; when they do (40P01), or a serialization
 *   failure (40001), the transaction is retried whole: a failed one left nothing.
 */
import type pg from 'pg';
import type { GatewayClockRow } from '../../ingest/clock.js';
import type { PartialTuple, SpeedPush } from '../../speed/validate.js';
import { CLOUD_LOST_REASON, UNKNOWN_TS } from '../ingest-state.js';
import {
  DEVICE_SEEN_RESOLUTION_MS, MAX_LISTED_GAPS, type DevicePage, type MetricName, type DeviceRow, type DeviceSearch, type GapEntry, type GapRecords, type GatewayStatusRow, type RegistryStore,
  type SeqGapEntry, type SpeedPartialRow, type SpeedPartialsQuery, type SpeedPushEntry, type SpeedPushResult, type SpeedStore,
  FIRING_CTE, connectedDevices, containsPattern, deviceOrderBy, epochOf, pushDevices,
} from '../speed.js';
import { pgTransaction } from './pool.js';

/** PostgreSQL's limit on bind parameters per statement (a 16-bit count in the wire protocol). */
export const PG_MAX_PARAMS = 65_535;
/** First key of the per-gateway advisory locks between pushes and prunes ('bspd'); the second is hashtext(gateway). */
export const SPEED_LOCK_CLASS = 0x62737064;
/** Retries of a transaction that failed on a deadlock or a serialization failure. */
const TX_ATTEMPTS = 5;
const RETRIED = new Set(['40P01', '40001']);

const COLUMNS = ['gateway', 'device', 'metric', 'minute', 'epoch', 'count', 'sum', 'min', 'max', 'm2', 'first', 'first_ts', 'last', 'last_ts', 'received_at'];
const UPDATED = COLUMNS.slice(5).map((c) => `${c} = excluded.${c}`).join(', ');

/** Split rows so that each multi-row statement stays under PostgreSQL's parameter limit. */
function chunks<T>(rows: T[], paramsPerRow: number): T[][] {
  const per = Math.max(1, Math.floor(PG_MAX_PARAMS / paramsPerRow));
  const out: T[][] = [];
  for (let i = 0; i < rows.length; i += per) out.push(rows.slice(i, i + per));
  return out;
}

/** `($1,$2,$3),($4,$5,$6)...`, each row's values cast as `casts` says (by column index). */
function values(rows: number, perRow: number, casts: Record<number, string> = {}): string {
  const out: string[] = [];
  for (let r = 0; r < rows; r++) {
    const cols: string[] = [];
    for (let c = 0; c < perRow; c++) cols.push(`$${r * perRow + c + 1}${casts[c] ?? ''}`);
    out.push(`(${cols.join(',')})`);
  }
  return out.join(',');
}

/** Byte-wise order, as SQLite's BINARY collation and COLLATE "C" order text. */
const cmp = (a: string, b: string) => (Buffer.compare(Buffer.from(a), Buffer.from(b)));

/**
 * A push's partials as statements that each name a key once (ON CONFLICT DO UPDATE cannot touch a
 * row twice in one statement): the n-th occurrence of a key goes in the n-th statement, so
 * repeats apply in the push's order, as SQLite applies a multi-row insert row by row. Each is
 * sorted by key, so row locks are taken in one order on every node.
 */
function byOccurrence(partials: PartialTuple[]): PartialTuple[][] {
  const key = (p: PartialTuple) => `${p[0]}\u0000${p[1]}\u0000${p[2]}\u0000${p[3]}`;
  const seen = new Map<string, number>();
  const rounds: PartialTuple[][] = [];
  for (const p of partials) {
    const k = key(p);
    const n = seen.get(k) ?? 0;
    seen.set(k, n + 1);
    (rounds[n] ??= []).push(p);
  }
  for (const r of rounds) r.sort((a, b) => cmp(a[0], b[0]) || cmp(a[1], b[1]) || a[2] - b[2] || a[3] - b[3]);
  return rounds;
}

function jsonArray(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

export class PgSpeedStore implements SpeedStore, RegistryStore {
  readonly kind = 'postgres' as const;
  private readonly pool: pg.Pool;

  /** The pool is the caller's (createPgPool), migrated; close it after the store. */
  constructor(pool: pg.Pool) {
    this.pool = pool;
  }

  /** Run `job` in one transaction on one connection; retried whole on a deadlock or serialization failure. */
  private async tx<T>(job: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await pgTransaction(this.pool, job);
      } catch (err) {
        if (attempt < TX_ATTEMPTS && RETRIED.has((err as { code?: string }).code ?? '')) continue;
        throw err;
      }
    }
  }

  storePushes(entries: SpeedPushEntry[], now: number): Promise<SpeedPushResult[]> {
    const gateways = [...new Set(entries.map((e) => e.push.gateway))].sort(cmp);
    // A gateway's rows (partials, status, clock) are its own: written gateway by gateway in sorted
    // order (a gateway's pushes in the group's order), so two nodes' groups lock them in one order.
    // Device rows are shared when a device moves: written after, in the group's order (the last
    // push names its gateway, as in SQLite).
    const order = entries.map((_, i) => i).sort((a, b) => cmp(entries[a].push.gateway, entries[b].push.gateway) || a - b);
    return this.tx(async (c) => {
      // [INV-3] shared with other pushes, exclusive against a prune moving speed_pruned; sorted: no deadlock between groups.
      for (const g of gateways) await c.query('SELECT pg_advisory_xact_lock_shared($1, hashtext($2))', [SPEED_LOCK_CLASS, g]);
      const out: SpeedPushResult[] = new Array(entries.length);
      for (const i of order) {
        const { push, clockOffsetMs } = entries[i];
        out[i] = await this.upsertPartials(c, push.gateway, push.partials, now);
        await this.recordStatus(c, push, now);
        if (clockOffsetMs !== null) {
          await c.query(
            `INSERT INTO gateway_clock (gateway, offset_ms, offset_at) VALUES ($1, $2, $3)
             ON CONFLICT (gateway) DO UPDATE SET offset_ms = excluded.offset_ms, offset_at = excluded.offset_at`,
            [push.gateway, Math.round(clockOffsetMs), now]);
        }
      }
      for (const { push } of entries) await this.recordDevices(c, push, now);
      return out;
    });
  }

  /** The count guard of cloud/speed/store.ts upsertPartials, per statement of byOccurrence. */
  private async upsertPartials(c: pg.PoolClient, gateway: string, partials: PartialTuple[], now: number): Promise<SpeedPushResult> {
    const pruned = await this.prunedOn(c, gateway);
    const keep = pruned > 0 ? partials.filter((p) => p[3] > pruned) : partials;
    let stored = 0;
    for (const round of byOccurrence(keep)) {
      for (const chunk of chunks(round, COLUMNS.length)) {
        const params: unknown[] = [];
        for (const p of chunk) params.push(gateway, ...p, now);
        const r = await c.query(
          `INSERT INTO speed_partials (${COLUMNS.join(', ')}) VALUES ${values(chunk.length, COLUMNS.length)}
           ON CONFLICT (gateway, device, metric, minute, epoch) DO UPDATE SET ${UPDATED}
           WHERE excluded.count >= speed_partials.count`, params);
        stored += r.rowCount ?? 0;
      }
    }
    return { stored, stale: partials.length - keep.length };
  }

  /** cloud/speed/registry-store.ts recordContact, its gateway_status half. */
  private async recordStatus(c: pg.PoolClient, push: SpeedPush, now: number): Promise<void> {
    await c.query(
      `INSERT INTO gateway_status (gateway, last_push_at, sent_at, health, connected, pushes) VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, 1)
       ON CONFLICT (gateway) DO UPDATE SET last_push_at = GREATEST(gateway_status.last_push_at, excluded.last_push_at),
         sent_at = excluded.sent_at, health = excluded.health, connected = excluded.connected, pushes = gateway_status.pushes + 1`,
      [push.gateway, now, push.sentAt, push.health, JSON.stringify(connectedDevices(push))]);
  }

  /** cloud/speed/registry-store.ts recordContact, its devices half. */
  private async recordDevices(c: pg.PoolClient, push: SpeedPush, now: number): Promise<void> {
    const rows = pushDevices(push).sort((a, b) => cmp(a[0], b[0]));
    for (const chunk of chunks(rows, 5)) {
      const params: unknown[] = [];
      for (const [id, m] of chunk) params.push(id, push.gateway, now, now, m);
      await c.query(
        `INSERT INTO devices (id, gateway, first_seen, last_seen, metrics) VALUES ${values(chunk.length, 5, { 4: '::jsonb' })}
         ON CONFLICT (id) DO UPDATE SET gateway = excluded.gateway, last_seen = GREATEST(devices.last_seen, excluded.last_seen),
           metrics = (SELECT COALESCE(jsonb_agg(v ORDER BY v COLLATE "C"), '[]'::jsonb) FROM
             (SELECT jsonb_array_elements_text(devices.metrics) UNION SELECT jsonb_array_elements_text(excluded.metrics)) AS m(v))
         WHERE excluded.last_seen >= devices.last_seen + ${DEVICE_SEEN_RESOLUTION_MS} OR devices.gateway <> excluded.gateway
           OR NOT (devices.metrics @> excluded.metrics)`,
        params);
    }
  }

  private async prunedOn(c: pg.Pool | pg.PoolClient, gateway: string): Promise<number> {
    const r = await c.query<{ epoch: number }>('SELECT epoch FROM speed_pruned WHERE gateway = $1', [gateway]);
    return r.rows[0]?.epoch ?? 0;
  }

  prunedEpoch(gateway: string): Promise<number> {
    return this.prunedOn(this.pool, gateway);
  }

  async prune(watermark: Record<string, number>, chunkRows: number): Promise<number> {
    let deleted = 0;
    for (const [gateway, epoch] of Object.entries(watermark)) {
      if (!(epoch > 0)) continue;
      await this.tx(async (c) => {
        // [INV-3] waits for the gateway's pushes in flight; the ones after it read the new epoch.
        await c.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [SPEED_LOCK_CLASS, gateway]);
        await c.query(
          `INSERT INTO speed_pruned (gateway, epoch) VALUES ($1, $2)
           ON CONFLICT (gateway) DO UPDATE SET epoch = GREATEST(speed_pruned.epoch, excluded.epoch)`, [gateway, epoch]);
      });
      for (;;) {
        // SKIP LOCKED: two nodes pruning at once split the rows instead of queueing on them. A
        // chunk short because the other node holds rows is not the end: stop at an empty one.
        const r = await this.pool.query(
          `DELETE FROM speed_partials WHERE (gateway, device, metric, minute, epoch) IN
             (SELECT gateway, device, metric, minute, epoch FROM speed_partials WHERE gateway = $1 AND epoch <= $2
              LIMIT $3 FOR UPDATE SKIP LOCKED)`,
          [gateway, epoch, chunkRows]);
        const n = r.rowCount ?? 0;
        deleted += n;
        if (n === 0) break;
      }
    }
    return deleted;
  }

  async readPartials(q: SpeedPartialsQuery): Promise<SpeedPartialRow[]> {
    const where = ['metric = $1', 'minute >= $2', 'minute < $3'];
    const params: unknown[] = [q.metric, q.fromMs, q.toMs];
    if (q.device !== undefined) { params.push(q.device); where.push(`device = $${params.length}`); }
    if (q.gateway !== undefined) { params.push(q.gateway); where.push(`gateway = $${params.length}`); }
    const r = await this.pool.query<SpeedPartialRow>(
      `SELECT gateway, device, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts
       FROM speed_partials WHERE ${where.join(' AND ')} ORDER BY minute, gateway COLLATE "C", device COLLATE "C", epoch`, params);
    return r.rows.filter((row) => row.epoch > epochOf(q.watermark, row.gateway));
  }

  async lastContact(): Promise<Record<string, number>> {
    const r = await this.pool.query<{ gateway: string; at: number }>('SELECT gateway, last_push_at AS at FROM gateway_status');
    const out: Record<string, number> = {};
    for (const row of r.rows) out[row.gateway] = row.at;
    return out;
  }

  async gatewayIds(): Promise<string[]> {
    const r = await this.pool.query<{ id: string }>(
      'SELECT id FROM (SELECT id FROM gateways UNION SELECT gateway FROM gateway_status) AS k ORDER BY id COLLATE "C"');
    return r.rows.map((row) => row.id);
  }

  async gatewayStatuses(): Promise<Map<string, GatewayStatusRow>> {
    const r = await this.pool.query<{ gateway: string; last_push_at: number; sent_at: number | null; health: unknown; connected: unknown }>(
      'SELECT gateway, last_push_at, sent_at, health, connected FROM gateway_status');
    return new Map(r.rows.map((row) => [row.gateway, {
      gateway: row.gateway,
      lastPushAt: row.last_push_at,
      sentAt: row.sent_at,
      health: row.health !== null && typeof row.health === 'object' ? row.health as Record<string, unknown> : null,
      connected: jsonArray(row.connected),
    }]));
  }

  async registeredLastContact(): Promise<Map<string, number>> {
    const r = await this.pool.query<{ gateway: string; at: number }>(
      'SELECT s.gateway, s.last_push_at AS at FROM gateway_status s JOIN gateways g ON g.id = s.gateway');
    return new Map(r.rows.map((row) => [row.gateway, row.at]));
  }

  async receivedSeqs(): Promise<Map<string, number>> {
    const r = await this.pool.query<{ gateway: string; seq: number }>('SELECT gateway, MAX(to_seq) AS seq FROM received GROUP BY gateway');
    return new Map(r.rows.map((row) => [row.gateway, row.seq]));
  }

  async gapRecords(): Promise<GapRecords> {
    const rows = (await this.pool.query<{ gateway: string; from_seq: number; to_seq: number; count: number; reason: string; min_ts: number; max_ts: number; devices: unknown }>(
      `SELECT gateway, from_seq, to_seq, count, reason, min_ts, max_ts, devices FROM
         (SELECT *, ROW_NUMBER() OVER (PARTITION BY gateway ORDER BY from_seq DESC) AS n FROM gaps) AS g
       WHERE n <= $1 ORDER BY gateway COLLATE "C", from_seq`, [MAX_LISTED_GAPS])).rows;
    // SUM of BIGINT is NUMERIC (a string from the driver): cast back.
    const totals = (await this.pool.query<{ gateway: string; dropped: number; lost: number }>(
      `SELECT gateway, SUM(CASE WHEN reason = $1 THEN 0 ELSE count END)::bigint AS dropped,
         SUM(CASE WHEN reason = $1 THEN count ELSE 0 END)::bigint AS lost FROM gaps GROUP BY gateway`, [CLOUD_LOST_REASON])).rows;
    const ts = (v: number) => (v === UNKNOWN_TS ? null : v);
    const gaps = new Map<string, GapEntry[]>();
    for (const r of rows) {
      const list = gaps.get(r.gateway) ?? [];
      list.push({ fromSeq: r.from_seq, toSeq: r.to_seq, count: r.count, reason: r.reason, minTs: ts(r.min_ts), maxTs: ts(r.max_ts), devices: jsonArray(r.devices) });
      gaps.set(r.gateway, list);
    }
    return {
      gaps,
      totals: new Map(totals.map((t) => [t.gateway, t.dropped])),
      lost: new Map(totals.filter((t) => t.lost > 0).map((t) => [t.gateway, t.lost])),
    };
  }

  async seqGaps(): Promise<Map<string, SeqGapEntry[]>> {
    const r = await this.pool.query<{ gateway: string; from_seq: number; to_seq: number; seen_at: number }>(
      `SELECT gateway, from_seq, to_seq, seen_at FROM
         (SELECT *, ROW_NUMBER() OVER (PARTITION BY gateway ORDER BY from_seq DESC) AS n FROM seq_gaps) AS s
       WHERE n <= $1 ORDER BY gateway COLLATE "C", from_seq`, [MAX_LISTED_GAPS]);
    const out = new Map<string, SeqGapEntry[]>();
    for (const row of r.rows) {
      const list = out.get(row.gateway) ?? [];
      list.push({ fromSeq: row.from_seq, toSeq: row.to_seq, seenAt: row.seen_at });
      out.set(row.gateway, list);
    }
    return out;
  }

  async clockRows(): Promise<Map<string, GatewayClockRow>> {
    const r = await this.pool.query<{ gateway: string; offset_ms: number | null; offset_at: number | null; future_readings: number; future_device: string | null; future_metric: string | null; future_ts: number | null; future_at: number | null }>(
      'SELECT gateway, offset_ms, offset_at, future_readings, future_device, future_metric, future_ts, future_at FROM gateway_clock');
    return new Map(r.rows.map((row) => [row.gateway, {
      offsetMs: row.offset_ms,
      offsetAt: row.offset_at,
      futureReadings: row.future_readings,
      lastFuture: row.future_device !== null && row.future_metric !== null && row.future_ts !== null && row.future_at !== null
        ? { device: row.future_device, metric: row.future_metric, ts: row.future_ts, at: row.future_at } : null,
    }]));
  }

  async listDevices(gateway?: string): Promise<DeviceRow[]> {
    const r = await this.pool.query<{ id: string; gateway: string; first_seen: number; last_seen: number; metrics: unknown }>(
      `SELECT id, gateway, first_seen, last_seen, metrics FROM devices ${gateway === undefined ? '' : 'WHERE gateway = $1'} ORDER BY id COLLATE "C"`,
      gateway === undefined ? [] : [gateway]);
    return r.rows.map((row) => ({ id: row.id, gateway: row.gateway, firstSeen: row.first_seen, lastSeen: row.last_seen, metrics: jsonArray(row.metrics) }));
  }

  /** cloud/speed/registry-store.ts metricNames: names compared byte-wise (COLLATE "C") as SQLite's BINARY does. */
  async metricNames(): Promise<MetricName[]> {
    const r = await this.pool.query<{ name: string; devices: number }>(
      `SELECT m.name, COUNT(*)::int AS devices FROM devices d, jsonb_array_elements_text(d.metrics) AS m(name)
        GROUP BY m.name ORDER BY m.name COLLATE "C"`);
    return r.rows;
  }

  /**
   * cloud/speed/registry-store.ts searchDevices: the same statements, ILIKE for the id (ASCII
   * ids fold as in SQLite), ids compared byte-wise (COLLATE "C") as SQLite's BINARY does.
   */
  async searchDevices(s: DeviceSearch): Promise<DevicePage> {
    const where: string[] = [];
    const params: unknown[] = [s.onlineAfter];
    if (s.q !== undefined && s.q !== '') { params.push(containsPattern(s.q)); where.push(`d.id ILIKE $${params.length} ESCAPE '\\'`); }
    if (s.gateway !== undefined) { params.push(s.gateway); where.push(`d.gateway = $${params.length}`); }
    if (s.status === 'online') where.push('o.id IS NOT NULL');
    if (s.status === 'offline') where.push('o.id IS NULL');
    if (s.alerts === 'firing') where.push('f.id IS NOT NULL');
    const from = `WITH online (id, gateway) AS MATERIALIZED (
        SELECT DISTINCT c.value, st.gateway FROM gateway_status st, jsonb_array_elements_text(st.connected) AS c(value) WHERE st.last_push_at > $1),
      ${FIRING_CTE}
      SELECT %COLS% FROM devices d LEFT JOIN online o ON o.id = d.id AND o.gateway = d.gateway LEFT JOIN firing f ON f.id = d.id
      ${where.length ? `WHERE ${where.join(' AND ')}` : ''}`;
    const page = [...params];
    let tail = `ORDER BY ${deviceOrderBy(s.sort, s.order, ' COLLATE "C"')}`;
    if (s.limit !== undefined) { page.push(s.limit); tail += ` LIMIT $${page.length}`; }
    if (s.offset) { page.push(s.offset); tail += ` OFFSET $${page.length}`; }
    const [count, rows] = await Promise.all([
      this.pool.query<{ n: number }>(from.replace('%COLS%', 'COUNT(*)::int AS n'), params),
      this.pool.query<{ id: string; gateway: string; first_seen: number; last_seen: number; metrics: unknown; online: boolean; firing: number }>(
        `${from.replace('%COLS%', 'd.id, d.gateway, d.first_seen, d.last_seen, d.metrics, o.id IS NOT NULL AS online, COALESCE(f.n, 0)::int AS firing')} ${tail}`, page),
    ]);
    return {
      total: count.rows[0]?.n ?? 0,
      devices: rows.rows.map((r) => ({
        id: r.id, gateway: r.gateway, firstSeen: r.first_seen, lastSeen: r.last_seen, metrics: jsonArray(r.metrics), online: r.online, firingAlerts: r.firing,
      })),
    };
  }
}
