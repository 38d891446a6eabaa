/** The InfluxDB sink's options: the `influx` config section plus tuning with defaults. */
import type { CloudConfig } from '../../config.js';
import { DEFAULT_RETRY_OPTIONS, type RetryOptions } from '../retry.js';

/** The `influx` section of cloud/config.ts (url, api, token, org, bucket, database, ..., maxRetries). */
export type InfluxConfig = CloudConfig['influx'];

/** Tuning not in the config file; tests shorten the delays. `maxRetries` comes from the config. */
export interface InfluxSinkTuning extends Omit<RetryOptions, 'maxRetries'> {
  /** Request bodies larger than this many bytes are sent gzipped (Content-Encoding: gzip), on both APIs. */
  gzipThreshold: number;
}

export const DEFAULT_INFLUX_SINK_TUNING: InfluxSinkTuning = {
  retryInitialMs: DEFAULT_RETRY_OPTIONS.retryInitialMs, // 1 s
  retryMaxMs: DEFAULT_RETRY_OPTIONS.retryMaxMs, // 30 s
  jitter: DEFAULT_RETRY_OPTIONS.jitter,
  retryAfterMaxMs: DEFAULT_RETRY_OPTIONS.retryAfterMaxMs, // 2 min
  gzipThreshold: 1000, // bytes, influxdb-client's default
};

/** The sink's name: the key of its pending days in the batch job and its `sink` metric label. */
export const INFLUX_SINK_NAME = 'influx';
