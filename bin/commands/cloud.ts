/** `braid cloud` and `braid cloud gateway add|list|remove|rotate`, `braid cloud key add|list|remove`. */
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import type { Command } from 'commander';
import { cloudConfigSchema } from '../../cloud/config.js';
import { intOption } from '../cli.js';
import { CLOUD_RULES } from './config-lint.js';
import { checkConfigOption, checkMode, configForRun, printCheckWithStore, runCheck } from './check-config.js';
import { configFrom, logWarnings, onShutdown, rootLogger } from './common.js';
import { configureCloudHeap } from './heap.js';

interface CloudFlags {
  config?: string;
  dataDir?: string;
  cacheDir?: string;
  httpPort?: number;
  logLevel?: string;
  store?: string;
}

/** The flags as config key paths (undefined where not given: the file or environment stands). */
function cloudFlagValues(o: CloudFlags) {
  return { dataDir: o.dataDir, cacheDir: o.cacheDir, log: { level: o.logLevel }, http: { port: o.httpPort }, store: { url: o.store } };
}

function cloudConfig(o: CloudFlags) {
  return configFrom(cloudConfigSchema, o.config, cloudFlagValues(o));
}

/**
 * The credential store for one admin command, then closed: the configured data dir's cloud.db, or
 * with store.url (--store) a PostgreSQL store, migrated first as `braid cloud` would.
 */
async function withCredentials<T>(o: CloudFlags, fn: (store: import('../../cloud/store/credential-store.js').CredentialStore) => Promise<T>): Promise<T> {
  const { dataDir, store: { url } } = cloudConfig(o);
  const { storeKind, openCloudStore } = await import('../../cloud/store/cloud-store.js');
  if (storeKind(url) === 'postgres') {
    const store = await openCloudStore(url, dataDir, { poolMax: 2 });
    try {
      return await fn(store.credentials);
    } finally {
      await store.close();
    }
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o750 }); // as braid cloud makes it (cloud/server.ts)
  const { openCloudDb } = await import('../../cloud/store/schema.js');
  const { SqliteCredentialStore } = await import('../../cloud/store/sqlite-credentials.js');
  const db = await openCloudDb(join(dataDir, 'cloud.db'));
  try {
    return await fn(new SqliteCredentialStore(db));
  } finally {
    await db.close();
  }
}

export const STORE_FLAG_HELP = 'the cloud store: sqlite (default, <data-dir>/cloud.db) or a postgres:// URL (cluster mode)';

const withDir = (c: Command) => c
  .option('--data-dir <dir>', 'the cloud data dir (default ./.braid/cloud)')
  .option('--store <url>', STORE_FLAG_HELP)
  .option('--config <file>', 'the cloud config file (for its dataDir)');

/**
 * A subcommand's flags with its parents': commander hands `--data-dir` to `braid cloud` (which has
 * one too) even when it follows `gateway add G`.
 */
function flags<T = object>(cmd: Command): CloudFlags & T {
  return cmd.optsWithGlobals() as CloudFlags & T;
}

const out = (s: string) => process.stdout.write(`${s}\n`);
const when = (ms: number) => new Date(ms).toISOString();

