/**
 * GET /api/v1/gateways and GET /api/v1/devices (read key; docs/serving.md): what the cloud knows
 * of each gateway (last push, health, E from the live manifest, the highest seq received, gap
 * records and seq holes, its clock offset and readings stamped in the cloud's future) and of each device. A gateway is online when its last push is younger
 * than `speed.staleAfterMs`; a device when its gateway is online and says it is connected.
 */
import type { FastifyInstance, onResponseHookHandler, preHandlerHookHandler } from 'fastify';
import type { Counter } from 'prom-client';
import { BadRequestError } from '../../shared/errors.js';
import { iso } from '../../shared/time.js';
import { AUTH_ERRORS, errorResponses } from '../api/responses.js';
import { DEVICE_SORTS, type DeviceSort, type GatewayStatusRow, type RegistryStore } from '../store/speed.js';
import type { LiveViewSource } from './live-manifest.js';
import { epochOf } from './store.js';

export interface RegistryRouteDeps {
  /** The registry's reads (cloud/store/speed.ts). */
  registry: RegistryStore;
  live: LiveViewSource;
  staleAfterMs: number;
  /** The preHandler that admits a read key, or an admin key (401/403 otherwise). */
  read: preHandlerHookHandler;
  now: () => number;
  /** Counts the routes' 4xx answers [INV-5] (braid_registry_rejected_total). */
  rejected?: Counter<'route' | 'status'>;
}

/** The most devices one page of GET /api/v1/devices holds. */
export const MAX_DEVICE_PAGE = 1_000;

/** The parameters of GET /api/v1/devices; any other is a 400 naming it. */
const DEVICE_PARAMS = ['q', 'gateway', 'status', 'alerts', 'sort', 'order', 'limit', 'offset'];

const isoOrNull = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : iso(ms));

function isOnline(s: GatewayStatusRow | undefined, now: number, staleAfterMs: number): boolean {
  return s !== undefined && now - s.lastPushAt < staleAfterMs;
}

/** A number from the health document at `path`, or null (an older gateway may not send it). */
function healthNumber(health: Record<string, unknown> | null, ...path: string[]): number | null {
  let v: unknown = health;
  for (const k of path) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

const looseObject = { type: ['object', 'null'], additionalProperties: true } as const;
const gatewaySchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    lastContactAt: { type: ['string', 'null'] },
    online: { type: 'boolean' },
    watermark: { type: 'integer' },
    receivedSeq: { type: 'integer' },
    outboxPending: { type: ['integer', 'null'] },
    health: looseObject,
    gaps: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          fromSeq: { type: 'integer' }, toSeq: { type: 'integer' }, count: { type: 'integer' }, reason: { type: 'string' },
          minTs: { type: ['string', 'null'], description: 'Event time of the earliest reading it names; null when unknown (reason cloud_lost)' },
          maxTs: { type: ['string', 'null'], description: 'Event time of the latest reading it names; null when unknown (reason cloud_lost)' },
          devices: { type: 'array', items: { type: 'string' } },
        },
      },
    },
    seqGaps: {
      type: 'array',
      items: { type: 'object', properties: { fromSeq: { type: 'integer' }, toSeq: { type: 'integer' }, seenAt: { type: 'string' } } },
    },
    cloudLost: {
      type: 'integer',
      description: 'Seqs this cloud had acknowledged to the gateway and lost since (cloud.db restored from an older backup), as its cloud_lost gap records name them',
    },
    dropped: {
      type: 'object',
      properties: { diskBudget: { type: 'integer' }, queueFull: { type: 'integer' }, invalid: { type: 'integer' }, duplicates: { type: 'integer' } },
    },
    clockOffsetMs: {
      type: ['integer', 'null'],
      description: 'The gateway\'s clock minus the cloud\'s, in ms (positive: ahead), from the sentAt of its requests (max over the last minute); null before its first',
    },
    clockOffsetAt: { type: ['string', 'null'], description: 'When clockOffsetMs was last measured' },
    futureReadings: { type: 'integer', description: 'Readings it sent stamped more than ingest.maxFutureMs after the cloud\'s clock (stored, counted)' },
    lastFutureReading: {
      type: ['object', 'null'],
      description: 'The furthest-ahead reading of the last batch that had any',
      properties: { device: { type: 'string' }, metric: { type: 'string' }, ts: { type: 'string' }, seenAt: { type: 'string' } },
    },
  },
} as const;

const deviceSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' }, gateway: { type: 'string' }, firstSeenAt: { type: 'string' }, lastSeenAt: { type: 'string' },
    online: { type: 'boolean' }, metrics: { type: 'array', items: { type: 'string' } },
    firingAlerts: { type: 'integer', description: 'Alerts firing whose scope is this device (GET /api/v1/alerts); gateway and fleet alerts are not counted here' },
  },
} as const;

export function registerRegistryRoutes(app: FastifyInstance, deps: RegistryRouteDeps): void {
  const { registry: store } = deps;
  /** Count a 4xx of `route` (schema refusals and missing keys included). */
  const counted = (route: string): onResponseHookHandler => (_req, reply, done) => {
    if (reply.statusCode >= 400 && reply.statusCode < 500) deps.rejected?.inc({ route, status: String(reply.statusCode) });
    done();
  };

  app.get('/api/v1/gateways', {
    preHandler: deps.read,
    onResponse: counted('gateways'),
    schema: {
      summary: 'Every gateway: last contact, health, E, received seq, gap records (read key)',
      operationId: 'listGateways',
      tags: ['registry'],
      response: {
        200: { description: 'Every gateway registered (a token) or heard from', type: 'object', properties: { gateways: { type: 'array', items: gatewaySchema } } },
        ...errorResponses(AUTH_ERRORS.read),
      },
    },
  }, async () => {
    const now = deps.now();
    const [ids, status, received, gaps, holes, live, clocks] = await Promise.all([
      store.gatewayIds(), store.gatewayStatuses(), store.receivedSeqs(), store.gapRecords(), store.seqGaps(), deps.live.get(), store.clockRows(),
    ]);
    return {
      gateways: ids.map((id) => {
        const s = status.get(id);
        const health = s?.health ?? null;
        // Disk drops (the outbox budget and the free-disk floor, outbox.minFreeBytes): the durable gap
        // records, or the gateway's counters if they are ahead (its gap records not forwarded yet); the
        // other counters exist only at the gateway, since its start.
        const atGateway = (healthNumber(health, 'dropped', 'diskBudget') ?? 0) + (healthNumber(health, 'dropped', 'diskFloor') ?? 0);
        const diskBudget = Math.max(gaps.totals.get(id) ?? 0, atGateway);
        const clock = clocks.get(id);
        const future = clock?.lastFuture;
        return {
          id,
          lastContactAt: isoOrNull(s?.lastPushAt),
          online: isOnline(s, now, deps.staleAfterMs),
          watermark: live ? epochOf(live.watermark, id) : 0,
          receivedSeq: received.get(id) ?? 0,
          outboxPending: healthNumber(health, 'outbox', 'pending'),
          health,
          gaps: (gaps.gaps.get(id) ?? []).map((g) => ({ ...g, minTs: isoOrNull(g.minTs), maxTs: isoOrNull(g.maxTs) })),
          cloudLost: gaps.lost.get(id) ?? 0,
          seqGaps: (holes.get(id) ?? []).map((h) => ({ fromSeq: h.fromSeq, toSeq: h.toSeq, seenAt: iso(h.seenAt) })),
          dropped: {
            diskBudget,
            queueFull: healthNumber(health, 'dropped', 'queueFull') ?? 0,
            invalid: healthNumber(health, 'readings', 'invalid') ?? 0,
            duplicates: healthNumber(health, 'readings', 'duplicates') ?? 0,
          },
          clockOffsetMs: clock?.offsetMs ?? null,
          clockOffsetAt: isoOrNull(clock?.offsetAt),
          futureReadings: clock?.futureReadings ?? 0,
          lastFutureReading: future ? { device: future.device, metric: future.metric, ts: iso(future.ts), seenAt: iso(future.at) } : null,
        };
      }),
    };
  });

  app.get('/api/v1/metrics', {
    preHandler: deps.read,
    onResponse: counted('metrics'),
    schema: {
      summary: 'Every metric the devices reported, with how many devices reported it (read key)',
      description: 'What a query can ask for, without listing every device: the console\'s metric pickers read it. Sorted by name (byte-wise).',
      operationId: 'listMetrics',
      tags: ['registry'],
      response: {
        200: {
          description: 'The fleet\'s metrics',
          type: 'object',
          properties: {
            metrics: {
              type: 'array',
              items: { type: 'object', properties: { name: { type: 'string' }, devices: { type: 'integer', description: 'Devices that reported it' } } },
            },
          },
        },
        ...errorResponses({ ...AUTH_ERRORS.read }),
      },
    },
  }, async () => ({ metrics: await store.metricNames() }));

  app.get('/api/v1/devices', {
    preHandler: deps.read,
    onResponse: counted('devices'),
    schema: {
      summary: 'The devices the gateways reported: searched, filtered, sorted and paged on the server (read key)',
      description: 'Without parameters, every device sorted by id (as before paging existed). `total` counts every device matching `q`, `gateway`, `status` and `alerts`; '
        + '`offset` and `limit` pick the page of them (offset paging: the console jumps to any page and shows "page N of M").',
      operationId: 'listDevices',
      tags: ['registry'],
      querystring: {
        type: 'object',
        properties: {
          q: { type: 'string', maxLength: 128, description: 'Devices whose id contains this, case-insensitive (ASCII); a prefix is a substring too' },
          gateway: { type: 'string', minLength: 1, maxLength: 64, description: 'Devices last reported by this gateway' },
          status: { type: 'string', enum: ['online', 'offline'], description: 'online: its gateway pushed within speed.staleAfterMs and says it is connected' },
          alerts: {
            type: 'string', enum: ['firing'],
            description: 'firing: only devices with a firing alert whose scope is the device (a device rule, or a fleet silence rule\'s alert for that device); a gateway or fleet alert marks none of its devices',
          },
          sort: { type: 'string', enum: [...DEVICE_SORTS], default: 'id', description: 'The sort key; ties broken by id' },
          order: { type: 'string', enum: ['asc', 'desc'], default: 'asc', description: 'The direction of the sort key and of the id that breaks ties' },
          limit: { type: 'integer', minimum: 1, maximum: MAX_DEVICE_PAGE, description: `At most this many devices (1..${MAX_DEVICE_PAGE}); absent: every match` },
          offset: { type: 'integer', minimum: 0, maximum: 1_000_000_000, default: 0, description: 'Skip this many of the sorted matches' },
        },
        additionalProperties: false,
      },
      response: {
        200: {
          description: 'One page of the matching devices',
          type: 'object',
          properties: {
            devices: { type: 'array', items: deviceSchema },
            total: { type: 'integer', description: 'Devices matching q, gateway, status and alerts, on every page' },
            offset: { type: 'integer' },
            limit: { type: ['integer', 'null'], description: 'The limit asked for; null: none' },
          },
        },
        ...errorResponses({ 400: 'BRAID_ERR_BAD_REQUEST: an unknown or malformed query parameter (the message names it)', ...AUTH_ERRORS.read }),
      },
    },
  }, async (req) => {
    // The schema drops what it does not know; a misspelt filter must not answer every device.
    for (const k of new URLSearchParams(req.url.split('?')[1] ?? '').keys()) {
      if (!DEVICE_PARAMS.includes(k)) throw new BadRequestError(`${k}: unknown parameter; expected ${DEVICE_PARAMS.join(', ')}`);
    }
    const query = req.query as { q?: string; gateway?: string; status?: 'online' | 'offline'; alerts?: 'firing'; sort?: DeviceSort; order?: 'asc' | 'desc'; limit?: number; offset?: number };
    const page = await store.searchDevices({ ...query, onlineAfter: deps.now() - deps.staleAfterMs });
    return {
      total: page.total,
      offset: query.offset ?? 0,
      limit: query.limit ?? null,
      devices: page.devices.map((d) => ({
        id: d.id,
        gateway: d.gateway,
        firstSeenAt: iso(d.firstSeen),
        lastSeenAt: iso(d.lastSeen),
        online: d.online,
        metrics: d.metrics,
        firingAlerts: d.firingAlerts,
      })),
    };
  });
}
