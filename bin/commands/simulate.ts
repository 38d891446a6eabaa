/**
 * `braid simulate`: a device fleet on MQTT.js publishing to any Braid gateway (or any MQTT broker
 * with the same topics), with injected duplicates, late readings, malformed payloads and devices
 * going offline. A live line on stderr; a summary on stdout at the end (--json for a program).
 */
import { Option, type Command } from 'commander';
import { DeviceRegistry } from '../../edge/registry/index.js';
import type { OfflineSchedule, SimDevice, SimulatorStats } from '../../edge/simulator/index.js';
import { intOption } from '../cli.js';

interface SimulateFlags {
  url: string;
  devices: number;
  prefix: string;
  secret?: string;
  register?: string;
  rate: number;
  qos: string;
  format: 'flat' | 'senml';
  shape: 'sine' | 'walk' | 'steps' | 'noise';
  metrics: string[];
  duration: number;
  duplicateShare: number;
  lateShare: number;
  lateBy: number;
  malformedShare: number;
  offline?: Omit<OfflineSchedule, 'bufferWhileOffline'>;
  offlineDevices?: number;
  offlineDrop?: boolean;
  json?: boolean;
  quiet?: boolean;
  liveEvery?: number;
}

/** A flag's bad value, thrown from its parser: commander prints it with the flag and main() exits 2. */
function invalid(message: string): never {
  throw Object.assign(new Error(message), { code: 'commander.invalidArgument' });
}

/** `3h`, `90m`, `10s`, `500ms`, `2d`; a bare number is seconds. In ms. */
export function parseDuration(flag: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(v.trim());
  if (!m) invalid(`${flag} must be a duration like 500ms, 10s, 5m, 3h or 2d, got "${v}"`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 's') as 'ms'];
  return Math.round(Number(m[1]) * unit);
}

const shareOption = (flags: string, description: string) => new Option(flags, description).default(0).argParser((v: string) => {
  const n = Number(v);
  if (v.trim() === '' || !(n >= 0 && n <= 1)) invalid(`${flags.split(' ')[0]} must be a share within 0..1 (e.g. 0.05), got "${v}"`);
  return n;
});

