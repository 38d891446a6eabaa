/**
 * Sealing: a rotated (or adopted) staging segment becomes Parquet in master/, one file per UTC day
 * of `ts`, then the catalog and `sealed` learn of it, then the staging file goes. Each step can be
 * redone after a crash without a double count:
 *
 * 1. Read the segment (a torn last line is cut: it was never acknowledged); or, for a segment this
 *    process wrote and rotated, take the image the committer built while appending it
 *    (segment-image.ts): the same lines, already parsed, so nothing is read back.
 *    The columns are encoded in the Parquet worker (parquet.ts), so a seal from an image costs the
 *    main thread no more than its transactions and file steps.
 * 2. Transaction: the lines that count are those `staged` names for this segment; a line it does
 *    not name (written by a group commit whose transaction then failed) is adopted into
 *    `received` and `staged` only if no one holds its (gateway, seq) yet [INV-2].
 * 3. Per day: Parquet to tmp/, fsync, hard-link to master/day=D/part-<segment>.parquet (link
 *    fails if the name exists: a crashed seal wrote it already, from the same rows), fsync the dir.
 *    No file under master/ is ever modified or deleted [INV-4].
 * 4. Transaction: `files` + `file_gateways`, the segment's ranges into `sealed`, its `staged` rows out.
 * 5. Delete the staging file.
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { Logger } from '../../shared/logger.js';
import type { IngestStore } from '../store/ingest.js';
import type { CatalogEntry } from '../store/ingest-state.js';
import type { IngestMetrics } from './metrics.js';
import { type DayColumns, type ParquetEncoder, type WrittenDay, dayString } from './parquet.js';
import { type Range, covers, normalize } from './ranges.js';
import { type GatewayRuns, SegmentImage } from './segment-image.js';
import { fsyncDir, readSegment } from './staging.js';

export interface SealerDeps {
  dataDir: string;
  /** Steps 2 and 4, one transaction each. */
  store: IngestStore;
  log: Logger;
  metrics: IngestMetrics;
  encoder: ParquetEncoder;
  /** Delete a sealed segment's staging file (and make that durable). */
  removeSegment: (path: string) => Promise<void>;
  now?: () => number;
}

/**
 * A segment to seal. `image`: its lines as the committer appended them (this process's own rotated
 * segment); absent, the file is read. An image is used once: a failed seal retries from the file.
 */
export interface SegmentRef { id: string; path: string; image?: SegmentImage | null }

/**
 * Rotated segments whose images wait in memory for their seal (besides the one being sealed), at
 * most; later ones seal from their files. With the open segment's image, memory holds at most four
 * segments' columns (ingest.sealMaxReadings each, ~45 bytes a reading).
 */
export const MAX_QUEUED_IMAGES = 2;

export interface SealReport {
  segment: string;
  rows: number;
  files: string[];
  /** Lines no `staged` row named that were stored now (their commit had failed, nobody else had them). */
  adopted: number;
  /** Lines left out: repeats, or seqs someone else holds. */
  dropped: number;
  /** Where the rows came from: the committer's image of the segment, or its file. */
  from: 'memory' | 'file';
  /** Time spent reading the segment (0 from memory), writing Parquet, in the two cloud.db transactions (steps 2 and 4), and in all, in ms. */
  readMs: number;
  writeMs: number;
  storeMs: number;
  ms: number;
  /** The event loop's delay while this seal ran (what requests waited for a turn meanwhile), p99 and max, in ms. */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
}

export class Sealer {
  private readonly d: SealerDeps;
  private readonly now: () => number;
  private readonly queue: SegmentRef[] = [];
  private readonly queued = new Set<string>();
  private running: Promise<void> | null = null;

  constructor(deps: SealerDeps) {
    this.d = deps;
    this.now = deps.now ?? Date.now;
  }

  /** Whether a segment is queued or being sealed. */
  has(id: string): boolean {
    return this.queued.has(id);
  }

  enqueue(seg: SegmentRef): void {
    if (this.queued.has(seg.id)) return;
    this.queued.add(seg.id);
    // Bounded memory: past MAX_QUEUED_IMAGES (seals falling behind) the image goes and the file is read.
    if (seg.image && this.queue.filter((q) => q.image).length >= MAX_QUEUED_IMAGES) seg = { id: seg.id, path: seg.path };
    this.queue.push(seg);
    this.running ??= this.pump();
  }

  /** Resolves when every queued segment has been sealed (or has failed, logged and counted). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async pump(): Promise<void> {
    try {
      for (let seg = this.queue.shift(); seg; seg = this.queue.shift()) {
        try {
          const r = await this.seal(seg);
          this.d.log.info(r, 'segment sealed');
        } catch (err) {
          this.d.metrics.sealFailures.inc();
          this.d.log.error({ err, segment: seg.id }, 'sealing a segment failed; it stays in staging and is retried');
        } finally {
          this.queued.delete(seg.id);
        }
      }
    } finally {
      this.running = null;
    }
  }

  /** Seal one segment (steps 1-5 above). */
  async seal(seg: SegmentRef): Promise<SealReport> {
    const loop = monitorEventLoopDelay({ resolution: 5 });
    loop.enable();
    try {
      return await this.sealSegment(seg, loop);
    } finally {
      loop.disable();
    }
  }

