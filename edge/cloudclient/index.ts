/**
 * What every gateway -> cloud sender shares (the forwarder, the speed pusher): the retry schedule
 * and one gzipped JSON POST. The only door into edge/cloudclient/.
 */
export { backoffDelayMs, parseRetryAfterMs, retryDelayMs, type BackoffOptions } from './backoff.js';
export { type CloudPost, type CloudRequest, cloudUrl, errorBodyCode, gzipJson, postGzip } from './post.js';
