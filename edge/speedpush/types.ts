/** The speed pusher's public shapes: what it needs, what it sends, what it reports. */
import type { Registry } from 'prom-client';
import type { Logger } from '../../shared/logger.js';
import type { Db, WriteQueue } from '../../shared/sqlite.js';
import type { CloudNodes, SenderError } from '../cloudclient/index.js';
import type { PartialTuple } from './page.js';

export interface SpeedPusherDeps {
  /** Read connection to gateway.db (openGatewayReader). */
  reader: Db;
  /** The gateway's write queue (the cursor and watermark go to the meta table through it). */
  writes: WriteQueue;
  /** Resolves once gateway.db holds every acknowledged reading (Outbox.applied): a push carries all of them. */
  applied?: () => Promise<void>;
  logger: Logger;
  registry: Registry;
  gatewayId: string;
  /** The gateway's GET /api/v1/health document, sent with every push. */
  health: () => Promise<Record<string, unknown>>;
  /** Ids of the devices connected to the broker now. */
  connectedDevices: () => string[];
  /** Called after each push the cloud answered 2xx: the cloud is reachable (the forwarder need not wait out its backoff). */
  onAnswered?: () => void;
  /** Wall clock in epoch ms (sentAt, lastSuccessAt, the lag). */
  now?: () => number;
  /** The cloud's nodes, shared with the forwarder (edge/cloudclient/nodes.ts); without it the pusher makes its own from options.url. */
  nodes?: CloudNodes;
  /**
   * The gateway's alert rules (edge/alerts): each push names the version held, and the cloud answers
   * the rules when its version differs; `received` keeps them. Without it nothing is asked.
   */
  alertRules?: { version: () => string; received: (version: string, rules: unknown[]) => Promise<void> };
}

/** The body of POST /api/v1/speed (docs/serving.md), before gzip. */
export interface SpeedPushBody {
  v: 1;
  gateway: string;
  sentAt: number;
  partials: PartialTuple[];
  health: Record<string, unknown>;
  devices: Array<{ id: string; connected: boolean }>;
  /** The version of the alert rules the gateway holds ('' none): the cloud answers `alertRules`. */
  alertRules?: string;
}

/** The cloud's 200 answer. */
export interface SpeedPushAnswer {
  /** E[g] of the live manifest: partials of epochs at or below it are not pushed again. */
  watermark: number;
  manifestVersion: number | null;
  stored: number;
  /** The device rules for this gateway (only when the push named a version): `rules` only when the version differs from the one named. */
  alertRules: { version: string; rules?: unknown[] } | null;
}

export type SpeedPushError = SenderError;

export interface SpeedPushStatus {
  lastSuccessAt: number | null;
  /** The cloud node of the latest push (before any, the current one); null without a cloud url. */
  cloudUrl: string | null;
  watermark: number;
  consecutiveFailures: number;
  lastError: SpeedPushError | null;
  /** updated_at of the newest partial acknowledged. */
  cursor: number;
  manifestVersion: number | null;
  /** Pushes answered 2xx since start. */
  pushes: number;
  /** Partials in pushes answered 2xx since start (re-sends included). */
  partialsSent: number;
}