  private async sealSegment(seg: SegmentRef, loop: ReturnType<typeof monitorEventLoopDelay>): Promise<SealReport> {
    const t0 = performance.now();
    let image = seg.image ?? null;
    // Used once: if this seal fails, the retry reads the file (the durable record).
    seg.image = null;
    if (image) {
      // The image holds what was appended; a file of another size was changed since (damaged,
      // truncated by hand): then the file is what gets judged, as after a crash.
      const size = (await stat(seg.path)).size;
      if (size !== image.bytes) {
        this.d.log.warn({ segment: seg.id, fileBytes: size, appendedBytes: image.bytes }, 'staging segment file differs in size from what was appended; sealing from the file');
        image = null;
      }
    }
    const from = image ? 'memory' : 'file';
    if (!image) {
      const read = new SegmentImage();
      await readSegment(seg.path, (g, rows) => read.addTuples(g, rows));
      image = read;
    }
    const { days, perGateway } = image;

    const t1 = performance.now();
    const inFile = new Map<string, Range[]>();
    for (const [g, st] of perGateway) inFile.set(g, normalize(st.runs));
    const { valid, adopted, lost } = await this.d.store.sealBegin(seg.id, inFile);
    const t1b = performance.now();
    if (lost.length > 0) {
      // Acknowledged seqs that `staged` vouches for and the file does not hold: the file is still
      // being written (a segment taken for sealing too early) or damaged. Sealing it now would drop
      // the segment's staged rows and the file with them, losing those readings for good [INV-1]:
      // leave it in staging (retried by the next scan) and say so.
      for (const l of lost) this.d.log.error({ segment: seg.id, ...l }, 'staged seqs are missing from their segment file; not sealing it (still being written, or damaged)');
      throw new Error(`segment ${seg.id}: ${lost.reduce((n, l) => n + l.lost.reduce((m, r) => m + r.to - r.from + 1, 0), 0)} staged seqs are missing from its file; left in staging`);
    }

    const total = [...days.values()].reduce((s, c) => s + c.length, 0);
    const kept = this.filter(days, perGateway, valid);
    const files: CatalogEntry[] = [];
    const t2 = performance.now();
    for (const c of [...days.values()].sort((a, b) => a.day - b.day)) {
      if (c.length > 0) files.push(await this.writeDay(seg.id, c));
    }
    const t3 = performance.now();

    await this.d.store.sealCommit(seg.id, files, valid, this.now());
    const t4 = performance.now();
    await this.d.removeSegment(seg.path);

    const ms = performance.now() - t0;
    this.d.metrics.sealedReadings.inc(kept);
    this.d.metrics.sealSeconds.observe(ms / 1000);
    return { segment: seg.id, rows: kept, files: files.map((f) => f.path), adopted, dropped: total - kept, from,
      readMs: Math.round(t1 - t0), writeMs: Math.round(t3 - t2), storeMs: Math.round(t1b - t1 + t4 - t3), ms: Math.round(ms),
      // The histogram counts in ns; a loop turn no longer than the resolution is about 5 ms here.
      loopDelayP99Ms: Math.round(loop.percentile(99) / 1e6), loopDelayMaxMs: Math.round(loop.max / 1e6) };
  }

  /** Drop rows that do not count: seqs outside `valid`, and a second copy of a seq. Returns rows kept. */
  private filter(days: Map<number, DayColumns>, perGateway: Map<string, GatewayRuns>, valid: Map<string, Range[]>): number {
    const repeats = new Set<string>();
    let clean = true;
    for (const [g, st] of perGateway) {
      const inFile = normalize(st.runs);
      const distinct = inFile.reduce((s, r) => s + r.to - r.from + 1, 0);
      if (distinct < st.rows) repeats.add(g);
      const v = valid.get(g) ?? [];
      if (distinct < st.rows || !inFile.every((r) => covers(v, r.from, r.to))) clean = false;
    }
    let kept = 0;
    for (const c of days.values()) {
      if (!clean) {
        const seen = new Map<string, Set<number>>();
        const keep = new Uint8Array(c.length);
        for (let i = 0; i < c.length; i++) {
          const g = c.gateway.values[c.gateway.idx[i]];
          const seq = Number(c.seq[i]);
          if (!covers(valid.get(g) ?? [], seq, seq)) continue;
          if (repeats.has(g)) {
            let s = seen.get(g);
            if (!s) seen.set(g, s = new Set());
            if (s.has(seq)) continue;
            s.add(seq);
          }
          keep[i] = 1;
        }
        c.compact(keep);
      }
      kept += c.length;
    }
    return kept;
  }

  /** Step 3 for one day: write, fsync, link into master/ unless there already; its catalog entry. */
  private async writeDay(segment: string, c: DayColumns): Promise<CatalogEntry> {
    const day = dayString(c.day);
    const dayDir = join(this.d.dataDir, 'master', `day=${day}`);
    const rel = `master/day=${day}/part-${segment}.parquet`;
    const target = join(this.d.dataDir, rel);
    const rows = c.length;
    const existing = await stat(target).catch(() => null);
    if (existing) return { path: rel, day, rows, gateways: c.gatewayStats(), bytes: existing.size };

    const tmpDir = join(this.d.dataDir, 'tmp');
    await mkdir(tmpDir, { recursive: true });
    // A name of this process's own: in cluster mode a node whose staging was claimed from it may still
    // be sealing a segment the claimant seals too (both link the same target; the second finds it).
    const tmp = join(tmpDir, `part-${segment}-${day}.${process.pid}-${randomBytes(3).toString('hex')}.parquet.tmp`);
    // The columns move to the worker (not copied: `c` is empty from here on), which writes the file
    // and fsyncs it; nothing of it comes back to this thread.
    let written: WrittenDay;
    try {
      written = await this.d.encoder.writeColumns(c, tmp);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    const created = await mkdir(dayDir, { recursive: true });
    if (created) await fsyncDir(join(this.d.dataDir, 'master'));
    try {
      await link(tmp, target);
      this.d.metrics.masterFiles.inc();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    await unlink(tmp);
    await fsyncDir(dayDir);
    return { path: rel, day, rows, gateways: written.gateways, bytes: written.bytes };
  }
}
