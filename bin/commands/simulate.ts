/** `braid simulate`: a device fleet publishing to any Braid gateway. */
import { Option, type Command } from 'commander';
import { DeviceRegistry } from '../../edge/registry/index.js';
import type { SimDevice } from '../../edge/simulator/index.js';
import { intOption } from '../cli.js';

interface SimulateFlags {
  url: string;
  devices: number;
  prefix: string;
  secret?: string;
  register?: string;
  rate: string;
  qos: string;
  format: 'flat' | 'senml';
  shape: 'sine' | 'walk' | 'steps' | 'noise';
  metrics: string;
  duration: number;
}

export function registerSimulateCommand(program: Command): void {
  program.command('simulate')
    .description('simulate a fleet of devices publishing telemetry over MQTT')
    .option('--url <url>', 'broker URL', 'mqtt://127.0.0.1:1883')
    .addOption(intOption('--devices <n>', 'number of devices').default(10))
    .option('--prefix <prefix>', 'device ids are <prefix>-0001, <prefix>-0002, ...', 'sim')
    .option('--secret <secret>', 'the secret every simulated device uses')
    .option('--register <dataDir>', 'register the devices (with --secret, or generated) in this gateway data dir first')
    .option('--rate <perSecond>', 'messages per second per device', '1')
    .addOption(new Option('--qos <qos>', 'MQTT QoS').choices(['0', '1']).default('1'))
    .addOption(new Option('--format <format>', 'payload format').choices(['flat', 'senml']).default('flat'))
    .addOption(new Option('--shape <shape>', 'signal shape').choices(['sine', 'walk', 'steps', 'noise']).default('sine'))
    .option('--metrics <list>', 'comma-separated metric names', 'temp,hum')
    .addOption(intOption('--duration <seconds>', 'stop after this many seconds (0 = until Ctrl-C)').default(0))
    .action(async (o: SimulateFlags) => {
      const rate = Number(o.rate);
      if (!(rate > 0)) throw Object.assign(new Error(`--rate must be a positive number, got "${o.rate}"`), { code: 'commander.invalidArgument' });
      const ids = Array.from({ length: o.devices }, (_, i) => `${o.prefix}-${String(i + 1).padStart(4, '0')}`);
      let devices: SimDevice[];
      if (o.register) {
        const reg = await DeviceRegistry.open(o.register);
        devices = [];
        for (const id of ids) {
          const secret = await reg.rotate(id, o.secret).catch(() => reg.add(id, o.secret));
          devices.push({ id, secret });
        }
        await reg.close();
      } else {
        if (!o.secret) throw Object.assign(new Error('give --secret (the devices\' shared secret) or --register <gateway data dir>'), { code: 'commander.invalidArgument' });
        devices = ids.map((id) => ({ id, secret: o.secret! }));
      }
      const { Simulator } = await import('../../edge/simulator/index.js');
      const sim = new Simulator({
        url: o.url, devices, ratePerDevice: rate, qos: Number(o.qos) as 0 | 1, format: o.format, shape: o.shape,
        metrics: o.metrics.split(',').map((s) => s.trim()).filter(Boolean),
      });
      const started = Date.now();
      let lastSent = 0;
      const live = setInterval(() => {
        const s = sim.snapshot();
        process.stderr.write(`\rsent ${s.sent}  acked ${s.acked}  rate ${s.sent - lastSent}/s  p99 PUBACK ${s.p99Ms ?? '-'} ms  errors ${s.errors}   `);
        lastSent = s.sent;
      }, 1000);
      const finish = async () => {
        clearInterval(live);
        const s = await sim.stop();
        const secs = (Date.now() - started) / 1000;
        process.stdout.write(`\n${JSON.stringify({ ...s, seconds: Math.round(secs), ratePerSecond: Math.round(s.sent / secs) })}\n`);
      };
      process.once('SIGINT', () => { void finish().then(() => process.exit(0)); });
      process.once('SIGTERM', () => { void finish().then(() => process.exit(0)); });
      await sim.start();
      process.stderr.write(`${devices.length} devices connected to ${o.url}\n`);
      if (o.duration > 0) {
        await new Promise((r) => setTimeout(r, o.duration * 1000));
        await finish();
      }
    });
}
