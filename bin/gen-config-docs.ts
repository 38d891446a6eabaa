/**
 * Writes docs/configuration.md from the config schemas (edge/config.ts, cloud/config.ts: each key's
 * description, type and default) and the lint rules (bin/commands/config-lint.ts), so the page
 * cannot drift from the code: test/deploy/config-docs.test.ts fails when the committed page differs.
 *
 *   node --import tsx bin/gen-config-docs.ts          # rewrite docs/configuration.md
 *   node --import tsx bin/gen-config-docs.ts --check  # exit 1 if it is stale
 *
 * The JSON Schema of zod (z.toJSONSchema) gives types, bounds and defaults, so nothing is restated.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { z } from 'zod';
import { cloudConfigSchema } from '../cloud/config.js';
import { gatewayConfigSchema } from '../edge/config.js';
import { envName } from '../shared/config.js';
import { CLOUD_RULES, GATEWAY_RULES, type Rule } from './commands/config-lint.js';

export const CONFIG_DOCS_PATH = join(dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'configuration.md');

interface JsonNode {
  type?: string | string[];
  anyOf?: JsonNode[];
  enum?: unknown[];
  format?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  default?: unknown;
  description?: string;
  docDefault?: string;
  /** The type as the page says it, where the JSON Schema's is no help (a union with a transform). */
  docType?: string;
  secret?: boolean;
  properties?: Record<string, JsonNode>;
}

export interface KeyDoc {
  key: string;
  env: string;
  type: string;
  default: string;
  description: string;
  secret: boolean;
}

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function typeText(n: JsonNode): string {
  if (n.docType) return n.docType;
  const alternatives = n.anyOf ?? (Array.isArray(n.type) ? n.type.map((type) => ({ ...n, type })) : [n]);
  const nullable = alternatives.some((a) => a.type === 'null');
  const parts = alternatives.filter((a) => a.type !== 'null').map((a) => {
    if (a.enum) return a.enum.map((v) => JSON.stringify(v)).join(' | ');
    if (a.format === 'uri') return 'URL';
    if (a.type === 'integer' || a.type === 'number') {
      const max = a.maximum !== undefined && a.maximum < Number.MAX_SAFE_INTEGER ? a.maximum : undefined;
      if (a.minimum !== undefined && max !== undefined) return `${a.type} ${a.minimum}-${max}`;
      if (a.exclusiveMinimum !== undefined) return `${a.type} > ${a.exclusiveMinimum}`;
      if (a.minimum !== undefined) return `${a.type} >= ${a.minimum}`;
    }
    return String(a.type);
  });
  return `${parts.join(' or ')}${nullable ? ' or null' : ''}`;
}

const BINARY = [[2 ** 30, 'GiB'], [2 ** 20, 'MiB'], [2 ** 10, 'KiB']] as const;
const DURATION = [[86_400_000, 'd'], [3_600_000, 'h'], [60_000, 'min'], [1000, 's']] as const;

/** A default as JSON, with its unit spelled out where the key's name carries one (maxBytes: 1 GiB). */
function defaultText(key: string, n: JsonNode): string {
  if (n.docDefault) return `\`${n.docDefault}\``;
  if (n.default === undefined) return '(none)';
  const text = `\`${JSON.stringify(n.default)}\``;
  if (typeof n.default !== 'number' || n.default === 0) return text;
  const table = /Bytes$/.test(key) ? BINARY : /Ms$/.test(key) ? DURATION : null;
  const unit = table?.find(([size]) => n.default as number % size === 0);
  return unit ? `${text} (${(n.default as number) / unit[0]} ${unit[1]})` : text;
}

/** Every leaf key of a config schema with what the docs say about it. */
export function keyDocs(schema: z.ZodObject): KeyDoc[] {
  const root = z.toJSONSchema(schema, { io: 'input' }) as JsonNode;
  const walk = (n: JsonNode, path: string[]): KeyDoc[] => {
    if (n.properties) return Object.entries(n.properties).flatMap(([k, v]) => walk(v, [...path, k]));
    const key = path.join('.');
    return [{
      key,
      env: envName(path),
      type: typeText(n),
      default: defaultText(key, n),
      description: n.description ?? '',
      secret: n.secret === true,
    }];
  };
  return walk(root, []);
}

/** The description of each top-level group (`mqtt`: "The MQTT broker devices connect to."). */
function groupDocs(schema: z.ZodObject): Map<string, string> {
  const root = z.toJSONSchema(schema, { io: 'input' }) as JsonNode;
  return new Map(Object.entries(root.properties ?? {}).filter(([, v]) => v.properties).map(([k, v]) => [k, v.description ?? '']));
}

