/** The merged query (docs/serving.md): GET /api/v1/query and the OpenAPI document. The only door into cloud/query/. */
export { QueryLayer, type QueryLayerOptions } from './layer.js';
export { QueryService, type MergedAnswer, type QueryAnswer, type QueryDeps, type QueryHooks, type QueryOptions } from './service.js';
export { planQuery, DEFAULT_AGG, DEFAULT_STEP, type QueryParams, type QueryPlan, type Scope } from './params.js';
export { bucketsCsvParts, isoUtc, mergeBuckets, partialSummary, pointsJsonParts, toCsv, bodyOf, toPoints, type MergedBucket, type Point } from './merge.js';
export { FileManifestSource, viewFiles, type ManifestSource } from './manifest.js';
export { cloudSpeedSource, speedSourceOf, NO_SPEED, type SpeedPartial, type SpeedPartialsRequest, type SpeedSource } from './speed.js';
export { QUERY_PATH, QUERY_ANSWER_SCHEMA, ERROR_SCHEMA, answerJson, registerQueryRoute, wantsCsv } from './route.js';
export { OPENAPI_PATH, registerOpenApi, type OpenApiOptions } from './openapi.js';
export * from './views/index.js';
