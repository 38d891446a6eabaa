/**
 * The freshness benchmark's background load, as its own process (so its CPU is its own and its
 * timers do not delay the probe's): edge/simulator's Simulator, the fleet `braid simulate` runs.
 *
 *   node --import tsx bench/lib/freshness-fleet.ts '{"url":"mqtt://127.0.0.1:1883","devices":["d1"],"secret":"s","rate":1,"metrics":["temp"],"qos":1}'
 *
 * Prints `{"ready":true,...}` once every device is connected, then a stats line every 5 s; on
 * SIGTERM or SIGINT it stops (every client ends cleanly), prints `{"final":true,...}` and exits 0.
 */
import { Simulator } from '../../edge/simulator/index.js';

interface FleetArgs { url: string; devices: string[]; secret: string; rate: number; metrics: string[]; qos: 0 | 1 }

const args = JSON.parse(process.argv[2] ?? '{}') as FleetArgs;
if (!args.url || !Array.isArray(args.devices) || !args.devices.length || !args.secret) {
  process.stderr.write('usage: freshness-fleet.ts \'{"url","devices":[...],"secret","rate","metrics":[...],"qos"}\'\n');
  process.exit(2);
}

const sim = new Simulator({
  url: args.url,
  devices: args.devices.map((id) => ({ id, secret: args.secret })),
  ratePerDevice: args.rate,
  qos: args.qos,
  metrics: args.metrics,
  format: 'flat',
  shape: 'sine',
  durationMs: 0,
});

const line = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

let stopping = false;
let ticker: NodeJS.Timeout | undefined;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  clearInterval(ticker);
  const s = await sim.stop();
  line({ final: true, ...s });
  process.exit(0);
};
process.once('SIGTERM', () => void stop());
process.once('SIGINT', () => void stop());

const t0 = performance.now();
await sim.start();
line({ ready: true, connectMs: Math.round(performance.now() - t0), ...sim.snapshot() });
ticker = setInterval(() => line({ at: Date.now(), ...sim.snapshot() }), 5000);