export function registerSimulateCommand(program: Command): void {
  program.command('simulate')
    .description('simulate a fleet of devices publishing telemetry over MQTT (a load generator for any gateway)')
    .option('--url <url>', 'broker URL', 'mqtt://127.0.0.1:1883')
    .addOption(intOption('--devices <n>', 'number of devices').default(10))
    .option('--prefix <prefix>', 'device ids are <prefix>-0001, <prefix>-0002, ...', 'sim')
    .option('--secret <secret>', 'the secret every simulated device uses')
    .option('--register <dataDir>', 'register the devices (with --secret, or generated) in this gateway data dir first')
    .addOption(new Option('--rate <perSecond>', 'messages per second per device').default(1).argParser((v: string) => {
      const n = Number(v);
      if (!(n > 0) || !Number.isFinite(n)) invalid(`--rate must be a positive number of messages per second, got "${v}"`);
      return n;
    }))
    .addOption(new Option('--qos <qos>', 'MQTT QoS').choices(['0', '1']).default('1'))
    .addOption(new Option('--format <format>', 'payload format: flat JSON object or SenML array').choices(['flat', 'senml']).default('flat'))
    .addOption(new Option('--shape <shape>', 'signal shape').choices(['sine', 'walk', 'steps', 'noise']).default('sine'))
    .addOption(new Option('--metrics <list>', 'comma-separated metric names').default(['temp', 'hum'], 'temp,hum').argParser((v: string) => {
      const list = v.split(',').map((s) => s.trim()).filter(Boolean);
      const bad = list.find((m) => !/^[A-Za-z0-9_.:\-]{1,128}$/.test(m) || m === 'ts');
      if (!list.length || bad !== undefined) invalid(`--metrics must be a comma-separated list of metric names (A-Z a-z 0-9 _ . : -, not "ts"), got "${v}"`);
      if (new Set(list).size !== list.length) invalid(`--metrics names a metric twice: "${v}"`);
      return list;
    }))
    .addOption(intOption('--duration <seconds>', 'stop after this many seconds (0 = until Ctrl-C)').default(0))
    .addOption(shareOption('--duplicate-share <share>', 'share of messages sent twice (the gateway counts them as duplicates)'))
    .addOption(shareOption('--late-share <share>', 'share of messages stamped --late-by in the past'))
    .addOption(new Option('--late-by <duration>', 'how late a late message is (500ms, 10s, 5m, 3h, 2d)').default(3 * 3_600_000, '3h')
      .argParser((v: string) => parseDuration('--late-by', v)))
    .addOption(shareOption('--malformed-share <share>', 'share of messages the gateway must reject (bad JSON, string values, ...)'))
    .addOption(new Option('--offline <after/for[/every]>', 'devices go offline after <after>, for <for>, again every <every> (e.g. 60s/30s/5m)')
      .argParser((v: string) => {
        const parts = v.split('/');
        if (parts.length < 2 || parts.length > 3) invalid(`--offline must be <after>/<for>[/<every>] like 60s/30s/5m, got "${v}"`);
        const [afterMs, forMs, everyMs = 0] = parts.map((p) => parseDuration('--offline', p));
        if (forMs <= 0) invalid(`--offline: the offline time must be above 0, got "${v}"`);
        if (everyMs !== 0 && everyMs <= forMs) invalid(`--offline: <every> must be longer than <for>, got "${v}"`);
        return { afterMs, forMs, everyMs };
      }))
    .addOption(intOption('--offline-devices <n>', 'how many devices follow --offline (default: all)'))
    .option('--offline-drop', 'lose the readings made while offline (default: publish them after reconnecting)')
    .option('--json', 'print the summary as JSON')
    .option('--quiet', 'no live line on stderr')
    .addOption(intOption('--live-every <seconds>', 'how often the live line is written (default 1 on a terminal, 10 otherwise)'))
    .action(async (o: SimulateFlags, cmd: Command) => {
      // Printed by commander as "error: ...", then main() exits 2.
      const usage = (message: string): never => cmd.error(`error: ${message}`, { exitCode: 2, code: 'commander.invalidArgument' });
      if (o.lateShare + o.malformedShare > 1) usage('--late-share plus --malformed-share must not exceed 1');
      if (o.offlineDevices !== undefined && !o.offline) usage('--offline-devices needs --offline <after/for[/every]>');
      try { new URL(o.url); } catch { usage(`--url must be a URL like mqtt://127.0.0.1:1883, got "${o.url}"`); }
      if (!o.register && !o.secret) usage('give --secret (the devices\' shared secret) or --register <gateway data dir>');
      if (o.devices < 1) usage('--devices must be at least 1');
      if (o.liveEvery === 0) usage('--live-every must be at least 1 second');

      const ids = Array.from({ length: o.devices }, (_, i) => `${o.prefix}-${String(i + 1).padStart(4, '0')}`);
      let devices: SimDevice[];
      if (o.register) {
        const reg = await DeviceRegistry.open(o.register);
        devices = [];
        try {
          for (const id of ids) devices.push({ id, secret: await reg.rotate(id, o.secret).catch(() => reg.add(id, o.secret)) });
        } finally { await reg.close(); }
      } else {
        devices = ids.map((id) => ({ id, secret: o.secret! }));
      }
      if (o.offline) {
        const offline: OfflineSchedule = { ...o.offline, bufferWhileOffline: !o.offlineDrop };
        const n = Math.min(o.offlineDevices ?? devices.length, devices.length);
        for (let i = 0; i < n; i++) devices[i].profile = { offline };
      }

      const { Simulator } = await import('../../edge/simulator/index.js');
      const sim = new Simulator({
        url: o.url, devices, ratePerDevice: o.rate, qos: Number(o.qos) as 0 | 1, format: o.format, shape: o.shape, metrics: o.metrics,
        duplicateShare: o.duplicateShare, lateShare: o.lateShare, lateByMs: o.lateBy, malformedShare: o.malformedShare,
      });
      const started = Date.now();
      const live = o.quiet ? null : liveLine(sim.snapshot.bind(sim), o.liveEvery);
      let finishing: Promise<void> | null = null;
      const finish = (): Promise<void> => (finishing ??= (async () => {
        live?.stop();
        const s = await sim.stop();
        const secs = (Date.now() - started) / 1000;
        process.stdout.write(o.json ? `${JSON.stringify(summaryJson(s, secs, o))}\n` : summaryText(s, secs, devices.length, o.url, o.lateBy));
      })());
      const onSignal = () => { void finish().then(() => process.exit(0)); };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        await sim.start();
      } catch (err) {
        live?.stop();
        process.stderr.write(`braid simulate: cannot connect to ${o.url}: ${(err as Error).message}\n`);
        process.exit(1);
      }
      if (!o.quiet) process.stderr.write(`${devices.length} devices connected to ${o.url}\n`);
      if (o.duration > 0) {
        await new Promise((r) => setTimeout(r, o.duration * 1000));
        await finish();
        process.exit(0);
      }
    });
}

