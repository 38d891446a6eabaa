/** Cloud ingest: the gateway -> cloud protocol's receiving side, staging, sealing into master/. */
export { IngestService, DEFAULT_INGEST_OPTIONS, type IngestOptions, type IngestDeps, type IngestStatus } from './service.js';
export { registerIngestRoute, INGEST_PATH } from './route.js';
export { validateIngestBody, type IngestBatch, type ReadingTuple } from './validate.js';
export type { IngestAck, GroupPlan, RequestOutcome, StagingLine } from './plan.js';
export { SqliteIngestStore } from './sqlite-store.js';
export { UnsupportedEncodingError, IngestUnavailableError } from './errors.js';
export { watermark, watermarkOf, type EpochSpan } from './watermark.js';
export { normalize, covers, missing, type Range } from './ranges.js';
export { readBody, bodyEncoding, parseJsonBody, requireOwnGateway, type BodyLimits } from './body.js';
export { prepareGatewayScope, type GatewayRouteMetrics } from './gateway-scope.js';
