/**
 * A real node:http server on 127.0.0.1, port 0, whose answers are scripted per request, undici
 * style (test/interceptors/retry.js): destroy the socket, then 500, then 200... Every request is
 * recorded with its arrival time and body.
 */
import { once } from 'node:events';
import { type IncomingHttpHeaders, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';

export interface ScriptedRequest {
  /** 0-based arrival index. */
  n: number;
  /** performance.now() when the body had arrived. */
  at: number;
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** One scripted answer. */
export type Step = (req: ScriptedRequest, res: ServerResponse) => void | Promise<void>;

export class HttpScript {
  readonly requests: ScriptedRequest[] = [];
  url = '';
  private readonly queue: Step[] = [];
  private readonly server: Server;
  private fallback: Step;

  private constructor(fallback: Step) {
    this.fallback = fallback;
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const rec: ScriptedRequest = {
          n: this.requests.length, at: performance.now(), method: req.method ?? '', url: req.url ?? '',
          headers: req.headers, body: Buffer.concat(chunks),
        };
        this.requests.push(rec);
        const step = this.queue.shift() ?? this.fallback;
        Promise.resolve(step(rec, res)).catch((err: unknown) => {
          if (!res.headersSent) res.writeHead(599);
          res.end(String(err));
        });
      });
    });
  }

  /** Start on 127.0.0.1:0; `fallback` answers every request the script does not cover. */
  static async start(fallback: Step): Promise<HttpScript> {
    const s = new HttpScript(fallback);
    s.server.listen(0, '127.0.0.1');
    await once(s.server, 'listening');
    s.url = `http://127.0.0.1:${(s.server.address() as AddressInfo).port}`;
    return s;
  }

  /** Queue answers for the next requests, in order; once they are used up the fallback answers. */
  script(...steps: Step[]): this {
    this.queue.push(...steps);
    return this;
  }

  /** Answer every request past the queued ones with `step` from now on. */
  otherwise(step: Step): this {
    this.fallback = step;
    return this;
  }

  /** Resolves once `n` requests have arrived (and their step has started). */
  async waitForRequests(n: number, timeoutMs = 5000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (this.requests.length < n) {
      if (performance.now() > deadline) throw new Error(`expected ${n} requests, got ${this.requests.length} in ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /** Close every connection (also ones a hanging step holds), then the server. */
  async close(): Promise<void> {
    if (!this.server.listening) return;
    const closed = once(this.server, 'close');
    this.server.close();
    this.server.closeAllConnections();
    await closed;
  }
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string>): void {
  if (res.destroyed || res.writableEnded) return;
  const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(text);
}

/** Step builders. */
export const answer = {
  /** Drop the connection without an answer (the client sees a socket error). */
  destroy: (): Step => (_req, res) => { res.socket?.destroy(); },
  /** Answer `status` with a JSON (or raw string) body. */
  status: (status: number, body?: unknown, headers: Record<string, string> = {}): Step =>
    (_req, res) => send(res, status, body, headers),
  /** Never answer; the client's timeout or abort ends it (or close()). */
  hang: (): Step => () => {},
  /** Run `step` after `ms`, unless the client went away first. */
  after: (ms: number, step: Step): Step => (req, res) => {
    const t = setTimeout(() => { if (!res.destroyed) void step(req, res); }, ms);
    res.on('close', () => clearTimeout(t));
  },
  /** Run `check` (e.g. look at a database) before answering with `step`. */
  checking: (check: (req: ScriptedRequest) => void | Promise<void>, step: Step): Step => async (req, res) => {
    await check(req);
    await step(req, res);
  },
};
