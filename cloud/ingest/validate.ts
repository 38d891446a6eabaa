/**
 * Validation of an ingest body (docs/ingest-protocol.md), pure: a parsed JSON document in, a typed
 * batch out, or an error naming the field and row (`readings[12][5]: value must be a finite
 * number`). Everything is checked before anything is stored, so a bad request costs only itself
 * [INV-5]. Hand-written rather than a JSON schema: one pass over 100k rows with messages that name
 * the row, at a fraction of ajv's cost on arrays of tuples.
 */
import { MAX_TS_MS, array, bad, describe, int, num, object, str } from '../api/json-checks.js';
import type { EpochRow, GapRow } from '../store/ingest-state.js';
import { ReadingColumns, type ReadingTuple } from './columns.js';

export type { ReadingTuple } from './columns.js';

export interface IngestBatch {
  gateway: string;
  firstSeq: number;
  lastSeq: number;
  /** As columns (cloud/ingest/columns.ts): no array per reading. */
  readings: ReadingColumns;
  epochs: EpochRow[];
  gaps: GapRow[];
  sentAt: number | null;
  /**
   * The `readings` array as the request's bytes hold it (JSON, no newline in it), when the route
   * found it: a staging line of all the request's readings then takes these bytes as they are.
   */
  readingsJson?: Buffer;
  /** No device or metric of the readings holds a `]` (the route's readingsBytes counts brackets then). */
  noBracket?: boolean;
}

export interface ValidateLimits {
  /** Most readings in one request; more is 413 (the gateway halves its batch). */
  maxReadings: number;
  /** Most epoch or gap records in one request. */
  maxRecords: number;
}

export const DEFAULT_VALIDATE_LIMITS: ValidateLimits = { maxReadings: 100_000, maxRecords: 100_000 };

/** Device ids are 1-64 characters at the gateway; metric names 1-128 (shared/payload.ts). */
export const MAX_DEVICE_LENGTH = 64;
export const MAX_METRIC_LENGTH = 128;
const MAX_GATEWAY_LENGTH = 64;
const MAX_REASON_LENGTH = 64;
const MAX_GAP_DEVICES = 100_000;

/** The checks of one row, in order, with messages naming it: the first that fails throws. */
function checkRow(row: unknown, i: number, prev: number, firstSeq: number, lastSeq: number): number {
  const p = `readings[${i}]`;
  if (!Array.isArray(row) || row.length !== 6) throw bad(p, `must be [seq, epoch, device, metric, ts, value], got ${Array.isArray(row) ? `${row.length} elements` : describe(row)}`);
  const seq = int(row[0], `${p}[0]`, 'seq', 1);
  if (seq <= prev) throw bad(`${p}[0]`, `seq ${seq} is not above the previous row's ${prev} (seq must ascend)`);
  if (seq < firstSeq || seq > lastSeq) throw bad(`${p}[0]`, `seq ${seq} is outside firstSeq..lastSeq (${firstSeq}..${lastSeq})`);
  int(row[1], `${p}[1]`, 'epoch', 1);
  str(row[2], `${p}[2]`, 'device', MAX_DEVICE_LENGTH);
  str(row[3], `${p}[3]`, 'metric', MAX_METRIC_LENGTH);
  int(row[4], `${p}[4]`, 'ts (epoch ms)', 0, MAX_TS_MS);
  num(row[5], `${p}[5]`, 'value');
  return seq;
}

/**
 * Every row passes checkRow. A row is first tried on a fast path (plain comparisons, and a device or
 * metric string checked in full only the first time the body holds it: a batch names a few dozen
 * devices in thousands of rows); a row it does not pass goes through checkRow, which names the
 * problem. No path string is built for a good row: that was half of the validation's time.
 */
function readings(v: unknown, firstSeq: number, lastSeq: number, max: number): { rows: ReadingTuple[]; noBracket: boolean } {
  const rows = array(v, 'readings', max, true);
  const devices = new Set<string>();
  const metrics = new Set<string>();
  let noBracket = true;
  let prev = 0;
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i] as unknown[];
    if (Array.isArray(row) && row.length === 6) {
      const seq = row[0];
      const epoch = row[1];
      const device = row[2];
      const metric = row[3];
      const ts = row[4];
      const value = row[5];
      if (typeof seq === 'number' && Number.isSafeInteger(seq) && seq >= 1 && seq > prev && seq >= firstSeq && seq <= lastSeq
        && typeof epoch === 'number' && Number.isSafeInteger(epoch) && epoch >= 1
        && typeof device === 'string' && typeof metric === 'string'
        && typeof ts === 'number' && Number.isSafeInteger(ts) && ts >= 0 && ts <= MAX_TS_MS
        && typeof value === 'number' && Number.isFinite(value)) {
        // The strings last: checked in full (str: length, NUL, lone surrogates) once per distinct value.
        if (!devices.has(device)) {
          str(device, `readings[${i}][2]`, 'device', MAX_DEVICE_LENGTH);
          devices.add(device);
          if (device.includes(']')) noBracket = false;
        }
        if (!metrics.has(metric)) {
          str(metric, `readings[${i}][3]`, 'metric', MAX_METRIC_LENGTH);
          metrics.add(metric);
          if (metric.includes(']')) noBracket = false;
        }
        prev = seq;
        continue;
      }
    }
    prev = checkRow(row, i, prev, firstSeq, lastSeq);
    noBracket = false; // not seen by the fast path (it takes every good row; this is never reached)
  }
  return { rows: rows as ReadingTuple[], noBracket };
}