function keyTables(schema: z.ZodObject): string {
  const groups = groupDocs(schema);
  const keys = keyDocs(schema);
  const out: string[] = [];
  const table = (rows: KeyDoc[]) => {
    out.push('| key | type | default | environment | meaning |', '|---|---|---|---|---|');
    for (const k of rows) {
      const meaning = `${k.description}${k.secret ? ' *Secret: `--check-config` prints `[set]`.*' : ''}`;
      out.push(`| \`${k.key}\` | ${cell(k.type)} | ${cell(k.default)} | \`${k.env}\` | ${cell(meaning)} |`);
    }
    out.push('');
  };
  table(keys.filter((k) => !k.key.includes('.')));
  for (const [group, doc] of groups) {
    out.push(`### \`${group}\``, '', doc, '');
    table(keys.filter((k) => k.key.startsWith(`${group}.`)));
  }
  return out.join('\n');
}

function ruleTable(rules: ReadonlyArray<Rule<never>>): string {
  return ['| rule | level | what it catches |', '|---|---|---|', ...rules.map((r) => `| \`${r.id}\` | ${r.level} | ${cell(r.doc)} |`), ''].join('\n');
}

export function renderConfigDocs(): string {
  return `<!-- Generated by bin/gen-config-docs.ts from edge/config.ts, cloud/config.ts and bin/commands/config-lint.ts.
     Do not edit: change the schema descriptions and run \`node --import tsx bin/gen-config-docs.ts\`. -->
# Configuration

Every long-running command (\`braid gateway\`, \`braid cloud\`, \`braid batch run\`) reads its
configuration from, in rising precedence:

1. the defaults below;
2. \`--config FILE\`, a JSON object with any subset of the keys (an unknown key is an error, so a typo
   never goes unnoticed): see [\`deploy/gateway.example.json\`](../deploy/gateway.example.json) and
   [\`deploy/cloud.example.json\`](../deploy/cloud.example.json), which spell out every key;
3. \`BRAID_*\` environment variables: the key path in upper snake case (\`mqtt.port\` is
   \`BRAID_MQTT_PORT\`, \`outbox.maxBytes\` is \`BRAID_OUTBOX_MAX_BYTES\`); the value \`null\` turns off a
   key that may be null (\`BRAID_BATCH_CRON=null\`); numbers and \`true\`/\`false\` are parsed;
4. flags (\`--mqtt-port 1884\`; \`braid <command> --help\` lists them).

A bad value stops the command with exit code 2 and a message naming the key and where the value
came from, e.g. \`config key "mqtt.port": Too big: expected number to be <=65535 (from environment
BRAID_MQTT_PORT)\`. Secrets (\`cloud.token\`, \`influx.token\`, \`influx.password\`) are best kept out of
the file, in the environment (systemd \`EnvironmentFile=\`, compose \`environment:\`).

## Checking a configuration: \`--check-config\`

\`\`\`sh
braid gateway --config /etc/braid/gateway.json --check-config
braid cloud --config /etc/braid/cloud.json --check-config json
braid batch run --config /etc/braid/cloud.json --check-config --json
\`\`\`

loads the configuration exactly as the command would (same file, environment and flags), checks
it, and exits without starting a server or touching the data dir:

- stdout: the effective configuration as JSON, secrets shown as \`[set]\` (and a URL's password too),
  so \`... --check-config > effective.json\` keeps a record of what ran;
- stderr: where the values came from (file, \`BRAID_*\` variables, flags), one line per finding
  (\`error [port-clash] http.port: port 8080 is also mqtt.wsPort\`), and \`config OK\`;
- \`--check-config json\` (or \`--json\` on \`batch run\`) prints one object instead:
  \`{"ok", "config", "findings": [{"level", "rule", "key", "message"}], "sources": {"file", "env", "flags"}, "error"?}\`;
- exit code 0 when there is no error (warnings allowed), 2 for a bad value or a lint error.

The systemd units in \`deploy/\` run it as \`ExecStartPre=\`, so a broken config fails the unit with
the reason in \`journalctl -u braid-gateway\` instead of a restart loop.

Besides each key's own type and range, the check catches:

### Gateway lint rules

${ruleTable(GATEWAY_RULES as ReadonlyArray<Rule<never>>)}
### Cloud lint rules (\`braid cloud\` and \`braid batch run\`)

${ruleTable(CLOUD_RULES as ReadonlyArray<Rule<never>>)}
## Gateway keys (\`braid gateway\`, \`braid device ...\`)

${keyTables(gatewayConfigSchema)}
## Cloud keys (\`braid cloud\`, \`braid cloud gateway|key ...\`, \`braid batch run\`)

${keyTables(cloudConfigSchema)}`;
}

async function main(argv: string[]): Promise<void> {
  const text = renderConfigDocs();
  if (argv.includes('--check')) {
    let current = '';
    try { current = readFileSync(CONFIG_DOCS_PATH, 'utf8'); } catch { /* missing counts as stale */ }
    if (current !== text) {
      process.stderr.write(`${CONFIG_DOCS_PATH} is stale: run node --import tsx bin/gen-config-docs.ts\n`);
      process.exitCode = 1;
    }
    return;
  }
  writeFileSync(CONFIG_DOCS_PATH, text);
  process.stdout.write(`wrote ${CONFIG_DOCS_PATH}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main(process.argv.slice(2));
