/**
 * Validation of a speed push body (docs/serving.md), pure: a parsed JSON document in, a typed push
 * out, or an error naming the row and field (`partials[3][7] (max): must be ...`). Everything is
 * checked before anything is stored, so a bad push costs only itself [INV-5]. Hand-written, like
 * the ingest validation, for messages that name the row at a fraction of a schema's cost.
 */
import { PayloadTooLargeError } from '../../shared/errors.js';
import { MAX_TS_MS, array, bad, describe, int, jsonWithoutNul, num, object, str } from '../api/json-checks.js';
import { MINUTE_MS } from '../../shared/time.js';

/** `[device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts]`, as on the wire. */
export type PartialTuple = [string, string, number, number, number, number, number, number, number, number, number, number, number];

export interface SpeedPush {
  gateway: string;
  sentAt: number | null;
  partials: PartialTuple[];
  /** The gateway's health document, as JSON text ('{}' when it sent none). */
  health: string;
  devices: Array<{ id: string; connected: boolean }>;
  /** The version of the alert rules the gateway holds ('' none); absent: an older gateway, answered no rules. */
  alertRules?: string;
}

export interface SpeedLimits {
  /** Most partials in one push; more is 413 (config `speed.maxPartialsPerRequest`). */
  maxPartials: number;
  /** Most entries in `devices`; more is 413. */
  maxDevices: number;
  /** Largest health document, as JSON, in bytes; larger is 413. */
  maxHealthBytes: number;
}

/** Ids as the gateway's config allows them (edge/config.ts idSchema); metric names as shared/payload.ts. */
const MAX_ID_LENGTH = 64;
const MAX_METRIC_LENGTH = 128;
const FIELDS = ['device', 'metric', 'minute', 'epoch', 'count', 'sum', 'min', 'max', 'm2', 'first', 'first_ts', 'last', 'last_ts'] as const;

function partial(row: unknown, i: number): PartialTuple {
  const p = `partials[${i}]`;
  if (!Array.isArray(row) || row.length !== FIELDS.length) {
    throw bad(p, `must be [${FIELDS.join(', ')}], got ${Array.isArray(row) ? `${row.length} elements` : describe(row)}`);
  }
  const at = (k: number) => `${p}[${k}] (${FIELDS[k]})`;
  str(row[0], at(0), '', MAX_ID_LENGTH);
  str(row[1], at(1), '', MAX_METRIC_LENGTH);
  const minute = int(row[2], at(2), '', 0, MAX_TS_MS);
  if (minute % MINUTE_MS !== 0) throw bad(at(2), `must be the start of a minute (a multiple of ${MINUTE_MS}), got ${minute}`);
  int(row[3], at(3), '', 1);
  int(row[4], at(4), '', 1);
  num(row[5], at(5), '');
  const min = num(row[6], at(6), '');
  const max = num(row[7], at(7), '');
  if (max < min) throw bad(at(7), `must not be below min (${min}), got ${max}`);
  if (num(row[8], at(8), '') < 0) throw bad(at(8), `must not be negative, got ${row[8]}`);
  num(row[9], at(9), '');
  const end = minute + MINUTE_MS - 1;
  const firstTs = int(row[10], at(10), '', minute, end);
  num(row[11], at(11), '');
  int(row[12], at(12), '', firstTs, end);
  return row as PartialTuple;
}

/** The body's `gateway`, checked before the rest: a push in another gateway's name is refused (403) unread. */
export function pushGateway(doc: unknown): string {
  const o = object(doc, 'body');
  if (o.v !== 1) throw bad('v', `protocol version must be 1, got ${describe(o.v)}`);
  return str(o.gateway, 'gateway', '', MAX_ID_LENGTH);
}

/** Check a parsed body completely. Throws BadRequestError (400) or PayloadTooLargeError (413). */
export function validateSpeedPush(doc: unknown, limits: SpeedLimits): SpeedPush {
  const gateway = pushGateway(doc);
  const o = doc as Record<string, unknown>;
  const sentAt = o.sentAt === undefined || o.sentAt === null ? null : int(o.sentAt, 'sentAt', '', 0);
  const partials = array(o.partials, 'partials', limits.maxPartials, true).map(partial);
  let health = '{}';
  if (o.health !== undefined && o.health !== null) {
    const doc = object(o.health, 'health');
    health = JSON.stringify(doc);
    const bytes = Buffer.byteLength(health);
    if (bytes > limits.maxHealthBytes) throw new PayloadTooLargeError(`health: ${bytes} bytes of JSON, over the limit of ${limits.maxHealthBytes}`);
    // JSON.stringify writes U+0000 as the escape \u0000, which JSONB refuses as it refuses the character.
    jsonWithoutNul(doc, 'health');
  }
  const devices = o.devices === undefined ? [] : array(o.devices, 'devices', limits.maxDevices, true).map((d, i) => {
    const e = object(d, `devices[${i}]`);
    const id = str(e.id, `devices[${i}].id`, '', MAX_ID_LENGTH);
    if (typeof e.connected !== 'boolean') throw bad(`devices[${i}].connected`, `must be true or false, got ${describe(e.connected)}`);
    return { id, connected: e.connected };
  });
  const push: SpeedPush = { gateway, sentAt, partials, health, devices };
  if (o.alertRules !== undefined) {
    if (typeof o.alertRules !== 'string' || o.alertRules.length > 128) throw bad('alertRules', `must be the version of the alert rules held ('' for none), a string of at most 128 characters, got ${describe(o.alertRules)}`);
    push.alertRules = o.alertRules;
  }
  return push;
}
