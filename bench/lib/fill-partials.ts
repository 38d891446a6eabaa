/**
 * The speed partials of a gateway that has run for a while: `devices` x `metrics` x the `minutes`
 * minutes before `beforeMinute` (epoch ms, a minute's start), one row each (a minute of one reading
 * a second; all in epoch 1, or with `epochPerMinute` the i-th minute in epoch i + 1, as the
 * committer's epochs on the clock's minutes make them), written in minute order as a gateway
 * writes them, then checkpointed. The
 * commits measured after it update rows of a full table, as on a gateway in service, where a fresh
 * gateway.db has only the rows the measurement itself makes (docs/benchmarks.md, gateway session 14).
 */
import { join } from 'node:path';
import type { Db } from '../../shared/sqlite.js';
import { ROOT } from './peers.js';

export interface PartialsFill {
  devices: readonly string[];
  metrics: readonly string[];
  minutes: number;
  beforeMinute: number;
  epochPerMinute?: boolean;
}

/** The fill's statements on an open gateway.db (any schema version: plain INSERT into partials). */
export async function fillPartials(db: Db, f: PartialsFill): Promise<number> {
  if (f.minutes <= 0) return 0;
  await db.run(`WITH RECURSIVE k(minute) AS (SELECT ?1 UNION ALL SELECT minute + 60000 FROM k WHERE minute + 60000 < ?2)
    INSERT OR IGNORE INTO partials (device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts, updated_at)
    SELECT d.value, m.value, k.minute, ${f.epochPerMinute ? '(k.minute - ?1) / 60000 + 1' : '1'}, 60, 1290.5, 20.1, 22.9, 3.25, 21.5, k.minute, 21.7, k.minute + 59000, k.minute + 60000
    FROM k, json_each(?3) d, json_each(?4) m
    ORDER BY k.minute, d.key, m.key`, [f.beforeMinute - f.minutes * 60_000, f.beforeMinute, JSON.stringify(f.devices), JSON.stringify(f.metrics)]);
  await db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
  return f.devices.length * f.metrics.length * f.minutes;
}

/**
 * The speed push's index on the partials, as the checkout at `root` makes it when its push starts
 * (edge/speedpush/page.ts: `ensurePushIndex`, on `epoch`, since session 22; `ensureCursorIndex`, on
 * `updated_at`, before): a gateway with a cloud has it.
 */
export async function ensureSpeedPushIndex(root: string, writes: import('../../shared/sqlite.js').WriteQueue): Promise<void> {
  const page = await import(join(root, 'edge/speedpush/page.ts')) as { ensurePushIndex?: (w: unknown) => Promise<void>; ensureCursorIndex?: (w: unknown) => Promise<void> };
  const ensure = page.ensurePushIndex ?? page.ensureCursorIndex;
  if (!ensure) throw new Error(`${root}/edge/speedpush/page.ts makes no speed push index (neither ensurePushIndex nor ensureCursorIndex)`);
  await ensure(writes);
}

/**
 * fillPartials on `<dataDir>/gateway.db`, opened with the schema of the checkout at `root` (the
 * gateway that will open it); with `cursorIndex`, the speed push's index on the partials made first
 * (ensureSpeedPushIndex): a gateway with a cloud has it (docs/benchmarks.md, gateway sessions 16 and 22).
 */
export async function fillGatewayPartials(dataDir: string, f: PartialsFill & { cursorIndex?: boolean }, root = ROOT): Promise<{ rows: number; ms: number }> {
  const t0 = performance.now();
  const schema = await import(join(root, 'edge/store/schema.ts')) as { openGatewayDb: (file: string) => Promise<Db> };
  const db = await schema.openGatewayDb(join(dataDir, 'gateway.db'));
  try {
    if (f.cursorIndex) {
      const { WriteQueue } = await import(join(root, 'shared/sqlite.ts')) as typeof import('../../shared/sqlite.js');
      await ensureSpeedPushIndex(root, new WriteQueue(db));
    }
    return { rows: await fillPartials(db, f), ms: performance.now() - t0 };
  } finally {
    await db.close();
  }
}
