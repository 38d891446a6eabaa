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
 * Where the WAL's bytes go: before each checkpoint (and at the end) the WAL's frame headers are
 * read (a 32-byte file header, then per frame a 24-byte header whose first 4 bytes are the page
 * number, the next 4 nonzero on a commit's last frame) and each page mapped to its table or index
 * with SQLite's dbstat: frames per commit by object (page 1, the database header and
 * sqlite_schema, apart), and the 4 KiB filesystem pages each commit's frames span (what
 * write_bytes counts: the page a commit shares with the one before is dirtied again).
 *
 * Beside them the floor: what a write-once log would cost at the same readings per commit, one
 * 4 KiB filesystem page dirtied per fsync'd commit at least (4096 / readings per commit) plus the
 * reading's own bytes (device, metric, an 8-byte ts and an 8-byte value).
 *
 * CPU around each submit: the main thread's own CPU per commit (the first field of its
 * /proc/self/task/<pid>/schedstat: the committer's JS, the SQL text or parameters handed to
 * node-sqlite3, the callbacks; not the time a preempting SQLite thread takes, which a busy
 * measure such as the event loop's utilization counts; reading the file adds ~10 us, the same for
 * every checkout) and the process's CPU per commit (cpuUsage: that plus SQLite's thread).
 * `--readings N` readings per group size (default 20,000, at least 20 commits).
 *
 * `--cache -32000,-2000` runs each group size once per writer cache_size (set on the writer after
 * it opens, in the order given: give both orders in two runs). `--warm MB` fills gateway.db with a
 * filler table of that many MB before the timed commits and reads it back through the writer, so
 * its page cache is as full as on a gateway that has run for hours (default 0: a cold cache); with
 * `--warm-free` the filler's rows are then deleted, so its pages are on the freelist (as the
 * forwarder's and retention's deletes leave a gateway's) and the commits' new pages come from it.
 * `--deletes` then times, through the writer, the forwarder's delete of acknowledged rows (batches
 * of 1,000, oldest first) and retention's delete of the dedup keys: a small cache makes them read more.
 * `--drift MS`: each of the 4 devices counts its own event times, device d's starting MS x d
 * later, as bench:gateway's publishers do (each its own lines from one base, at its own pace): a
 * group's dedup keys then land in 4 places of the key order, not all at its end (default: one
 * event-time counter for all, a fleet whose readings carry the time they were taken).
 * `--fleet N`: N devices each sending one message of 4 metrics a second of event time, in turn (as
 * bench:gateway's fleet phase): a group of G readings holds G/4 devices' messages, each a partial
 * row of its own (the speed layer's current minute of 4N series).
 *
 * `--windows M` (with `--fleet N`): before the commits, the partials of N devices x 4 metrics x
 * the M minutes before theirs are written in minute order (a gateway that has run M minutes: the
 * commits then update rows of a full table), and after them the speed layer's reads timed through
 * the reader connection, warm, 300 of each: one device's windows of a metric (edge/speed
 * readWindows, the last 24 h) and one device's 4 metrics over an hour (the alerts' read); beside
 * them the file's size. What a layout of the partials costs the writes and the reads.
 * `--cursor-index`: the speed push's index on the partials (each checkout's own, fill-partials.ts
 * ensureSpeedPushIndex) made first, as on a gateway with a cloud.
 *
 *   node --import tsx bench/outbox-commit.ts [--root DIR]... [--sync FULL|OFF] [--groups 1,100,750,5000] [--readings 20000] [--cache -32000,-2000] [--warm 32 [--warm-free]]
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Registry } from 'prom-client';
import type { Outbox as OutboxClass } from '../edge/outbox/index.js';
import { ensureSpeedPushIndex, fillPartials } from './lib/fill-partials.js';
import { ROOT } from './lib/peers.js';
import { argValues } from './lib/settings.js';

interface OutboxModule { Outbox: typeof OutboxClass }
interface LoggerModule { nullLogger: () => import('../shared/logger.js').Logger }
interface SpeedModule { readWindows: typeof import('../edge/speed/index.js').readWindows }

const args = process.argv.slice(2);
const opt = (name: string) => argValues(name, args);
const roots = opt('--root').map((r) => resolve(r));
if (!roots.length) roots.push(ROOT);
const sync = (opt('--sync')[0] ?? 'FULL').toUpperCase();
if (!['FULL', 'NORMAL', 'OFF'].includes(sync)) throw new Error('--sync must be FULL, NORMAL or OFF');
const groups = (opt('--groups')[0] ?? '1,100,750,5000').split(',').map(Number);
const caches: Array<number | undefined> = opt('--cache')[0]?.split(',').map(Number) ?? [undefined];
const warmMb = Number(opt('--warm')[0] ?? 0);
const drift = Number(opt('--drift')[0] ?? 0);
const fleet = Number(opt('--fleet')[0] ?? 0);
const windowMinutes = Number(opt('--windows')[0] ?? 0);
const cursorIndex = args.includes('--cursor-index');
const FLEET_METRICS = ['temp', 'hum', 'pressure', 'co2'];

