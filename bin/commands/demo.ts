/**
 * `braid demo` (what `npm start` runs): a cloud and two gateways with a simulated fleet on this
 * machine (bin/demo), and where to look. `Console: <url>` and `API key: <key>` are printed on
 * lines of their own: users and tests grep them.
 */
import { Option, type Command } from 'commander';
import { BraidError } from '../../shared/errors.js';
import { intOption } from '../cli.js';
import { rootLogger } from './common.js';

interface DemoFlags {
  dataDir: string;
  fresh?: boolean;
  devices: number;
  rate: number;
  httpPort: number;
  mqttPort: number;
  firstBatchAfter: number;
  batchCron: string;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
}

export function registerDemoCommand(program: Command): void {
  program.command('demo')
    .description('run the whole system on this machine: a cloud, two gateways, a simulated fleet, the console')
    .option('--data-dir <dir>', 'demo data dir, kept between runs', './.braid-demo')
    .option('--fresh', 'wipe the demo data dir first')
    .addOption(intOption('--devices <n>', 'simulated devices, split over the two gateways (at least 8)').default(14))
    .addOption(new Option('--rate <perSecond>', 'messages per second per device').default(1).argParser((v: string) => {
      const n = Number(v);
      if (!(n > 0 && n <= 100)) throw Object.assign(new Error(`--rate must be a number above 0 and at most 100, got "${v}"`), { code: 'commander.invalidArgument' });
      return n;
    }))
    .addOption(intOption('--http-port <n>', 'the cloud\'s port: console and REST API (default: a free one)').default(0))
    .addOption(intOption('--mqtt-port <n>', 'gw-north\'s MQTT port (default: a free one; gw-south always takes a free one)').default(0))
    .addOption(intOption('--first-batch-after <seconds>', 'the first batch run, this long after start').default(60))
    .option('--batch-cron <cron>', 'later batch runs, a node-cron schedule (UTC)', '*/5 * * * *')
    .addOption(new Option('--log-level <level>', 'log level (logs go to stderr)').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('warn'))
    .action(async (o: DemoFlags, cmd: Command) => {
      const usage = (message: string): never => cmd.error(`error: ${message}`, { exitCode: 2, code: 'commander.invalidArgument' });
      const { DEFAULT_DEMO_OPTIONS, MIN_DEMO_DEVICES, startDemo } = await import('../demo/index.js');
      if (o.devices < MIN_DEMO_DEVICES) usage(`--devices must be at least ${MIN_DEMO_DEVICES} (each kind of device the demo shows needs one), got ${o.devices}`);
      if (o.devices > 1000) usage(`--devices must be at most 1000 (use \`braid simulate\` for load), got ${o.devices}`);
      const cron = (await import('node-cron')).default;
      if (!cron.validate(o.batchCron)) usage(`--batch-cron "${o.batchCron}" is not a cron expression`);
      const logger = rootLogger(o.logLevel, 'braid-demo');
      const out = (s: string) => process.stdout.write(`${s}\n`);

      let starting: Promise<unknown> = Promise.resolve();
      let demo: Awaited<ReturnType<typeof startDemo>> | null = null;
      let stopping = false;
      // Registered before start: Ctrl-C while starting lets the start finish (or fail and clean
      // up), then closes it, so no database is left mid-write.
      onStop(async () => {
        stopping = true;
        out('Stopping the demo...');
        await starting.catch(() => undefined);
        await demo?.close();
        out('Demo stopped.');
      });
      try {
        starting = startDemo({
          ...DEFAULT_DEMO_OPTIONS,
          dataDir: o.dataDir, fresh: o.fresh === true, httpPort: o.httpPort, mqttPort: o.mqttPort,
          fleet: { ...DEFAULT_DEMO_OPTIONS.fleet, devices: o.devices, rate: o.rate },
          firstBatchAfterMs: o.firstBatchAfter * 1000, batchCron: o.batchCron, logLevel: o.logLevel,
        }, logger, (line) => { if (!stopping) out(line); });
        demo = await (starting as ReturnType<typeof startDemo>);
      } catch (err) {
        if (stopping) return; // the signal handler reports and exits
        if (err instanceof BraidError) throw err; // main() prints it with its code
        // A port in use, a data dir that cannot be written: the message says it, a stack would not help.
        process.stderr.write(`braid demo: cannot start: ${(err as Error).message}\n`);
        process.exit(1);
      }
      if (stopping) return;

      const d = demo;
      const [north, south] = d.gateways;
      const ex = d.devices[0];
      const now = Date.now();
      const iso = (t: number) => new Date(t).toISOString().replace(/\.\d{3}Z$/, 'Z');
      const query = `${d.consoleUrl}api/v1/query?metric=${ex.profile.metrics![0]}&device=${ex.id}&from=${iso(now - 3600_000)}&to=${iso(now + 3600_000)}&step=1m&agg=avg`;
      const host = new URL(d.guest.mqttUrl);
      // One write: the guide arrives whole, not interleaved with a log line or cut in a pipe.
      const guide: string[] = [];
      guide.push(`Braid demo: a cloud and gateways ${d.gateways.map((g) => g.id).join(' and ')} with ${d.devices.length} simulated devices (Ctrl-C stops it)`);
      guide.push(`Data:    ${d.dataDir}${d.reused ? ' (reusing an earlier run\'s data; --fresh starts over)' : ''}`);
      guide.push('');
      guide.push('Open the console and enter the API key (it reads everything: fleet, gateways, charts, batch runs); the admin key can also start batch runs:');
      guide.push(`Console: ${d.consoleUrl}`);
      guide.push(`API key: ${d.readKey}`);
      guide.push(`Admin key: ${d.adminKey}`);
      guide.push('');
      guide.push(`Query:   curl -H 'Authorization: Bearer ${d.readKey}' '${query}'`);
      guide.push(`MQTT:    ${north.id} ${north.mqttUrl}, ${south.id} ${south.mqttUrl} (topic devices/<id>/telemetry; user = device id, password = its secret)`);
      guide.push(`Device:  ${d.guest.id} on ${d.guest.gateway}, secret ${d.guest.secret}`);
      guide.push(`Try:     mosquitto_pub -h ${host.hostname} -p ${host.port} -i ${d.guest.id} -u ${d.guest.id} -P ${d.guest.secret} -q 1 -t devices/${d.guest.id}/telemetry -m '{"temp":21.5,"hum":40}'`);
      guide.push(`Gateway: ${north.httpUrl}/api/v1/windows?device=${ex.id}&metric=${ex.profile.metrics![0]}  (also /api/v1/health, /metrics; ${south.id}: ${south.httpUrl})`);
      guide.push(`Batch:   first run at ${new Date(d.firstBatchAt).toISOString().slice(11, 19)} UTC, then on "${o.batchCron}" (UTC)`);
      guide.push('Devices:');
      for (const dev of d.devices) guide.push(`  ${dev.id.padEnd(9)} ${dev.gateway}  ${dev.profile.metrics!.join(',').padEnd(22)} ${dev.role}`);
      guide.push('');
      process.stdout.write(`${guide.join('\n')}\n`);
    });
}

