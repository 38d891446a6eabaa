/**
 * The speed store and the registry as the cloud store's interface (docs/cluster-store.md): what
 * cloud/speed/ and the merged query read and write, at the transaction boundaries they need, with
 * two implementations, SQLite (cloud/speed/sqlite-store.ts, today's SQL on cloud.db) and
 * PostgreSQL (cloud/store/pg/speed.ts). Both pass test/support/store-conformance/speed.ts.
 */
import type { GatewayClockRow } from '../ingest/clock.js';
import type { SpeedPush } from '../speed/validate.js';
import type { SummaryColumns } from '../../shared/summary.js';

/** One stored partial, as the merged query reads it (shared/summary.ts columns; times in epoch ms). */
export interface SpeedPartialRow extends SummaryColumns {
  gateway: string;
  device: string;
  minute: number;
  epoch: number;
}

export interface SpeedPartialsQuery {
  metric: string;
  device?: string;
  gateway?: string;
  /** Minutes from this one (inclusive), epoch ms. */
  fromMs: number;
  /** Minutes before this one (exclusive), epoch ms. */
  toMs: number;
  /** E of the manifest the query read: only partials of epochs above E[gateway] (0 when absent) count. */
  watermark: Record<string, number>;
}

/** One push of a group commit, with the gateway's clock offset estimate to record (null: none yet). */
export interface SpeedPushEntry {
  push: SpeedPush;
  clockOffsetMs: number | null;
}

/** What one push changed: partials written (inserted or grown) and partials dropped as already pruned. */
export interface SpeedPushResult {
  stored: number;
  stale: number;
}

export interface SpeedStore {
  readonly kind: 'sqlite' | 'postgres';
  /**
   * A group commit, one transaction: per push, its partials (a stored partial is replaced only by
   * one whose count is not smaller [idempotent]; partials of epochs at or below the gateway's pruned
   * epoch are dropped [INV-3]), its registry rows (gateway_status, devices) and its clock offset.
   * Resolves after the commit, one result per entry in order; a throw means nothing of the group.
   */
  storePushes(entries: SpeedPushEntry[], now: number): Promise<SpeedPushResult[]>;
  /**
   * Delete the partials of epochs <= watermark[g] for every g, `chunkRows` per statement. The
   * gateway's pruned epoch moves first (never backwards), so a push racing the delete cannot put
   * back what is being removed. Call it only once a manifest carrying `watermark` is live.
   */
  prune(watermark: Record<string, number>, chunkRows: number): Promise<number>;
  /** The epoch up to which `gateway`'s partials were pruned (0: never). */
  prunedEpoch(gateway: string): Promise<number>;
  /** Partials of `q.metric` with minute in [fromMs, toMs), epochs above E[gateway], ordered by minute, gateway, device, epoch. */
  readPartials(q: SpeedPartialsQuery): Promise<SpeedPartialRow[]>;
  /** Per gateway, its last speed push, epoch ms: what `provisional` is judged on. */
  lastContact(): Promise<Record<string, number>>;
}

export interface GatewayStatusRow {
  gateway: string;
  lastPushAt: number;
  /** The gateway's clock when it sent the last push stored (its `sentAt`), null if it sent none. */
  sentAt: number | null;
  health: Record<string, unknown> | null;
  connected: string[];
}
/** A gap record; minTs and maxTs null when its event-time range is unknown (cloud_lost). */
export interface GapEntry { fromSeq: number; toSeq: number; count: number; reason: string; minTs: number | null; maxTs: number | null; devices: string[] }
export interface SeqGapEntry { fromSeq: number; toSeq: number; seenAt: number }
export interface DeviceRow { id: string; gateway: string; firstSeen: number; lastSeen: number; metrics: string[] }
export interface GapRecords {
  /** The newest MAX_LISTED_GAPS per gateway, in seq order. */
  gaps: Map<string, GapEntry[]>;
  /** Readings the gateway dropped (every reason but cloud_lost), per gateway. */
  totals: Map<string, number>;
  /** Seqs the cloud lost after acknowledging them (cloud_lost), per gateway that has any. */
  lost: Map<string, number>;
}

/** The registry's reads for GET /api/v1/gateways and /api/v1/devices (its writes are storePushes'). */
export interface RegistryStore {
  /** Every gateway the cloud knows: registered (a token) or heard from, sorted. */
  gatewayIds(): Promise<string[]>;
  gatewayStatuses(): Promise<Map<string, GatewayStatusRow>>;
  /** Per gateway that has a token and has pushed, its last push (epoch ms). */
  registeredLastContact(): Promise<Map<string, number>>;
  /** Per gateway, the highest seq ingest received. */
  receivedSeqs(): Promise<Map<string, number>>;
  gapRecords(): Promise<GapRecords>;
  /** Seq holes ingest saw, the newest MAX_LISTED_GAPS per gateway, in seq order. */
  seqGaps(): Promise<Map<string, SeqGapEntry[]>>;
  /** Every gateway's row of gateway_clock. */
  clockRows(): Promise<Map<string, GatewayClockRow>>;
  /** The devices (of one gateway), sorted by id. */
  listDevices(gateway?: string): Promise<DeviceRow[]>;
  /** One page of the devices matching `q`, filtered, sorted and paged in SQL, with the matching total. */
  searchDevices(q: DeviceSearch): Promise<DevicePage>;
  /** Every metric a device reported, with how many devices reported it, sorted by name (byte-wise). */
  metricNames(): Promise<MetricName[]>;
}

