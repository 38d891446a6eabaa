/** Errors of the batch job, declared once with stable codes (shared/errors.ts style). */
import { BraidError } from '../../shared/errors.js';

/** A batch run is already going on (batch.lock is held by a live process). */
export class BatchRunningError extends BraidError {
  /** The pid that holds batch.lock, when known. */
  readonly holderPid: number | undefined;
  constructor(message: string, holderPid?: number, options?: { cause?: unknown }) {
    super('BRAID_ERR_BATCH_RUNNING', message, 409, options);
    this.holderPid = holderPid;
  }
}

/** views/manifest.json exists but is not a manifest we can read; `braid batch run --full` rewrites it. */
export class ManifestInvalidError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_MANIFEST_INVALID', message, 500, options);
  }
}

/** The run stopped because its scheduler was closed or its signal aborted. */
export class BatchAbortedError extends BraidError {
  constructor(message = 'batch run aborted', options?: { cause?: unknown }) {
    super('BRAID_ERR_BATCH_ABORTED', message, 503, options);
  }
}
