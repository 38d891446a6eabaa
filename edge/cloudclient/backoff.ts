/** Retry delays for every request the gateway sends the cloud (ingest, speed push): pure functions, so the schedule is tested without a clock. */

export interface BackoffOptions {
  retryInitialMs: number;
  /** Cap of our own backoff (a cloud that does not answer, a 5xx, a timeout), in ms. */
  retryMaxMs: number;
  jitter: number;
  /**
   * Cap of a wait the cloud itself asks for, in ms: a `Retry-After`, or the backoff after a refusal
   * that retrying cannot fix (400, 401, 403). retryMaxMs when absent. Larger than retryMaxMs for a
   * sender that probes a silent cloud often (the speed push) yet must not hammer one that answers.
   */
  retryAfterMaxMs?: number;
}

/**
 * Delay before the next attempt after `failures` consecutive failures (1 = the first): the
 * initial delay doubling up to the max, of which the `jitter` fraction is random, so a fleet
 * that lost the cloud at the same moment does not come back in lockstep.
 */
export function backoffDelayMs(failures: number, o: BackoffOptions, random: () => number = Math.random): number {
  const exp = Math.min(Math.max(failures, 1) - 1, 30); // 2^30 already passes any sane retryMaxMs
  const ceiling = Math.min(o.retryMaxMs, o.retryInitialMs * 2 ** exp);
  const jitter = Math.min(Math.max(o.jitter, 0), 1);
  return Math.round(ceiling * (1 - jitter * random()));
}

/**
 * `Retry-After` in ms: delta-seconds (RFC 9110 10.2.3), or an HTTP-date. undefined when absent or
 * unreadable: the caller then falls back to its own backoff.
 */
export function parseRetryAfterMs(header: string | null | undefined, nowMs: number): number | undefined {
  if (header == null) return undefined;
  const text = header.trim();
  if (text === '') return undefined;
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

/**
 * The wait after a failure: our backoff, or the server's Retry-After if longer, capped at
 * retryAfterMaxMs (else retryMaxMs) so a misconfigured proxy cannot park the gateway.
 */
export function retryDelayMs(failures: number, retryAfterMs: number | undefined, o: BackoffOptions, random: () => number = Math.random): number {
  const own = backoffDelayMs(failures, o, random);
  if (retryAfterMs === undefined) return own;
  return Math.max(own, Math.min(retryAfterMs, o.retryAfterMaxMs ?? o.retryMaxMs));
}