/** A metric of the fleet (GET /api/v1/metrics): its name and the devices that reported it. */
export interface MetricName { name: string; devices: number }

/** The sort keys of a device search (GET /api/v1/devices `sort`), each broken by id in the same direction. */
export const DEVICE_SORTS = ['id', 'lastSeen', 'gateway'] as const;
export type DeviceSort = typeof DEVICE_SORTS[number];

/** A device search (GET /api/v1/devices): every field optional but the clock of `online`. */
export interface DeviceSearch {
  /** A case-insensitive substring of the id (ASCII case folding; `%` and `_` match themselves). */
  q?: string;
  gateway?: string;
  /** online: its gateway pushed after `onlineAfter` and says it is connected; offline: the rest. */
  status?: 'online' | 'offline';
  /**
   * firing: only devices with a firing alert whose scope is the device (alert_states, a rule at
   * `device:<id>`); a gateway or fleet alert marks none of the devices under it.
   */
  alerts?: 'firing';
  /** Epoch ms: a gateway whose last push is later than this is online (now - speed.staleAfterMs). */
  onlineAfter: number;
  sort?: DeviceSort;
  order?: 'asc' | 'desc';
  /** Rows from this one of the sorted matches (0: the first). */
  offset?: number;
  /** At most this many rows (absent: every match). */
  limit?: number;
}

export interface DevicePage {
  /** Every device matching q, gateway, status and alerts (before offset and limit). */
  total: number;
  /** Each with `firingAlerts`: how many alerts of the device's own scope are firing. */
  devices: Array<DeviceRow & { online: boolean; firingAlerts: number }>;
}

/** The ORDER BY of a device search: the key, then the id, both in one direction, byte-wise (SQLite's BINARY, PostgreSQL's "C"). */
export function deviceOrderBy(sort: DeviceSort = 'id', order: 'asc' | 'desc' = 'asc', collateC = ''): string {
  const dir = order === 'desc' ? 'DESC' : 'ASC';
  const id = `d.id${collateC} ${dir}`;
  if (sort === 'lastSeen') return `d.last_seen ${dir}, ${id}`;
  if (sort === 'gateway') return `d.gateway${collateC} ${dir}, ${id}`;
  return id;
}

/**
 * The device search's firing alerts, per device: `firing (id, n)` from alert_states (the same SQL
 * on SQLite and PostgreSQL), materialized once per search, not looked up per device. Only alerts
 * whose scope is the device itself (`device:<id>`): a gateway or fleet alert says something about
 * the gateway or the fleet, not that each device under it is alerting.
 */
export const FIRING_CTE = `firing (id, n) AS MATERIALIZED (
      SELECT substr(scope, 8), COUNT(*) FROM alert_states WHERE state = 'firing' AND substr(scope, 1, 7) = 'device:' GROUP BY scope)`;

/** A LIKE pattern matching `q` anywhere, with `\` as the escape of `%`, `_` and itself. */
export function containsPattern(q: string): string {
  return `%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/**
 * A device row is rewritten only when something worth a write changed: a new metric, another
 * gateway, or last_seen older than this (so `lastSeenAt` is accurate to 5 s, and a fleet of
 * connected devices does not cost a page write per device per push).
 */
export const DEVICE_SEEN_RESOLUTION_MS = 5_000;
/** Most gap records and seq holes listed per gateway (the newest). */
export const MAX_LISTED_GAPS = 1_000;

/** E[g] from a watermark object; a gateway id like "constructor" must not find Object's prototype. */
export function epochOf(watermark: Record<string, number>, gateway: string): number {
  return Object.hasOwn(watermark, gateway) ? watermark[gateway] : 0;
}

/** The devices a push names (its device list and its partials), each with its metrics sorted, as JSON text. */
export function pushDevices(push: SpeedPush): Array<readonly [string, string]> {
  const metrics = new Map<string, Set<string>>();
  for (const d of push.devices) if (!metrics.has(d.id)) metrics.set(d.id, new Set());
  for (const p of push.partials) {
    const set = metrics.get(p[0]) ?? new Set<string>();
    set.add(p[1]);
    metrics.set(p[0], set);
  }
  return [...metrics].map(([id, m]) => [id, JSON.stringify([...m].sort())] as const);
}

/** The connected devices of a push, sorted. */
export function connectedDevices(push: SpeedPush): string[] {
  return push.devices.filter((d) => d.connected).map((d) => d.id).sort();
}
