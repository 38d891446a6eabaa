/**
 * `braid cloud`'s V8 heap setting at run time (bin/commands/heap.ts configureCloudHeap): no
 * allocation-site pretenuring, so a query's short-lived rows are never moved to allocating in the
 * old generation; an operator's own flag stands. V8 prints its pretenuring feedback at each
 * scavenge with --trace-pretenuring-statistics, and prints none once pretenuring is off.
 */
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');

/** Lines of V8's pretenuring feedback over a workload of rows that survive scavenges, then die young. */
function pretenuringLines(configure: boolean, nodeFlags: string[] = []): number {
  const script = `
    ${configure ? `const { configureCloudHeap } = await import(${JSON.stringify(join(ROOT, 'bin/commands/heap.ts'))}); configureCloudHeap();` : ''}
    const make = (n) => { const out = []; for (let i = 0; i < n; i++) out.push({ bucket: i, count: 1, sum: i / 2, min: i, max: i + 1 }); return out; };
    const keep = [];
    for (let r = 0; r < 400; r++) {
      keep.push(make(1440));
      if (keep.length > 20) keep.shift();
      await new Promise((res) => setImmediate(res));
    }
  `;
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_OPTIONS;
  const r = spawnSync(process.execPath, ['--trace-pretenuring-statistics', ...nodeFlags, '--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l.includes('pretenuring:')).length;
}

test('the cloud turns V8\'s allocation-site pretenuring off; without it V8 weighs every site at each scavenge', () => {
  expect(pretenuringLines(false)).toBeGreaterThan(0);
  expect(pretenuringLines(true)).toBe(0);
}, 120_000);

test('an operator\'s --allocation-site-pretenuring stands', () => {
  expect(pretenuringLines(true, ['--allocation-site-pretenuring'])).toBeGreaterThan(0);
}, 60_000);
