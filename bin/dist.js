/**
 * Whether a build of the CLI (bin/build.js) is the sources as they are now. Plain JavaScript, read
 * by bin/braid.js before anything else is loaded.
 */
import { readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** The manifest bin/build.js writes beside the build: the sources it was built from. */
export const BUILD_MANIFEST = 'build.json';

/**
 * 'fresh' when `distDir` holds a build whose every source has the size and mtime it had when
 * built; 'stale' when one changed or is gone (a checkout or edit since `npm run build`); 'none'
 * without a build. A source whose mtime moved with the same bytes counts as changed: a rebuild too
 * many, never old code run.
 */
export function buildState(distDir) {
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(join(distDir, BUILD_MANIFEST), 'utf8'));
  } catch {
    return 'none';
  }
  const root = resolve(distDir, manifest.root ?? '..');
  const inputs = Object.entries(manifest.inputs ?? {});
  if (inputs.length === 0) return 'stale';
  for (const [path, built] of inputs) {
    let s;
    try {
      s = statSync(join(root, path));
    } catch {
      return 'stale';
    }
    if (s.size !== built.size || s.mtimeMs !== built.mtimeMs) return 'stale';
  }
  return 'fresh';
}
