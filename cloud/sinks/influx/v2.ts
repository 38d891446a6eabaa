/**
 * The v2 write path (InfluxDB 1.8+, 2.x, 3.x, VictoriaMetrics) through @influxdata/influxdb-client.
 *
 * The client's own retry is switched off (maxRetries 0, and writeFailed hands the failure back): its
 * RetryBuffer retries on timers after flush() has already rejected, reads Retry-After seconds as
 * milliseconds, and drops lines past maxBufferLines. The sink retries each batch itself, with one
 * policy for both APIs (../retry.ts), so nothing is retried twice.
 */
import { HttpError as ClientHttpError, InfluxDB, type WriteApi } from '@influxdata/influxdb-client';
import { HttpError } from '../../../shared/errors.js';
import { parseRetryAfterMs } from '../retry.js';

/** One write request per send(); the sink owns retries. */
export interface LineWriter {
  readonly api: 'v1' | 'v2';
  send(lines: string[]): Promise<void>;
  close(): Promise<void>;
}

export interface V2WriterOptions {
  url: string;
  token: string | null;
  org: string;
  bucket: string;
  batchSize: number;
  timeoutMs: number;
  gzipThreshold: number;
}

/** The client's HttpError as ours, so one rule (shared/errors.ts: no retry below 429 but 408) decides. */
export function fromClientError(err: unknown): unknown {
  if (err instanceof ClientHttpError) {
    const header = err.headers?.['retry-after'];
    return new HttpError(err.statusCode, err.body ?? err.message, parseRetryAfterMs(header, Date.now()));
  }
  return err;
}

export class V2Writer implements LineWriter {
  readonly api = 'v2' as const;
  private readonly writeApi: WriteApi;

  constructor(o: V2WriterOptions) {
    const influx = new InfluxDB({ url: o.url, token: o.token ?? undefined, timeout: o.timeoutMs });
    this.writeApi = influx.getWriteApi(o.org, o.bucket, 'ms', {
      // one more than a batch, no timer, no byte limit: the client must never flush on its own,
      // since a flush it starts reports its outcome nowhere we can see
      batchSize: o.batchSize + 1,
      flushInterval: 0,
      maxBatchBytes: Number.MAX_SAFE_INTEGER,
      gzipThreshold: o.gzipThreshold,
      maxRetries: 0,
      maxRetryTime: o.timeoutMs,
      maxBufferLines: o.batchSize,
      // returning a promise makes it the flush's outcome, and skips the client's retry and its console log
      writeFailed: (error: Error) => Promise.reject(error),
    });
  }

  async send(lines: string[]): Promise<void> {
    this.writeApi.writeRecords(lines);
    try {
      await this.writeApi.flush();
    } catch (err) {
      throw fromClientError(err);
    }
  }

  async close(): Promise<void> {
    await this.writeApi.close().catch(() => {});
  }
}
