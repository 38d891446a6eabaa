/**
 * The speed push's read of one page (edge/speedpush/page.ts readPage) on the gateway.db of a fleet:
 * `--devices N` x 4 metrics, 240 minutes of partials in closed epochs (a minute each, as the
 * committer closes them), and the open epoch's row of the current minute for every series, of
 * which `--updated` (a share) changed since the push's cursor. Each `--root` checkout's own schema,
 * page.ts and push index, in its own process for a fair heap (run it once per root, alternating).
 * What a push costs the gateway each second (docs/benchmarks.md, gateway session 22).
 *
 *   node --import tsx bench/push-read.ts [--root DIR] [--devices 1000] [--updated 1] [--pages 100]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ensureSpeedPushIndex, fillPartials } from './lib/fill-partials.js';
import { ROOT } from './lib/peers.js';
import { argValues } from './lib/settings.js';

const opt = (name: string, fallback: string) => argValues(name)[0] ?? fallback;
const root = resolve(opt('--root', ROOT));
const devices = Number(opt('--devices', '1000'));
const updated = Number(opt('--updated', '1'));
const pages = Number(opt('--pages', '100'));
const METRICS = ['temp', 'hum', 'pressure', 'co2'];
const MINUTES = 240;

const schema = await import(join(root, 'edge/store/schema.ts')) as typeof import('../edge/store/schema.js');
const sqlite = await import(join(root, 'shared/sqlite.ts')) as typeof import('../shared/sqlite.js');
// The page module's API differs between checkouts (a position with `done` since session 22).
const page = await import(join(root, 'edge/speedpush/page.ts')) as { readPage: (reader: unknown, pos: unknown, watermark: number, limit: number, now: number) => Promise<{ rows: unknown[] }> };
const dir = mkdtempSync(join(ROOT, 'bench/.out', 'push-read-'));
const db = await schema.openGatewayDb(join(dir, 'gateway.db'));
const reader = await schema.openGatewayReader(join(dir, 'gateway.db'));
try {
  await ensureSpeedPushIndex(root, new sqlite.WriteQueue(db));
  const now = Math.floor(Date.now() / 60_000) * 60_000;
  const names = Array.from({ length: devices }, (_, i) => `dev-${i}`);
  // Minute i's rows in epoch i + 1, stamped at the minute's end: below the cursor.
  await fillPartials(db, { devices: names, metrics: METRICS, minutes: MINUTES, beforeMinute: now, epochPerMinute: true });
  // The open epoch: every series' row of the current minute; the share `updated` stamped after the cursor (now + 30 s).
  await db.run(`INSERT INTO partials (device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts, updated_at)
    SELECT d.value, m.value, ?, ?, 30, 645, 20.1, 22.9, 3.25, 21.5, ?, 21.7, ? + 29000,
      CASE WHEN (d.key * 4 + m.key) % 1000 < ? THEN ? + 30000 + (d.key % 1000) ELSE ? + 29000 - (d.key % 1000) END
    FROM json_each(?) d, json_each(?) m ORDER BY d.key, m.key`, [now, MINUTES + 1, now, now, Math.round(updated * 1000), now, now, JSON.stringify(names), JSON.stringify(METRICS)]);
  await db.exec(`WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ${MINUTES + 1})
    INSERT INTO epochs (epoch, first_seq, last_seq, opened_at, closed_at) SELECT i, i, i, 0, CASE WHEN i <= ${MINUTES} THEN 1 ELSE NULL END FROM k;
    PRAGMA wal_checkpoint(TRUNCATE);`);
  // The position after the push of 30 s into the minute: every closed epoch done.
  const pos = { cursor: now + 30_000, ties: new Map(), done: MINUTES };
  const read = () => page.readPage(reader, pos, 0, 20_000, now + 60_000);
  for (let i = 0; i < 20; i++) await read();
  let rows = 0;
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < pages; i++) rows = (await read()).rows.length;
  const wall = Number(process.hrtime.bigint() - t0) / 1e6 / pages;
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(`${root}: ${devices} devices x ${METRICS.length} metrics, open epoch ${devices * METRICS.length} rows, ${rows} changed since the cursor: ${wall.toFixed(2)} ms a page, process CPU ${((cpu.user + cpu.system) / 1000 / pages).toFixed(2)} ms a page\n`);
} finally {
  await reader.close();
  await db.close();
  rmSync(dir, { recursive: true, force: true });
}
