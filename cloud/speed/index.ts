/**
 * The cloud's speed store and registry (docs/serving.md): POST /api/v1/speed, GET /api/v1/gateways,
 * GET /api/v1/devices, and the reads the merged query uses. The only door into cloud/speed/.
 */
export { SpeedService, DEFAULT_SPEED_OPTIONS, speedOptionsFrom, type SpeedOptions, type SpeedStoreFactory } from './service.js';
export { SqliteSpeedStore } from './sqlite-store.js';
export { readSpeedPartials, gatewayLastContact, type SpeedPartialRow, type SpeedPartialsQuery } from './store.js';
export { SPEED_PATH, type SpeedAnswer } from './route.js';
export { SpeedUnavailableError } from './errors.js';
export { validateSpeedPush, type PartialTuple, type SpeedPush, type SpeedLimits } from './validate.js';
