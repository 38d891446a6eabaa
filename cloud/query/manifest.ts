/**
 * The live manifest as the query sees it: read once per query [docs/serving.md], so the batch rows
 * and the speed side's E come from one version even when a batch run publishes mid-query. The
 * manifest is replaced by rename only (cloud/batch/manifest.ts), so a file whose inode, size and
 * mtime have not changed is the one already parsed: a query costs a stat, not a parse.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { MANIFEST_FILE, readManifest, viewFileSpan, type Manifest, type ViewName } from '../batch/index.js';
import type { ViewPointer } from '../batch/store.js';
import type { LiveView } from '../speed/live-manifest.js';
import type { Logger } from '../../shared/logger.js';

/** Where a query gets the live manifest (null: no batch has published yet). */
export interface ManifestSource {
  current(): Promise<Manifest | null>;
}

export class FileManifestSource implements ManifestSource {
  private cached: { id: string; manifest: Manifest | null } | null = null;

  constructor(readonly viewsDir: string) {}

  async current(): Promise<Manifest | null> {
    const id = await this.fileId();
    if (this.cached && this.cached.id === id) return this.cached.manifest;
    // Stat first, read second: if a publish lands in between we cache the newer content under the
    // older id, and the next stat (the new inode) reads again. Versions only move forward.
    const manifest = await readManifest(this.viewsDir);
    this.cached = { id, manifest };
    return manifest;
  }

  private async fileId(): Promise<string> {
    try {
      const s = await stat(join(this.viewsDir, MANIFEST_FILE), { bigint: true });
      return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'none';
      throw err;
    }
  }
}

/**
 * The live manifest of a cluster node (store.url = postgres): the store's view pointer
 * (cloud/store/pg/batch.ts), read at start and again on each publication it hears of (LISTEN, or
 * its one-second poll when that connection is down), so a manifest published by any node is live
 * here within about a second. A query costs no round trip: it reads the cached manifest. While the
 * store is out of reach the last manifest read stays live (its files are only ever added to), so
 * the batch side of an answer stays exact. `liveSince` is when this node first served a version,
 * for the speed store's prune grace; `servedVersion` is what the node reports with its lease.
 */
export class PointerManifestSource implements ManifestSource {
  private cached: { manifest: Manifest | null; liveSince: number } | null = null;
  private loading: Promise<void> | null = null;
  private unsubscribe: (() => void) | null = null;

  constructor(private readonly pointer: ViewPointer, private readonly log: Logger, private readonly now: () => number = Date.now) {}

  /** Read the pointer and follow its publications. Throws when the store cannot be read at all. */
  async start(): Promise<void> {
    await this.refresh();
    this.unsubscribe ??= this.pointer.onPublished(() => { void this.refresh().catch((err) => this.log.warn({ err }, 'could not read the published manifest; keeping the last one')); });
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  /** Read the pointer now (one at a time); versions only move forward. */
  refresh(): Promise<void> {
    this.loading ??= (async () => {
      try {
        const m = await this.pointer.current();
        const have = this.cached?.manifest?.version ?? 0;
        if (!this.cached || (m && m.version > have)) this.cached = { manifest: m, liveSince: this.now() };
      } finally {
        this.loading = null;
      }
    })();
    return this.loading;
  }

  async current(): Promise<Manifest | null> {
    if (!this.cached) await this.refresh();
    return this.cached!.manifest;
  }

  /** The live manifest as the speed store sees it (cloud/speed/live-manifest.ts). */
  async get(): Promise<LiveView | null> {
    const m = await this.current();
    if (!m) return null;
    const createdAt = Date.parse(m.createdAt);
    return { version: m.version, watermark: m.watermark, liveSince: this.cached!.liveSince, createdAt: Number.isFinite(createdAt) ? createdAt : this.cached!.liveSince };
  }

  /** The version this node serves (null before the first publication or the first read). */
  get servedVersion(): number | null {
    return this.cached?.manifest?.version ?? null;
  }
}

interface ViewFile {
  /** Where the file's rows lie, epoch ms [start, end): its UTC day, or its hour for an hour file. */
  start: number;
  end: number;
  /** Path relative to views/. */
  path: string;
}

const fileIndex = new WeakMap<Manifest, Map<ViewName, ViewFile[]>>();

function filesInTime(manifest: Manifest, view: ViewName): ViewFile[] {
  let byView = fileIndex.get(manifest);
  if (!byView) {
    byView = new Map();
    fileIndex.set(manifest, byView);
  }
  let files = byView.get(view);
  if (!files) {
    files = [];
    for (const path of manifest.views[view] ?? []) {
      const span = viewFileSpan(path);
      if (span) files.push({ ...span, path });
    }
    files.sort((a, b) => a.start - b.start);
    byView.set(view, files);
  }
  return files;
}

/**
 * The manifest's files of `view` whose rows' time (their UTC day, or hour for an hour file)
 * overlaps [fromMs, toMs), oldest first: pruning from the file names, before any file is opened.
 */
export function viewFiles(manifest: Manifest, view: ViewName, fromMs: number, toMs: number): string[] {
  const files = filesInTime(manifest, view);
  // first file that ends after fromMs (binary search: a year of days is 365 entries per view;
  // files do not overlap, so their ends are in order too)
  let lo = 0;
  let hi = files.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (files[mid].end <= fromMs) lo = mid + 1;
    else hi = mid;
  }
  const out: string[] = [];
  for (let i = lo; i < files.length && files[i].start < toMs; i++) out.push(files[i].path);
  return out;
}

/** The manifest's view files as absolute paths. */
export function absoluteViewFiles(viewsDir: string, manifest: Manifest, view: ViewName, fromMs: number, toMs: number): string[] {
  return viewFiles(manifest, view, fromMs, toMs).map((p) => join(viewsDir, p));
}
