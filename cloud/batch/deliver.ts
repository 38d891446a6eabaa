/**
 * Hand the changed days to the view sinks, after the manifest is live. Each sink keeps in the store's
 * meta the manifest version it has taken and the days a failed call left: it gets those days plus
 * every day whose live file is newer than that version. So a run without the sink (`braid batch
 * run` with no InfluxDB configured) loses it nothing, a failure keeps the days for the next run
 * without touching the Parquet views, and a sink seen for the first time gets every day (backfill).
 */
import { join } from 'node:path';
import type { Logger } from '../../shared/logger.js';
import { dayOfPath, parseVersionDir } from './files.js';
import { emptyViews, manifestDays, type Manifest } from './manifest.js';
import { VIEW_NAMES, type SinkOutcome, type ViewSink } from './sink.js';
import { sinkKey } from './state.js';
import type { BatchStore } from './store.js';

interface SinkState {
  /** The manifest version whose days the sink has been handed. */
  version: number;
  /** Days a failed write left. */
  pending: string[];
}

/** The version of a `vNNNNNN/<view>/day=...` path. */
const versionOf = (p: string): number => parseVersionDir(p.split('/')[0]) ?? 0;

export async function deliver(store: BatchStore, sinks: ViewSink[], live: Manifest, viewsDir: string, logger: Logger): Promise<Record<string, SinkOutcome>> {
  const out: Record<string, SinkOutcome> = {};
  const liveDays = new Set(manifestDays(live));
  for (const sink of sinks) {
    const state = await store.getMeta<SinkState>(sinkKey(sink.name));
    const wanted = new Set<string>(state?.pending ?? []);
    for (const paths of Object.values(live.views)) for (const p of paths) {
      if (!state || versionOf(p) > state.version) wanted.add(dayOfPath(p) ?? '');
    }
    // A day with no file left in the live views has nothing to send.
    const days = [...wanted].filter((d) => liveDays.has(d)).sort();
    if (days.length === 0) {
      out[sink.name] = { outcome: 'skipped', days: 0, points: 0 };
      await store.setMeta(sinkKey(sink.name), { version: live.version, pending: [] } satisfies SinkState);
      continue;
    }
    const daySet = new Set(days);
    const views = emptyViews();
    for (const v of VIEW_NAMES) {
      views[v] = live.views[v].filter((p) => daySet.has(dayOfPath(p) ?? '')).map((p) => join(viewsDir, p));
    }
    try {
      const { points } = await sink.write({ version: live.version, watermark: { ...live.watermark }, days, views });
      out[sink.name] = { outcome: 'ok', days: days.length, points };
      await store.setMeta(sinkKey(sink.name), { version: live.version, pending: [] } satisfies SinkState);
    } catch (err) {
      const error = (err as Error)?.message ?? String(err);
      logger.warn({ err, sink: sink.name, days: days.length }, 'view sink failed; its days are retried at the next run');
      out[sink.name] = { outcome: 'failed', days: days.length, points: 0, error };
      await store.setMeta(sinkKey(sink.name), { version: live.version, pending: days } satisfies SinkState);
    }
  }
  return out;
}
