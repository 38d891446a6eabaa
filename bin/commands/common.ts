/** Pieces every command shares: config loading from --config/env/flags, logging, signals. */
import type { z } from 'zod';
import { loadConfig } from '../../shared/config.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import type { Finding } from './config-lint.js';

/** Drop undefined leaves so an absent flag does not override the file or the environment. */
export function compact(obj: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined) continue;
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const c = compact(v as Record<string, unknown>);
      if (Object.keys(c).length) out[k] = c;
    } else out[k] = v;
  }
  return out;
}

export function configFrom<S extends z.ZodObject>(schema: S, file: string | undefined, flags: Record<string, unknown>): z.infer<S> {
  return loadConfig(schema, { file, env: process.env, flags: compact(flags) });
}

export function rootLogger(level: string, name: string): Logger {
  return createLogger({ level, name });
}

/** The config lint's warnings at start, one log line each (--check-config prints the same). */
export function logWarnings(logger: Logger, warnings: ReadonlyArray<Finding>): void {
  for (const w of warnings) logger.warn({ rule: w.rule, key: w.key }, `config: ${w.message}`);
}

/**
 * Run `close` on SIGTERM/SIGINT, then exit 0. A second signal exits at once (1) for an operator
 * who really wants out.
 */
export function onShutdown(logger: Logger, close: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'stopping');
    close().then(() => process.exit(0), (err) => {
      logger.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