/** A second signal this soon after the first is the same Ctrl-C: npm forwards the one the terminal sent us. */
const SAME_KEYPRESS_MS = 1500;
/** How often the demo looks whether its parent is still there. */
const PARENT_POLL_MS = 500;

/**
 * SIGINT/SIGTERM/SIGHUP run `close`, then exit 0 (1 if it failed). Unlike the servers' onShutdown, a
 * repeat within SAME_KEYPRESS_MS is ignored: under `npm start` one Ctrl-C arrives twice (from the
 * terminal to the process group, and forwarded by npm). A later one exits at once (1).
 *
 * The demo also stops with its parent: a supervisor that sends SIGTERM to `npm start` (or to a
 * shell that started the demo) may end that parent without passing the signal on, and the demo,
 * reparented, would run on holding its ports and its data dir. SIGHUP covers a closed terminal.
 */
function onStop(close: () => Promise<void>): void {
  let first = 0;
  const handler = () => {
    if (first) {
      if (Date.now() - first < SAME_KEYPRESS_MS) return;
      process.stderr.write('braid demo: second signal, exiting now\n');
      process.exit(1);
    }
    first = Date.now();
    close().then(() => process.exit(0), (err: Error) => {
      process.stderr.write(`braid demo: stopping failed: ${err.message}\n`);
      process.exit(1);
    });
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  process.on('SIGHUP', handler);
  // Node has no PR_SET_PDEATHSIG; a changed ppid means the parent is gone (the child was reparented).
  const parent = process.ppid;
  if (parent > 1) {
    setInterval(() => {
      if (process.ppid === parent || first) return;
      process.stderr.write(`braid demo: its parent (pid ${parent}) exited; stopping\n`);
      handler();
    }, PARENT_POLL_MS).unref();
  }
}
