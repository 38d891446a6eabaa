/**
 * No JSON log line has a key twice: a pino child re-binding a key its parent bound writes it twice
 * (`"component":"forwarder","component":"forwarder"`), which JSON.parse hides (the last wins) and
 * log shippers treat differently. Real processes: a cloud, a gateway forwarding to it, and a batch
 * run with an InfluxDB sink that cannot be reached, all at debug level; every line is tokenized.
 */
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { MqttClient } from 'mqtt';
import { addDeviceCli, killAllChildGateways, spawnGateway } from '../support/child-gateway.js';
import { addGatewayToken, killAllChildClouds, queryCloudDb, spawnCloud } from '../support/cloud.js';
import { connectDevice, endClient, eventually, publish, tempDir } from '../support/gateway.js';

const ROOT = resolve(import.meta.dirname, '../..');

/**
 * The keys that occur more than once in one object of a JSON text, with their object's path.
 * A small tokenizer: strings (with escapes), and in an object, a string followed by ':' is a key.
 */
export function duplicateKeys(json: string): string[] {
  const stack: Array<{ kind: 'object' | 'array'; keys: Set<string> }> = [];
  const dups: string[] = [];
  let i = 0;
  let lastString: string | null = null;
  while (i < json.length) {
    const ch = json[i];
    if (ch === '"') {
      let j = i + 1;
      while (j < json.length && json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      lastString = JSON.parse(json.slice(i, j + 1)) as string;
      i = j + 1;
      continue;
    }
    if (ch === ':' && lastString !== null && stack.at(-1)?.kind === 'object') {
      const top = stack.at(-1)!;
      if (top.keys.has(lastString)) dups.push(lastString);
      top.keys.add(lastString);
    } else if (ch === '{') stack.push({ kind: 'object', keys: new Set() });
    else if (ch === '[') stack.push({ kind: 'array', keys: new Set() });
    else if (ch === '}' || ch === ']') stack.pop();
    if (!/\s/.test(ch)) lastString = null;
    i += 1;
  }
  return dups;
}

let clients: MqttClient[] = [];
const dirs: Array<{ remove: () => void }> = [];

afterEach(async () => {
  for (const c of clients) await endClient(c);
  clients = [];
  await killAllChildGateways();
  await killAllChildClouds();
  for (const d of dirs.splice(0)) d.remove();
});

test('the tokenizer finds a repeated key that JSON.parse would hide, at any depth', () => {
  expect(duplicateKeys('{"a":1,"component":"x","component":"x"}')).toEqual(['component']);
  expect(duplicateKeys('{"a":{"b":1,"b":2},"c":[{"d":1},{"d":2}],"s":"x\\":y","x\\":y":1}')).toEqual(['b']);
  expect(duplicateKeys('{"msg":"a:b","v":["k","k"]}')).toEqual([]);
});

test('no log line of a gateway, a cloud or a batch run repeats a key', async () => {
  const d = tempDir('braid-logkeys-');
  dirs.push(d);
  const cloudDir = join(d.path, 'cloud');
  const gwDir = join(d.path, 'gw');
  mkdirSync(cloudDir);
  const token = await addGatewayToken(cloudDir, 'gw-child');
  const cloud = await spawnCloud(cloudDir, { args: ['--log-level', 'debug'], env: { BRAID_INGEST_SEAL_MAX_AGE_MS: '200', BRAID_BATCH_CRON: 'null' } });
  await addDeviceCli(gwDir, 'd1', 's3cret-d1');
  const gw = await spawnGateway({
    dataDir: gwDir,
    args: ['--log-level', 'debug', '--cloud-url', cloud.url],
    env: { BRAID_CLOUD_TOKEN: token, BRAID_OUTBOX_EPOCH_IDLE_MS: '200', BRAID_CLOUD_LINGER_MS: '0' },
  });
  const c = await connectDevice(gw.mqttUrl, 'd1', 's3cret-d1');
  clients.push(c);
  for (let k = 0; k < 5; k++) await publish(c, 'devices/d1/telemetry', JSON.stringify({ ts: Date.now() - k * 60_000, temp: 20 + k }), 1);
  await publish(c, 'devices/d1/telemetry', 'not json', 1); // a quarantined payload logs too
  const health = async () => (await (await fetch(`${gw.httpUrl}/api/v1/health`)).json()) as { outbox: { pending: number } };
  await eventually(async () => (await health()).outbox.pending === 0, 20_000, 100);
  // The batch below reads the master dataset: the sink writes (and logs) only once the readings are
  // sealed there, which trails the gateway's acknowledged send by up to the seal age.
  const sealed = async () => (await queryCloudDb<{ n: number }>(cloudDir, 'SELECT COALESCE(SUM(to_seq - from_seq + 1), 0) AS n FROM sealed'))[0].n;
  await eventually(async () => (await sealed()) >= 5, 20_000, 100);

  // A batch run whose InfluxDB sink fails: the sink's lines.
  const batch = await new Promise<string>((res) => {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BRAID_') && k !== 'NODE_OPTIONS') env[k] = v;
    Object.assign(env, { BRAID_INFLUX_URL: 'http://127.0.0.1:9', BRAID_INFLUX_API: 'v1', BRAID_INFLUX_DATABASE: 'braid' });
    const p = spawn(process.execPath, [join(ROOT, 'bin/braid.js'), 'batch', 'run', '--data-dir', cloudDir, '--log-level', 'debug', '--no-progress'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout!.setEncoding('utf8').on('data', (s: string) => { out += s; });
    p.stderr!.setEncoding('utf8').on('data', (s: string) => { out += s; });
    const t = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.once('close', () => { clearTimeout(t); res(out); });
  });

  await gw.stop('SIGTERM');
  await cloud.stop('SIGTERM');
  const lines = [gw.output(), cloud.output(), batch].join('\n').split('\n').filter((l) => l.startsWith('{'));
  // Enough lines to mean something: the forwarder's, the cloud's ingest and the sink's were written.
  expect(lines.length).toBeGreaterThan(20);
  expect(lines.some((l) => /"component":"forwarder"/.test(l))).toBe(true);
  expect(lines.some((l) => /"sink":"influx"/.test(l))).toBe(true);
  const bad = lines.map((l) => ({ line: l.slice(0, 300), dups: duplicateKeys(l) })).filter((x) => x.dups.length > 0);
  expect(bad).toEqual([]);
}, 120_000);
