/**
 * One retry policy for every sink request: exponential backoff with jitter, the server's
 * Retry-After honoured, and no retry of an answer that says the request itself is wrong.
 * The delays are pure functions, so the schedule is tested without a clock.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { HttpError, isRetriable } from '../../shared/errors.js';

export interface RetryOptions {
  /** Retries after the first attempt fails (so 1 + maxRetries attempts); 0 tries once. */
  maxRetries: number;
  /** Delay after the first failure, in ms; it doubles per failure up to `retryMaxMs`. */
  retryInitialMs: number;
  /** Longest own backoff delay, in ms. */
  retryMaxMs: number;
  /** Fraction (0..1) of each delay that is random, so sinks that failed together do not retry in lockstep. */
  jitter: number;
  /** Longest Retry-After honoured, in ms: a misconfigured proxy must not park the batch job. */
  retryAfterMaxMs: number;
}

export const DEFAULT_RETRY_OPTIONS: RetryOptions = {
  maxRetries: 5,
  retryInitialMs: 1000, // 1 s, then 2, 4, 8, 16
  retryMaxMs: 30_000,
  jitter: 0.5,
  retryAfterMaxMs: 120_000,
};

export function backoffDelayMs(failures: number, o: RetryOptions, random: () => number = Math.random): number {
  const exp = Math.min(Math.max(failures, 1) - 1, 30);
  const ceiling = Math.min(o.retryMaxMs, o.retryInitialMs * 2 ** exp);
  const jitter = Math.min(Math.max(o.jitter, 0), 1);
  return Math.round(ceiling * (1 - jitter * random()));
}

/**
 * `Retry-After` in ms: delta-seconds (RFC 9110 10.2.3) or an HTTP-date; undefined when absent or
 * unreadable. (influxdb-client reads delta-seconds as milliseconds, one reason its own retry is off.)
 */
export function parseRetryAfterMs(header: string | string[] | null | undefined, nowMs: number): number | undefined {
  const text = (Array.isArray(header) ? header[0] : header)?.trim();
  if (!text) return undefined;
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

/** The wait after `failures` failures: our backoff, or the server's Retry-After when longer (capped). */
export function retryDelayMs(failures: number, retryAfterMs: number | undefined, o: RetryOptions, random: () => number = Math.random): number {
  const own = backoffDelayMs(failures, o, random);
  return retryAfterMs === undefined ? own : Math.max(own, Math.min(retryAfterMs, o.retryAfterMaxMs));
}

/** Whether a failed request may succeed if sent again: 5xx, 408, 429, timeouts, socket errors. */
export function canRetryRequest(err: unknown): boolean {
  const name = (err as { name?: string } | undefined)?.name;
  // influxdb-client's own timeout/abort errors carry no code
  if (name === 'RequestTimedOutError' || name === 'AbortError') return true;
  return isRetriable(err);
}

export interface RetryHooks {
  /** Called before each wait, with the failure, its 1-based number and the wait in ms. */
  onRetry?: (err: unknown, failures: number, delayMs: number) => void;
  /** Aborting ends a wait at once; the last error is thrown. */
  signal?: AbortSignal;
  random?: () => number;
}

/** Run `attempt` until it succeeds, fails for good, or has failed 1 + maxRetries times; throws the last error. */
export async function withRetries<T>(attempt: (n: number) => Promise<T>, o: RetryOptions, hooks: RetryHooks = {}): Promise<T> {
  for (let failures = 0; ; ) {
    try {
      return await attempt(failures + 1);
    } catch (err) {
      failures += 1;
      if (failures > o.maxRetries || !canRetryRequest(err) || hooks.signal?.aborted) throw err;
      const retryAfter = err instanceof HttpError ? err.retryAfterMs : undefined;
      const delay = retryDelayMs(failures, retryAfter, o, hooks.random);
      hooks.onRetry?.(err, failures, delay);
      try {
        await sleep(delay, undefined, { signal: hooks.signal });
      } catch {
        throw err; // aborted while waiting: report what failed, not the abort
      }
    }
  }
}
