/** The speed pusher's options, one field at a time, with their defaults (merged by spread). */
import { ConfigInvalidError } from '../../shared/errors.js';
import { cloudUrlsProblem, splitCloudUrls } from '../cloudclient/index.js';

export interface SpeedPushOptions {
  /** Cloud base URL, or the comma-separated URLs of one cloud's nodes; the pusher POSTs to `<url>/api/v1/speed`. null pushes nothing (the pusher idles). */
  url: string | null;
  /** Gateway token (`braid cloud gateway add`), sent as `Authorization: Bearer`. */
  token: string | null;
  /** Time between the starts of two pushes, in ms (config `speed.pushIntervalMs`): a fixed cadence that slow pushes do not stretch; a push goes even with no partial, as the gateway's heartbeat. */
  pushIntervalMs: number;
  /** Most partials in one push (config `speed.pushMaxPartials`); a 413 halves the working size, successes grow it back. */
  pushMaxPartials: number;
  /** Time one push may take, answer body included, in ms. */
  requestTimeoutMs: number;
  /** First retry delay after a failed push, in ms; doubles per consecutive failure up to `retryMaxMs`. */
  retryInitialMs: number;
  /**
   * Longest retry delay while the cloud does not answer (down, 5xx, timeout), in ms (config
   * `speed.retryMaxMs`): the push is small and idempotent, so it probes a cloud that is away this
   * often, and the first push after its return, carrying the newest readings, comes within about
   * this long whatever the length of the outage.
   */
  retryMaxMs: number;
  /** Longest wait the cloud can ask for (`Retry-After`) and the cap of the backoff after a refusal (400, 401, 403), in ms (config `cloud.retryMaxMs`). */
  retryAfterMaxMs: number;
  /** Fraction of each retry delay that is random, 0..1 (see edge/cloudclient/backoff.ts). */
  jitter: number;
  /** How long `close()` lets an in-flight push finish before aborting it, in ms. */
  closeGraceMs: number;
}

export const DEFAULT_SPEED_PUSH_OPTIONS: SpeedPushOptions = {
  url: null,
  token: null,
  pushIntervalMs: 1_000, // 1 s: a reading shows in the merged query within ~1.2 s at p99 (docs/benchmarks.md, Freshness)
  pushMaxPartials: 20_000, // about 2.5 MB of JSON before gzip
  requestTimeoutMs: 30_000, // 30 s
  retryInitialMs: 500,
  retryMaxMs: 2_000, // 2 s: an outage's end shows within ~2 s; a fleet of 10k gateways probes a dead cloud at ~5k small requests/s
  retryAfterMaxMs: 60_000, // 1 minute
  jitter: 0.2,
  closeGraceMs: 2_000, // 2 s
};

/** Reject options no pusher can run with; the message names the key (config.ts validates first, this guards direct callers). */
export function checkSpeedPushOptions(o: SpeedPushOptions): SpeedPushOptions {
  const positive = ['pushIntervalMs', 'pushMaxPartials', 'requestTimeoutMs', 'retryInitialMs', 'retryMaxMs', 'retryAfterMaxMs'] as const;
  for (const key of positive) {
    if (!Number.isFinite(o[key]) || o[key] <= 0) throw new ConfigInvalidError(`speed push option ${key} must be a positive number, got ${o[key]}`);
  }
  if (!Number.isInteger(o.pushMaxPartials)) throw new ConfigInvalidError(`speed push option pushMaxPartials must be an integer, got ${o.pushMaxPartials}`);
  if (!(o.jitter >= 0 && o.jitter <= 1)) throw new ConfigInvalidError(`speed push option jitter must be within 0..1, got ${o.jitter}`);
  if (!(o.closeGraceMs >= 0)) throw new ConfigInvalidError(`speed push option closeGraceMs must be >= 0, got ${o.closeGraceMs}`);
  if (o.url !== null) {
    const problem = cloudUrlsProblem(splitCloudUrls(o.url));
    if (problem) throw new ConfigInvalidError(`speed push option url: ${problem}`);
  }
  return o;
}
