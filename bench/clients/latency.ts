/**
 * PUBACK latency at a paced load: MQTT.js devices publishing QoS 1 at `ratePerClient` each; with
 * `spread`, each client's schedule is offset by its share of the period (a fleet whose devices each
 * keep their own clock), not all of them at the same instants; `metrics` names the metrics of each
 * message (default: temp). Event times: `tsBase` + a period per message, the same count for every
 * client; with `clockTs`, each client's clock at the publish instead, shifted by `tsBase` (a real
 * fleet's readings: its minutes begin when the wall clock's do), strictly increasing per client.
 * Argument: a JSON object (see Args). Connects every client, prints `{"ready":true}`, and waits for
 * a stdin line `go <epoch ms>` to start at that moment (so several workers start together). Each
 * client keeps to its schedule (it catches up after a stall: the offered load stays the target);
 * latency is from the publish() call to its PUBACK callback. Samples from the warm-up are dropped.
 * Writes the measured latencies (ms, Float64 little-endian) to `out` and prints one JSON line.
 */
import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import mqtt, { type MqttClient } from 'mqtt';

interface Args {
  url: string;
  clients: Array<{ id: string; secret: string | null }>;
  ratePerClient: number;
  warmupMs: number;
  durationMs: number;
  tsBase: number;
  out: string;
  spread?: boolean;
  metrics?: string[];
  clockTs?: boolean;
}

const args = JSON.parse(process.argv[2]) as Args;

function connectOne(id: string, secret: string | null): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(args.url, {
      clientId: id, username: secret === null ? undefined : id, password: secret ?? undefined,
      protocolVersion: 4, clean: true, keepalive: 60, reconnectPeriod: 0, connectTimeout: 30_000,
    });
    c.once('connect', () => resolve(c));
    c.once('error', (err) => reject(err));
  });
}

const clients = await Promise.all(args.clients.map((c) => connectOne(c.id, c.secret)));
let errors = 0;
let disconnects = 0;
for (const c of clients) {
  c.on('error', () => { errors++; });
  c.on('close', () => { disconnects++; });
}
process.stdout.write('{"ready":true}\n');

const startAt = await new Promise<number>((resolve) => {
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const m = line.match(/^go (\d+)/);
    if (m) { rl.close(); resolve(Number(m[1])); }
  });
});
await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now())));

const total = args.warmupMs + args.durationMs;
const capacity = Math.ceil(args.ratePerClient * clients.length * (args.durationMs / 1000) * 1.2) + 1000;
const samples = new Float64Array(capacity);
let measured = 0;
let acked = 0;
let sent = 0;
let sentInWindow = 0;
const cpuStart = process.cpuUsage();
const t0 = performance.now();
const measureFrom = t0 + args.warmupMs;
const measureTo = t0 + total;
const sentPer = new Array<number>(clients.length).fill(0);
const topics = args.clients.map((c) => `devices/${c.id}/telemetry`);
const periodMs = 1000 / args.ratePerClient;
const offsets = args.clients.map((_, i) => (args.spread ? (periodMs * i) / args.clients.length : 0));
const metrics = args.metrics ?? ['temp'];
/** A message's fields after ts, for each of the 100 values the clients cycle through (made once, not per message). */
const bodies = Array.from({ length: 100 }, (_, k) => metrics.map((m) => `"${m}":${(20 + k / 10).toFixed(1)}`).join(','));
/** Event times a period apart (at least 1 ms: distinct identities at any rate). */
const tsStep = Math.max(1, Math.round(periodMs));
const lastTs = new Array<number>(clients.length).fill(-Infinity);
function eventTs(i: number, n: number): number {
  if (!args.clockTs) return args.tsBase + n * tsStep;
  lastTs[i] = Math.max(lastTs[i] + 1, Date.now() + args.tsBase);
  return lastTs[i];
}

function pump() {
  const now = performance.now();
  const elapsed = Math.min(now, measureTo) - t0;
  for (let i = 0; i < clients.length; i++) {
    const due = Math.floor(((elapsed + offsets[i]) * args.ratePerClient) / 1000);
    while (sentPer[i] < due) {
      const n = sentPer[i]++;
      const payload = `{"ts":${eventTs(i, n)},${bodies[n % 100]}}`;
      const at = performance.now();
      const inWindow = at >= measureFrom;
      if (inWindow) sentInWindow++;
      sent++;
      clients[i].publish(topics[i], payload, { qos: 1 }, (err) => {
        if (err) { errors++; return; }
        acked++;
        if (inWindow && measured < capacity) samples[measured++] = performance.now() - at;
      });
    }
  }
  if (now < measureTo) setTimeout(pump, 1);
  else void finish();
}

async function finish() {
  const sendEnd = performance.now();
  const until = Date.now() + 15_000;
  while (acked + errors < sent && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  const cpu = process.cpuUsage(cpuStart);
  writeFileSync(args.out, Buffer.from(samples.buffer, 0, measured * 8));
  process.stdout.write(`${JSON.stringify({
    sent, acked, measured, unacked: sent - acked - errors, errors, disconnects,
    offeredPerSec: sentInWindow / (args.durationMs / 1000), sendLagMs: sendEnd - measureTo,
    cpuSec: (cpu.user + cpu.system) / 1e6,
  })}\n`);
  await Promise.all(clients.map((c) => new Promise<void>((r) => c.end(true, {}, () => r()))));
  process.exit(0);
}

pump();
