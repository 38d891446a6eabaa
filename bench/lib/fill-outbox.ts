/**
 * Fill a gateway's outbox directly in `<dataDir>/gateway.db` (schema: edge/store/schema.ts of the
 * checkout at `root`, this one by default: the gateway that will open it) with `count` readings in
 * closed epochs of 50k seq, as a gateway that buffered while offline has it: 1000 devices x 2
 * metrics, event times in the last hours, their identities in the dedup keys (schema version 3
 * and on: flushDedupKeys). Seconds instead of minutes of MQTT.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chunkRows, placeholders } from '../../shared/sqlite.js';
import type { Db } from '../../shared/sqlite.js';
import { ROOT } from './peers.js';

const EPOCH_SEQ = 50_000;

export async function fillOutbox(dataDir: string, count: number, root = ROOT): Promise<{ count: number; ms: number }> {
  const t0 = performance.now();
  mkdirSync(dataDir, { recursive: true });
  const schema = await import(join(root, 'edge/store/schema.ts')) as {
    openGatewayDb: (file: string) => Promise<Db>;
    flushDedupKeys?: (db: Db, upTo: number) => Promise<void>;
  };
  const db = await schema.openGatewayDb(join(dataDir, 'gateway.db'));
  try {
    const row = await db.get<{ n: number }>('SELECT COUNT(*) AS n FROM outbox');
    if ((row?.n ?? 0) > 0) throw new Error(`${dataDir}: outbox is not empty`);
    const now = Date.now();
    const base = now - 6 * 3600_000;
    await db.exec('BEGIN IMMEDIATE');
    for (let first = 1, epoch = 1; first <= count; first += EPOCH_SEQ, epoch++) {
      const last = Math.min(count, first + EPOCH_SEQ - 1);
      await db.run('INSERT INTO epochs (epoch, first_seq, last_seq, opened_at, closed_at) VALUES (?, ?, ?, ?, ?)', [epoch, first, last, now, now]);
      const rows: number[] = [];
      for (let seq = first; seq <= last; seq++) rows.push(seq);
      for (const chunk of chunkRows(rows, 6, 30_000)) {
        const params: unknown[] = [];
        for (const seq of chunk) {
          params.push(seq, epoch, `fill-${String(seq % 1000).padStart(4, '0')}`, seq % 2 ? 'temp' : 'hum', base + seq, Math.round(Math.random() * 1000) / 10);
        }
        await db.run(`INSERT INTO outbox (seq, epoch, device, metric, ts, value) VALUES ${placeholders(chunk.length, 6)}`, params);
      }
    }
    await schema.flushDedupKeys?.(db, count);
    await db.exec('COMMIT');
  } finally {
    await db.close();
  }
  return { count, ms: performance.now() - t0 };
}
