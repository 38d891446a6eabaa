/**
 * Which write API a server gets. `/ping` answers InfluxDB 1.x with `X-Influxdb-Version: 1.6.7`:
 * before 1.8 only the 1.x `/write` exists; 1.8 added the v2 `/api/v2/write` (bucket = database,
 * token = "user:password"), and 2.x/3.x speak v2. A /ping without the header is not InfluxDB 1.x:
 * VictoriaMetrics answers 204 with none (it sends the header on /write only), and serves
 * /api/v2/write, so it gets v2.
 */
import { HttpError } from '../../../shared/errors.js';
import { parseRetryAfterMs } from '../retry.js';

export type InfluxApi = 'v1' | 'v2';

export interface Detected {
  api: InfluxApi;
  /** The X-Influxdb-Version header, when the server sent one. */
  version: string | undefined;
  /** An InfluxDB 1.x server (any minor): it keeps databases, and v2 writes go to bucket = database. */
  influx1: boolean;
}

/** Major and minor of "1.6.7~rc0", "v2.7.1"; undefined when the text is not a version. */
export function parseVersion(text: string | undefined | null): { major: number; minor: number } | undefined {
  const m = /^v?(\d+)\.(\d+)/.exec(text?.trim() ?? '');
  return m ? { major: Number(m[1]), minor: Number(m[2]) } : undefined;
}

/** The API for a /ping's X-Influxdb-Version header (pure). */
export function chooseApi(version: string | undefined | null): Detected {
  const v = parseVersion(version);
  const influx1 = v?.major === 1;
  return { api: influx1 && v.minor < 8 ? 'v1' : 'v2', version: version ?? undefined, influx1 };
}

/** Ask `/ping` once; a 5xx, 429 or socket error throws (retriable), any other answer decides. */
export async function detectApi(baseUrl: string, o: { timeoutMs: number; signal?: AbortSignal }): Promise<Detected> {
  const signal = o.signal ? AbortSignal.any([o.signal, AbortSignal.timeout(o.timeoutMs)]) : AbortSignal.timeout(o.timeoutMs);
  const res = await fetch(endpoint(baseUrl, 'ping'), { method: 'GET', signal });
  const body = await res.text();
  if (res.status >= 500 || res.status === 429) {
    throw new HttpError(res.status, body, parseRetryAfterMs(res.headers.get('retry-after'), Date.now()));
  }
  return chooseApi(res.headers.get('x-influxdb-version'));
}

/** `path` under the base URL, which may carry a prefix (a proxy's `/influx/`). */
export function endpoint(baseUrl: string, path: string): URL {
  return new URL(path, baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`);
}