export function registerCloudCommands(program: Command): void {
  const cloud = program.command('cloud')
    .description('run the cloud: ingest into the master dataset, REST API; or manage its gateways and API keys')
    .option('--config <file>', 'JSON config file (keys in cloud/config.ts)')
    .option('--data-dir <dir>', 'holds cloud.db, staging/, master/, views/ (default ./.braid/cloud); in cluster mode the shared storage')
    .option('--cache-dir <dir>', 'node-local compacted views and DuckDB spill (default in the data dir); in cluster mode a local disk')
    .addOption(intOption('--http-port <n>', 'REST API and ingest port (default 8000; 0 picks a free one)'))
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (default info)')
    .option('--store <url>', STORE_FLAG_HELP)
    .addOption(checkConfigOption())
    .action(async (o: CloudFlags & { checkConfig?: string | boolean }) => {
      const check = checkMode(o.checkConfig);
      if (check) {
        const result = runCheck(cloudConfigSchema, CLOUD_RULES, () => cloudConfig(o), { file: o.config, flags: cloudFlagValues(o) });
        await printCheckWithStore(result, { ...check, command: 'cloud' }, () => cloudConfig(o).store.url);
        return;
      }
      // The checks of --check-config before anything is opened: every problem in one message, exit 2.
      const { config, warnings } = configForRun(cloudConfigSchema, CLOUD_RULES, { file: o.config, flags: cloudFlagValues(o) });
      const logger = rootLogger(config.log.level, 'braid-cloud');
      logWarnings(logger, warnings);
      // Queries' rows stay in the young generation (heap.ts; docs/benchmarks.md, Query, session 21).
      configureCloudHeap();
      // Loaded here: `braid cloud key ...` and --help need none of fastify, Arrow or Parquet.
      const { createCloud } = await import('../../cloud/app.js');
      const { server } = createCloud(config, { logger });
      onShutdown(logger, () => server.close());
      const a = await server.start();
      out(`cloud ready: ${a.url}`);
    });

  const gateway = cloud.command('gateway').description('manage the gateways allowed to send to ingest (works while the cloud runs)');
  withDir(gateway.command('add <gatewayId>').description('register a gateway; prints its token as the last line'))
    .action(async (id: string, _o: CloudFlags, cmd: Command) => {
      const o = flags(cmd);
      const { addGateway } = await import('../../cloud/store/credentials.js');
      const token = await withCredentials(o, (store) => addGateway(store, id));
      out(`gateway ${id} registered; start it with --cloud-url <this cloud> --token <token>. Its token (shown once):`);
      out(token);
    });
  withDir(gateway.command('rotate <gatewayId>').description('give a gateway a new token (the old one stops working within seconds); prints it as the last line'))
    .action(async (id: string, _o: CloudFlags, cmd: Command) => {
      const o = flags(cmd);
      const { rotateGateway } = await import('../../cloud/store/credentials.js');
      const token = await withCredentials(o, (store) => rotateGateway(store, id));
      out(`gateway ${id} has a new token (shown once):`);
      out(token);
    });
  withDir(gateway.command('list').description('list registered gateways').option('--json', 'print JSON'))
    .action(async (_o: unknown, cmd: Command) => {
      const o = flags<{ json?: boolean }>(cmd);
      const { listGateways } = await import('../../cloud/store/credentials.js');
      const list = await withCredentials(o, (store) => listGateways(store));
      if (o.json) out(JSON.stringify(list));
      else for (const g of list) out(`${g.id}\tcreated ${when(g.createdAt)}`);
    });
  withDir(gateway.command('remove <gatewayId>').description('revoke a gateway\'s token (its data stays)'))
    .action(async (id: string, _o: CloudFlags, cmd: Command) => {
      const o = flags(cmd);
      const { removeGateway } = await import('../../cloud/store/credentials.js');
      await withCredentials(o, (store) => removeGateway(store, id));
      out(`gateway ${id} removed`);
    });

  const key = cloud.command('key').description('manage REST API keys (works while the cloud runs)');
  withDir(key.command('add <name>').description('issue an API key; prints it as the last line')
    .requiredOption('--role <role>', 'read (queries) or admin (also gateways, batch)'))
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const o = flags<{ role: string }>(cmd);
      const { addApiKey } = await import('../../cloud/store/credentials.js');
      const k = await withCredentials(o, (store) => addApiKey(store, name, o.role));
      out(`API key ${name} (role ${o.role}) issued; use it as Authorization: Bearer <key>. The key (shown once):`);
      out(k);
    });
  withDir(key.command('list').description('list API keys (names and roles; keys are not stored)').option('--json', 'print JSON'))
    .action(async (_o: unknown, cmd: Command) => {
      const o = flags<{ json?: boolean }>(cmd);
      const { listApiKeys } = await import('../../cloud/store/credentials.js');
      const list = await withCredentials(o, (store) => listApiKeys(store));
      if (o.json) out(JSON.stringify(list));
      else for (const k of list) out(`${k.name}\t${k.role}\tcreated ${when(k.createdAt)}`);
    });
  withDir(key.command('remove <name>').description('revoke an API key (stops working within seconds)'))
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const o = flags(cmd);
      const { removeApiKey } = await import('../../cloud/store/credentials.js');
      await withCredentials(o, (store) => removeApiKey(store, name));
      out(`API key ${name} removed`);
    });
}
