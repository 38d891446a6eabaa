/**
 * Holds many idle device connections from one light process (the RSS measurement). Argument: a
 * JSON object (see Args). Connects `count` devices `${prefix}${i}` with at most `concurrency`
 * CONNECTs outstanding; each device then publishes one QoS 1 reading and waits for its PUBACK, so
 * every connection has been through the broker's whole path. Prints one JSON line
 * `{"connected","failed","published","ms","errors"}` and keeps the sockets open until a line
 * `close` (or EOF) on stdin; then resets them all (no TIME_WAIT left behind) and exits.
 */
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { CONNACK, PUBACK, PacketReader, connectPacket, publishPacket } from '../../test/support/mqtt-raw.js';
import { deviceSecret } from '../lib/secrets.js';

interface Args {
  host: string;
  port: number;
  prefix: string;
  from: number;
  count: number;
  secret: string | null;
  /** Each device's own secret, derived from this key (bench/lib/secrets.ts); overrides `secret`. */
  secretKey?: string;
  concurrency: number;
  keepalive: number;
  publish: boolean;
  timeoutMs: number;
}

const args = JSON.parse(process.argv[2]) as Args;
const sockets: Socket[] = [];
const errors = new Map<string, number>();
let dropped = 0;
let closing = false;

function noteError(msg: string) {
  errors.set(msg, (errors.get(msg) ?? 0) + 1);
}

function one(i: number): Promise<'ok' | 'published' | 'failed'> {
  const id = `${args.prefix}${i}`;
  return new Promise((resolve) => {
    const sock = connect({ host: args.host, port: args.port });
    const reader = new PacketReader();
    let state: 'connecting' | 'publishing' | 'idle' = 'connecting';
    const timer = setTimeout(() => finish('failed', 'timeout'), args.timeoutMs);
    const finish = (r: 'ok' | 'published' | 'failed', err?: string) => {
      clearTimeout(timer);
      if (err) noteError(err);
      if (r === 'failed') sock.destroy();
      else { state = 'idle'; sockets.push(sock); }
      resolve(r);
    };
    sock.setNoDelay(true);
    const secret = args.secretKey ? deviceSecret(args.secretKey, id) : args.secret;
    sock.on('connect', () => sock.write(connectPacket(id, secret === null ? null : id, secret, args.keepalive)));
    sock.on('data', (chunk) => {
      for (const p of reader.push(chunk)) {
        if (state === 'connecting' && p.type === CONNACK) {
          const rc = p.body[1];
          if (rc !== 0) return finish('failed', `CONNACK ${rc}`);
          if (!args.publish) return finish('ok');
          state = 'publishing';
          sock.write(publishPacket(`devices/${id}/telemetry`, Buffer.from('{"temp":21.5}'), 1, 1));
        } else if (state === 'publishing' && p.type === PUBACK) {
          finish('published');
        }
      }
    });
    sock.on('error', (err) => {
      if (state === 'idle') { if (!closing) dropped++; return; }
      finish('failed', (err as NodeJS.ErrnoException).code ?? err.message);
    });
    sock.on('close', () => {
      if (state === 'idle' && !closing) dropped++;
      else if (state !== 'idle') finish('failed', 'closed by the broker');
    });
  });
}

const started = performance.now();
let next = 0;
let connected = 0;
let published = 0;
let failed = 0;
async function lane() {
  while (next < args.count) {
    const i = args.from + next++;
    const r = await one(i);
    if (r === 'failed') failed++;
    else { connected++; if (r === 'published') published++; }
  }
}
await Promise.all(Array.from({ length: Math.min(args.concurrency, args.count) }, lane));
process.stdout.write(`${JSON.stringify({ connected, failed, published, ms: performance.now() - started, errors: Object.fromEntries(errors) })}\n`);

const shutdown = () => {
  if (closing) return;
  closing = true;
  for (const s of sockets) s.resetAndDestroy();
  process.stdout.write(`${JSON.stringify({ closed: sockets.length, dropped })}\n`);
  setTimeout(() => process.exit(0), 50);
};
createInterface({ input: process.stdin }).on('line', (l) => { if (l.trim() === 'close') shutdown(); }).on('close', shutdown);
process.on('SIGTERM', shutdown);
