/**
 * The `braid` command as users run it: `node bin/braid.js ...` in a child process (DESIGN.md, the
 * contract: --help everywhere, device add prints the secret last, config from file < BRAID_* env <
 * flags, a bad config names its key and exits 2, SIGTERM is a clean stop).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { MqttClient } from 'mqtt';
import { DeviceRegistry } from '../../edge/registry/index.js';
import { type TestGateway, connectDevice, endClient, eventually, publish, startTestGateway, tempDir, gatewayDbAll } from '../support/gateway.js';

const ROOT = resolve(import.meta.dirname, '../..');
const BRAID = join(ROOT, 'bin/braid.js');

interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** The environment without BRAID_* (a developer's shell must not leak into a test) or jest's NODE_OPTIONS. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BRAID_') && k !== 'NODE_OPTIONS') env[k] = v;
  return { ...env, ...extra };
}

let children: ChildProcess[] = [];
let dirs: Array<{ remove: () => void }> = [];
let clients: MqttClient[] = [];
let gateways: TestGateway[] = [];

afterEach(async () => {
  for (const c of clients) await endClient(c);
  clients = [];
  for (const g of gateways) await g.close();
  gateways = [];
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children = [];
  for (const d of dirs) d.remove();
  dirs = [];
});

function dir(): string {
  const d = tempDir('braid-cli-');
  dirs.push(d);
  return d.path;
}

function start(args: string[], env: Record<string, string> = {}): { child: ChildProcess; out: { stdout: string; stderr: string }; exited: Promise<Run> } {
  const child = spawn(process.execPath, [BRAID, ...args], { cwd: ROOT, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d: Buffer) => { out.stdout += d.toString('utf8'); });
  child.stderr!.on('data', (d: Buffer) => { out.stderr += d.toString('utf8'); });
  const exited = new Promise<Run>((res) => child.once('close', (code, signal) => res({ code, signal, ...out })));
  return { child, out, exited };
}

/** Run `braid ...` to completion (killed after `timeoutMs`: a command that should have exited but serves instead). */
async function braid(args: string[], env: Record<string, string> = {}, timeoutMs = 15_000): Promise<Run> {
  const { child, exited } = start(args, env);
  const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    return await exited;
  } finally {
    clearTimeout(t);
  }
}

const lastLine = (s: string) => s.trimEnd().split('\n').pop()!;

/** The subcommand names listed under "Commands:" in a help text (without `help`). */
function commandsIn(help: string): string[] {
  const at = help.indexOf('\nCommands:\n');
  if (at < 0) return [];
  return help.slice(at + 11).split('\n')
    .map((l) => /^ {2}([a-z][\w-]*)/.exec(l)?.[1])
    .filter((c): c is string => !!c && c !== 'help');
}

describe('--help', () => {
  it('exits 0 with usage for braid and every subcommand, recursively', async () => {
    const top = await braid(['--help']);
    expect(top).toMatchObject({ code: 0 });
    expect(top.stdout).toMatch(/^Usage: braid /);
    const names = commandsIn(top.stdout);
    expect(names).toEqual(expect.arrayContaining(['gateway', 'device', 'simulate', 'demo']));
    const paths: string[][] = names.map((n) => [n]);
    const seen: string[] = [];
    const helps = new Map<string, string>();
    while (paths.length) {
      const batch = paths.splice(0);
      const runs = await Promise.all(batch.map((p) => braid([...p, '--help'])));
      runs.forEach((r, i) => {
        const p = batch[i];
        seen.push(p.join(' '));
        helps.set(p.join(' '), r.stdout);
        expect({ cmd: p.join(' '), code: r.code, stderr: r.stderr }).toEqual({ cmd: p.join(' '), code: 0, stderr: '' });
        expect(r.stdout).toContain(`Usage: braid ${p.join(' ')}`);
        for (const sub of commandsIn(r.stdout)) paths.push([...p, sub]);
      });
    }
    expect(seen).toEqual(expect.arrayContaining(['device add', 'device list', 'device remove', 'device rotate']));
    // The contract's flags are documented.
    for (const flag of ['--config', '--data-dir', '--id', '--mqtt-port', '--ws-port', '--http-port', '--cloud-url', '--token']) expect(helps.get('gateway')).toContain(flag);
    for (const flag of ['--secret', '--data-dir', '--config']) expect(helps.get('device add')).toContain(flag);
    expect(helps.get('device list')).toContain('--json');
  }, 120_000);

  it('exits 2 on a usage error in any command, with the usage hint', async () => {
    const runs = await Promise.all([
      braid(['gateway', '--bogus']),
      braid(['device', 'add']),
      braid(['device']),
      braid(['gateway', '--check-config', '--mqtt-port', 'abc']),
    ]);
    for (const r of runs) {
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
    }
    for (const i of [0, 1, 3]) expect(runs[i].stderr).toContain('(run with --help for usage)');
    expect(runs[0].stderr).toContain("unknown option '--bogus'");
    expect(runs[1].stderr).toContain("missing required argument 'deviceId'");
    expect(runs[2].stderr).toContain('Usage: braid device');
    expect(runs[3].stderr).toContain('--mqtt-port must be a whole number, got "abc"');
  }, 60_000);
});

