/** Errors of the view sinks, declared once with stable codes (shared/errors.ts style). */
import { BraidError } from '../../shared/errors.js';

/**
 * A sink could not write its views. `pointsWritten` were acknowledged before it gave up (writes are
 * idempotent, so the next run sends the same days again). `canRetry()` is false only when the server
 * refused the data itself (a 4xx other than 408/429): sending the same points again cannot help.
 */
export class SinkFailedError extends BraidError {
  readonly sink: string;
  readonly pointsWritten: number;
  private readonly retriable: boolean;

  constructor(sink: string, message: string, o: { pointsWritten: number; retriable: boolean; cause?: unknown }) {
    super('BRAID_ERR_SINK_FAILED', message, o.retriable ? 503 : 502, { cause: o.cause });
    this.sink = sink;
    this.pointsWritten = o.pointsWritten;
    this.retriable = o.retriable;
  }

  override canRetry(): boolean {
    return this.retriable;
  }
}