function epochs(v: unknown, max: number): EpochRow[] {
  if (v === undefined) return [];
  return array(v, 'epochs', max).map((e, i) => {
    const p = `epochs[${i}]`;
    const o = object(e, p);
    const epoch = int(o.epoch, `${p}.epoch`, 'epoch', 1);
    const firstSeq = int(o.firstSeq, `${p}.firstSeq`, 'firstSeq', 1);
    const lastSeq = int(o.lastSeq, `${p}.lastSeq`, 'lastSeq', firstSeq);
    return { epoch, firstSeq, lastSeq };
  });
}

function gaps(v: unknown, max: number): GapRow[] {
  if (v === undefined) return [];
  return array(v, 'gaps', max).map((g, i) => {
    const p = `gaps[${i}]`;
    const o = object(g, p);
    const fromSeq = int(o.fromSeq, `${p}.fromSeq`, 'fromSeq', 1);
    const devices = array(o.devices, `${p}.devices`, MAX_GAP_DEVICES).map((d, j) => str(d, `${p}.devices[${j}]`, 'device', MAX_DEVICE_LENGTH));
    // Both null: the event-time range is unknown (a cloud_lost record: the gateway no longer has the readings).
    const unknownTs = o.minTs === null && o.maxTs === null;
    const minTs = unknownTs ? null : int(o.minTs, `${p}.minTs`, 'minTs', 0, MAX_TS_MS);
    const toSeq = int(o.toSeq, `${p}.toSeq`, 'toSeq', fromSeq);
    // A gap names readings of its seq range, one seq each: never more than the range holds.
    const count = int(o.count, `${p}.count`, 'count', 0, toSeq - fromSeq + 1);
    return {
      id: int(o.id, `${p}.id`, 'id', 1),
      reason: str(o.reason, `${p}.reason`, 'reason', MAX_REASON_LENGTH),
      fromSeq,
      toSeq,
      count,
      minTs,
      maxTs: minTs === null ? null : int(o.maxTs, `${p}.maxTs`, 'maxTs', minTs, MAX_TS_MS),
      devices,
    };
  });
}

/**
 * Check a parsed body completely. Throws BadRequestError (400) or PayloadTooLargeError (413).
 * `cols`: the body's readings, already parsed and checked row by row by fast-body.ts (which then
 * gives `doc` without them); only their seqs against firstSeq..lastSeq are left to check here, and
 * a failure is judged again by the slow path, so its message does not matter.
 */
export function validateIngestBody(doc: unknown, limits: ValidateLimits = DEFAULT_VALIDATE_LIMITS, cols?: ReadingColumns): IngestBatch {
  const o = object(doc, 'body');
  if (o.v !== 1) throw bad('v', `protocol version must be 1, got ${describe(o.v)}`);
  const gateway = str(o.gateway, 'gateway', 'gateway', MAX_GATEWAY_LENGTH);
  const firstSeq = int(o.firstSeq, 'firstSeq', 'firstSeq', 1);
  const lastSeq = int(o.lastSeq, 'lastSeq', 'lastSeq', 0);
  if (lastSeq < firstSeq - 1) throw bad('lastSeq', `lastSeq ${lastSeq} is below firstSeq - 1 (${firstSeq - 1})`);
  let rows: ReadingColumns;
  let noBracket = true;
  if (cols) {
    const n = cols.length;
    if (n > limits.maxReadings || (n > 0 && (cols.seq[0] < firstSeq || cols.seq[n - 1] > lastSeq))) throw bad('readings', 'seq outside firstSeq..lastSeq');
    rows = cols;
  } else {
    const r = readings(o.readings, firstSeq, lastSeq, limits.maxReadings);
    rows = ReadingColumns.fromTuples(r.rows);
    noBracket = r.noBracket;
  }
  if (rows.length === 0 && firstSeq !== lastSeq + 1) {
    throw bad('firstSeq', `a batch without readings must have firstSeq = lastSeq + 1, got ${firstSeq} and ${lastSeq}`);
  }
  const sentAt = o.sentAt === undefined || o.sentAt === null ? null : int(o.sentAt, 'sentAt', 'sentAt', 0);
  return { gateway, firstSeq, lastSeq, readings: rows, epochs: epochs(o.epochs, limits.maxRecords), gaps: gaps(o.gaps, limits.maxRecords), sentAt, noBracket };
}
