/**
 * Old view versions: a version directory no longer named by the live manifest is retired (the time
 * is kept in the store's meta `batch.retired`) and deleted batch.retainVersionsMs later, so a reader
 * that read the previous manifest can still read its files for that long. A file the previous
 * manifest named and the live one does not, in a directory the live one still names (a day or an
 * hour written again by a later run, beside an hour file that stays live), is retired and deleted
 * the same way, by its path: a version directory lives as long as any of its files does, and
 * without this its replaced files would stay with it.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../shared/logger.js';
import { parseVersionDir } from './files.js';
import { referencedVersions, type Manifest } from './manifest.js';
import { RETIRED_KEY } from './state.js';
import type { BatchStore } from './store.js';

/**
 * Retire unreferenced versions, and the files of `previous` (the manifest `live` replaced) that
 * `live` no longer names; delete those retired `retainMs` ago. Returns the deleted version dirs.
 */
export async function collectVersions(store: BatchStore, viewsDir: string, live: Manifest | null, now: number, retainMs: number, logger: Logger, previous: Manifest | null = null): Promise<string[]> {
  const referenced = referencedVersions(live);
  const named = new Set(live ? Object.values(live.views).flat() : []);
  const replaced = previous && previous !== live ? Object.values(previous.views).flat().filter((p) => !named.has(p)) : [];
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
  const files: string[] = [];
  // Files (keys with a '/') in a directory still named; a whole retired directory takes its files.
  const fileKeys = new Set([...Object.keys(retired).filter((k) => k.includes('/')), ...replaced]);
  for (const file of [...fileKeys].sort()) {
    if (!referenced.has(file.split('/')[0]) || named.has(file)) continue;
    const since = retired[file] ?? now;
    if (now - since >= retainMs) {
      await rm(join(viewsDir, file), { force: true });
      files.push(file);
    } else next[file] = since;
  }
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
  if (files.length) logger.info({ files: files.length }, 'replaced view files of live versions deleted');
  return deleted;
}
