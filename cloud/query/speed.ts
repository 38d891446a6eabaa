/**
 * The speed side of a merged query: the stored partials of epochs above the manifest's E and each
 * gateway's last contact (docs/serving.md). The query sees it through `SpeedSource`, so tests can
 * hand it a table of their own; `cloudSpeedSource` binds cloud/speed's reads to cloud.db.
 */
import type { Db } from '../../shared/sqlite.js';
import { gatewayLastContact, readSpeedPartials, type SpeedPartialRow, type SpeedPartialsQuery } from '../speed/index.js';
import type { SpeedStore } from '../store/speed.js';

/** One partial: one device's metric in one minute for the readings of one epoch of its gateway. */
export type SpeedPartial = SpeedPartialRow;

/** Which partials a query wants (minutes in [fromMs, toMs); epochs above the manifest's E only). */
export type SpeedPartialsRequest = SpeedPartialsQuery;

export interface SpeedSource {
  /** Partials of epochs > watermark[gateway] only. */
  readSpeedPartials(req: SpeedPartialsRequest): Promise<SpeedPartial[]>;
  /** Per gateway, its last speed push, epoch ms. */
  gatewayLastContact(): Promise<Record<string, number>>;
}

/** The cloud's speed store in cloud.db (the SQLite SpeedStore's reads), read on `db`. */
export function cloudSpeedSource(db: Db): SpeedSource {
  return {
    readSpeedPartials: (req) => readSpeedPartials(db, req),
    gatewayLastContact: () => gatewayLastContact(db),
  };
}

/** Any SpeedStore (cloud/store/speed.ts: SQLite or PostgreSQL) as the query's speed side. */
export function speedSourceOf(store: Pick<SpeedStore, 'readPartials' | 'lastContact'>): SpeedSource {
  return {
    readSpeedPartials: (req) => store.readPartials(req),
    gatewayLastContact: () => store.lastContact(),
  };
}

/** No speed layer: every answer is the batch views alone. */
export const NO_SPEED: SpeedSource = {
  readSpeedPartials: async () => [],
  gatewayLastContact: async () => ({}),
};
