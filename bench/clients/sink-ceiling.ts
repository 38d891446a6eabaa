/**
 * The ingest sink's own ceiling: POST pre-built gzip batches shaped like the forwarder's (5000
 * readings, [seq, epoch, device, metric, ts, value]) one request at a time, as the forwarder does,
 * as fast as the sink answers. Argument: JSON {url, batches, readingsPerBatch}. Prints one JSON
 * line {readings, ms, perSec}.
 */
import { gzipSync } from 'node:zlib';

interface Args { url: string; batches: number; readingsPerBatch: number; concurrency?: number }
const args = JSON.parse(process.argv[2]) as Args;

const DISTINCT = 20;
const bodies: Array<Uint8Array<ArrayBuffer>> = [];
const base = Date.now() - 3600_000;
for (let b = 0; b < DISTINCT; b++) {
  const readings: Array<[number, number, string, string, number, number]> = [];
  const first = b * args.readingsPerBatch + 1;
  for (let i = 0; i < args.readingsPerBatch; i++) {
    const seq = first + i;
    readings.push([seq, 1 + Math.floor(seq / 50_000), `fill-${String(seq % 1000).padStart(4, '0')}`, seq % 2 ? 'temp' : 'hum', base + seq, Math.round(Math.random() * 1000) / 10]);
  }
  const body = { v: 1, gateway: 'bench', firstSeq: first, lastSeq: first + args.readingsPerBatch - 1, readings, epochs: [], gaps: [], sentAt: Date.now() };
  bodies.push(new Uint8Array(gzipSync(Buffer.from(JSON.stringify(body)))));
}

const headers = { 'content-type': 'application/json', 'content-encoding': 'gzip', authorization: 'Bearer bench' };
let next = 0;
let readings = 0;
async function lane() {
  while (next < args.batches) {
    const body = bodies[next++ % DISTINCT];
    const res = await fetch(`${args.url}/api/v1/ingest`, { method: 'POST', headers, body });
    await res.text();
    if (res.status !== 200) throw new Error(`sink answered ${res.status}`);
    readings += args.readingsPerBatch;
  }
}
const t0 = performance.now();
await Promise.all(Array.from({ length: args.concurrency ?? 1 }, lane));
const ms = performance.now() - t0;
process.stdout.write(`${JSON.stringify({ readings, ms, perSec: readings / (ms / 1000) })}\n`);
