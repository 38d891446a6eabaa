/**
 * One owner per gateway data dir (DESIGN.md invariant 7), config checked before anything is opened,
 * private files, the token off the command line. Real `braid gateway` processes, started twice and
 * killed with SIGKILL; a real cloud for the token file.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { MqttClient } from 'mqtt';
import { acquireOwnerLock } from '../../shared/owner-lock.js';
import { type ChildGateway, addDeviceCli, killAllChildGateways, spawnGateway } from '../support/child-gateway.js';
import { type TestCloud, addGatewayToken, startTestCloud } from '../support/cloud.js';
import { connectDevice, endClient, eventually, publish, tempDir } from '../support/gateway.js';

const ROOT = resolve(import.meta.dirname, '../..');
const BRAID = join(ROOT, 'bin/braid.js');

interface Run { code: number | null; stdout: string; stderr: string }

function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BRAID_') && k !== 'NODE_OPTIONS') env[k] = v;
  return { ...env, ...extra };
}

const children: ChildProcess[] = [];

/** `braid ...` to completion (SIGKILLed after timeoutMs: a command that should exit but serves). */
function braid(args: string[], env: Record<string, string> = {}, timeoutMs = 20_000): Promise<Run> {
  const child = spawn(process.execPath, [BRAID, ...args], { cwd: ROOT, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((res) => child.once('close', (code) => { clearTimeout(t); res({ code, stdout, stderr }); }));
}

let dirs: Array<{ remove: () => void }> = [];
let clients: MqttClient[] = [];
let clouds: TestCloud[] = [];

afterEach(async () => {
  for (const c of clients) await endClient(c);
  clients = [];
  await killAllChildGateways();
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const c of clouds) await c.close();
  clouds = [];
  for (const d of dirs) d.remove();
  dirs = [];
});

function dir(): string {
  const d = tempDir('braid-owner-');
  dirs.push(d);
  return d.path;
}

const mode = (path: string) => statSync(path).mode & 0o777;
const gatewayArgs = (d: string) => ['gateway', '--data-dir', d, '--id', 'gw-two', '--mqtt-port', '0', '--http-port', '0', '--log-level', 'warn'];

async function lastSeq(g: ChildGateway): Promise<number> {
  const h = await (await fetch(`${g.httpUrl}/api/v1/health`)).json() as { outbox: { lastSeq: number } };
  return h.outbox.lastSeq;
}

describe('one braid gateway per data dir', () => {
  it('refuses a second one (exit 2, naming the first\'s pid and since when) while the first keeps working and device commands work', async () => {
    const d = dir();
    const first = await spawnGateway({ dataDir: d });
    const t0 = Date.now();

    const second = await braid(gatewayArgs(d), { BRAID_MQTT_HOST: '127.0.0.1', BRAID_HTTP_HOST: '127.0.0.1' });
    expect(second.code).toBe(2);
    expect(second.stderr).toContain('[BRAID_ERR_DATA_DIR_IN_USE]');
    expect(second.stderr).toContain(`data dir ${resolve(d)} is in use by pid ${first.proc.pid}`);
    const since = /since (\S+Z)/.exec(second.stderr)?.[1];
    expect(since).toBeDefined();
    expect(Math.abs(Date.parse(since!) - t0)).toBeLessThan(30_000);
    expect(second.stdout).not.toMatch(/ready/);
    expect(Date.now() - t0).toBeLessThan(15_000);

    // The documented admin commands keep working on the running gateway's dir.
    const secret = await addDeviceCli(d, 'd1', 's3cret-d1');
    expect(secret).toBe('s3cret-d1');
    const list = await braid(['device', 'list', '--json', '--data-dir', d]);
    expect(list.code).toBe(0);
    expect((JSON.parse(list.stdout) as Array<{ id: string }>).map((x) => x.id)).toEqual(['d1']);

    // The first gateway still takes and commits a QoS 1 reading.
    const c = await connectDevice(first.mqttUrl, 'd1', secret);
    clients.push(c);
    await publish(c, 'devices/d1/telemetry', '{"temp":21.5}', 1);
    expect(await lastSeq(first)).toBe(1);
    expect(first.proc.exitCode).toBeNull();

    const removed = await braid(['device', 'remove', 'd1', '--data-dir', d]);
    expect(removed.code).toBe(0);
    expect(removed.stdout).toContain('device d1 removed');
  }, 60_000);

  it('lets a new one start at once after the first is killed with SIGKILL, with what the first acknowledged', async () => {
    const d = dir();
    const secret = await addDeviceCli(d, 'd1', 's3cret-d1');
    const first = await spawnGateway({ dataDir: d });
    const c = await connectDevice(first.mqttUrl, 'd1', secret, { reconnectPeriod: 0 });
    clients.push(c);
    await publish(c, 'devices/d1/telemetry', '{"temp":1}', 1);
    expect(await first.stop('SIGKILL')).toMatchObject({ signal: 'SIGKILL' });

    // No stale lock: the kernel dropped it with the process.
    const next = await spawnGateway({ dataDir: d });
    expect(next.proc.pid).not.toBe(first.proc.pid);
    expect(await lastSeq(next)).toBe(1);
    const owner = JSON.parse(readFileSync(join(d, 'owner.json'), 'utf8')) as { pid: number };
    expect(owner.pid).toBe(next.proc.pid);
    // And it is the owner now: a third is refused naming it.
    const third = await braid(gatewayArgs(d));
    expect(third.code).toBe(2);
    expect(third.stderr).toContain(`in use by pid ${next.proc.pid}`);
  }, 60_000);

  it('of three started at the same instant, exactly one runs and the others exit 2 naming it', async () => {
    const d = dir();
    const env = { BRAID_MQTT_HOST: '127.0.0.1', BRAID_HTTP_HOST: '127.0.0.1' };
    // Each serving one is killed once it printed ready; the refused exit by themselves.
    const runs = [0, 1, 2].map(() => {
      const child = spawn(process.execPath, [BRAID, ...gatewayArgs(d)], { cwd: ROOT, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      let stdout = '';
      let stderr = '';
      child.stdout!.setEncoding('utf8').on('data', (x: string) => { stdout += x; if (/ready/.test(stdout)) setTimeout(() => child.kill('SIGTERM'), 1000); });
      child.stderr!.setEncoding('utf8').on('data', (x: string) => { stderr += x; });
      return new Promise<{ pid: number; code: number | null; stdout: string; stderr: string }>((res) => child.once('close', (code) => res({ pid: child.pid!, code, stdout, stderr })));
    });
    const done = await Promise.all(runs);
    const served = done.filter((r) => /ready/.test(r.stdout));
    expect(served).toHaveLength(1);
    const refused = done.filter((r) => r !== served[0]);
    for (const r of refused) {
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`in use by (pid ${served[0].pid}|another process)`));
    }
  }, 60_000);

  it('refuses a second Gateway in the same process too, and frees the dir on release', async () => {
    const d = dir();
    const lock = await acquireOwnerLock(d, 'test');
    await expect(acquireOwnerLock(d, 'test again')).rejects.toMatchObject({ code: 'BRAID_ERR_DATA_DIR_IN_USE', message: expect.stringContaining('this process') });
    // The failed attempt must not have dropped the holder's lock (POSIX locks and a closed descriptor).
    const other = await braid(gatewayArgs(d));
    expect(other.code).toBe(2);
    expect(other.stderr).toContain(`in use by pid ${process.pid}`);
    await lock.release();
    expect(existsSync(join(d, 'owner.json'))).toBe(false);
    const again = await acquireOwnerLock(d, 'test');
    await again.release();
  });
});

describe('braid gateway checks its config before it opens anything', () => {
  it('a bad speed.pruneCron and another bad key: exit 2, one message naming both, the data dir not created', async () => {
    const parent = dir();
    const d = join(parent, 'gw');
    const r = await braid(gatewayArgs(d), { BRAID_SPEED_PRUNE_CRON: 'every five minutes', BRAID_OUTBOX_MAX_BYTES: 'lots' });
    expect(r.code).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^braid: 2 config errors: .*"outbox\.maxBytes".*"speed\.pruneCron".*\[BRAID_ERR_CONFIG_INVALID\]$/);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(existsSync(d)).toBe(false);

    // Two lint errors (no schema error) are reported together as well, into an existing empty dir.
    const e = dir();
    const r2 = await braid(gatewayArgs(e), { BRAID_SPEED_PRUNE_CRON: '99 * * * *', BRAID_CLOUD_URL: 'http://127.0.0.1:9' });
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/"cloud\.token".*"speed\.pruneCron"/);
    expect(readdirSync(e)).toEqual([]);
  });
});

