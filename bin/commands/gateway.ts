/** `braid gateway` and `braid device add|list|remove|rotate`. */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { gatewayConfigSchema, type GatewayConfig } from '../../edge/config.js';
import { DeviceRegistry } from '../../edge/registry/index.js';
import { intOption } from '../cli.js';
import { GATEWAY_RULES, readTokenText } from './config-lint.js';
import { checkConfigOption, checkMode, configForRun, printCheck, runCheck } from './check-config.js';
import { configFrom, logWarnings, onShutdown, rootLogger } from './common.js';
import { configureGatewayHeap } from './gateway-heap.js';

interface GatewayFlags {
  config?: string;
  dataDir?: string;
  id?: string;
  mqttPort?: number;
  wsPort?: number;
  httpPort?: number;
  cloudUrl?: string;
  token?: string;
  tokenFile?: string;
  logLevel?: string;
}

/** The flags as config key paths (undefined where not given: the file or environment stands). */
function gatewayFlagValues(o: GatewayFlags) {
  return {
    id: o.id,
    dataDir: o.dataDir,
    log: { level: o.logLevel },
    mqtt: { port: o.mqttPort, wsPort: o.wsPort },
    http: { port: o.httpPort },
    cloud: { url: o.cloudUrl, token: o.token, tokenFile: o.tokenFile },
  };
}

/** cloud.tokenFile read into cloud.token (the lint already checked it is readable, non-empty and private). */
function withTokenFromFile(config: GatewayConfig): GatewayConfig {
  if (!config.cloud.tokenFile) return config;
  return { ...config, cloud: { ...config.cloud, token: readTokenText(readFileSync(config.cloud.tokenFile, 'utf8')) } };
}

function gatewayConfig(o: GatewayFlags) {
  return configFrom(gatewayConfigSchema, o.config, gatewayFlagValues(o));
}

export function registerGatewayCommands(program: Command): void {
  program.command('gateway')
    .description('run an edge gateway: MQTT broker, durable outbox, speed layer, forwarder to the cloud')
    .option('--config <file>', 'JSON config file (see deploy/gateway.example.json)')
    .option('--data-dir <dir>', 'where gateway.db and registry.db live (default ./.braid/gateway)')
    .option('--id <gatewayId>', 'gateway id, unique in the fleet (default gw-<hostname>)')
    .addOption(intOption('--mqtt-port <n>', 'MQTT TCP port (default 1883)'))
    .addOption(intOption('--ws-port <n>', 'MQTT over WebSocket port, path /mqtt (default off)'))
    .addOption(intOption('--http-port <n>', 'local REST API port (default 8080)'))
    .option('--cloud-url <url[,url...]>', 'cloud base URL; several, comma-separated: the nodes of one cloud, failed over in order; without it readings stay buffered in the outbox')
    .option('--token <token>', 'gateway token from `braid cloud gateway add` (visible in `ps`: prefer --token-file or BRAID_CLOUD_TOKEN)')
    .option('--token-file <file>', 'read the gateway token from this file (not readable by other users; trailing newline ignored)')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (default info)')
    .addOption(checkConfigOption())
    .action(async (o: GatewayFlags & { checkConfig?: string | boolean }) => {
      const check = checkMode(o.checkConfig);
      if (check) {
        const result = runCheck(gatewayConfigSchema, GATEWAY_RULES, () => gatewayConfig(o), { file: o.config, flags: gatewayFlagValues(o) });
        printCheck(result, { ...check, command: 'gateway' });
        return;
      }
      // Every check of --check-config before anything is opened or created: a bad config exits 2 with
      // all its problems in one message, and leaves the data dir as it was.
      const run = configForRun(gatewayConfigSchema, GATEWAY_RULES, { file: o.config, flags: gatewayFlagValues(o) });
      const config = withTokenFromFile(run.config);
      const logger = rootLogger(config.log.level, 'braid-gateway');
      logWarnings(logger, run.warnings);
      // A gateway is an appliance with a memory budget: a smaller old generation's headroom and
      // young generation (gateway-heap.ts; docs/benchmarks.md, Gateway RSS).
      configureGatewayHeap();
      // Loaded here, not at the top: `braid device ...` and --help need none of the broker's modules.
      const { Gateway } = await import('../../edge/gateway.js');
      const gateway = new Gateway(config, logger);
      onShutdown(logger, () => gateway.close());
      const a = await gateway.start();
      // A wildcard bind is reachable on loopback; print an address a client can use.
      const shown = (h: string) => (h === '0.0.0.0' || h === '::' ? '127.0.0.1' : h);
      process.stdout.write(`gateway ${config.id} ready: mqtt://${shown(config.mqtt.host)}:${a.mqttPort} http://${shown(config.http.host)}:${a.httpPort}\n`);
    });

  const device = program.command('device').description('manage the devices registered on a gateway (works while it runs)');
  const withDir = (c: Command) => c
    .option('--data-dir <dir>', 'the gateway data dir (default ./.braid/gateway)')
    .option('--config <file>', 'the gateway config file (for its dataDir)');
  const registry = async (o: { dataDir?: string; config?: string }) => DeviceRegistry.open(gatewayConfig(o).dataDir);

  withDir(device.command('add <deviceId>')
    .description('register a device; prints its secret (generated unless --secret) as the last line')
    .option('--secret <secret>', 'use this secret instead of a generated one'))
    .action(async (id: string, o: { secret?: string; dataDir?: string; config?: string }) => {
      const reg = await registry(o);
      try {
        const secret = await reg.add(id, o.secret);
        process.stdout.write(`device ${id} registered; its MQTT username is ${id} and its password:\n${secret}\n`);
      } finally { await reg.close(); }
    });
  withDir(device.command('list').description('list registered devices')
    .option('--json', 'print JSON'))
    .action(async (o: { json?: boolean; dataDir?: string; config?: string }) => {
      const reg = await registry(o);
      try {
        const list = await reg.list();
        if (o.json) process.stdout.write(`${JSON.stringify(list)}\n`);
        else for (const d of list) process.stdout.write(`${d.id}\tcreated ${new Date(d.createdAt).toISOString()}\tsecret set ${new Date(d.updatedAt).toISOString()}\n`);
      } finally { await reg.close(); }
    });
  withDir(device.command('remove <deviceId>').description('unregister a device (it can no longer connect)'))
    .action(async (id: string, o: { dataDir?: string; config?: string }) => {
      const reg = await registry(o);
      try {
        await reg.remove(id);
        process.stdout.write(`device ${id} removed\n`);
      } finally { await reg.close(); }
    });
  withDir(device.command('rotate <deviceId>').description('give a device a new secret; prints it as the last line')
    .option('--secret <secret>', 'use this secret instead of a generated one'))
    .action(async (id: string, o: { secret?: string; dataDir?: string; config?: string }) => {
      const reg = await registry(o);
      try {
        const secret = await reg.rotate(id, o.secret);
        process.stdout.write(`device ${id} has a new secret (the old one stops working at its next connect):\n${secret}\n`);
      } finally { await reg.close(); }
    });
}
