/** Loopback helpers: free ports, waiting for a listener, and the kernel's socket queues. */
import { readFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';

export const HOST = '127.0.0.1';

/** A port that was free a moment ago on 127.0.0.1 (for servers that cannot take port 0). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, HOST, () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Resolve once something accepts TCP connections on HOST:port. */
export async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = connect({ host: HOST, port });
      sock.once('connect', () => { sock.destroy(); resolve(true); });
      sock.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listening on ${HOST}:${port} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Bytes still on their way to the server listening on `port`: what its accepted sockets have
 * received but the process has not read yet (rx_queue), plus what the clients' sockets have not
 * sent yet (tx_queue), from /proc/net/tcp. 0 after the publishers are done means the broker has
 * read (and so handled) every QoS 0 message; the kernel's socket buffers on loopback hold
 * megabytes, so a publisher's exit alone says nothing about that.
 */
export function bytesInFlightTo(port: number): number {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  let total = 0;
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try { text = readFileSync(file, 'utf8'); } catch { continue; }
    const lines = text.split('\n');
    for (let i = 1; i < lines.length; i++) {
      const f = lines[i].trim().split(/\s+/);
      if (f.length < 5) continue;
      const local = f[1];
      const remote = f[2];
      const state = f[3];
      if (state === '0A') continue; // LISTEN: its rx_queue is the accept backlog
      const [tx, rx] = f[4].split(':').map((h) => parseInt(h, 16));
      if (local.endsWith(`:${hexPort}`)) total += rx;
      if (remote.endsWith(`:${hexPort}`)) total += tx;
    }
  }
  return total;
}
