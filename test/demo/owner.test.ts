/**
 * `braid demo` owns its data dir (a second demo on it exits 2 naming the first, and changes
 * nothing: it would rotate the first one's tokens and keys) and stops with its parent: a supervisor
 * that ends `npm start` or the shell that started the demo, without passing a signal on, must not
 * leave it running. Real processes; no browser needed.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { eventually, tempDir } from '../support/gateway.js';
import { cleanEnv, killAllDemos, listening, spawnDemo } from './support.js';

const ROOT = resolve(import.meta.dirname, '../..');
const BRAID = join(ROOT, 'bin/braid.js');
const dirs: Array<{ remove: () => void }> = [];
/** Demo pids whose parent a test ended: killAllDemos reaches only the parent's process group leader. */
const orphans: number[] = [];

afterEach(async () => {
  for (const pid of orphans.splice(0)) if (alive(pid)) process.kill(pid, 'SIGKILL');
  await killAllDemos();
  for (const d of dirs.splice(0)) d.remove();
}, 30_000);

function dataDir(): string {
  const t = tempDir('braid-demo-owner-');
  dirs.push(t);
  return join(t.path, 'demo');
}

/** Whether pid runs (a zombie, exited but not yet reaped by its new parent, does not). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

const ownerPid = (dir: string) => (JSON.parse(readFileSync(join(dir, 'owner.json'), 'utf8')) as { pid: number }).pid;

async function readWithKey(consoleUrl: string, key: string): Promise<number> {
  return (await fetch(`${consoleUrl}api/v1/whoami`, { headers: { authorization: `Bearer ${key}` } })).status;
}

test('a second demo on the same dir exits 2 naming the first, which keeps its keys; SIGHUP stops the first cleanly', async () => {
  const dir = dataDir();
  const first = spawnDemo(process.execPath, [BRAID, 'demo', '--data-dir', dir], ROOT);
  const l = await first.lines(['Console', 'API key'], 60_000);
  expect(await readWithKey(l.Console, l['API key'])).toBe(200);

  // --fresh too: the refusal comes before anything is wiped.
  const second = spawnDemo(process.execPath, [BRAID, 'demo', '--data-dir', dir, '--fresh'], ROOT);
  const e = await second.exited;
  expect(e.code).toBe(2);
  const err = second.output().stderr;
  expect(err).toContain(`is in use by pid ${first.proc.pid}, braid demo, since `);
  expect(err).toContain('[BRAID_ERR_DATA_DIR_IN_USE]');
  expect(err).not.toMatch(/\n\s+at /);
  expect(second.output().stdout).not.toMatch(/Console:/);

  // The first demo's key still works (the second did not rotate it) and its data is still there.
  expect(await readWithKey(l.Console, l['API key'])).toBe(200);
  expect(existsSync(join(dir, 'cloud', 'cloud.db'))).toBe(true);

  const ports = first.ports();
  first.proc.kill('SIGHUP');
  expect(await first.exited).toEqual({ code: 0, signal: null });
  expect(first.output().stdout).toMatch(/Demo stopped\.\n$/);
  for (const p of ports) expect({ ...p, listening: await listening(p.host, p.port) }).toEqual({ ...p, listening: false });
  // Released: owner.json is gone and a new demo may start.
  expect(existsSync(join(dir, 'owner.json'))).toBe(false);
}, 120_000);

test('the demo stops when the shell that started it is ended by SIGTERM (which sh does not pass on)', async () => {
  const dir = dataDir();
  // `; true`: sh waits for the demo instead of exec'ing it, as a wrapper script or npm does.
  const sh = spawnDemo('/bin/sh', ['-c', `"${process.execPath}" "${BRAID}" demo --data-dir "${dir}"; true`], ROOT);
  await sh.lines(['Console'], 60_000);
  const demoPid = ownerPid(dir);
  orphans.push(demoPid);
  expect(demoPid).not.toBe(sh.proc.pid);
  const ports = sh.ports();
  // 'exit', not the helper's 'close': the pipes stay open as long as the demo runs.
  const shExit = new Promise((res) => sh.proc.once('exit', res));
  sh.proc.kill('SIGTERM'); // the shell only, not its process group
  await shExit;
  const t0 = Date.now();
  await eventually(() => !alive(demoPid), 15_000, 100);
  expect(Date.now() - t0).toBeLessThan(15_000);
  for (const p of ports) expect({ ...p, listening: await listening(p.host, p.port) }).toEqual({ ...p, listening: false });
}, 120_000);

test.each(['SIGTERM', 'SIGKILL'] as const)('npm start stops with npm: %s to npm alone ends the demo within seconds', async (signal) => {
  const dir = dataDir();
  const npm = spawnDemo('npm', ['start', '--', '--data-dir', dir], ROOT, cleanEnv());
  await npm.lines(['Console'], 90_000);
  const demoPid = ownerPid(dir);
  orphans.push(demoPid);
  expect(alive(demoPid)).toBe(true);
  const ports = npm.ports();
  const npmExit = new Promise((res) => npm.proc.once('exit', res));
  // To npm only, as a supervisor does (not the process group a terminal's Ctrl-C reaches); SIGKILL
  // gives npm no chance to pass anything on.
  npm.proc.kill(signal);
  await npmExit;
  await eventually(() => !alive(demoPid), 15_000, 100);
  for (const p of ports) expect({ ...p, listening: await listening(p.host, p.port) }).toEqual({ ...p, listening: false });
}, 150_000);
