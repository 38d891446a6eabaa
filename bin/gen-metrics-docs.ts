/**
 * Holds docs/operations.md's metric tables to the metrics a real gateway and a real cloud register:
 * every metric in a table row, with its type and its label names, and no row for a metric that
 * does not exist. The meanings stay hand-written (they say more than a metric's help text: when to
 * worry, what to do); what can drift (names, types, labels) is checked against the registries, by
 * test/docs.test.ts and by this script, which also prints a row to paste for each metric the page
 * lacks (after a merge that added metrics, say):
 *
 *   node --import tsx bin/gen-metrics-docs.ts     # prints the problems and rows to add; exit 1 if any
 *
 * It starts a gateway and a cloud (with an InfluxDB URL, so the sink's metrics exist) on loopback
 * ports in a temp dir, reads their registries, and stops them.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Registry } from 'prom-client';

export const OPERATIONS_DOC_PATH = join(dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'operations.md');

export interface MetricFamily {
  type: string;
  /** Label names the metric is declared with. */
  labels: string[];
  help?: string;
}

export interface MetricRow {
  names: string[];
  type: string;
  /** The labels cell of a `| metric | type | labels | meaning |` table; null in a table without one. */
  labels: string | null;
}

/** The rows of every table of `md` whose header starts `| metric | type |`: each row's names (code spans of its first cell), type and labels cell. */
export function metricRows(md: string): MetricRow[] {
  const rows: MetricRow[] = [];
  let columns: string[] | null = null;
  for (const line of md.split('\n')) {
    if (!line.startsWith('|')) { columns = null; continue; }
    const cells = line.slice(1, line.endsWith('|') ? -1 : undefined).split(/(?<!\\)\|/).map((c) => c.trim());
    if (!columns) { columns = cells; continue; }
    if (columns[0] !== 'metric' || columns[1] !== 'type' || /^-+$/.test(cells[0])) continue;
    rows.push({ names: [...cells[0].matchAll(/`([a-z][a-z0-9_]*)`/g)].map((m) => m[1]), type: cells[1], labels: columns[2] === 'labels' ? cells[2] : null });
  }
  return rows;
}

/**
 * What the page gets wrong about `families`: a metric in no table row, a row naming a metric that
 * does not exist, a type that differs, a declared label its labels cell does not name, a labels
 * cell for a metric with no label.
 */
export function metricDocProblems(families: Map<string, MetricFamily>, md: string): string[] {
  const problems: string[] = [];
  const rows = metricRows(md);
  const inRows = new Set(rows.flatMap((r) => r.names));
  for (const name of families.keys()) if (!inRows.has(name)) problems.push(`${name}: in no metric table`);
  for (const row of rows) {
    for (const name of row.names) {
      const f = families.get(name);
      if (!f) { problems.push(`${name}: in a metric table but registered by neither process`); continue; }
      if (row.type !== f.type) problems.push(`${name}: documented as ${row.type}, registered as ${f.type}`);
      if (row.labels === null) continue;
      const documented = [...row.labels.matchAll(/`([a-z_][a-z0-9_]*)`/g)].map((m) => m[1]);
      for (const l of f.labels) if (!documented.includes(l)) problems.push(`${name}: label ${l} not in its labels cell`);
      if (f.labels.length === 0 && row.labels !== '') problems.push(`${name}: has no label, its labels cell says "${row.labels}"`);
    }
  }
  return problems;
}

/** A row to paste into a `| metric | type | labels | meaning |` table, the help text as a first meaning. */
export function skeletonRow(name: string, f: MetricFamily): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|');
  return `| \`${name}\` | ${f.type} | ${f.labels.map((l) => `\`${l}\``).join(', ')} | ${cell(f.help ?? '')} |`;
}

/** Name -> type, labels and help of every metric in `registry`. */
export async function registryFamilies(registry: Registry, into = new Map<string, MetricFamily>()): Promise<Map<string, MetricFamily>> {
  const json = new Map((await registry.getMetricsAsJSON()).map((m) => [m.name, m]));
  for (const m of registry.getMetricsAsArray() as unknown as Array<{ name: string; labelNames?: string[] }>) {
    const j = json.get(m.name);
    into.set(m.name, { type: String(j?.type ?? 'untyped'), labels: [...(m.labelNames ?? [])], help: j?.help });
  }
  return into;
}

/** Start a gateway and a cloud in a temp dir, read both registries, stop them. */
export async function liveFamilies(): Promise<Map<string, MetricFamily>> {
  const [{ loadConfig }, { nullLogger }, { gatewayConfigSchema }, { Gateway }, { cloudConfigSchema }, { createCloud }] = await Promise.all([
    import('../shared/config.js'), import('../shared/logger.js'), import('../edge/config.js'), import('../edge/gateway.js'),
    import('../cloud/config.js'), import('../cloud/app.js'),
  ]);
  const dir = mkdtempSync(join(tmpdir(), 'braid-metrics-docs-'));
  const loopback = { host: '127.0.0.1', port: 0 };
  const gateway = new Gateway(loadConfig(gatewayConfigSchema, {
    env: {}, flags: { id: 'gw-docs', dataDir: join(dir, 'gateway'), log: { level: 'silent' }, mqtt: loopback, http: loopback, speed: { pruneCron: '0 0 1 1 *' } },
  }), nullLogger());
  const cloud = createCloud(loadConfig(cloudConfigSchema, {
    env: {}, flags: { dataDir: join(dir, 'cloud'), log: { level: 'silent' }, http: loopback, batch: { cron: null }, influx: { url: 'http://127.0.0.1:9' } },
  }));
  try {
    await gateway.start();
    await cloud.server.start();
    return await registryFamilies(cloud.server.registry, await registryFamilies(gateway.registry));
  } finally {
    await cloud.server.close();
    await gateway.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const families = await liveFamilies();
  const problems = metricDocProblems(families, readFileSync(OPERATIONS_DOC_PATH, 'utf8'));
  if (problems.length === 0) {
    process.stdout.write(`${OPERATIONS_DOC_PATH}: all ${families.size} metrics documented with their types and labels\n`);
    return;
  }
  process.stdout.write(`${problems.map((p) => `- ${p}`).join('\n')}\n`);
  const missing = [...families].filter(([name]) => problems.includes(`${name}: in no metric table`));
  if (missing.length > 0) {
    process.stdout.write(`\nRows to add to the tables of docs/operations.md (write the meaning from the help text):\n\n${missing.map(([n, f]) => skeletonRow(n, f)).join('\n')}\n`);
  }
  process.exitCode = 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
  // prom-client's default metrics keep an event-loop monitor; nothing else is left running.
  process.exit();
}
