/**
 * The SQLite registry's SQL, on cloud.db's `gateway_status` and `devices`, written by every speed
 * push, and read with the ingest state (`received`, `gaps`, `seq_gaps`) for GET /api/v1/gateways
 * and GET /api/v1/devices (docs/serving.md). Callers go through SqliteSpeedStore (sqlite-store.ts),
 * the RegistryStore of cloud/store/speed.ts.
 */
import { type Db, chunkRows, placeholders } from '../../shared/sqlite.js';
import { CLOUD_LOST_REASON, UNKNOWN_TS } from '../store/ingest-state.js';
import {
  DEVICE_SEEN_RESOLUTION_MS, MAX_LISTED_GAPS, type DevicePage, type MetricName, type DeviceRow, type DeviceSearch, type GapEntry, type GapRecords, type GatewayStatusRow, type SeqGapEntry,
  FIRING_CTE, connectedDevices, containsPattern, deviceOrderBy, pushDevices,
} from '../store/speed.js';
import type { SpeedPush } from './validate.js';

export { DEVICE_SEEN_RESOLUTION_MS, MAX_LISTED_GAPS, type DeviceRow, type GapEntry, type GatewayStatusRow, type SeqGapEntry };

/** Record one push in the registry; run inside the caller's transaction. */
export async function recordContact(db: Db, push: SpeedPush, now: number): Promise<void> {
  const connected = connectedDevices(push);
  await db.run(
    `INSERT INTO gateway_status (gateway, last_push_at, sent_at, health, connected, pushes) VALUES (?, ?, ?, ?, ?, 1)
     ON CONFLICT (gateway) DO UPDATE SET last_push_at = MAX(last_push_at, excluded.last_push_at), sent_at = excluded.sent_at,
       health = excluded.health, connected = excluded.connected, pushes = pushes + 1`,
    [push.gateway, now, push.sentAt, push.health, JSON.stringify(connected)]);

  const rows = pushDevices(push);
  for (const chunk of chunkRows(rows, 5)) {
    const params: unknown[] = [];
    for (const [id, m] of chunk) params.push(id, push.gateway, now, now, m);
    await db.run(
      `INSERT INTO devices (id, gateway, first_seen, last_seen, metrics) VALUES ${placeholders(chunk.length, 5)}
       ON CONFLICT (id) DO UPDATE SET gateway = excluded.gateway, last_seen = MAX(devices.last_seen, excluded.last_seen),
         metrics = (SELECT json_group_array(value) FROM
           (SELECT value FROM json_each(devices.metrics) UNION SELECT value FROM json_each(excluded.metrics) ORDER BY value))
       WHERE excluded.last_seen >= devices.last_seen + ${DEVICE_SEEN_RESOLUTION_MS} OR devices.gateway <> excluded.gateway
         OR EXISTS (SELECT 1 FROM json_each(excluded.metrics) n WHERE n.value NOT IN (SELECT value FROM json_each(devices.metrics)))`,
      params);
  }
}

function parseJson<T>(text: string | null, fallback: T): T {
  if (text === null) return fallback;
  try { return JSON.parse(text) as T; } catch { return fallback; }
}

export async function gatewayStatuses(db: Db): Promise<Map<string, GatewayStatusRow>> {
  const rows = await db.all<{ gateway: string; last_push_at: number; sent_at: number | null; health: string; connected: string }>(
    'SELECT gateway, last_push_at, sent_at, health, connected FROM gateway_status');
  return new Map(rows.map((r) => [r.gateway, {
    gateway: r.gateway, lastPushAt: r.last_push_at, sentAt: r.sent_at, health: parseJson<Record<string, unknown> | null>(r.health, null), connected: parseJson<string[]>(r.connected, []),
  }]));
}

/** Per gateway that has a token and has pushed, its last push (epoch ms): what an operator should hear from. */
export async function registeredLastContact(db: Db): Promise<Map<string, number>> {
  const rows = await db.all<{ gateway: string; at: number }>(
    'SELECT s.gateway, s.last_push_at AS at FROM gateway_status s JOIN gateways g ON g.id = s.gateway');
  return new Map(rows.map((r) => [r.gateway, r.at]));
}

/** Every gateway the cloud knows: registered (a token) or heard from. */
export async function gatewayIds(db: Db): Promise<string[]> {
  const rows = await db.all<{ id: string }>('SELECT id FROM gateways UNION SELECT gateway FROM gateway_status ORDER BY 1');
  return rows.map((r) => r.id);
}

export async function receivedSeqs(db: Db): Promise<Map<string, number>> {
  const rows = await db.all<{ gateway: string; seq: number }>('SELECT gateway, MAX(to_seq) AS seq FROM received GROUP BY gateway');
  return new Map(rows.map((r) => [r.gateway, r.seq]));
}

function group<T extends { gateway: string }, U>(rows: T[], map: (r: T) => U): Map<string, U[]> {
  const out = new Map<string, U[]>();
  for (const r of rows) {
    const list = out.get(r.gateway) ?? [];
    list.push(map(r));
    out.set(r.gateway, list);
  }
  return out;
}

/**
 * Gap records, the newest MAX_LISTED_GAPS per gateway, in seq order; the readings the gateway
 * dropped (every reason but cloud_lost: its disk budget and disk floor) and the seqs the cloud
 * lost after acknowledging them (cloud_lost), per gateway.
 */
