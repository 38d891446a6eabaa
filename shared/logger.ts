/** Logging: pino, a root logger passed in (never a global), children per component, secrets redacted. */
import { pino, type Logger } from 'pino';

export type { Logger };

export interface LoggerOptions {
  /** pino level: fatal, error, warn, info, debug, trace or silent. */
  level: string;
  /** Component name bound to every line. */
  name?: string;
}

export const DEFAULT_LOGGER_OPTIONS: LoggerOptions = { level: 'info' };

/** Paths that may carry secrets in a log object. */
const REDACT = [
  'token', 'secret', 'password', 'authorization', 'apiKey',
  '*.token', '*.secret', '*.password', '*.authorization', '*.apiKey',
  'req.headers.authorization', 'headers.authorization', 'cloud.token',
];

export function createLogger(opts: Partial<LoggerOptions> = {}, destination: NodeJS.WritableStream | number = 2): Logger {
  const o = { ...DEFAULT_LOGGER_OPTIONS, ...opts };
  const dest = typeof destination === 'number' ? pino.destination({ fd: destination, sync: false }) : destination;
  return pino({ level: o.level, name: o.name, redact: { paths: REDACT, censor: '[redacted]' } }, dest as pino.DestinationStream);
}

/** A logger that writes nothing: the default where no logger is given. */
export function nullLogger(): Logger {
  return pino({ level: 'silent' });
}
