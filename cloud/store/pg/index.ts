/**
 * The PostgreSQL store for cluster mode (docs/cluster-store.md): the pool, the schema migrations,
 * the credentials.
 * Opened through cloud/store/cloud-store.ts (store.url); `braid cloud` itself does not serve on it yet.
 * The embedded SQLite store (cloud/store/schema.ts) is unchanged.
 */
export { createPgPool, DEFAULT_PG_STORE_OPTIONS, type PgStoreOptions } from './pool.js';
export { migrate, schemaVersion, MIGRATION_LOCK_KEY, type MigrateOptions, type MigrateResult } from './migrate.js';
export { MIGRATIONS, PG_ONLY_TABLES, PG_SCHEMA_VERSION, type Migration } from './migrations.js';
export { PgBatchStore, PgViewPointer, BATCH_LOCK_KEY, MANIFEST_CHANNEL, type PgBatchOptions, type PgViewPointerOptions } from './batch.js';
export { StoreSchemaNewerError } from './errors.js';
export { PgCredentialStore, type PgQueryable } from './credentials.js';
export { StoreUnavailableError, isStoreUnavailable } from './unavailable.js';
export { PgSpeedStore, PG_MAX_PARAMS, SPEED_LOCK_CLASS } from './speed.js';
export { PgIngestStore, INGEST_LOCK_CLASS } from './ingest.js';
export { PgNodeRegistry } from './nodes.js';
export { PgAlertStore, ALERTS_LOCK_KEY } from './alerts.js';
