/**
 * `braid demo` (what `npm start` runs): one gateway with a few simulated devices, and where to
 * look. Issue 5 turns it into the whole system (cloud, two gateways, console).
 */
import { mkdirSync } from 'node:fs';
import type { Command } from 'commander';
import { gatewayConfigSchema } from '../../edge/config.js';
import { intOption } from '../cli.js';
import { configFrom, onShutdown, rootLogger } from './common.js';

export function registerDemoCommand(program: Command): void {
  program.command('demo')
    .description('run a gateway with simulated devices on this machine and print where to look')
    .option('--data-dir <dir>', 'demo data dir', './.braid-demo')
    .addOption(intOption('--devices <n>', 'simulated devices').default(6))
    .addOption(intOption('--mqtt-port <n>', 'MQTT port (default: a free one)').default(0))
    .addOption(intOption('--http-port <n>', 'REST port (default: a free one)').default(0))
    .option('--log-level <level>', 'log level', 'warn')
    .action(async (o: { dataDir: string; devices: number; mqttPort: number; httpPort: number; logLevel: string }) => {
      const dataDir = `${o.dataDir}/gateway`;
      mkdirSync(dataDir, { recursive: true });
      const config = configFrom(gatewayConfigSchema, undefined, {
        id: 'gw-demo', dataDir, log: { level: o.logLevel },
        mqtt: { host: '127.0.0.1', port: o.mqttPort }, http: { host: '127.0.0.1', port: o.httpPort },
      });
      const logger = rootLogger(config.log.level, 'braid-demo');
      const { Gateway } = await import('../../edge/gateway.js');
      const { Simulator } = await import('../../edge/simulator/index.js');
      const gateway = new Gateway(config, logger);
      const a = await gateway.start();
      const devices = [];
      for (let i = 1; i <= o.devices; i++) {
        const id = `demo-${String(i).padStart(2, '0')}`;
        const secret = await gateway.devices.rotate(id).catch(() => gateway.devices.add(id));
        devices.push({ id, secret });
      }
      const sim = new Simulator({ url: `mqtt://127.0.0.1:${a.mqttPort}`, devices, ratePerDevice: 1, qos: 1, metrics: ['temp', 'hum', 'pressure'], shape: 'sine' });
      await sim.start();
      onShutdown(logger, async () => {
        await sim.stop();
        await gateway.close();
      });
      const http = `http://127.0.0.1:${a.httpPort}`;
      process.stdout.write([
        `Braid demo: gateway ${config.id} with ${devices.length} simulated devices (Ctrl-C stops it)`,
        `MQTT:    mqtt://127.0.0.1:${a.mqttPort}  (devices/<id>/telemetry, user = device id, password = its secret)`,
        `Windows: ${http}/api/v1/windows?device=${devices[0].id}&metric=temp`,
        `Health:  ${http}/api/v1/health`,
        `Metrics: ${http}/metrics`,
        `Data:    ${dataDir}`,
        '',
      ].join('\n'));
    });
}
