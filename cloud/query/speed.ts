/**
 * The speed side of a merged query: the stored partials of epochs above the manifest's E and each
 * gateway's last contact (docs/serving.md). The query sees it through `SpeedSource`, so tests can
 * hand it a table of their own; `cloudSpeedSource` binds cloud/speed's reads to cloud.db.
 */
import type { Db } from '../../shared/sqlite.js';
import { gatewayLastContact, readSpeedPartials } from '../speed/index.js';

/** One partial: one device's metric in one minute for the readings of one epoch of its gateway. */
export interface SpeedPartial {
  gateway: string;
  device: string;
  /** Minute start, epoch ms. */
  minute: number;
  epoch: number;
  count: number;
  sum: number;
  min: number;
  max: number;
  m2: number;
  first: number;
  first_ts: number;
  last: number;
  last_ts: number;
}

export interface SpeedPartialsRequest {
  metric: string;
  device?: string;
  gateway?: string;
  /** Minutes in [fromMs, toMs), epoch ms. */
  fromMs: number;
  toMs: number;
  /** E of the manifest the query read: only partials of epochs above E[gateway] (0 when absent). */
  watermark: Record<string, number>;
}

export interface SpeedSource {
  /** Partials of epochs > watermark[gateway] only. */
  readSpeedPartials(req: SpeedPartialsRequest): Promise<SpeedPartial[]>;
  /** Per gateway, its last speed push, epoch ms. */
  gatewayLastContact(): Promise<Record<string, number>>;
}

/** The cloud's speed store (cloud/speed/, tables in cloud.db), read on `db`. */
export function cloudSpeedSource(db: Db): SpeedSource {
  return {
    readSpeedPartials: (req) => readSpeedPartials(db, req),
    gatewayLastContact: () => gatewayLastContact(db),
  };
}

/** No speed layer: every answer is the batch views alone. */
export const NO_SPEED: SpeedSource = {
  readSpeedPartials: async () => [],
  gatewayLastContact: async () => ({}),
};
