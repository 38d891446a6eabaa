/**
 * What every gateway -> cloud sender shares (the forwarder, the speed pusher): the background loop
 * with its status, the retry schedule, one gzipped JSON POST, and the node list of a cloud given
 * as several URLs (failover). The only door into edge/cloudclient/.
 */
export { backoffDelayMs, parseRetryAfterMs, retryDelayMs, type BackoffOptions } from './backoff.js';
export { type CloudPost, type CloudRequest, cloudUrl, errorBodyCode, gzipJson, postGzip } from './post.js';
export { CloudNodes, type CloudNodeMetrics, type CloudNodesOptions, type CloudNodesStatus, DEFAULT_CLOUD_NODES_OPTIONS, type NodeVerdict, createCloudNodeMetrics, isNodeFailure } from './nodes.js';
export { CloudSender, IDLE, NOW, type Next, type SenderConfig, type SenderError, type SenderMetrics, type SenderOptions, type SenderStatus, type Step, type WaitKind } from './sender.js';
export { cloudUrlsProblem, displayUrl, splitCloudUrls } from './urls.js';
