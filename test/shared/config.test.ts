// shared/config.ts: defaults < file < BRAID_* environment < flags; errors name the key and its source.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cloudConfigSchema } from '../../cloud/config.js';
import { gatewayConfigSchema } from '../../edge/config.js';
import { envName, loadConfig } from '../../shared/config.js';
import { tempDir } from '../support/gateway.js';

test('environment names follow the key path in upper snake case', () => {
  expect(envName(['mqtt', 'port'])).toBe('BRAID_MQTT_PORT');
  expect(envName(['outbox', 'maxBytes'])).toBe('BRAID_OUTBOX_MAX_BYTES');
});

test('a flag beats the environment, which beats the file, which beats the default', () => {
  const dir = tempDir();
  try {
    const file = join(dir.path, 'c.json');
    writeFileSync(file, JSON.stringify({ mqtt: { port: 1001, wsPort: 1002 }, http: { port: 1003 } }));
    const c = loadConfig(gatewayConfigSchema, { file, env: { BRAID_MQTT_PORT: '2001', BRAID_MQTT_WS_PORT: '2002' }, flags: { mqtt: { port: 3001 } } });
    expect([c.mqtt.port, c.mqtt.wsPort, c.http.port, c.mqtt.maxPacketBytes]).toEqual([3001, 2002, 1003, 256 * 1024]);
  } finally { dir.remove(); }
});

test('BRAID_X=null turns off a nullable key, and is refused for another, naming it', () => {
  expect(loadConfig(cloudConfigSchema, { env: { BRAID_BATCH_CRON: 'null' } }).batch.cron).toBeNull();
  expect(() => loadConfig(cloudConfigSchema, { env: { BRAID_HTTP_PORT: 'null' } }))
    .toThrow(expect.objectContaining({ code: 'BRAID_ERR_CONFIG_INVALID', message: expect.stringContaining('"http.port"') }));
});

test('an unknown key or a bad value is a ConfigInvalidError naming the key and where it came from', () => {
  expect(() => loadConfig(gatewayConfigSchema, { flags: { mqtt: { bogus: 1 } } }))
    .toThrow(expect.objectContaining({ code: 'BRAID_ERR_CONFIG_INVALID', message: expect.stringMatching(/"mqtt\.bogus": unknown key \(from command-line flag\)/) }));
  expect(() => loadConfig(gatewayConfigSchema, { env: { BRAID_OUTBOX_MAX_BYTES: 'lots' } }))
    .toThrow(expect.objectContaining({ message: expect.stringMatching(/"outbox\.maxBytes".*environment BRAID_OUTBOX_MAX_BYTES/) }));
});

test('every bad key is named in one message, unknown keys included; one bad key reads as before', () => {
  let err: { code?: string; message?: string } = {};
  try {
    loadConfig(gatewayConfigSchema, { env: { BRAID_MQTT_PORT: 'abc', BRAID_OUTBOX_MAX_BYTES: 'lots' }, flags: { http: { bogus: 1, other: 2 } } });
  } catch (e) { err = e as typeof err; }
  expect(err.code).toBe('BRAID_ERR_CONFIG_INVALID');
  expect(err.message).toMatch(/^4 config errors: /);
  for (const key of ['mqtt.port', 'outbox.maxBytes', 'http.bogus', 'http.other']) expect(err.message).toContain(`"${key}"`);
  expect(() => loadConfig(gatewayConfigSchema, { env: { BRAID_MQTT_PORT: 'abc' } }))
    .toThrow(expect.objectContaining({ message: expect.stringMatching(/^config key "mqtt\.port": .*\(from environment BRAID_MQTT_PORT\)$/) }));
});
