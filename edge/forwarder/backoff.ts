/** The retry schedule moved to edge/cloudclient/ (shared with the speed pusher); this path stays for its tests. */
export { backoffDelayMs, parseRetryAfterMs, retryDelayMs, type BackoffOptions } from '../cloudclient/index.js';
