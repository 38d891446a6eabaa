/**
 * The demo's device fleet: two gateways' worth of devices of three kinds (environment, air quality,
 * power), most on QoS 1, a few on QoS 0, and one each that sends malformed payloads, sends late
 * readings, retries (duplicates), speaks SenML and goes offline for a while.
 */
import type { DeviceProfile } from '../../edge/simulator/index.js';

export const DEMO_GATEWAYS = ['gw-north', 'gw-south'] as const;
export type DemoGatewayId = typeof DEMO_GATEWAYS[number];

export interface DemoDevice {
  id: string;
  gateway: DemoGatewayId;
  /** What it shows, printed at start. */
  role: string;
  profile: Partial<DeviceProfile>;
}

const KINDS: Array<{ name: string; metrics: string[] }> = [
  { name: 'environment', metrics: ['temp', 'hum', 'pressure'] },
  { name: 'air quality', metrics: ['temp', 'co2', 'voc'] },
  { name: 'power', metrics: ['voltage', 'current', 'battery'] },
];
const SHAPES = ['sine', 'walk', 'steps', 'noise'] as const;

/** Least devices the demo runs with: every special role needs its own device, plus ordinary ones. */
export const MIN_DEMO_DEVICES = 8;

export interface DemoFleetOptions {
  devices: number;
  /** Messages per second per device. */
  rate: number;
  /** How late the late device's late readings are, in ms. */
  lateByMs: number;
  /** The offline device's schedule, in ms. */
  offline: { afterMs: number; forMs: number; everyMs: number };
}

export const DEFAULT_DEMO_FLEET: DemoFleetOptions = {
  devices: 14,
  rate: 1,
  lateByMs: 3 * 3600_000, // 3 hours: the late readings land in buckets the batch views already cover
  offline: { afterMs: 45_000, forMs: 40_000, everyMs: 180_000 }, // 40 s off every 3 minutes
};

/**
 * Devices alternate between the gateways (north-01, south-01, north-02, ...). The special roles go
 * to fixed places so the printed guide can name them; every other device is ordinary.
 */
export function demoFleet(o: DemoFleetOptions = DEFAULT_DEMO_FLEET): DemoDevice[] {
  const out: DemoDevice[] = [];
  const perGateway = { 'gw-north': 0, 'gw-south': 0 };
  for (let i = 0; i < o.devices; i++) {
    const gateway = DEMO_GATEWAYS[i % 2];
    const n = ++perGateway[gateway];
    const id = `${gateway.slice(3)}-${String(n).padStart(2, '0')}`;
    const kind = KINDS[(n - 1) % KINDS.length];
    const profile: Partial<DeviceProfile> = { qos: 1, metrics: kind.metrics, shape: SHAPES[i % SHAPES.length], ratePerDevice: o.rate };
    let role = `${kind.name}, QoS 1`;
    // Positions of the special roles, by index in the fleet (0-based).
    switch (i) {
      case 2: case 5: case 11:
        profile.qos = 0; role = `${kind.name}, QoS 0 (fire and forget)`; break;
      case 3:
        profile.malformedShare = 0.5; role = `${kind.name}, half its payloads malformed (rejected, quarantined, counted)`; break;
      case 4:
        profile.lateShare = 0.5; profile.lateByMs = o.lateByMs;
        role = `${kind.name}, half its readings ${Math.round(o.lateByMs / 3600_000 * 10) / 10} h late (the speed side holds them until a batch run)`; break;
      case 6:
        profile.offline = { ...o.offline, bufferWhileOffline: true };
        role = `${kind.name}, offline ${o.offline.forMs / 1000} s every ${o.offline.everyMs / 1000} s, then uploads what it buffered`; break;
      case 7:
        profile.duplicateShare = 0.1; role = `${kind.name}, retries 10% of its messages (duplicates dropped and counted)`; break;
      case 9:
        profile.format = 'senml'; role = `${kind.name}, SenML payloads`; break;
      default:
    }
    out.push({ id, gateway, role, profile });
  }
  return out;
}