const FS_PAGE = 4096;
/** Frames of a WAL file: page numbers in order, and for each commit its frames' [start, end) offsets in the file. */
function readWal(file: string, pageSize: number): { pages: number[]; commits: Array<[number, number]> } {
  let buf: Buffer;
  try { buf = readFileSync(file); } catch { return { pages: [], commits: [] }; }
  const frame = 24 + pageSize;
  const pages: number[] = [];
  const commits: Array<[number, number]> = [];
  let start = 32;
  for (let off = 32; off + frame <= buf.length; off += frame) {
    pages.push(buf.readUInt32BE(off));
    if (buf.readUInt32BE(off + 4) !== 0) {
      commits.push([start, off + frame]);
      start = off + frame;
    }
  }
  return { pages, commits };
}

/** Frames appended, by object: a table or index (its leaves and interior pages apart), page 1, free pages. */
class WalTally {
  frames = new Map<string, { leaf: number; interior: number }>();
  commits = 0;
  frameCount = 0;
  fsPages = 0;
  add(pages: number[], commits: Array<[number, number]>, owner: Map<number, { name: string; interior: boolean }>): void {
    for (const p of pages) {
      const o = p === 1 ? { name: 'page 1', interior: false } : owner.get(p) ?? { name: 'free', interior: false };
      const t = this.frames.get(o.name) ?? { leaf: 0, interior: 0 };
      if (o.interior) t.interior++;
      else t.leaf++;
      this.frames.set(o.name, t);
    }
    this.frameCount += pages.length;
    this.commits += commits.length;
    for (const [a, b] of commits) this.fsPages += Math.floor((b - 1) / FS_PAGE) - Math.floor(a / FS_PAGE) + 1;
  }
}

const mainCpuNs = () => Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]);
const writeBytes = () => Number(/^write_bytes:\s*(\d+)/m.exec(readFileSync('/proc/self/io', 'utf8'))?.[1] ?? NaN);

