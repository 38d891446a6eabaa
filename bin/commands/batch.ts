/** `braid batch run [--full]`: run the batch job once (safe while `braid cloud` runs: batch.lock). */
import type { Command } from 'commander';
import { cloudConfigSchema } from '../../cloud/config.js';
import { intOption } from '../cli.js';
import { CLOUD_RULES } from './config-lint.js';
import { checkConfigOption, checkMode, configForRun, printCheckWithStore, runCheck } from './check-config.js';
import { configFrom, logWarnings, rootLogger } from './common.js';

interface BatchRunFlags {
  config?: string;
  dataDir?: string;
  cacheDir?: string;
  full?: boolean;
  memoryLimit?: string;
  threads?: number;
  logLevel?: string;
  json?: boolean;
  progress?: boolean;
  checkConfig?: string | boolean;
  store?: string;
}

/** The flags as config key paths (undefined where not given: the file or environment stands). */
function batchFlagValues(o: BatchRunFlags) {
  return { dataDir: o.dataDir, cacheDir: o.cacheDir, log: { level: o.logLevel }, batch: { memoryLimit: o.memoryLimit, threads: o.threads }, store: { url: o.store } };
}

/** Progress goes to stderr once a run has taken this long: short runs print only their result. */
const PROGRESS_AFTER_MS = 1_000;
/** Without a terminal, one progress line per this many ms. */
const PROGRESS_LINE_MS = 5_000;

export function registerBatchCommand(program: Command): void {
  const batch = program.command('batch').description('the batch layer: rebuild the views from the master dataset');
  batch.command('run')
    .description('rebuild the views once: the days with readings of newly covered epochs, or every day with --full')
    .option('--full', 'rebuild every day (the same rows as incremental runs; use after a fix in view code)')
    .option('--data-dir <dir>', 'the cloud data dir (default ./.braid/cloud)')
    .option('--config <file>', 'the cloud JSON config file (batch.*, dataDir and store.url are read)')
    .option('--store <url>', 'the batch state and view pointer: sqlite (default, <data-dir>/cloud.db) or a postgres:// URL (cluster mode); master/ and views/ stay in --data-dir')
    .option('--cache-dir <dir>', 'node-local DuckDB spill (<cache-dir>/duckdb; default <data-dir>/tmp/duckdb)')
    .option('--memory-limit <size>', 'DuckDB memory limit before it spills (see --cache-dir), like 2GB')
    .addOption(intOption('--threads <n>', 'DuckDB threads (0 = one per core)'))
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (default info)')
    .option('--json', 'print the result as JSON')
    .option('--no-progress', 'no progress line on stderr')
    .addOption(checkConfigOption())
    .action(async (o: BatchRunFlags) => {
      const load = () => configFrom(cloudConfigSchema, o.config, batchFlagValues(o));
      const check = checkMode(o.checkConfig, o.json);
      if (check) {
        await printCheckWithStore(runCheck(cloudConfigSchema, CLOUD_RULES, load, { file: o.config, flags: batchFlagValues(o) }), { ...check, command: 'batch run' }, () => load().store.url);
        return;
      }
      // The checks of --check-config before DuckDB opens anything: every problem in one message, exit 2.
      const { config, warnings } = configForRun(cloudConfigSchema, CLOUD_RULES, { file: o.config, flags: batchFlagValues(o) });
      const logger = rootLogger(config.log.level, 'braid-batch');
      logWarnings(logger, warnings);
      // Loaded here: --help needs none of DuckDB.
      const { startBatchRun, batchOptionsFrom, progressLine } = await import('../../cloud/batch/index.js');
      const tty = process.stderr.isTTY === true;
      let lastLine = 0;
      let shown = false;
      const { createSinks, closeSinks } = await import('../../cloud/sinks/index.js');
      const { Registry } = await import('prom-client');
      const { storeKind, openCloudStore } = await import('../../cloud/store/cloud-store.js');
      // PostgreSQL: its BatchStore and ViewPointer; sqlite: none given, the run opens cloud.db as before.
      const store = storeKind(config.store.url) === 'postgres' ? await openCloudStore(config.store.url, config.dataDir, { logger, poolMax: 4 }) : null;
      const sinks = createSinks(config, logger, new Registry());
      let run: Awaited<ReturnType<typeof startBatchRun>>;
      try {
        run = await startBatchRun(batchOptionsFrom(config), { full: o.full === true, trigger: 'cli' }, {
          logger,
          sinks,
          ...(store ? { store: { batch: store.batch, views: store.views } } : {}),
          onProgress: (p) => {
            if (o.progress === false || p.elapsedMs < PROGRESS_AFTER_MS) return;
            const now = Date.now();
            if (!tty && now - lastLine < PROGRESS_LINE_MS && p.phase === 'building') return;
            lastLine = now;
            shown = true;
            process.stderr.write(tty ? `\r\x1b[K${progressLine(p)}` : `${progressLine(p)}\n`);
          },
        });
      } catch (err) {
        await closeSinks(sinks, logger);
        await store?.close();
        throw err;
      }
      const abort = (signal: NodeJS.Signals) => run.abort(`aborted: ${signal}`);
      process.once('SIGINT', abort);
      process.once('SIGTERM', abort);
      try {
        const r = await run.done;
        if (shown && tty) process.stderr.write('\n');
        if (o.json) {
          process.stdout.write(`${JSON.stringify(r)}\n`);
          return;
        }
        const secs = ((r.endedAt - r.startedAt) / 1000).toFixed(1);
        const what = r.published ? `version ${r.version} published` : `nothing new, version ${r.version} stays live`;
        process.stdout.write(`batch run ${r.id} ok (${r.kind}): ${what}; ${r.days.length} days rebuilt, ${r.rowsRead} master rows read, ${r.readings} readings covered, ${secs}s\n`);
        for (const [name, s] of Object.entries(r.sinks)) {
          process.stdout.write(`  sink ${name}: ${s.outcome}${s.error ? ` (${s.error})` : ''}, ${s.days} days, ${s.points} points\n`);
        }
      } finally {
        await closeSinks(sinks, logger);
        await store?.close();
        if (shown && tty) process.stderr.write('\n');
        process.off('SIGINT', abort);
        process.off('SIGTERM', abort);
      }
    });
}
