/** The forwarder's options, one field at a time, with their defaults (merged by spread). */
import { ConfigInvalidError } from '../../shared/errors.js';
import { cloudUrlsProblem, splitCloudUrls } from '../cloudclient/index.js';

export interface ForwarderOptions {
  /** Cloud base URL (`http://host:port`), or the comma-separated URLs of one cloud's nodes (failed over in order); the forwarder POSTs to `<url>/api/v1/ingest`. null keeps every reading buffered in the outbox. */
  url: string | null;
  /** Gateway token (`braid cloud gateway add`), sent as `Authorization: Bearer`. */
  token: string | null;
  /** Most readings in one ingest request (a 413 halves the working size, successes grow it back). */
  batchMaxReadings: number;
  /** Time one ingest request may take, answer body included, in ms. */
  requestTimeoutMs: number;
  /** First retry delay, in ms; doubles per consecutive failure up to `retryMaxMs`. */
  retryInitialMs: number;
  /** Longest retry delay, in ms; also caps a server's `Retry-After`. */
  retryMaxMs: number;
  /**
   * Fraction of each retry delay that is random, 0..1: the delay is drawn uniformly from
   * `[d * (1 - jitter), d]` ("full jitter" over that window; 1 is classic full jitter, 0 none).
   */
  jitter: number;
  /**
   * How long a batch short of `batchMaxReadings` may wait for more readings before it is sent, in
   * ms (Kafka's linger.ms); a full batch goes at once, close() sends a held one at once; 0 sends
   * after every commit.
   */
  lingerMs: number;
  /** How often an idle forwarder looks for work, in ms, besides being woken by `notify()`. */
  idlePollMs: number;
  /** How long `close()` lets an in-flight request finish before aborting it, in ms. */
  closeGraceMs: number;
}

export const DEFAULT_FORWARDER_OPTIONS: ForwarderOptions = {
  url: null,
  token: null,
  batchMaxReadings: 5_000, // about 300 KiB of JSON before gzip
  requestTimeoutMs: 30_000, // 30 s
  retryInitialMs: 500,
  retryMaxMs: 60_000, // 1 minute
  jitter: 0.2,
  // 200 ms: a fleet at 800 readings/s sends 5 requests a second of ~160 readings instead of one per
  // group commit (45-90 a second), while the master dataset stays 0.2 s behind at most; the speed
  // layer, not ingest, serves "now", so the delay is invisible to queries.
  lingerMs: 200,
  idlePollMs: 1_000, // 1 s
  closeGraceMs: 2_000, // 2 s
};

/** Reject options no forwarder can run with; the message names the key (config.ts validates first, this guards direct callers). */
export function checkForwarderOptions(o: ForwarderOptions): ForwarderOptions {
  const positive = ['batchMaxReadings', 'requestTimeoutMs', 'retryInitialMs', 'retryMaxMs', 'idlePollMs'] as const;
  for (const key of positive) {
    if (!Number.isFinite(o[key]) || o[key] <= 0) throw new ConfigInvalidError(`forwarder option ${key} must be a positive number, got ${o[key]}`);
  }
  if (!Number.isInteger(o.batchMaxReadings)) throw new ConfigInvalidError(`forwarder option batchMaxReadings must be an integer, got ${o.batchMaxReadings}`);
  if (!(o.jitter >= 0 && o.jitter <= 1)) throw new ConfigInvalidError(`forwarder option jitter must be within 0..1, got ${o.jitter}`);
  if (!(o.lingerMs >= 0 && Number.isFinite(o.lingerMs))) throw new ConfigInvalidError(`forwarder option lingerMs must be a number >= 0, got ${o.lingerMs}`);
  if (!(o.closeGraceMs >= 0)) throw new ConfigInvalidError(`forwarder option closeGraceMs must be >= 0, got ${o.closeGraceMs}`);
  if (o.url !== null) {
    const problem = cloudUrlsProblem(splitCloudUrls(o.url));
    if (problem) throw new ConfigInvalidError(`forwarder option url: ${problem}`);
  }
  return o;
}