describe('files and secrets', () => {
  it('keeps the data dir 0700 and every database file 0600', async () => {
    const d = join(dir(), 'gw');
    await addDeviceCli(d, 'd1', 's3cret-d1');
    const g = await spawnGateway({ dataDir: d });
    const c = await connectDevice(g.mqttUrl, 'd1', 's3cret-d1');
    clients.push(c);
    await publish(c, 'devices/d1/telemetry', '{"temp":2}', 1);
    expect(mode(d)).toBe(0o700);
    const files = readdirSync(d);
    for (const f of ['gateway.db', 'gateway.db-wal', 'gateway.db-shm', 'registry.db', 'owner.lock', 'owner.json']) expect(files).toContain(f);
    for (const f of files) expect([f, mode(join(d, f)).toString(8)]).toEqual([f, '600']);
  });

  it('tightens the databases of an older version (0644) at start', async () => {
    const d = dir();
    chmodSync(d, 0o755);
    await addDeviceCli(d, 'd1', 's3cret-d1');
    chmodSync(join(d, 'registry.db'), 0o644);
    const g = await spawnGateway({ dataDir: d });
    expect(mode(d)).toBe(0o700);
    expect(mode(join(d, 'registry.db'))).toBe(0o600);
    expect(mode(join(d, 'gateway.db'))).toBe(0o600);
    await g.stop('SIGTERM');
  }, 60_000);

  it('--token-file: the token works, is not in /proc/<pid>/cmdline, and a world-readable file is refused', async () => {
    const cloudDir = dir();
    const token = await addGatewayToken(cloudDir, 'gw-child');
    const cloud = await startTestCloud(cloudDir);
    clouds.push(cloud);
    const tokenFile = join(dir(), 'token');
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });

    const d = dir();
    await addDeviceCli(d, 'd1', 's3cret-d1');
    const g = await spawnGateway({ dataDir: d, args: ['--cloud-url', cloud.url, '--token-file', tokenFile] });
    const cmdline = readFileSync(`/proc/${g.proc.pid}/cmdline`, 'utf8');
    expect(cmdline).toContain('--token-file');
    expect(cmdline).not.toContain(token);
    const c = await connectDevice(g.mqttUrl, 'd1', 's3cret-d1');
    clients.push(c);
    await publish(c, 'devices/d1/telemetry', '{"temp":3}', 1);
    // Forwarded with the token from the file (a wrong or newline-suffixed token is a 401, never acked).
    const health = () => fetch(`${g.httpUrl}/api/v1/health`).then((r) => r.json()) as Promise<{ outbox: { pending: number }; forwarder: { lastSuccessAt: string | null; lastError: string | null } }>;
    const h = await eventually(async () => { const x = await health(); return x.outbox.pending === 0 && x.forwarder.lastSuccessAt ? x : null; }, 15_000, 100);
    expect(h!.forwarder.lastError).toBeNull();

    chmodSync(tokenFile, 0o644);
    const refused = await braid(['gateway', '--data-dir', dir(), '--mqtt-port', '0', '--http-port', '0', '--cloud-url', cloud.url, '--token-file', tokenFile]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/"cloud\.tokenFile".*can be read by every user/);
  }, 60_000);
});
