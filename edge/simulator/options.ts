/**
 * The simulator's options: fleet-wide defaults, and a per-device profile that overrides them so
 * one fleet can mix QoS levels and misbehaving devices (the demo's malformed, late and offline
 * devices). Checked once, here; an error names the option.
 */
import { ConfigInvalidError } from '../../shared/errors.js';

export type Shape = 'sine' | 'walk' | 'steps' | 'noise';
export const SHAPES: readonly Shape[] = ['sine', 'walk', 'steps', 'noise'];
export type PayloadFormat = 'flat' | 'senml';

/** A device that drops off the network now and then, as a cellular one does. */
export interface OfflineSchedule {
  /** Time after the device's first connect until it goes offline, in ms. */
  afterMs: number;
  /** How long it stays offline, in ms. */
  forMs: number;
  /** Time from one going-offline to the next, in ms; 0 goes offline once. */
  everyMs: number;
  /**
   * Keep the readings made while offline and publish them, with their own times, after
   * reconnecting (store and forward, as firmware with a flash buffer does); false loses them.
   */
  bufferWhileOffline: boolean;
}

/** What a device does; every field falls back to the fleet-wide option of the same name. */
export interface DeviceProfile {
  /** 0 or 1. */
  qos: 0 | 1;
  /** Messages per second. */
  ratePerDevice: number;
  /** Metrics in each message. */
  metrics: string[];
  format: PayloadFormat;
  shape: Shape;
  /** Share of messages sent again, byte for byte, right after the original (a firmware retry), 0..1. */
  duplicateShare: number;
  /** Share of messages whose readings are stamped `lateByMs` in the past, 0..1. */
  lateShare: number;
  /** How late a late message is, in ms. */
  lateByMs: number;
  /** Share of messages replaced by a payload the gateway must reject (bad JSON, a string value...), 0..1. */
  malformedShare: number;
  /** null: always online. */
  offline: OfflineSchedule | null;
}

export interface SimDevice {
  id: string;
  secret: string;
  /** Overrides of the fleet-wide options for this device. */
  profile?: Partial<DeviceProfile>;
}

export interface SimulatorOptions extends DeviceProfile {
  /** Broker URL, e.g. mqtt://127.0.0.1:1883. */
  url: string;
  devices: SimDevice[];
  /** Stop after this long, in ms; 0 runs until stop(). */
  durationMs: number;
  /** Readings kept per device while offline (bufferWhileOffline); older ones are lost (counted). */
  maxBufferedMessages: number;
  /** Time a device's connect may take, in ms. */
  connectTimeoutMs: number;
  /** Called for every message handed to MQTT.js, after the stats count it (tests reconcile with it). */
  onMessage?: (m: SentMessage) => void;
}

/** One message as published; `kind` says what was injected. */
export interface SentMessage {
  device: string;
  kind: 'normal' | 'late' | 'duplicate' | 'malformed' | 'buffered';
  qos: 0 | 1;
  /** Event time of its readings (epoch ms); null for a malformed one. */
  ts: number | null;
  /** Metric values, null for a malformed one. */
  values: Record<string, number> | null;
  payload: string;
}

export const DEFAULT_SIMULATOR_OPTIONS: Omit<SimulatorOptions, 'url' | 'devices'> = {
  ratePerDevice: 1,
  qos: 1,
  metrics: ['temp', 'hum'],
  format: 'flat',
  shape: 'sine',
  durationMs: 0,
  duplicateShare: 0,
  lateShare: 0,
  lateByMs: 3 * 3600_000, // 3 hours
  malformedShare: 0,
  offline: null,
  maxBufferedMessages: 10_000,
  connectTimeoutMs: 10_000, // 10 s
};

const METRIC_RE = /^[A-Za-z0-9_.:\-]{1,128}$/;
// The gateway's ACL and registry allow one topic level of these characters.
const DEVICE_RE = /^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$/;

