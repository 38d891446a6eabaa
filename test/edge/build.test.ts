/**
 * `npm run build` (bin/build.js): the CLI compiled into dist/ so `braid gateway` runs without tsx's
 * loader thread (~30 MB of RSS, docs/benchmarks.md). The build runs a gateway that takes a device's
 * QoS 1 reading as the sources do; bin/braid.js uses a build only while every source it was built
 * from is unchanged (bin/dist.js).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { MqttClient } from 'mqtt';
import { buildCli } from '../../bin/build.js';
import { BUILD_MANIFEST, buildState } from '../../bin/dist.js';
import { DeviceRegistry } from '../../edge/registry/index.js';
import { connectDevice, endClient, eventually, publish, tempDir } from '../support/gateway.js';

const ROOT = resolve(import.meta.dirname, '../..');

let dirs: Array<{ remove: () => void }> = [];
let child: ChildProcess | null = null;
let client: MqttClient | null = null;

afterEach(async () => {
  if (client) await endClient(client);
  client = null;
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  child = null;
  for (const d of dirs) d.remove();
  dirs = [];
});

function dir(): string {
  const d = tempDir('braid-build-');
  dirs.push(d);
  return d.path;
}

test('a build runs the gateway: a device connects and its QoS 1 reading is committed; no cloud code loaded', async () => {
  // Inside the checkout, as dist/ is: the build leaves its dependencies to node_modules.
  mkdirSync(join(ROOT, 'test-artifacts'), { recursive: true });
  const dist = mkdtempSync(join(ROOT, 'test-artifacts', 'build-'));
  dirs.push({ remove: () => rmSync(dist, { recursive: true, force: true }) });
  expect(await buildCli(dist)).toBeGreaterThan(50);
  expect(buildState(dist)).toBe('fresh');
  const run = join(dist, 'run.mjs');
  // What bin/braid.js does with a fresh build.
  writeFileSync(run, "import { main } from './cli.js';\nawait main(process.argv);\n");
  const data = dir();
  const reg = await DeviceRegistry.open(data);
  const secret = await reg.add('built-1');
  await reg.close();
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BRAID_') && k !== 'NODE_OPTIONS') env[k] = v;
  child = spawn(process.execPath, [run, 'gateway', '--data-dir', data, '--mqtt-port', '0', '--http-port', '0', '--id', 'gw-built', '--log-level', 'warn'],
    { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  const ready = await new Promise<RegExpMatchArray>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`no ready line; stderr: ${stderr}`)), 30_000);
    child!.once('exit', (code) => { clearTimeout(t); rej(new Error(`exited ${code}; stderr: ${stderr}`)); });
    createInterface({ input: child!.stdout! }).on('line', (line) => {
      const m = line.match(/^gateway gw-built ready: (mqtt:\/\/\S+) (http:\/\/\S+)/);
      if (m) { clearTimeout(t); res(m); }
    });
  });
  client = await connectDevice(ready[1], 'built-1', secret);
  await publish(client, 'devices/built-1/telemetry', '{"ts":1732406400000,"temp":21.5}', 1);
  const health = await eventually(async () => {
    const h = await (await fetch(`${ready[2]}/api/v1/health`)).json() as { outbox: { lastSeq: number } };
    if (h.outbox.lastSeq < 1) throw new Error('not committed yet');
    return h;
  });
  expect(health.outbox.lastSeq).toBe(1);
  // The cloud's code is split out of the gateway's start (DuckDB's native library is not mapped).
  expect(readFileSync(`/proc/${child.pid}/maps`, 'utf8')).not.toMatch(/duckdb/);
  expect(stderr).toBe('');
}, 60_000);

test('a build is used only while its sources are as they were built', () => {
  const dist = dir();
  expect(buildState(dist)).toBe('none');
  const manifest = (inputs: Record<string, { size: number; mtimeMs: number }>) =>
    writeFileSync(join(dist, BUILD_MANIFEST), JSON.stringify({ root: ROOT, inputs }));
  const cli = join(ROOT, 'bin/cli.ts');
  const { size, mtimeMs } = statSync(cli);
  manifest({ 'bin/cli.ts': { size, mtimeMs } });
  expect(buildState(dist)).toBe('fresh');
  manifest({ 'bin/cli.ts': { size: size + 1, mtimeMs } });
  expect(buildState(dist)).toBe('stale');
  manifest({ 'bin/cli.ts': { size, mtimeMs: mtimeMs - 1000 } });
  expect(buildState(dist)).toBe('stale');
  manifest({ 'bin/cli.ts': { size, mtimeMs }, 'edge/gone.ts': { size: 1, mtimeMs } });
  expect(buildState(dist)).toBe('stale');
});
