/**
 * `cloud.url` as the nodes of one cloud (edge/config.ts): one URL loads as before; a comma-separated
 * list from a flag, BRAID_CLOUD_URL or the file, or a JSON array in the file, loads as the
 * comma-separated list; every element is checked and a bad one is named by position and value,
 * under the key and where the value came from. The lint's plain-HTTP warning looks at every node.
 * The senders' own option checks (direct callers) apply the same rule.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { redactConfig } from '../../bin/commands/check-config.js';
import { GATEWAY_RULES, lintConfig } from '../../bin/commands/config-lint.js';
import { gatewayConfigSchema } from '../../edge/config.js';
import { Forwarder } from '../../edge/forwarder/index.js';
import { SpeedPusher } from '../../edge/speedpush/index.js';
import { loadConfig } from '../../shared/config.js';
import { nullLogger } from '../../shared/logger.js';
import { tempDir } from '../support/gateway.js';

const load = (o: { flag?: unknown; env?: string; file?: unknown }) => {
  const dir = tempDir('braid-cloud-url-');
  try {
    let file: string | undefined;
    if (o.file !== undefined) {
      file = join(dir.path, 'gateway.json');
      writeFileSync(file, JSON.stringify({ cloud: { url: o.file } }));
    }
    return loadConfig(gatewayConfigSchema, { file, env: o.env === undefined ? {} : { BRAID_CLOUD_URL: o.env }, flags: o.flag === undefined ? {} : { cloud: { url: o.flag } } }).cloud.url;
  } finally {
    dir.remove();
  }
};

test('one URL loads as it is given, null and the default stay null', () => {
  expect(load({ flag: 'https://cloud.example.com' })).toBe('https://cloud.example.com');
  expect(load({ flag: 'http://127.0.0.1:8000/' })).toBe('http://127.0.0.1:8000/');
  expect(load({ env: 'https://cloud.example.com:8443' })).toBe('https://cloud.example.com:8443');
  expect(load({ env: 'null' })).toBeNull();
  expect(load({})).toBeNull();
});

test('several URLs: comma-separated from a flag, the environment or the file, or a JSON array in the file; spaces around commas ignored', () => {
  const want = 'https://a.example.com,https://b.example.com:8443';
  expect(load({ flag: 'https://a.example.com,https://b.example.com:8443' })).toBe(want);
  expect(load({ env: 'https://a.example.com, https://b.example.com:8443' })).toBe(want);
  expect(load({ file: 'https://a.example.com ,https://b.example.com:8443' })).toBe(want);
  expect(load({ file: ['https://a.example.com', 'https://b.example.com:8443'] })).toBe(want);
  expect(load({ file: ['https://a.example.com'] })).toBe('https://a.example.com');
});

test('every element is checked: the error names the key, the bad elements and where the value came from', () => {
  const err = (o: Parameters<typeof load>[0]) => {
    try {
      load(o);
    } catch (e) {
      return e as { code: string; message: string };
    }
    throw new Error('loaded');
  };
  expect(err({ flag: 'https://a.example.com,b.example.com:8000' })).toMatchObject({
    code: 'BRAID_ERR_CONFIG_INVALID',
    message: 'config key "cloud.url": element 2 of 2 "b.example.com:8000" is not an http:// or https:// URL (from command-line flag)',
  });
  expect(err({ env: 'https://a.example.com,,not a url' }).message).toBe(
    'config key "cloud.url": element 2 of 3 is empty; element 3 of 3 "not a url" is not a URL (from environment BRAID_CLOUD_URL)');
  expect(err({ file: ['https://a.example.com', 'https://a.example.com/'] }).message).toBe(
    'config key "cloud.url": element 2 of 2 "https://a.example.com/" repeats element 1 (from config file)');
  expect(err({ file: [] }).message).toContain('config key "cloud.url": an empty list');
  expect(err({ flag: 'https://a.example.com,' }).message).toContain('element 2 of 2 is empty');
  // One URL, worded without positions; a scheme fetch cannot use is refused at start.
  expect(err({ flag: 'ftp://cloud.example.com' }).message).toBe('config key "cloud.url": "ftp://cloud.example.com" is not an http:// or https:// URL (from command-line flag)');
  expect(err({ flag: 'nonsense' }).message).toBe('config key "cloud.url": "nonsense" is not a URL (from command-line flag)');
  expect(err({ file: 42 }).message).toContain('config key "cloud.url"');
});

test('the plain-HTTP lint warns once per node that is http:// to another host than loopback', () => {
  const c = loadConfig(gatewayConfigSchema, { env: {}, flags: { cloud: { url: 'http://127.0.0.1:8000,http://10.0.0.2:8000,https://c.example.com,http://10.0.0.3', token: 't' } } });
  const findings = lintConfig(GATEWAY_RULES, c, { now: Date.now(), env: {}, knownEnv: new Set(), totalMemBytes: 8 * 2 ** 30 }).filter((f) => f.rule === 'cloud-plaintext');
  expect(findings.map((f) => [f.key, f.message])).toEqual([
    ['cloud.url', 'http://10.0.0.2:8000 is plain HTTP: the gateway token and readings are sent unencrypted (use https://)'],
    ['cloud.url', 'http://10.0.0.3 is plain HTTP: the gateway token and readings are sent unencrypted (use https://)'],
  ]);
});

test('the senders check a list given to them directly as the config does, naming the option', () => {
  const deps = { reader: null as never, writes: null as never, logger: nullLogger(), registry: new Registry(), gatewayId: 'gw-1' };
  expect(() => new Forwarder(deps, { url: 'http://a:1,mqtt://b:2' })).toThrow(expect.objectContaining({
    code: 'BRAID_ERR_CONFIG_INVALID', message: 'forwarder option url: element 2 of 2 "mqtt://b:2" is not an http:// or https:// URL',
  }));
  expect(() => new SpeedPusher({ ...deps, health: async () => ({}), connectedDevices: () => [] }, { url: 'http://a:1,http://a:1' })).toThrow(expect.objectContaining({
    code: 'BRAID_ERR_CONFIG_INVALID', message: 'speed push option url: element 2 of 2 "http://a:1" repeats element 1',
  }));
});

test('--check-config prints every node\'s password as [set]', () => {
  const c = loadConfig(gatewayConfigSchema, { env: {}, flags: { cloud: { url: 'https://gw:s3cret@a.example.com,https://b.example.com,https://gw:other@c.example.com' } } });
  const shown = redactConfig(gatewayConfigSchema, c as unknown as Record<string, unknown>) as { cloud: { url: string } };
  expect(shown.cloud.url).toBe('https://gw:%5Bset%5D@a.example.com/,https://b.example.com,https://gw:%5Bset%5D@c.example.com/');
});
