/**
 * The outbox commit path alone, without MQTT: Outbox.submit of G readings at a time (one group
 * commit each, groupCommitMs 0), on a fresh gateway.db in the temp dir, for several G. Separates
 * the fixed cost of a group commit (statements, thread-pool round trips, timer, fsync) from the
 * cost per reading. `--sync OFF` drops the fsync to show its share; `--root DIR` runs another
 * checkout's edge/outbox (compare a change in one run: give both).
 *
 * Beside the time, the bytes written to disk per reading (write_bytes of this process, as
 * bench:gateway counts the gateway's) split into the WAL's share and the checkpoints': here
 * SQLite's automatic checkpoint is off and the same checkpoint runs explicitly whenever the WAL
 * holds wal_autocheckpoint pages (as the gateway configures it), with write_bytes read around it.
 *
 *   node --import tsx bench/outbox-commit.ts [--root DIR]... [--sync FULL|OFF] [--groups 1,100,750,5000]
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Registry } from 'prom-client';
import type { Outbox as OutboxClass } from '../edge/outbox/index.js';
import { ROOT } from './lib/peers.js';

interface OutboxModule { Outbox: typeof OutboxClass }
interface LoggerModule { nullLogger: () => import('../shared/logger.js').Logger }

const args = process.argv.slice(2);
const opt = (name: string) => args.flatMap((a, i) => (a === name && args[i + 1] ? [args[i + 1]] : []));
const roots = opt('--root').map((r) => resolve(r));
if (!roots.length) roots.push(ROOT);
const sync = (opt('--sync')[0] ?? 'FULL').toUpperCase();
if (!['FULL', 'NORMAL', 'OFF'].includes(sync)) throw new Error('--sync must be FULL, NORMAL or OFF');
const groups = (opt('--groups')[0] ?? '1,100,750,5000').split(',').map(Number);

const writeBytes = () => Number(/^write_bytes:\s*(\d+)/m.exec(readFileSync('/proc/self/io', 'utf8'))?.[1] ?? NaN);

process.stdout.write(`| checkout | synchronous | readings per commit | ms per commit | us per reading | readings/s | bytes written per reading (WAL + checkpoints) | page size |\n|---|---|---:|---:|---:|---:|---:|---:|\n`);
for (const G of groups) {
  for (const root of roots) {
    const { Outbox } = await import(join(root, 'edge/outbox/index.ts')) as OutboxModule;
    const { nullLogger } = await import(join(root, 'shared/logger.ts')) as LoggerModule;
    // In the checkout's bench/.out (the disk the gateway's data dir would be on), not a tmpfs.
    const dir = mkdtempSync(join(ROOT, 'bench/.out', 'commit-'));
    const outbox = await Outbox.open({ dataDir: dir, logger: nullLogger(), registry: new Registry() }, { groupCommitMs: 0, pruneCron: '' });
    try {
      await outbox.writes.db.exec(`PRAGMA synchronous = ${sync}`);
      const db = outbox.writes.db;
      const autoPages = (await db.get<{ wal_autocheckpoint: number }>('PRAGMA wal_autocheckpoint'))?.wal_autocheckpoint ?? 1000;
      const pageSize = (await db.get<{ page_size: number }>('PRAGMA page_size'))?.page_size ?? 4096;
      await db.exec('PRAGMA wal_autocheckpoint = 0');
      const walFile = join(dir, 'gateway.db-wal');
      const walSize = () => { try { return statSync(walFile).size; } catch { return 0; } };
      let checkpointBytes = 0;
      const checkpointIfDue = async () => {
        if (walSize() < autoPages * (pageSize + 24)) return;
        const w = writeBytes();
        // TRUNCATE: the WAL starts again from empty, so its size keeps counting the frames appended.
        await outbox.writes.run((d) => d.exec('PRAGMA wal_checkpoint(TRUNCATE)'));
        checkpointBytes += writeBytes() - w;
      };
      const written0 = writeBytes();
      let ts = Date.now() - 3600_000;
      const total = Math.max(20_000, G * 20);
      let n = 0;
      const t0 = performance.now();
      while (n < total) {
        const readings = [];
        for (let i = 0; i < G; i++) readings.push({ device: `dev-${i % 4}`, metric: 'temp', ts: ts++, value: 21.5 + (i % 10) });
        await outbox.submit(readings);
        n += G;
        await checkpointIfDue();
      }
      const ms = performance.now() - t0;
      const commits = n / G;
      const written = writeBytes() - written0;
      process.stdout.write(`| ${root} | ${sync} | ${G} | ${(ms / commits).toFixed(2)} | ${((ms * 1000) / n).toFixed(1)} | ${Math.round(n / (ms / 1000)).toLocaleString('en-US')} | ${Math.round(written / n)} (${Math.round((written - checkpointBytes) / n)} + ${Math.round(checkpointBytes / n)}) | ${pageSize} |\n`);
    } finally {
      await outbox.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
}
