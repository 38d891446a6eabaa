/**
 * The Braid CLI bundled into one ES module with esbuild (tsx's own dependency), dependencies left
 * external: the gateway as it would run from compiled JavaScript, without tsx's loader thread.
 * Only for the RSS comparison; null when esbuild cannot be loaded.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export async function bundleBraidCli(root: string, outDir: string): Promise<string | null> {
  let esbuild: { build: (o: Record<string, unknown>) => Promise<unknown> };
  try {
    esbuild = await import('esbuild' as string) as typeof esbuild;
  } catch {
    return null;
  }
  mkdirSync(outDir, { recursive: true });
  await esbuild.build({
    entryPoints: [join(root, 'bin/cli.ts')], bundle: true, platform: 'node', format: 'esm', target: 'node20',
    packages: 'external', outfile: join(outDir, 'cli.mjs'), logLevel: 'error',
  });
  const run = join(outDir, 'braid.mjs');
  writeFileSync(run, "import { main } from './cli.mjs';\nawait main(process.argv);\n");
  return run;
}