process.stdout.write(`| checkout | synchronous | cache_size | warm MB | readings per commit | ms per commit | us per reading | readings/s | bytes written per reading (WAL + checkpoints) | floor (write-once log) | page size | main thread CPU us per commit | process CPU us per commit |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n`);
const breakdowns: string[] = [];
const windowReads: string[] = [];
for (const G of groups) {
  for (const cache of caches) for (const root of roots) {
    const { Outbox } = await import(join(root, 'edge/outbox/index.ts')) as OutboxModule;
    const { nullLogger } = await import(join(root, 'shared/logger.ts')) as LoggerModule;
    // In the checkout's bench/.out (the disk the gateway's data dir would be on), not a tmpfs.
    const dir = mkdtempSync(join(ROOT, 'bench/.out', 'commit-'));
    const outbox = await Outbox.open({ dataDir: dir, logger: nullLogger(), registry: new Registry() }, { groupCommitMs: 0, pruneCron: '' });
    try {
      await outbox.writes.db.exec(`PRAGMA synchronous = ${sync}`);
      const db = outbox.writes.db;
      if (cache !== undefined) await db.exec(`PRAGMA cache_size = ${cache}`);
      if (warmMb > 0) {
        // Rows of 900 B (one a 1 KiB page), then read back through the writer: its cache fills.
        await db.exec(`CREATE TABLE warm_fill (x BLOB); INSERT INTO warm_fill SELECT randomblob(900) FROM generate_series(1, ${Math.round(warmMb * 1024 * 1024 / 1024)}); PRAGMA wal_checkpoint(TRUNCATE);`).catch(async () => {
          await db.exec(`CREATE TABLE IF NOT EXISTS warm_fill (x BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${Math.round(warmMb * 1024)}) INSERT INTO warm_fill SELECT randomblob(900) FROM n; PRAGMA wal_checkpoint(TRUNCATE);`);
        });
        await db.get('SELECT sum(length(x)) AS n FROM warm_fill');
        if (args.includes('--warm-free')) await db.exec('DELETE FROM warm_fill; PRAGMA wal_checkpoint(TRUNCATE);');
      }
      if (cursorIndex) {
        await ensureSpeedPushIndex(root, outbox.writes);
      }
      const cacheSize = (await db.get<{ cache_size: number }>('PRAGMA cache_size'))?.cache_size;
      const autoPages = (await db.get<{ wal_autocheckpoint: number }>('PRAGMA wal_autocheckpoint'))?.wal_autocheckpoint ?? 1000;
      const pageSize = (await db.get<{ page_size: number }>('PRAGMA page_size'))?.page_size ?? 4096;
      await db.exec('PRAGMA wal_autocheckpoint = 0');
      const walFile = join(dir, 'gateway.db-wal');
      const walSize = () => { try { return statSync(walFile).size; } catch { return 0; } };
      let checkpointBytes = 0;
      const tally = new WalTally();
      const tallyWal = async () => {
        const { pages, commits } = readWal(walFile, pageSize);
        if (!pages.length) return;
        const owner = new Map<number, { name: string; interior: boolean }>();
        for (const r of await db.all<{ name: string; pageno: number; pagetype: string }>('SELECT name, pageno, pagetype FROM dbstat')) {
          owner.set(r.pageno, { name: r.name, interior: r.pagetype === 'internal' });
        }
        tally.add(pages, commits, owner);
      };
      const checkpointIfDue = async () => {
        if (walSize() < autoPages * (pageSize + 24)) return;
        await tallyWal();
        const w = writeBytes();
        // TRUNCATE: the WAL starts again from empty, so its size keeps counting the frames appended.
        await outbox.writes.run((d) => d.exec('PRAGMA wal_checkpoint(TRUNCATE)'));
        checkpointBytes += writeBytes() - w;
      };
      let ts = Date.now() - 3600_000;
      const commitMinute = Math.floor(ts / 60_000) * 60_000;
      if (fleet && windowMinutes > 0) {
        const devices = Array.from({ length: fleet }, (_, i) => `dev-${i}`);
        await outbox.writes.run((d) => fillPartials(d, { devices, metrics: FLEET_METRICS, minutes: windowMinutes, beforeMinute: commitMinute }));
      }
      const written0 = writeBytes();
      const total = Math.max(Number(opt('--readings')[0] ?? 20_000), G * 20);
      let n = 0;
      // Around each submit only (not the readings' making, the WAL reads or the checkpoints): the
      // main thread's own CPU time (its schedstat) and the whole process's CPU.
      let mainNs = 0;
      let cpuUs = 0;
      const t0 = performance.now();
      while (n < total) {
        const readings = [];
        for (let i = 0; i < G; i++) {
          if (fleet) {
            // Message k of the fleet: device k mod N, its (k div N)-th second, 4 metrics a message.
            const k = Math.floor((n + i) / FLEET_METRICS.length);
            readings.push({ device: `dev-${k % fleet}`, metric: FLEET_METRICS[(n + i) % FLEET_METRICS.length], ts: ts + Math.floor(k / fleet) * 1000, value: 21.5 + (i % 10) });
            continue;
          }
          const d = i % 4;
          readings.push({ device: `dev-${d}`, metric: 'temp', ts: drift ? ts + d * drift + Math.floor((n + i) / 4) : ts++, value: 21.5 + (i % 10) });
        }
        const m0 = mainCpuNs();
        const c0 = process.cpuUsage();
        await outbox.submit(readings);
        const c1 = process.cpuUsage(c0);
        mainNs += mainCpuNs() - m0;
        cpuUs += c1.user + c1.system;
        n += G;
        await checkpointIfDue();
      }
      const ms = performance.now() - t0;
      const commits = n / G;
      const written = writeBytes() - written0;
      await tallyWal();
      if (args.includes('--deletes')) {
        const c0 = process.cpuUsage();
        const d0 = performance.now();
        const max = (await db.get<{ m: number }>('SELECT max(seq) AS m FROM outbox'))?.m ?? 0;
        let batches = 0;
        for (let upTo = 1000; upTo < max + 1000; upTo += 1000, batches++) {
          // Through the view of schema version 3 (outbox_rows) or the table of version 2.
          await outbox.writes.run((d) => d.run('DELETE FROM outbox WHERE seq <= ?', [upTo]));
        }
        const c1 = process.cpuUsage(c0);
        const d1 = performance.now();
        const k0 = process.cpuUsage();
        await outbox.writes.run((d) => d.run('DELETE FROM dedup_keys'));
        const k1 = process.cpuUsage(k0);
        process.stdout.write(`deletes, cache_size ${cacheSize}: forwarder ${batches} batches of 1,000, ${Math.round((c1.user + c1.system) / batches)} us CPU, ${((d1 - d0) / batches).toFixed(2)} ms a batch; retention's dedup keys ${n} rows, ${Math.round((k1.user + k1.system) / 1000)} ms CPU\n`);
      }
      if (fleet && windowMinutes > 0) windowReads.push(`| ${root} | ${G} | ${await timeWindowReads(root, outbox, dir, commitMinute)} |`);
      const ownBytes = 'dev-0'.length + 'temp'.length + 16;
      const floor = Math.round(FS_PAGE / G + ownBytes);
      process.stdout.write(`| ${root} | ${sync} | ${cacheSize} | ${warmMb} | ${G} | ${(ms / commits).toFixed(2)} | ${((ms * 1000) / n).toFixed(1)} | ${Math.round(n / (ms / 1000)).toLocaleString('en-US')} | ${Math.round(written / n)} (${Math.round((written - checkpointBytes) / n)} + ${Math.round(checkpointBytes / n)}) | ${floor} (${Math.round(FS_PAGE / G)} + ${ownBytes}) | ${pageSize} | ${Math.round(mainNs / 1000 / commits)} | ${Math.round(cpuUs / commits)} |\n`);
      const c = tally.commits || 1;
      const order = ['page 1', 'outbox', 'dedup', 'partials', 'partials_minute', 'epochs'];
      // Objects with at least one frame in 200 commits.
      const shown = (k: string) => { const t = tally.frames.get(k); return !!t && (t.leaf + t.interior) / c >= 0.005; };
      const names = [...order.filter(shown), ...[...tally.frames.keys()].filter((k) => !order.includes(k) && shown(k)).sort()];
      const cells = names.map((k) => {
        const t = tally.frames.get(k)!;
        return `${k} ${((t.leaf + t.interior) / c).toFixed(2)}${t.interior ? ` (${(t.interior / c).toFixed(2)} interior)` : ''}`;
      });
      breakdowns.push(`| ${root} | ${G} | ${tally.commits} | ${(tally.frameCount / c).toFixed(2)}: ${cells.join(', ')} | ${Math.round((tally.frameCount * (pageSize + 24)) / c).toLocaleString('en-US')} B = ${Math.round((tally.frameCount * (pageSize + 24)) / c / G)} B per reading | ${(tally.fsPages / c).toFixed(2)} = ${Math.round((tally.fsPages * FS_PAGE) / c / G)} B per reading |`);
    } finally {
      await outbox.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
}
if (windowReads.length) {
  process.stdout.write(`\nThe speed layer's reads of ${fleet.toLocaleString('en-US')} devices x ${FLEET_METRICS.length} metrics x ${windowMinutes} minutes of partials (warm, 300 reads each, median / p99):\n\n| checkout | readings per commit | windows of a device's metric (${Math.min(windowMinutes, 1440)} rows) | a device's ${FLEET_METRICS.length} metrics over an hour | gateway.db after |\n|---|---:|---|---|---:|\n${windowReads.join('\n')}\n`);
}
process.stdout.write(`\nWAL frames per commit by table or index (dbstat; page 1 apart; "free": pages not in any b-tree when read), and the 4 KiB filesystem pages the commit's frames span:\n\n| checkout | readings per commit | commits read | WAL frames per commit, by object | WAL bytes per commit (frames of page size + 24) | 4 KiB filesystem pages per commit |\n|---|---:|---:|---|---:|---:|\n${breakdowns.join('\n')}\n`);

/** --windows: time the reads the speed layer makes of the partials at `minute` (the checkout's own readWindows). */
async function timeWindowReads(root: string, outbox: OutboxClass, dir: string, minute: number): Promise<string> {
  const { readWindows } = (await import(join(root, 'edge/speed/index.ts'))) as SpeedModule;
  const rand = (i: number) => `dev-${(i * 7919) % fleet}`;
  const time = async (f: (i: number) => Promise<unknown>) => {
    for (let i = 0; i < 30; i++) await f(i);
    const t: number[] = [];
    for (let i = 0; i < 300; i++) {
      const t0 = performance.now();
      await f(i);
      t.push(performance.now() - t0);
    }
    t.sort((a, b) => a - b);
    return `${t[150].toFixed(2)} / ${t[296].toFixed(2)} ms`;
  };
  const windows = await time((i) => readWindows(outbox.reader, rand(i), FLEET_METRICS[i % FLEET_METRICS.length], minute + 30_000));
  const hour = await time((i) => outbox.reader.all(`SELECT metric, minute, count, sum, min, max, m2, first, first_ts, last, last_ts FROM partials
    WHERE device = ? AND minute >= ? AND minute < ?`, [rand(i), minute - 60 * 60_000, minute + 60_000]));
  return `${windows} | ${hour} | ${(statSync(join(dir, 'gateway.db')).size / 1e6).toFixed(1)} MB`;
}
