// The whole tree type-checks (strict): jest runs the sources through SWC, which does not.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

test('tsc --noEmit finds no type errors', async () => {
  const run = promisify(execFile);
  const result = await run(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json', '--noEmit'], { maxBuffer: 10 * 1024 * 1024 })
    .then(() => '', (err: { stdout?: string }) => err.stdout ?? String(err));
  expect(result).toBe('');
}, 120_000);
