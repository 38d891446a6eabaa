/**
 * The live manifest as the speed store needs it: E and the version for each push's answer, and
 * since when it has been live, for the prune. Re-read only when views/manifest.json changed
 * (it is replaced by rename: a new inode), so a push costs a stat, not a parse.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../shared/logger.js';
import { MANIFEST_FILE, readManifest } from '../batch/index.js';

export interface LiveView {
  version: number;
  watermark: Record<string, number>;
  /** When it went live, epoch ms (the file's mtime: written, fsynced, then renamed into place). */
  liveSince: number;
  /** The manifest's createdAt, epoch ms (its mtime if that does not parse): the age of the views. */
  createdAt: number;
}

/** Where the speed store reads the live manifest: the views dir's file (LiveManifest) or a cluster's pointer (cloud/query/manifest.ts). */
export interface LiveViewSource {
  get(): Promise<LiveView | null>;
}

export class LiveManifest implements LiveViewSource {
  private cached: { key: string; view: LiveView | null } | null = null;

  constructor(private readonly viewsDir: string, private readonly logger: Logger) {}

  private async key(): Promise<{ key: string; mtimeMs: number } | null> {
    try {
      const st = await stat(join(this.viewsDir, MANIFEST_FILE));
      return { key: `${st.ino}:${st.mtimeMs}:${st.size}`, mtimeMs: st.mtimeMs };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /** The live manifest, or null before the first batch run. A manifest that does not parse keeps the last good one (logged). */
  async get(): Promise<LiveView | null> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const before = await this.key();
      if (!before) return (this.cached = { key: 'none', view: null }).view;
      if (this.cached?.key === before.key) return this.cached.view;
      let view: LiveView | null;
      try {
        const m = await readManifest(this.viewsDir);
        const createdAt = m ? Date.parse(m.createdAt) : NaN;
        view = m ? { version: m.version, watermark: m.watermark, liveSince: before.mtimeMs, createdAt: Number.isFinite(createdAt) ? createdAt : before.mtimeMs } : null;
      } catch (err) {
        this.logger.warn({ err }, 'the live manifest does not parse; keeping the last good one');
        return this.cached?.view ?? null;
      }
      // A rename between the stat and the read would pair one file's content with another's
      // mtime: stat again and keep the pair only if nothing moved.
      const after = await this.key();
      if (after?.key === before.key) {
        this.cached = { key: before.key, view };
        return view;
      }
    }
    return this.cached?.view ?? null;
  }
}
