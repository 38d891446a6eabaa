/**
 * views/manifest.json: the live views (docs/cloud-storage.md). It is replaced by rename only, after
 * every file it names is durable, so a reader sees the old version or the new one, never a mix or
 * a half-built one [manifest atomicity]. It publishes the watermark E with the views.
 */
import { readFile, open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ManifestInvalidError } from './errors.js';
import { dayOfPath, fsyncPath, parseVersionDir, viewFileSpan } from './files.js';
import { VIEW_NAMES, type ViewName } from './sink.js';

export interface Manifest {
  version: number;
  /** ISO 8601 UTC. */
  createdAt: string;
  /** E: per gateway, the last epoch the views cover. */
  watermark: Record<string, number>;
  /** Per view, paths relative to views/, sorted by day. */
  views: Record<ViewName, string[]>;
  /**
   * Views the file did not name: it was written by an earlier version, before those views existed
   * (gateway_1m, fleet_1m). Their lists above are empty, which would read as "no rows", so the query
   * refuses them and the next batch run rebuilds every day. Set by readManifest only; never written.
   */
  missing?: ViewName[];
}

const manifestSchema = z.object({
  version: z.number().int().nonnegative(),
  createdAt: z.string(),
  watermark: z.record(z.string(), z.number().int().nonnegative()),
  views: z.record(z.string(), z.array(z.string())),
});

export const MANIFEST_FILE = 'manifest.json';

export function emptyViews(): Record<ViewName, string[]> {
  return Object.fromEntries(VIEW_NAMES.map((v) => [v, []])) as unknown as Record<ViewName, string[]>;
}

/** The live manifest of `viewsDir`, or null when there is none. */
export async function readManifest(viewsDir: string): Promise<Manifest | null> {
  const file = join(viewsDir, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  let parsed: z.infer<typeof manifestSchema>;
  try {
    parsed = manifestSchema.parse(JSON.parse(text));
  } catch (err) {
    throw new ManifestInvalidError(`${file} is not a valid manifest (${(err as Error).message.slice(0, 200)}); rerun with --full to rewrite it`, { cause: err });
  }
  const missing = VIEW_NAMES.filter((v) => !Object.hasOwn(parsed.views, v));
  return { ...parsed, views: { ...emptyViews(), ...parsed.views } as Record<ViewName, string[]>, ...(missing.length ? { missing } : {}) };
}

/** Write the manifest: manifest.json.tmp, fsync, rename over manifest.json, fsync views/. */
export async function writeManifest(viewsDir: string, m: Manifest): Promise<void> {
  const tmp = join(viewsDir, `${MANIFEST_FILE}.tmp`);
  const fh = await open(tmp, 'w');
  try {
    const file = { version: m.version, createdAt: m.createdAt, watermark: m.watermark, views: m.views };
    await fh.writeFile(`${JSON.stringify(file, null, 1)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, join(viewsDir, MANIFEST_FILE));
  await fsyncPath(viewsDir);
}

/** The days that have a file in any view of the manifest, sorted. */
export function manifestDays(m: Manifest | null): string[] {
  if (!m) return [];
  const days = new Set<string>();
  for (const paths of Object.values(m.views)) for (const p of paths) {
    const d = dayOfPath(p);
    if (d) days.add(d);
  }
  return [...days].sort();
}

/** The version directories (`v000012`) a manifest names files in. */
export function referencedVersions(m: Manifest | null): Set<string> {
  const out = new Set<string>();
  if (!m) return out;
  for (const paths of Object.values(m.views)) for (const p of paths) {
    const dir = p.split('/')[0];
    if (parseVersionDir(dir) !== null) out.add(dir);
  }
  return out;
}

/**
 * The next manifest's views: `built` (per view and rebuilt day, every file the day has now: this
 * version's new files and, for an hour file view, the live files of the hours the run did not
 * touch) for the days rebuilt, the previous manifest's files for every other day. A rebuilt day
 * with no rows in a view has no file in it. Lists are in time order (files do not overlap).
 */
export function nextViews(prev: Manifest | null, rebuilt: Set<string>, built: Record<ViewName, Map<string, string[]>>): Record<ViewName, string[]> {
  const out = emptyViews();
  for (const view of VIEW_NAMES) {
    const paths: string[] = [];
    for (const p of prev?.views[view] ?? []) {
      const d = dayOfPath(p);
      if (d && !rebuilt.has(d)) paths.push(p);
    }
    for (const ps of built[view].values()) paths.push(...ps);
    out[view] = paths.map((p) => [viewFileSpan(p)?.start ?? 0, p] as const).sort(([a], [b]) => a - b).map(([, p]) => p);
  }
  return out;
}
