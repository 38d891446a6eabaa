/**
 * Every config key is documented once, in its schema, and docs/configuration.md and the example
 * configs in deploy/ follow from it: the page is generated (and must equal what the generator
 * writes now), the examples spell out every key, load as they are, and pass the lint.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cloudConfigSchema } from '../../cloud/config.js';
import { gatewayConfigSchema } from '../../edge/config.js';
import { leafPaths, loadConfig } from '../../shared/config.js';
import { CLOUD_RULES, GATEWAY_RULES } from '../../bin/commands/config-lint.js';
import { runCheck } from '../../bin/commands/check-config.js';
import { CONFIG_DOCS_PATH, keyDocs, renderConfigDocs } from '../../bin/gen-config-docs.js';
import { envFile, jsonLeafPaths, readJson, readText } from './support.js';

const schemas = [
  ['gateway', gatewayConfigSchema, 'deploy/gateway.example.json', GATEWAY_RULES],
  ['cloud', cloudConfigSchema, 'deploy/cloud.example.json', CLOUD_RULES],
] as const;

test('docs/configuration.md is what bin/gen-config-docs.ts generates (run it after changing a schema)', () => {
  expect(readText('docs/configuration.md')).toBe(renderConfigDocs());
  expect(CONFIG_DOCS_PATH.endsWith(join('docs', 'configuration.md'))).toBe(true);
});

test.each(schemas)('every %s key has a description, a type, a default and an environment name in the docs', (_name, schema) => {
  const docs = keyDocs(schema);
  expect(docs.map((d) => d.key).sort()).toEqual(leafPaths(schema).map((l) => l.path.join('.')).sort());
  for (const d of docs) {
    expect({ key: d.key, description: d.description.length > 10 }).toEqual({ key: d.key, description: true });
    expect(d.type).not.toBe('undefined');
    expect(d.default).not.toBe('(none)');
    expect(d.env).toMatch(/^BRAID_[A-Z0-9_]+$/);
  }
  const page = readText('docs/configuration.md');
  for (const d of docs) expect(page).toContain(`| \`${d.key}\` |`);
});

test('the gateway id default is documented as gw-<hostname>, not the build machine\'s name', () => {
  expect(keyDocs(gatewayConfigSchema).find((d) => d.key === 'id')?.default).toBe('`gw-<hostname>`');
});

test('secrets are marked in the schema, so --check-config redacts them', () => {
  const secret = (s: typeof gatewayConfigSchema | typeof cloudConfigSchema) => keyDocs(s).filter((d) => d.secret).map((d) => d.key);
  expect(secret(gatewayConfigSchema)).toEqual(['cloud.token']);
  expect(secret(cloudConfigSchema)).toEqual(['influx.token', 'influx.password']);
});

describe.each(schemas)('the %s example config', (_name, schema, file, rules) => {
  const raw = readJson(file);

  it('spells out every key of the schema, and no other', () => {
    expect(jsonLeafPaths(raw).sort()).toEqual(leafPaths(schema).map((l) => l.path.join('.')).sort());
  });

  it('loads as it is: every value it spells out is the value loaded', () => {
    const config = loadConfig(schema, { file: join(process.cwd(), file), env: {} }) as Record<string, unknown>;
    expect(config).toEqual(raw);
  });

  it('passes the lint with its secrets file (deploy/<name>.env.example) filled in, as the systemd unit reads it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'braid-example-'));
    try {
      const secrets = envFile(`deploy/${_name}.env.example`);
      expect(Object.keys(secrets).length).toBeGreaterThan(0);
      // dataDir is /var/lib/braid/... (the unit's StateDirectory); here a temp dir stands in for it.
      const env = { ...Object.fromEntries(Object.keys(secrets).map((k) => [k, 'filled-in'])), BRAID_DATA_DIR: dir };
      const load = () => loadConfig(schema, { file, env }) as never;
      const r = runCheck(schema, rules as never, load, { file, flags: {}, env });
      expect(r.findings).toEqual([]);
      expect(r.ok).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
