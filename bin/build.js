#!/usr/bin/env node
/**
 * `npm run build`: the CLI compiled to JavaScript in dist/, so `braid gateway` runs without tsx.
 * tsx compiles TypeScript as it loads it, on a loader thread with its own V8 isolate: ~30 MB of a
 * gateway's RSS with nothing connected (docs/benchmarks.md, Gateway RSS), on an appliance whose
 * budget for 10,000 devices is 200 MB.
 *
 * One esbuild bundle of bin/cli.ts with code splitting (a dynamic import stays a chunk loaded when
 * its command runs: `braid gateway` loads no cloud code), dependencies left to node_modules, and
 * dist/build.json naming every source it was built from with its size and mtime: bin/braid.js
 * uses dist/ only while each of them is unchanged (bin/dist.js).
 *
 * Plain JavaScript, so it runs on bare node after `npm ci --omit=dev` (esbuild is a dependency).
 */
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { BUILD_MANIFEST } from './dist.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * Build the CLI into `outDir` (default ROOT/dist): cli.js, its chunks and build.json. Resolves with
 * the number of sources it was built from.
 */
export async function buildCli(outDir = join(ROOT, 'dist')) {
  const { build } = await import('esbuild');
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: { cli: 'bin/cli.ts' },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    packages: 'external',
    outdir: outDir,
    metafile: true,
    logLevel: 'error',
    legalComments: 'none',
  });
  // Sources by path relative to ROOT (esbuild names them relative to absWorkingDir).
  const inputs = {};
  for (const path of Object.keys(result.metafile.inputs).sort()) {
    const s = statSync(join(ROOT, path));
    inputs[path] = { size: s.size, mtimeMs: s.mtimeMs };
  }
  writeFileSync(join(outDir, BUILD_MANIFEST), `${JSON.stringify({ builtAt: new Date().toISOString(), root: relative(outDir, ROOT) || '.', inputs }, null, 1)}\n`);
  return Object.keys(inputs).length;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const out = process.argv[2] ? resolve(process.argv[2]) : join(ROOT, 'dist');
  const n = await buildCli(out);
  process.stdout.write(`built ${relative(process.cwd(), out) || '.'}/cli.js from ${n} sources\n`);
}
