/** The forwarder's public shapes: what it needs, what it reports. */
import type { Registry } from 'prom-client';
import type { Logger } from '../../shared/logger.js';
import type { Db, WriteQueue } from '../../shared/sqlite.js';
import type { CloudNodes, SenderError } from '../cloudclient/index.js';

export interface AckInfo {
  /** acked_seq after this acknowledgement. */
  ackSeq: number;
  /** Outbox rows it deleted. */
  rows: number;
  /** Their bytes as the disk budget counts them (outboxRowBytes). */
  bytes: number;
}

export interface ForwarderDeps {
  /** Read connection to gateway.db (openGatewayReader). */
  reader: Db;
  /** The gateway's write queue: every write to gateway.db goes through it. */
  writes: WriteQueue;
  logger: Logger;
  registry: Registry;
  gatewayId: string;
  /** Called after each acknowledgement is committed (the outbox budget subtracts the bytes). */
  onAcked?: (info: AckInfo) => void;
  /** Wall clock in epoch ms (sentAt, lastSuccessAt). */
  now?: () => number;
  /** The cloud's nodes, shared with the speed pusher (edge/cloudclient/nodes.ts); without it the forwarder makes its own from options.url. */
  nodes?: CloudNodes;
}

export type ForwarderError = SenderError;

export interface ForwarderStatus {
  ackedSeq: number;
  /** Highest seq in the request in flight, or ackedSeq: the disk budget drops only rows above it. */
  inflightUpToSeq: number;
  /** The cloud node of the latest request (before any, the current one); null without a cloud url. */
  cloudUrl: string | null;
  lastSuccessAt: number | null;
  lastError: ForwarderError | null;
  consecutiveFailures: number;
  /** Readings in requests answered 2xx since start (repeats included). */
  sentReadings: number;
  batchesSent: number;
}

export interface CloseReport {
  /** Readings still in the outbox, unacknowledged; null if the database could not be read. */
  pending: number | null;
}
