/**
 * Simulated gateways posting to cloud ingest (docs/ingest-protocol.md), each as the forwarder does:
 * one request at a time, gzip JSON batches of `batchReadings` readings `[seq, epoch, device, metric,
 * ts, value]` with contiguous seq from 1, epochs of `epochReadings` seqs reported as closed in the
 * batch that ends them (the last batch closes the last epoch), the next request as soon as the ack
 * is back. Every gateway has its own token and its own devices (`devicesPerGateway` x `metrics`,
 * one reading per series every `intervalMs` of event time, from `tsBase`).
 *
 * The bodies are built and gzipped before `{"ready":...}` is printed (so the measured window holds
 * only HTTP), then each stdin line `go {"url","startAt","batches"?,"tag"}` runs the whole load once
 * (or the first `batches` batches of every gateway) against `url`, starting at `startAt` (epoch ms,
 * so several processes start together); `exit` ends the process. Per run it writes the request
 * latencies (ms, Float64 little-endian) to `<out>-<tag>.bin`, when each was sent (ms since the
 * run's start) to `<out>-<tag>.sent.bin`, and prints one JSON line.
 *
 * Argument: a JSON object (Args). An answer other than 200 is counted and the same body is sent
 * again after 100 ms (a 429 after its Retry-After, at most 1 s), as the forwarder would.
 */
import { writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import { mulberry32 } from '../../test/support/random.js';

const gzip = promisify(gzipCb);

interface Args {
  gateways: Array<{ id: string; token: string; index: number }>;
  readingsPerGateway: number;
  batchReadings: number;
  epochReadings: number;
  devicesPerGateway: number;
  metrics: string[];
  intervalMs: number;
  tsBase: number;
  out: string;
}

/**
 * `rate` (readings/s for this process) paces the gateways instead: each sends its batches on a
 * schedule (staggered, one every batchReadings / (rate / gateways) s), or at once when its previous
 * ack came back late; `behindMs` then reports how late the sends were. `urls` (cluster nodes)
 * spreads the requests round-robin over them, as a load balancer in front of the nodes would: a
 * gateway's batch b goes to urls[(gateway + b) % urls.length] (and its resends to the same node).
 */
interface Go { url: string; startAt: number; batches?: number; tag: string; rate?: number; urls?: string[] }

const args = JSON.parse(process.argv[2]) as Args;
const genStart = performance.now();

type Row = [number, number, string, string, number, number];

/** A gateway's bodies, gzipped, in seq order. */
async function buildBodies(g: Args['gateways'][number]): Promise<Array<{ body: Buffer; readings: number; lastSeq: number }>> {
  const series = args.devicesPerGateway * args.metrics.length;
  const devices = Array.from({ length: args.devicesPerGateway }, (_, k) => `dev-${String(g.index * args.devicesPerGateway + k).padStart(5, '0')}`);
  const rand = mulberry32((g.index + 1) * 2654435761);
  const out: Array<Promise<{ body: Buffer; readings: number; lastSeq: number }>> = [];
  let reportedEpoch = 0;
  for (let first = 1; first <= args.readingsPerGateway; first += args.batchReadings) {
    const last = Math.min(args.readingsPerGateway, first + args.batchReadings - 1);
    const readings: Row[] = new Array(last - first + 1);
    for (let seq = first; seq <= last; seq++) {
      const i = seq - 1;
      const s = i % series;
      const step = Math.floor(i / series);
      const device = devices[Math.floor(s / args.metrics.length)];
      const metric = args.metrics[s % args.metrics.length];
      const epoch = Math.floor(i / args.epochReadings) + 1;
      readings[seq - first] = [seq, epoch, device, metric, args.tsBase + step * args.intervalMs + s, Math.round(rand() * 10000) / 100];
    }
    // Epochs closed by the end of this batch: those whose last seq is <= last (the final one at the end).
    const epochs: Array<{ epoch: number; firstSeq: number; lastSeq: number }> = [];
    const closedUpTo = last === args.readingsPerGateway ? Math.ceil(last / args.epochReadings) : Math.floor(last / args.epochReadings);
    for (let e = reportedEpoch + 1; e <= closedUpTo; e++) {
      epochs.push({ epoch: e, firstSeq: (e - 1) * args.epochReadings + 1, lastSeq: Math.min(args.readingsPerGateway, e * args.epochReadings) });
    }
    reportedEpoch = Math.max(reportedEpoch, closedUpTo);
    const doc = { v: 1, gateway: g.id, firstSeq: first, lastSeq: last, readings, epochs, gaps: [], sentAt: Date.now() };
    out.push(gzip(Buffer.from(JSON.stringify(doc), 'utf8')).then((body) => ({ body, readings: readings.length, lastSeq: last })));
  }
  return Promise.all(out);
}

const bodies = [] as Array<Array<{ body: Buffer; readings: number; lastSeq: number }>>;
for (const g of args.gateways) bodies.push(await buildBodies(g));
const genMs = performance.now() - genStart;
const bytes = bodies.flat().reduce((n, b) => n + b.body.length, 0);
process.stdout.write(`${JSON.stringify({ ready: true, genMs, bytes, bodies: bodies.flat().length })}\n`);

function post(agent: Agent, url: URL, token: string, body: Buffer): Promise<{ status: number; text: string; retryAfter: number }> {
  return new Promise((resolve, reject) => {
    const req = request({
      agent, host: url.hostname, port: url.port, path: '/api/v1/ingest', method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': body.length, authorization: `Bearer ${token}` },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), retryAfter: Number(res.headers['retry-after'] ?? 0) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function run(go: Go): Promise<void> {
  const urls = (go.urls?.length ? go.urls : [go.url]).map((u) => new URL(u));
  const agent = new Agent({ keepAlive: true, maxSockets: args.gateways.length });
  const perGateway = Math.min(go.batches ?? Infinity, bodies[0]?.length ?? 0);
  const lat = new Float64Array(perGateway * args.gateways.length);
  /** When each of those requests was sent, ms since this run's start. */
  const sentAt = new Float64Array(perGateway * args.gateways.length);
  let n = 0;
  let readings = 0;
  let errors = 0;
  const errorCodes: Record<string, number> = {};
  await new Promise((r) => setTimeout(r, Math.max(0, go.startAt - Date.now())));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let lastEnd = t0;
  const interval = go.rate ? (args.batchReadings * args.gateways.length * 1000) / go.rate : 0;
  let behind = 0;
  let behindMax = 0;
  await Promise.all(args.gateways.map(async (g, gi) => {
    for (let b = 0; b < perGateway; b++) {
      const item = bodies[gi][b];
      const url = urls[(gi + b) % urls.length];
      if (interval) {
        const due = t0 + (gi * interval) / args.gateways.length + b * interval;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        else { behind -= wait; behindMax = Math.max(behindMax, -wait); }
      }
      for (;;) {
        const at = performance.now();
        let status = 0;
        let retryAfter = 0;
        let text = '';
        try {
          ({ status, text, retryAfter } = await post(agent, url, g.token, item.body));
        } catch (err) {
          text = (err as Error).message;
        }
        const end = performance.now();
        if (status === 200) {
          const ack = JSON.parse(text) as { ackSeq: number };
          if (ack.ackSeq !== item.lastSeq) throw new Error(`${g.id}: ackSeq ${ack.ackSeq} for a batch ending at ${item.lastSeq}`);
          sentAt[n] = at - t0;
          lat[n++] = end - at;
          readings += item.readings;
          if (end > lastEnd) lastEnd = end;
          break;
        }
        errors++;
        const code = status ? `${status} ${text.match(/"code":"([^"]+)"/)?.[1] ?? ''}`.trim() : `network: ${text}`;
        errorCodes[code] = (errorCodes[code] ?? 0) + 1;
        if (errors > 1000) throw new Error(`more than 1000 failed requests; last: ${code}`);
        await new Promise((r) => setTimeout(r, status === 429 ? Math.min(1000, retryAfter * 1000 || 100) : 100));
      }
    }
  }));
  const cpu = process.cpuUsage(cpu0);
  agent.destroy();
  writeFileSync(`${args.out}-${go.tag}.bin`, Buffer.from(lat.buffer, 0, n * 8));
  writeFileSync(`${args.out}-${go.tag}.sent.bin`, Buffer.from(sentAt.buffer, 0, n * 8));
  process.stdout.write(`${JSON.stringify({
    tag: go.tag, requests: n, readings, errors, errorCodes, behindMs: n ? behind / n : 0, behindMaxMs: behindMax,
    // Epoch ms, comparable across processes (performance.timeOrigin + monotonic time).
    startedAt: performance.timeOrigin + t0, lastAckAt: performance.timeOrigin + lastEnd,
    cpuSec: (cpu.user + cpu.system) / 1e6,
  })}\n`);
}

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (line.trim() === 'exit') break;
  const m = line.match(/^go (\{.*\})$/);
  if (!m) continue;
  try {
    await run(JSON.parse(m[1]) as Go);
  } catch (err) {
    process.stdout.write(`${JSON.stringify({ error: (err as Error).stack ?? String(err) })}\n`);
  }
}
process.exit(0);
