/** cloud.db: the schema, credentials (gateway tokens, API keys), the ingest state, and the speed store's interface. */
export { openCloudDb, CLOUD_SCHEMA_VERSION } from './schema.js';
export * from './credentials.js';
export type { CredentialStore, CredentialKind, GatewayListing, ApiKeyListing } from './credential-store.js';
export { SqliteCredentialStore } from './sqlite-credentials.js';
export * from './ingest-state.js';
export * from './speed.js';
export type * from './ingest.js';
