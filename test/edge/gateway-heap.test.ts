/**
 * `braid gateway`'s V8 heap settings at run time (bin/commands/gateway-heap.ts): the young
 * generation stops growing at SEMI_SPACE_MAX_MB per semi-space however many young objects survive
 * (a connect storm), unless the process was started with its own --max-semi-space-size.
 */
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { SEMI_SPACE_MAX_MB } from '../../bin/commands/gateway-heap.js';

const ROOT = resolve(import.meta.dirname, '../..');

/** The new space's size (both semi-spaces, MB) after a workload whose young objects mostly survive. */
function newSpaceAfterStorm(configure: boolean, nodeFlags: string[] = []): number {
  const script = `
    import v8 from 'node:v8';
    ${configure ? `const { configureGatewayHeap } = await import(${JSON.stringify(join(ROOT, 'bin/commands/gateway-heap.ts'))}); configureGatewayHeap();` : ''}
    const keep = [];
    // As a connect storm: each turn of the event loop keeps ~0.3 MB more (a few dozen connections).
    for (let r = 0; r < 500; r++) {
      for (let i = 0; i < 2000; i++) keep.push({ a: i, b: [i], c: 'x' + i });
      if (keep.length > 400000) keep.splice(0, 200000);
      await new Promise((res) => setImmediate(res));
    }
    const s = v8.getHeapSpaceStatistics().find((x) => x.space_name === 'new_space');
    process.stdout.write(String(s.space_size));
  `;
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_OPTIONS;
  const r = spawnSync(process.execPath, [...nodeFlags, '--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return Number(r.stdout) / 1024 / 1024;
}

test('the young generation stops at the cap in a storm of surviving objects; V8 alone grows it past', () => {
  expect(newSpaceAfterStorm(false)).toBeGreaterThan(2 * SEMI_SPACE_MAX_MB);
  expect(newSpaceAfterStorm(true)).toBeLessThanOrEqual(2 * SEMI_SPACE_MAX_MB);
}, 120_000);

test('an operator\'s --max-semi-space-size stands', () => {
  expect(newSpaceAfterStorm(true, ['--max-semi-space-size=16'])).toBeGreaterThan(2 * SEMI_SPACE_MAX_MB);
}, 60_000);