export async function gapRecords(db: Db): Promise<GapRecords> {
  const rows = await db.all<{ gateway: string; from_seq: number; to_seq: number; count: number; reason: string; min_ts: number; max_ts: number; devices: string }>(
    `SELECT gateway, from_seq, to_seq, count, reason, min_ts, max_ts, devices FROM
       (SELECT *, ROW_NUMBER() OVER (PARTITION BY gateway ORDER BY from_seq DESC) AS n FROM gaps)
     WHERE n <= ? ORDER BY gateway, from_seq`, [MAX_LISTED_GAPS]);
  const totals = await db.all<{ gateway: string; dropped: number; lost: number }>(
    'SELECT gateway, SUM(CASE WHEN reason = ? THEN 0 ELSE count END) AS dropped, SUM(CASE WHEN reason = ? THEN count ELSE 0 END) AS lost FROM gaps GROUP BY gateway',
    [CLOUD_LOST_REASON, CLOUD_LOST_REASON]);
  const ts = (v: number) => (v === UNKNOWN_TS ? null : v);
  return {
    gaps: group(rows, (r) => ({
      fromSeq: r.from_seq, toSeq: r.to_seq, count: r.count, reason: r.reason, minTs: ts(r.min_ts), maxTs: ts(r.max_ts), devices: parseJson<string[]>(r.devices, []),
    })),
    totals: new Map(totals.map((t) => [t.gateway, t.dropped])),
    lost: new Map(totals.filter((t) => t.lost > 0).map((t) => [t.gateway, t.lost])),
  };
}

/** Seq holes ingest saw, the newest MAX_LISTED_GAPS per gateway, in seq order. */
export async function seqGaps(db: Db): Promise<Map<string, SeqGapEntry[]>> {
  const rows = await db.all<{ gateway: string; from_seq: number; to_seq: number; seen_at: number }>(
    `SELECT gateway, from_seq, to_seq, seen_at FROM
       (SELECT *, ROW_NUMBER() OVER (PARTITION BY gateway ORDER BY from_seq DESC) AS n FROM seq_gaps)
     WHERE n <= ? ORDER BY gateway, from_seq`, [MAX_LISTED_GAPS]);
  return group(rows, (r) => ({ fromSeq: r.from_seq, toSeq: r.to_seq, seenAt: r.seen_at }));
}

export async function listDevices(db: Db, gateway?: string): Promise<DeviceRow[]> {
  const rows = await db.all<{ id: string; gateway: string; first_seen: number; last_seen: number; metrics: string }>(
    `SELECT id, gateway, first_seen, last_seen, metrics FROM devices ${gateway === undefined ? '' : 'WHERE gateway = ?'} ORDER BY id`,
    gateway === undefined ? [] : [gateway]);
  return rows.map((r) => ({ id: r.id, gateway: r.gateway, firstSeen: r.first_seen, lastSeen: r.last_seen, metrics: parseJson<string[]>(r.metrics, []) }));
}

/** Every metric a device reported, with its device count, from the registry's metric lists, in SQL. */
export async function metricNames(db: Db): Promise<MetricName[]> {
  return db.all<MetricName>('SELECT m.value AS name, COUNT(*) AS devices FROM devices d, json_each(d.metrics) m GROUP BY m.value ORDER BY m.value');
}

/**
 * One page of a device search, in SQL: the online pairs (device, gateway) come from the connected
 * lists of the gateways heard from after `onlineAfter`, joined once (not per device); the total
 * is a second statement over the same filter. `LIKE` is case-insensitive for ASCII in SQLite. The
 * firing alerts per device come from alert_states the same way (FIRING_CTE).
 */
export async function searchDevices(db: Db, s: DeviceSearch): Promise<DevicePage> {
  const where: string[] = [];
  const params: unknown[] = [s.onlineAfter];
  if (s.q !== undefined && s.q !== '') { where.push(`d.id LIKE ? ESCAPE '\\'`); params.push(containsPattern(s.q)); }
  if (s.gateway !== undefined) { where.push('d.gateway = ?'); params.push(s.gateway); }
  if (s.status === 'online') where.push('o.id IS NOT NULL');
  if (s.status === 'offline') where.push('o.id IS NULL');
  if (s.alerts === 'firing') where.push('f.id IS NOT NULL');
  const from = `WITH online (id, gateway) AS MATERIALIZED (
      SELECT DISTINCT c.value, s.gateway FROM gateway_status s, json_each(s.connected) c WHERE s.last_push_at > ?),
    ${FIRING_CTE}
    SELECT %COLS% FROM devices d LEFT JOIN online o ON o.id = d.id AND o.gateway = d.gateway LEFT JOIN firing f ON f.id = d.id
    ${where.length ? `WHERE ${where.join(' AND ')}` : ''}`;
  const page: unknown[] = [];
  let tail = `ORDER BY ${deviceOrderBy(s.sort, s.order)}`;
  if (s.limit !== undefined || s.offset) { tail += ' LIMIT ? OFFSET ?'; page.push(s.limit ?? -1, s.offset ?? 0); }
  const [count, rows] = await Promise.all([
    db.get<{ n: number }>(from.replace('%COLS%', 'COUNT(*) AS n'), params),
    db.all<{ id: string; gateway: string; first_seen: number; last_seen: number; metrics: string; online: number; firing: number }>(
      `${from.replace('%COLS%', 'd.id, d.gateway, d.first_seen, d.last_seen, d.metrics, o.id IS NOT NULL AS online, COALESCE(f.n, 0) AS firing')} ${tail}`, [...params, ...page]),
  ]);
  return {
    total: count?.n ?? 0,
    devices: rows.map((r) => ({
      id: r.id, gateway: r.gateway, firstSeen: r.first_seen, lastSeen: r.last_seen, metrics: parseJson<string[]>(r.metrics, []), online: r.online === 1,
      firingAlerts: r.firing,
    })),
  };
}