/**
 * The live line: on a terminal rewritten in place every second; otherwise (a log file, CI) one
 * line every 10 s, so the log stays readable.
 */
function liveLine(snapshot: () => SimulatorStats, everySeconds?: number): { stop: () => void } {
  const tty = process.stderr.isTTY === true;
  const everyMs = everySeconds ? everySeconds * 1000 : tty ? 1000 : 10_000;
  let last = { sent: 0, at: Date.now() };
  const timer = setInterval(() => {
    const s = snapshot();
    const now = Date.now();
    const rate = (s.sent - last.sent) / ((now - last.at) / 1000);
    last = { sent: s.sent, at: now };
    const line = `sent ${s.sent}  acked ${s.acked}  rate ${rate.toFixed(1)}/s  p99 PUBACK ${s.p99Ms ?? '-'} ms  connected ${s.connected}  errors ${s.errors}`;
    process.stderr.write(tty ? `\r${line}   ` : `${line}\n`);
  }, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      if (tty) process.stderr.write('\n');
    },
  };
}

function summaryJson(s: SimulatorStats, secs: number, o: SimulateFlags) {
  return {
    ...s, seconds: Math.round(secs * 10) / 10, ratePerSecond: Math.round((s.sent / secs) * 10) / 10,
    readingsPerSecond: Math.round((s.readings / secs) * 10) / 10, devices: o.devices, qos: Number(o.qos), format: o.format, lateByMs: o.lateBy,
  };
}

/** 3h, 90m, 45s, 500ms: the largest unit that divides the value. */
function duration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

function summaryText(s: SimulatorStats, secs: number, devices: number, url: string, lateByMs: number): string {
  const ms = (v: number | null) => (v === null ? '-' : `${v} ms`);
  return [
    `braid simulate: ${devices} devices on ${url} for ${secs.toFixed(1)} s`,
    `  messages   sent ${s.sent} (QoS 1: ${s.qos1}, QoS 0: ${s.qos0}), acked ${s.acked}, errors ${s.errors}`,
    `  rate       ${(s.sent / secs).toFixed(1)} messages/s, ${(s.readings / secs).toFixed(1)} readings/s (${s.readings} readings)`,
    `  PUBACK     p50 ${ms(s.p50Ms)}, p99 ${ms(s.p99Ms)}, max ${ms(s.maxMs)}`,
    `  injected   duplicates ${s.duplicates} (${s.duplicateReadings} readings), late ${s.late} (${s.lateReadings} readings, ${duration(lateByMs)} late), malformed ${s.malformed}`,
    `  offline    periods ${s.offlinePeriods}, sent from buffer ${s.buffered}, lost to a full buffer ${s.bufferDropped}, reconnects ${s.reconnects}`,
    '',
  ].join('\n');
}
