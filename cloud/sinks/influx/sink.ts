/**
 * InfluxSink: the batch views as InfluxDB points (measurement = view, tags = device|gateway and
 * metric, time = bucket), in batches of `batchSize`, each retried with backoff; see line-protocol.ts
 * for the point and detect.ts for the choice of API.
 */
import type { Registry } from 'prom-client';
import type { ViewChanges, ViewSink } from '../../batch/sink.js';
import { ClosedError, ConfigInvalidError } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import { SinkFailedError } from '../errors.js';
import { createSinkMetrics, type SinkMetrics } from '../metrics.js';
import { canRetryRequest, withRetries, type RetryOptions } from '../retry.js';
import { openViewReader } from '../view-rows.js';
import { detectApi, type Detected } from './detect.js';
import { toLine, type SkipReason } from './line-protocol.js';
import { DEFAULT_INFLUX_SINK_TUNING, INFLUX_SINK_NAME, type InfluxConfig, type InfluxSinkTuning } from './options.js';
import { V1Writer } from './v1.js';
import { V2Writer, type LineWriter } from './v2.js';

export class InfluxSink implements ViewSink {
  readonly name = INFLUX_SINK_NAME;
  private readonly url: string;
  private readonly retry: RetryOptions;
  private readonly metrics: SinkMetrics;
  private readonly abort = new AbortController();
  private writer: Promise<LineWriter> | undefined;
  /** Writes run one at a time, in call order. */
  private chain: Promise<unknown> = Promise.resolve();
  private closing: Promise<void> | undefined;
  /** Whether the server is InfluxDB (it keeps string fields); set when the API is chosen. */
  private stringFields = true;

  constructor(
    private readonly config: InfluxConfig,
    private readonly log: Logger,
    registry: Registry,
    private readonly tuning: InfluxSinkTuning = DEFAULT_INFLUX_SINK_TUNING,
  ) {
    if (!config.url) throw new ConfigInvalidError('influx.url: no InfluxDB URL configured (null writes no InfluxDB views)');
    this.url = config.url;
    this.retry = { ...tuning, maxRetries: config.maxRetries };
    this.metrics = createSinkMetrics(registry);
  }

  write(changes: ViewChanges): Promise<{ points: number }> {
    const run = this.chain.then(() => this.writeNow(changes));
    this.chain = run.catch(() => {});
    return run;
  }

  /** Idempotent: stops waits between retries, lets a running write end (it fails), frees the client. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.abort.abort();
      await this.chain;
      const writer = await this.writer?.catch(() => undefined);
      await writer?.close();
    })();
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async writeNow(changes: ViewChanges): Promise<{ points: number }> {
    if (this.abort.signal.aborted) throw new ClosedError('influx sink is closed');
    const labels = { sink: this.name };
    const endTimer = this.metrics.writeSeconds.startTimer(labels);
    const skipped = new Map<SkipReason, number>();
    let written = 0;
    let batches = 0;
    const reader = await openViewReader();
    try {
      const writer = await this.ready();
      let batch: string[] = [];
      const flush = async () => {
        const lines = batch;
        batch = [];
        await this.attempt(() => writer.send(lines), `batch ${batches + 1}`);
        written += lines.length;
        batches += 1;
        this.metrics.points.inc(labels, lines.length);
      };
      for (const [view, files] of Object.entries(changes.views)) {
        for (const file of files ?? []) {
          for await (const rows of reader.rows(file)) {
            for (const row of rows) {
              const r = toLine(view, row, { stringFields: this.stringFields });
              if ('skip' in r) {
                skipped.set(r.skip, (skipped.get(r.skip) ?? 0) + 1);
                continue;
              }
              batch.push(r.line);
              if (batch.length >= this.config.batchSize) await flush();
            }
          }
        }
      }
      if (batch.length > 0) await flush();
      this.log.info({ version: changes.version, days: changes.days.length, points: written, batches }, 'influx: views written');
      return { points: written };
    } catch (err) {
      this.metrics.failures.inc(labels);
      if (err instanceof SinkFailedError) throw err;
      const retriable = this.abort.signal.aborted || canRetryRequest(err);
      this.log.error({ err, points: written, version: changes.version }, 'influx: write failed');
      throw new SinkFailedError(this.name, `influx: wrote ${written} points, then failed: ${(err as Error)?.message ?? String(err)}`, {
        pointsWritten: written, retriable, cause: err,
      });
    } finally {
      for (const [reason, n] of skipped) this.metrics.skipped.inc({ ...labels, reason }, n);
      if (skipped.size > 0) this.log.warn({ skipped: Object.fromEntries(skipped) }, 'influx: rows left out (a tag line protocol cannot carry, or no readings)');
      reader.close();
      endTimer();
    }
  }

  private attempt<T>(fn: () => Promise<T>, what: string): Promise<T> {
    return withRetries(fn, this.retry, {
      signal: this.abort.signal,
      onRetry: (err, failures, delayMs) => this.log.warn({ err, failures, delayMs, what }, 'influx: request failed, retrying'),
    });
  }

  /** The writer for the server's API, detected once; a failed detection is tried again at the next write. */
  private ready(): Promise<LineWriter> {
    this.writer ??= this.connect().catch((err: unknown) => {
      this.writer = undefined;
      throw err;
    });
    return this.writer;
  }

  private async connect(): Promise<LineWriter> {
    const c = this.config;
    let detected: Detected = { api: c.api === 'v1' ? 'v1' : 'v2', version: undefined, influx1: c.api === 'v1' };
    if (c.api === 'auto') {
      detected = await this.attempt(() => detectApi(this.url, { timeoutMs: c.timeoutMs, signal: this.abort.signal }), 'ping');
    }
    this.log.info({ api: detected.api, serverVersion: detected.version ?? null, configured: c.api, host: new URL(this.url).host }, 'influx: write API chosen');
    // InfluxDB says its version on /ping; VictoriaMetrics does not, and would keep a string field
    // (first_device, last_device) as a series of zeros.
    this.stringFields = detected.influx1 || detected.version !== undefined;
    const v1 = new V1Writer({
      url: this.url, database: c.database, username: c.username, password: c.password,
      timeoutMs: c.timeoutMs, gzipThreshold: this.tuning.gzipThreshold, signal: this.abort.signal,
    }, this.log);
    if (detected.api === 'v1') return v1;
    if (detected.influx1) {
      // InfluxDB 1.8+: keeps databases (created here as for 1.x), its v2 bucket is the database and its token "user:password"
      await this.attempt(() => v1.prepare(), 'create database');
    }
    const token = c.token ?? (detected.influx1 && c.username !== null ? `${c.username}:${c.password ?? ''}` : null);
    return new V2Writer({
      url: this.url, token, org: c.org, bucket: detected.influx1 ? c.database : c.bucket,
      batchSize: c.batchSize, timeoutMs: c.timeoutMs, gzipThreshold: this.tuning.gzipThreshold,
    });
  }
}

/**
 * The sink the batch job calls for `config.influx` (its `url` must be set: a null url means no
 * InfluxDB views, so do not create one). `tuning` shortens retry delays in tests.
 */
export function createInfluxSink(config: InfluxConfig, logger: Logger, registry: Registry, tuning: Partial<InfluxSinkTuning> = {}): InfluxSink {
  return new InfluxSink(config, logger.child({ component: 'sink', sink: INFLUX_SINK_NAME }), registry, { ...DEFAULT_INFLUX_SINK_TUNING, ...tuning });
}
