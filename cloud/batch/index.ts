/** The batch layer (docs/batch.md): the only door into cloud/batch/. */
export { startBatchRun, DEFAULT_BATCH_JOB_OPTIONS } from './job.js';
export type { BatchJobOptions, BatchRun, BatchRunDeps, BatchRunRequest, BatchRunResult } from './job.js';
export { BatchScheduler, batchOptionsFrom } from './scheduler.js';
export type { BatchSchedulerDeps, BatchSchedulerOptions, BatchStatus } from './scheduler.js';
export { registerBatchRoutes } from './routes.js';
export type { BatchRouteDeps } from './routes.js';
export { VIEW_NAMES } from './sink.js';
export type { SinkOutcome, ViewChanges, ViewName, ViewSink } from './sink.js';
export { readManifest, MANIFEST_FILE } from './manifest.js';
/** Where a view file lies in time (a day file, or an hour file of a minute view), from its path. */
export { viewFileSpan, viewPartOfPath } from './files.js';
export type { Manifest } from './manifest.js';
export { BatchAbortedError, BatchRunningError, ManifestInvalidError } from './errors.js';
export { progressLine } from './progress.js';
export type { BatchProgress } from './progress.js';
export type { RunRow, RunKind, RunTrigger } from './state.js';
/** cloud.db meta: a view sink's state (`sinkKey(name)`: {version, pending}), read by the query's InfluxDB reader. */
export { getMeta, sinkKey } from './state.js';
/** The batch state and the live manifest behind one interface (SQLite here; PostgreSQL in cloud/store/pg/batch.ts). */
export { openSqliteBatchStores, sqliteBatchStores, processName } from './store.js';
export type { BatchLockHandle, BatchStore, BatchStores, FinishedRun, ViewPointer } from './store.js';
