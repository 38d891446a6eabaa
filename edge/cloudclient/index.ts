/**
 * What every gateway -> cloud sender shares (the forwarder, the speed pusher): the background loop
 * with its status, the retry schedule and one gzipped JSON POST. The only door into edge/cloudclient/.
 */
export { backoffDelayMs, parseRetryAfterMs, retryDelayMs, type BackoffOptions } from './backoff.js';
export { type CloudPost, type CloudRequest, cloudUrl, errorBodyCode, gzipJson, postGzip } from './post.js';
export { CloudSender, IDLE, NOW, type Next, type SenderConfig, type SenderError, type SenderMetrics, type SenderOptions, type SenderStatus, type Step, type WaitKind } from './sender.js';
