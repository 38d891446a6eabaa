/** View sinks besides the Parquet views: the only door into cloud/sinks/. */
import type { Registry } from 'prom-client';
import type { Logger } from '../../shared/logger.js';
import type { ViewSink } from '../batch/sink.js';
import type { CloudConfig } from '../config.js';
import { createInfluxSink } from './influx/index.js';

export { SinkFailedError } from './errors.js';

/** The sinks the configuration asks for: InfluxDB when `influx.url` is set. */
export function createSinks(config: CloudConfig, logger: Logger, registry: Registry): ViewSink[] {
  const sinks: ViewSink[] = [];
  // The sink binds component and sink itself: a child binding them here too repeats the key in every line.
  if (config.influx.url) sinks.push(createInfluxSink(config.influx, logger, registry));
  return sinks;
}

export async function closeSinks(sinks: ViewSink[], logger: Logger): Promise<void> {
  for (const s of sinks) {
    try { await s.close?.(); } catch (err) { logger.error({ err, sink: s.name }, 'closing a view sink failed'); }
  }
}
