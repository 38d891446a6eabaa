#!/usr/bin/env node
// The `braid` command. Sources are TypeScript, loaded through tsx so `npx braid` works right after `npm ci`.
// `braid gateway` runs from dist/ instead when `npm run build` made it from the sources as they are
// now: tsx's loader thread is ~30 MB of a gateway's RSS (bin/build.js). Only the gateway: the
// cloud's console and Parquet worker find their files beside their sources.
import { fileURLToPath } from 'node:url';
import { buildState } from './dist.js';

const dist = fileURLToPath(new URL('../dist/', import.meta.url));
const state = process.argv[2] === 'gateway' ? buildState(dist) : 'none';
let main;
if (state === 'fresh') {
  ({ main } = await import('../dist/cli.js'));
} else {
  if (state === 'stale') process.stderr.write('braid: dist/ is older than the sources, running them through tsx (`npm run build` to use it again)\n');
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('./cli.ts'));
}
await main(process.argv);
