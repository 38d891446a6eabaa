/**
 * Ingest's own refusals, each with a stable code (the shared ones, 400/401/403/413/429/503, come
 * from shared/errors.ts). The gateway retries all of them, backing off; none loses data.
 */
import { BraidError } from '../../shared/errors.js';

/** A Content-Encoding other than gzip or identity. */
export class UnsupportedEncodingError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_UNSUPPORTED_ENCODING', message, 415, options);
  }
}

/**
 * The batch could not be made durable (staging write, fsync or cloud.db failed): nothing was
 * acknowledged, so the gateway keeps the rows and sends them again [INV-1].
 */
export class IngestUnavailableError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_INGEST_UNAVAILABLE', message, 503, options);
  }
  override canRetry(): boolean { return true; }
}

/** What a seq-skip refusal tells the gateway, beside code and message (docs/ingest-protocol.md). */
export interface SeqSkipDetails {
  /** The highest seq of the gateway the cloud holds (stored, or passed by an accepted batch's lastSeq). */
  heldSeq: number;
  /** The skipped seqs, ascending, at most MAX_LISTED_SKIPS ranges (the lowest). */
  missing: Array<{ fromSeq: number; toSeq: number }>;
  /** How many seqs are skipped in all (the listed ranges and any left off). */
  missingCount: number;
}

/** Most skipped ranges a refusal lists; a gateway that records some gets the next ones at its next try. */
export const MAX_LISTED_SKIPS = 100;

/**
 * A batch that skips ahead: seqs above the highest one this gateway has had stored, up to the
 * batch's lastSeq, that neither the batch's readings nor a gap record (the batch's or an earlier
 * one) account for (docs/ingest-protocol.md, "What a batch must account for"). The real forwarder
 * never sends one; storing it would record a hole that no later batch can close. Nothing of the
 * request is kept. The answer carries `heldSeq` and the `missing` ranges: a cloud restored from an
 * older backup lost seqs it had acknowledged, and the gateway, which knows its acknowledged seq,
 * records those (and only those) as a `cloud_lost` gap record and goes on.
 */
export class IngestSeqSkipError extends BraidError {
  declare readonly details: Readonly<SeqSkipDetails>;
  constructor(message: string, details: SeqSkipDetails, options?: { cause?: unknown }) {
    super('BRAID_ERR_INGEST_SEQ_SKIP', message, 409, { ...options, details: { ...details } });
  }
}

/**
 * A closed epoch whose span differs from the one stored for that epoch (or from another record of it
 * in the same batch). A gateway closes an epoch once and resends the same record until it is
 * acknowledged, so this is never the real forwarder; first stored would otherwise win silently, and
 * a wrong span keeps the vector watermark from passing that epoch. A gateway whose data dir was
 * reset (its seqs and epochs start at 1 again) gets this too, instead of its readings being taken
 * for duplicates unnoticed: give it a new gateway id.
 */
export class IngestEpochConflictError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_INGEST_EPOCH_CONFLICT', message, 409, options);
  }
}