describe('braid device', () => {
  it('`device add` on a running gateway\'s data dir prints the secret last, and that secret connects', async () => {
    const d = dir();
    const tg = await startTestGateway({}, d);
    gateways.push(tg);
    const r = await braid(['device', 'add', 'd1', '--data-dir', d]);
    expect(r).toMatchObject({ code: 0 });
    const secret = lastLine(r.stdout);
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/); // 32 random bytes, base64url
    const c = await connectDevice(tg.mqttUrl, 'd1', secret);
    clients.push(c);
    await publish(c, 'devices/d1/telemetry', '{"temp":21.5}');
    expect(await gatewayDbAll(tg.gateway.outbox, 'SELECT device, metric, value FROM outbox')).toEqual([{ device: 'd1', metric: 'temp', value: 21.5 }]);
  });

  it('`device add --secret S` prints S; `list --json` lists ids without secrets; `rotate` and `remove` work', async () => {
    const d = dir();
    // Side by side on a fresh data dir, as a provisioning script may run them.
    const [a, b] = await Promise.all([
      braid(['device', 'add', 'd2', '--secret', 'chosen-secret', '--data-dir', d]),
      braid(['device', 'add', 'd1', '--data-dir', d]),
    ]);
    for (const r of [a, b]) expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(lastLine(a.stdout)).toBe('chosen-secret');
    const gen = lastLine(b.stdout);

    const l = await braid(['device', 'list', '--json', '--data-dir', d]);
    expect(l).toMatchObject({ code: 0, stderr: '' });
    const list = JSON.parse(l.stdout) as Array<{ id: string; createdAt: number; updatedAt: number }>;
    expect(list.map((x) => x.id)).toEqual(['d1', 'd2']);
    for (const x of list) expect(x).toEqual({ id: x.id, createdAt: expect.any(Number), updatedAt: expect.any(Number) });
    expect(l.stdout).not.toContain('chosen-secret');
    expect(l.stdout).not.toContain(gen);

    const [rot, rm] = await Promise.all([
      braid(['device', 'rotate', 'd2', '--data-dir', d]),
      braid(['device', 'remove', 'd1', '--data-dir', d]),
    ]);
    expect(rot).toMatchObject({ code: 0 });
    const rotated = lastLine(rot.stdout);
    expect(rotated).not.toBe('chosen-secret');
    expect(rm).toMatchObject({ code: 0 });

    const tg = await startTestGateway({}, d);
    gateways.push(tg);
    await expect(connectDevice(tg.mqttUrl, 'd2', 'chosen-secret')).rejects.toMatchObject({ code: 5 });
    await expect(connectDevice(tg.mqttUrl, 'd1', gen)).rejects.toMatchObject({ code: 5 });
    clients.push(await connectDevice(tg.mqttUrl, 'd2', rotated));
  }, 60_000);

  it('refuses to add an existing device with a clear message, a non-zero exit and no secret', async () => {
    const d = dir();
    const first = await braid(['device', 'add', 'd1', '--data-dir', d]);
    expect(first).toMatchObject({ code: 0 });
    const again = await braid(['device', 'add', 'd1', '--data-dir', d]);
    expect(again.code).not.toBe(0);
    expect(again.code).not.toBeNull();
    expect(again.stdout).toBe('');
    expect(again.stderr).toMatch(/device "d1" is already registered/);
    expect(again.stderr).toContain('rotate');
    expect(again.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
    // The first secret still works: the refusal changed nothing.
    const tg = await startTestGateway({}, d);
    gateways.push(tg);
    clients.push(await connectDevice(tg.mqttUrl, 'd1', lastLine(first.stdout)));
  });

  it('names the problem for a bad device id, and for removing an unknown device', async () => {
    const d = dir();
    const [bad, rm] = await Promise.all([
      braid(['device', 'add', 'bad id!', '--data-dir', d]),
      braid(['device', 'remove', 'ghost', '--data-dir', d]),
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('device id "bad id!"');
    expect(rm.code).not.toBe(0);
    expect(rm.stdout).toBe('');
    expect(rm.stderr).toContain('device "ghost" is not registered');
  });
});

describe('braid gateway configuration', () => {
  function configFile(content: unknown): string {
    const f = join(dir(), 'gateway.json');
    writeFileSync(f, typeof content === 'string' ? content : JSON.stringify(content));
    return f;
  }

  it('exits 2 naming mqtt.port for {"mqtt":{"port":"x"}} in the config file', async () => {
    const r = await braid(['gateway', '--config', configFile({ mqtt: { port: 'x' } }), '--data-dir', dir()]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('mqtt.port');
    expect(r.stderr).toContain('config file');
    expect(r.stdout).not.toContain('ready');
  });

  it('exits 2 naming mqtt.port and BRAID_MQTT_PORT for BRAID_MQTT_PORT=abc', async () => {
    const r = await braid(['gateway', '--data-dir', dir()], { BRAID_MQTT_PORT: 'abc' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('mqtt.port');
    expect(r.stderr).toContain('BRAID_MQTT_PORT');
  });

  it('exits 2 naming an unknown key in the config file', async () => {
    const [nested, top] = await Promise.all([
      braid(['gateway', '--check-config', '--config', configFile({ mqtt: { prot: 1883 } })]),
      braid(['gateway', '--check-config', '--config', configFile({ mqtt: { port: 1883 }, mqttt: {} })]),
    ]);
    expect(nested.code).toBe(2);
    expect(nested.stderr).toMatch(/"mqtt\.prot": unknown key/);
    expect(top.code).toBe(2);
    expect(top.stderr).toMatch(/"mqttt": unknown key/);
  });

  it('exits 2 for a config file that is not JSON, or cannot be read, saying so', async () => {
    const [notJson, missing] = await Promise.all([
      braid(['gateway', '--check-config', '--config', configFile('{"mqtt": ')]),
      braid(['gateway', '--check-config', '--config', join(dir(), 'nope.json')]),
    ]);
    expect(notJson.code).toBe(2);
    expect(notJson.stderr).toMatch(/not valid JSON/);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/nope\.json: cannot read it/);
  });

  it('resolves flag over environment over file over default (--check-config)', async () => {
    const file = configFile({ id: 'gw-file', mqtt: { port: 1111, maxTopicLevels: 5 }, http: { port: 2221 }, outbox: { epochMs: 30_000 } });
    const r = await braid(
      ['gateway', '--check-config', '--config', file, '--mqtt-port', '3333', '--token', 'tok-secret'],
      { BRAID_MQTT_PORT: '2222', BRAID_ID: 'gw-env', BRAID_OUTBOX_EPOCH_MS: '15000' },
    );
    expect(r).toMatchObject({ code: 0 });
    const cfg = JSON.parse(r.stdout) as Record<string, Record<string, unknown>> & { id: string };
    expect(cfg.mqtt.port).toBe(3333); // flag beats env and file
    expect(cfg.id).toBe('gw-env'); // env beats file
    expect(cfg.outbox.epochMs).toBe(15_000); // env beats file
    expect(cfg.http.port).toBe(2221); // file beats default
    expect(cfg.mqtt.maxTopicLevels).toBe(5);
    expect(cfg.mqtt.keepaliveMaxSeconds).toBe(1200); // default
    expect(cfg.cloud.token).toBe('[set]'); // never printed
    expect(r.stdout).not.toContain('tok-secret');
  });
});

describe('braid gateway', () => {
  it('starts with no config file, prints its ready line, serves, and exits 0 on SIGTERM', async () => {
    const d = dir();
    const reg = await DeviceRegistry.open(d);
    const secret = await reg.add('d1');
    await reg.close();
    const { child, out, exited } = start(['gateway', '--data-dir', d, '--id', 'gw-cli', '--mqtt-port', '0', '--http-port', '0', '--log-level', 'warn']);
    const line = (await eventually(() => /^gateway (\S+) ready: mqtt:\/\/(\S+):(\d+) http:\/\/(\S+):(\d+)$/m.exec(out.stdout), 15_000))!;
    expect(line[1]).toBe('gw-cli');
    const mqttPort = Number(line[3]);
    const httpPort = Number(line[5]);
    expect(mqttPort).toBeGreaterThan(0);
    expect(httpPort).toBeGreaterThan(0);

    const healthz = await fetch(`http://127.0.0.1:${httpPort}/healthz`);
    expect(healthz.status).toBe(200);
    expect(await healthz.json()).toEqual({ status: 'ok' });
    const c = await connectDevice(`mqtt://127.0.0.1:${mqttPort}`, 'd1', secret);
    clients.push(c);
    await publish(c, 'devices/d1/telemetry', '{"temp":21.5}');
    const health = await (await fetch(`http://127.0.0.1:${httpPort}/api/v1/health`)).json() as { gatewayId: string; outbox: { lastSeq: number; pending: number } };
    expect(health).toMatchObject({ gatewayId: 'gw-cli', outbox: { lastSeq: 1, pending: 1 } });

    // SIGTERM with a device still connected: a clean stop, within a few seconds.
    const t0 = Date.now();
    child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([exited, new Promise<null>((res) => { timer = setTimeout(() => res(null), 5000); })]);
    clearTimeout(timer);
    expect(r).not.toBeNull();
    expect(r).toMatchObject({ code: 0, signal: null });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(out.stderr).not.toMatch(/"level":(50|60)/); // no error or fatal log line

    // What was acknowledged is in the outbox for the next start [INV-1].
    const tg = await startTestGateway({}, d);
    gateways.push(tg);
    expect(await gatewayDbAll(tg.gateway.outbox, 'SELECT seq, device, metric, value FROM outbox')).toEqual([{ seq: 1, device: 'd1', metric: 'temp', value: 21.5 }]);
  }, 60_000);
});
