/**
 * The InfluxDB 1.x write path (servers before 1.8): `POST /write?db=&precision=ms`, gzipped, with
 * basic auth when a username is configured, and the database created once with `CREATE DATABASE`
 * (a no-op when it exists). One request per call: retries are the sink's.
 */
import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import type { Logger } from '../../../shared/logger.js';
import { HttpError } from '../../../shared/errors.js';
import { parseRetryAfterMs } from '../retry.js';
import { endpoint } from './detect.js';
import type { LineWriter } from './v2.js';

const gzip = promisify(gzipCb);

export interface V1WriterOptions {
  url: string;
  database: string;
  username: string | null;
  password: string | null;
  timeoutMs: number;
  gzipThreshold: number;
  /** Aborted by the sink's close(). */
  signal: AbortSignal;
}

/** An InfluxQL identifier in double quotes. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

async function failure(res: Response): Promise<HttpError> {
  const body = await res.text().catch(() => '');
  return new HttpError(res.status, body, parseRetryAfterMs(res.headers.get('retry-after'), Date.now()));
}

export class V1Writer implements LineWriter {
  readonly api = 'v1' as const;
  private readonly headers: Record<string, string> = {};
  private databaseReady = false;

  constructor(private readonly o: V1WriterOptions, private readonly log: Logger) {
    if (o.username !== null) {
      // a header, not the u=&p= query parameters: URLs end up in proxy logs
      this.headers.authorization = `Basic ${Buffer.from(`${o.username}:${o.password ?? ''}`).toString('base64')}`;
    }
  }

  private signal(): AbortSignal {
    return AbortSignal.any([this.o.signal, AbortSignal.timeout(this.o.timeoutMs)]);
  }

  /** CREATE DATABASE once. A refusal (a user without admin rights) only warns: the writes will tell. */
  async prepare(): Promise<void> {
    if (this.databaseReady) return;
    const res = await fetch(endpoint(this.o.url, 'query'), {
      method: 'POST',
      headers: { ...this.headers, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ q: `CREATE DATABASE ${quoteIdent(this.o.database)}` }),
      signal: this.signal(),
    });
    if (res.status >= 500 || res.status === 429 || res.status === 408) throw await failure(res);
    const text = await res.text();
    if (!res.ok || /"error"/.test(text)) {
      this.log.warn({ status: res.status, body: text.slice(0, 200), database: this.o.database }, 'influx: CREATE DATABASE refused; writing anyway');
    }
    this.databaseReady = true;
  }

  async send(lines: string[]): Promise<void> {
    await this.prepare();
    const text = Buffer.from(lines.join('\n'), 'utf8');
    const zipped = text.length > this.o.gzipThreshold;
    const url = endpoint(this.o.url, 'write');
    url.search = new URLSearchParams({ db: this.o.database, precision: 'ms' }).toString();
    const res = await fetch(url, {
      method: 'POST',
      headers: {
        ...this.headers,
        'content-type': 'text/plain; charset=utf-8',
        ...(zipped ? { 'content-encoding': 'gzip' } : {}),
      },
      body: zipped ? await gzip(text) : text,
      signal: this.signal(),
    });
    if (res.status !== 204 && res.status !== 200) throw await failure(res);
    await res.arrayBuffer(); // let undici reuse the connection
  }

  async close(): Promise<void> {}
}
