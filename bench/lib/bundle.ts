/**
 * The two ways a Braid gateway runs, as entry scripts for the RSS phase: from the sources through
 * tsx (what `node bin/braid.js gateway` does without a build), and from `npm run build`'s output
 * (bin/build.js, what it does with a fresh one), built into `outDir` here so a checkout's own
 * dist/ is neither needed nor used. Both inside the checkout: dependencies resolve from its
 * node_modules.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** `npm run build` into `outDir`; resolves with the entry script, or null when the checkout has no build (before bin/build.js). */
export async function buildBraidCli(root: string, outDir: string): Promise<string | null> {
  const mod = await import(pathToFileURL(join(root, 'bin/build.js')).href).catch(() => null) as { buildCli?: (out: string) => Promise<number> } | null;
  if (!mod?.buildCli) return null;
  await mod.buildCli(outDir);
  const run = join(outDir, 'braid.mjs');
  writeFileSync(run, "import { main } from './cli.js';\nawait main(process.argv);\n");
  return run;
}

/** An entry script that runs the checkout's CLI from its sources through tsx, whether or not it has a build. */
export function tsxBraidCli(root: string, outDir: string): string {
  mkdirSync(outDir, { recursive: true });
  const run = join(outDir, 'braid-tsx.mjs');
  writeFileSync(run, `import { register } from 'tsx/esm/api';\nregister();\nconst { main } = await import(${JSON.stringify(pathToFileURL(join(root, 'bin/cli.ts')).href)});\nawait main(process.argv);\n`);
  return run;
}
