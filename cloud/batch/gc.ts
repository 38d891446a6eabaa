/**
 * Old view versions: a version directory no longer named by the live manifest is retired (the time
 * is kept in the store's meta `batch.retired`) and deleted batch.retainVersionsMs later, so a reader
 * that read the previous manifest can still read its files for that long.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../shared/logger.js';
import { parseVersionDir } from './files.js';
import { referencedVersions, type Manifest } from './manifest.js';
import { RETIRED_KEY } from './state.js';
import type { BatchStore } from './store.js';

/** Retire unreferenced versions and delete those retired `retainMs` ago; returns the deleted dirs. */
export async function collectVersions(store: BatchStore, viewsDir: string, live: Manifest | null, now: number, retainMs: number, logger: Logger): Promise<string[]> {
  const referenced = referencedVersions(live);
  const retired = (await store.getMeta<Record<string, number>>(RETIRED_KEY)) ?? {};
  let entries: string[];
  try {
    entries = (await readdir(viewsDir, { withFileTypes: true }))
      .filter((d) => d.isDirectory() && parseVersionDir(d.name) !== null).map((d) => d.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') entries = [];
    else throw err;
  }
  const next: Record<string, number> = {};
  const deleted: string[] = [];
  for (const dir of entries.sort()) {
    if (referenced.has(dir)) continue;
    const since = retired[dir] ?? now;
    if (now - since >= retainMs) {
      await rm(join(viewsDir, dir), { recursive: true, force: true });
      deleted.push(dir);
    } else next[dir] = since;
  }
  await store.setMeta(RETIRED_KEY, next);
  if (deleted.length) logger.info({ deleted }, 'old view versions deleted');
  return deleted;
}
