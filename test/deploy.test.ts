// The example configs in deploy/ are valid configurations: an operator copies them as they are.
import { readFileSync } from 'node:fs';
import { cloudConfigSchema } from '../cloud/config.js';
import { gatewayConfigSchema } from '../edge/config.js';
import { loadConfig } from '../shared/config.js';

test.each([
  ['deploy/gateway.example.json', gatewayConfigSchema],
  ['deploy/cloud.example.json', cloudConfigSchema],
] as const)('%s loads with every key known and valid', (file, schema) => {
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const config = loadConfig(schema, { file, env: {} }) as Record<string, unknown>;
  // Every key the example spells out is the value loaded (nothing silently dropped or defaulted).
  expect(config).toMatchObject(raw);
});