/** Throw ConfigInvalidError naming `where` when `p` cannot run. */
export function checkProfile(p: DeviceProfile, where: string): void {
  const bad = (key: string, msg: string): never => { throw new ConfigInvalidError(`${where}${key} ${msg}`); };
  if (p.qos !== 0 && p.qos !== 1) bad('qos', `must be 0 or 1, got ${String(p.qos)}`);
  if (!(Number.isFinite(p.ratePerDevice) && p.ratePerDevice > 0)) bad('ratePerDevice', `must be a positive number, got ${String(p.ratePerDevice)}`);
  if (!Array.isArray(p.metrics) || p.metrics.length === 0) bad('metrics', 'must name at least one metric');
  for (const m of p.metrics) if (!METRIC_RE.test(m) || m === 'ts') bad('metrics', `has "${m}": a metric is 1-128 of A-Z a-z 0-9 _ . : - and not "ts"`);
  if (new Set(p.metrics).size !== p.metrics.length) bad('metrics', 'names a metric twice');
  if (p.format !== 'flat' && p.format !== 'senml') bad('format', `must be flat or senml, got ${String(p.format)}`);
  if (!SHAPES.includes(p.shape)) bad('shape', `must be one of ${SHAPES.join(', ')}, got ${String(p.shape)}`);
  for (const k of ['duplicateShare', 'lateShare', 'malformedShare'] as const) {
    if (!(p[k] >= 0 && p[k] <= 1)) bad(k, `must be within 0..1, got ${String(p[k])}`);
  }
  if (p.lateShare + p.malformedShare > 1) bad('lateShare', 'plus malformedShare must not exceed 1');
  if (!(Number.isFinite(p.lateByMs) && p.lateByMs >= 0)) bad('lateByMs', `must be a number >= 0, got ${String(p.lateByMs)}`);
  if (p.offline) {
    for (const k of ['afterMs', 'forMs', 'everyMs'] as const) {
      if (!(Number.isFinite(p.offline[k]) && p.offline[k] >= 0)) bad(`offline.${k}`, `must be a number >= 0, got ${String(p.offline[k])}`);
    }
    if (p.offline.forMs === 0) bad('offline.forMs', 'must be above 0');
    if (p.offline.everyMs !== 0 && p.offline.everyMs <= p.offline.forMs) bad('offline.everyMs', 'must be 0 (once) or longer than offline.forMs');
  }
}

/** Merge the fleet-wide options with each device's profile, and check them all. */
export function resolveOptions(opts: Partial<SimulatorOptions> & Pick<SimulatorOptions, 'url' | 'devices'>): { options: SimulatorOptions; profiles: DeviceProfile[] } {
  const options: SimulatorOptions = { ...DEFAULT_SIMULATOR_OPTIONS, ...withoutUndefined(opts) };
  try { new URL(options.url); } catch { throw new ConfigInvalidError(`url is not a URL: ${String(options.url)}`); }
  if (!Array.isArray(options.devices) || options.devices.length === 0) throw new ConfigInvalidError('devices must list at least one device');
  if (!(Number.isFinite(options.durationMs) && options.durationMs >= 0)) throw new ConfigInvalidError(`durationMs must be a number >= 0, got ${String(options.durationMs)}`);
  checkProfile(options, '');
  const seen = new Set<string>();
  const profiles = options.devices.map((d, i) => {
    if (!DEVICE_RE.test(d.id)) throw new ConfigInvalidError(`devices[${i}].id "${d.id}" must be 1-64 of A-Z a-z 0-9 _ . - starting with a letter or digit`);
    if (seen.has(d.id)) throw new ConfigInvalidError(`devices[${i}].id "${d.id}" is listed twice (MQTT client ids must be unique)`);
    seen.add(d.id);
    const p: DeviceProfile = { ...pickProfile(options), ...withoutUndefined(d.profile ?? {}) };
    checkProfile(p, `device ${d.id}: `);
    return p;
  });
  return { options, profiles };
}

function pickProfile(o: SimulatorOptions): DeviceProfile {
  const { qos, ratePerDevice, metrics, format, shape, duplicateShare, lateShare, lateByMs, malformedShare, offline } = o;
  return { qos, ratePerDevice, metrics, format, shape, duplicateShare, lateShare, lateByMs, malformedShare, offline };
}

function withoutUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
