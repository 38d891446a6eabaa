/**
 * `braid demo`: the whole system on one machine, in one process. A cloud (ingest, master dataset,
 * batch, speed store, merged query, console) and two gateways forwarding to it, each with its half
 * of a simulated fleet, everything on 127.0.0.1. Tuned to show data within seconds: speed pushes
 * every second, epochs of 15 s, staged readings sealed after 15 s, a first batch run after a
 * minute and then one every 5 minutes (the shipped defaults are 2 s, 60 s, 60 s and nightly).
 */
import { join } from 'node:path';
import { type CloudApp, createCloud } from '../../cloud/app.js';
import { cloudConfigSchema } from '../../cloud/config.js';
import { addApiKey, addGateway, removeApiKey, rotateGateway } from '../../cloud/store/credentials.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { SqliteCredentialStore } from '../../cloud/store/sqlite-credentials.js';
import { gatewayConfigSchema } from '../../edge/config.js';
import { Gateway } from '../../edge/gateway.js';
import { Simulator, type SimDevice, type SimulatorStats } from '../../edge/simulator/index.js';
import { loadConfig } from '../../shared/config.js';
import type { Logger } from '../../shared/logger.js';
import { prepareDataDir } from './datadir.js';
import { DEFAULT_DEMO_FLEET, DEMO_GATEWAYS, type DemoDevice, type DemoFleetOptions, demoFleet } from './fleet.js';

export { DEFAULT_DEMO_FLEET, MIN_DEMO_DEVICES, demoFleet, type DemoDevice } from './fleet.js';

export interface DemoOptions {
  /** The demo's data dir (cloud/, gw-north/, gw-south/). */
  dataDir: string;
  /** Wipe the data dir first. */
  fresh: boolean;
  /** Cloud (console, REST) port; 0 picks a free one. */
  httpPort: number;
  /** gw-north's MQTT port (gw-south's is free); 0 picks a free one. */
  mqttPort: number;
  fleet: DemoFleetOptions;
  /** The first batch run, this long after start, in ms. */
  firstBatchAfterMs: number;
  /** node-cron schedule of the later batch runs (UTC). */
  batchCron: string;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
}

export const DEFAULT_DEMO_OPTIONS: DemoOptions = {
  dataDir: './.braid-demo',
  fresh: false,
  httpPort: 0,
  mqttPort: 0,
  fleet: DEFAULT_DEMO_FLEET,
  firstBatchAfterMs: 60_000, // 1 minute: both sides of the merged query show up early
  batchCron: '*/5 * * * *', // every 5 minutes
  logLevel: 'warn',
};

/** The device registered for the user, on gw-north, that no simulator uses (for mosquitto_pub). */
export const GUEST_DEVICE = 'my-device';

export interface DemoGateway {
  id: string;
  mqttUrl: string;
  httpUrl: string;
  gateway: Gateway;
}

export interface RunningDemo {
  dataDir: string;
  reused: boolean;
  consoleUrl: string;
  readKey: string;
  adminKey: string;
  gateways: DemoGateway[];
  devices: DemoDevice[];
  guest: { id: string; secret: string; gateway: string; mqttUrl: string };
  cloud: CloudApp;
  /** When the first batch run starts (epoch ms). */
  firstBatchAt: number;
  /** Sent, acked, injected... over both gateways' simulated devices. */
  stats: () => SimulatorStats[];
  /** Stop the simulators, then the gateways, then the cloud; idempotent. */
  close: () => Promise<void>;
}

/**
 * Start the demo. On a failure part way, what was started is closed again before the error is
 * thrown (a port in use must not leave a cloud running).
 */
export async function startDemo(o: DemoOptions, logger: Logger, onBatch?: (line: string) => void): Promise<RunningDemo> {
  const dirs = await prepareDataDir(o.dataDir, o.fresh);
  // By phase: simulators first, then the gateways (they flush to the cloud), then the cloud.
  const closers: Array<[phase: 0 | 1 | 2, name: string, fn: () => Promise<unknown>]> = [];
  let batchTimer: NodeJS.Timeout | null = null;
  let closing: Promise<void> | null = null;
  const close = () => (closing ??= (async () => {
    if (batchTimer) clearTimeout(batchTimer);
    for (const phase of [0, 1, 2]) {
      await Promise.all(closers.filter((c) => c[0] === phase).map(async ([, name, fn]) => {
        try { await fn(); } catch (err) { logger.error({ err }, `closing the demo's ${name} failed`); }
      }));
    }
    await dirs.lock.release();
  })());

  try {
    // Credentials, each run anew: tokens and keys are stored hashed, so an old one cannot be shown again.
    const db = await openCloudDb(join(dirs.cloud, 'cloud.db'));
    const store = new SqliteCredentialStore(db);
    const tokens: Record<string, string> = {};
    let readKey: string;
    let adminKey: string;
    try {
      for (const g of DEMO_GATEWAYS) tokens[g] = await rotateGateway(store, g).catch(() => addGateway(store, g));
      const key = async (name: string, role: 'read' | 'admin') => {
        await removeApiKey(store, name).catch(() => undefined);
        return addApiKey(store, name, role);
      };
      readKey = await key('demo-read', 'read');
      adminKey = await key('demo-admin', 'admin');
    } finally {
      await db.close();
    }

    // The BRAID_* environment is for the real commands: the demo's parts must not all take one port from it.
    const cloudConfig = loadConfig(cloudConfigSchema, {
      env: {},
      flags: {
        dataDir: dirs.cloud, log: { level: o.logLevel }, http: { host: '127.0.0.1', port: o.httpPort },
        ingest: { sealMaxAgeMs: 15_000 }, batch: { cron: o.batchCron },
      },
    });
    const cloud = createCloud(cloudConfig, { logger: logger.child({ part: 'cloud' }) });
    closers.push([2, 'cloud', () => cloud.server.close()]);
    const { url: cloudUrl } = await cloud.server.start();

    const fleet = demoFleet(o.fleet);
    const gateways: DemoGateway[] = [];
    const sims: Simulator[] = [];
    let guest: RunningDemo['guest'] | null = null;
    for (const [i, id] of DEMO_GATEWAYS.entries()) {
      const config = loadConfig(gatewayConfigSchema, {
        env: {},
        flags: {
          id, dataDir: dirs.gateways[id], log: { level: o.logLevel },
          mqtt: { host: '127.0.0.1', port: i === 0 ? o.mqttPort : 0 }, http: { host: '127.0.0.1', port: 0 },
          outbox: { epochMs: 15_000 }, speed: { pushIntervalMs: 1_000 },
          cloud: { url: cloudUrl, token: tokens[id] },
        },
      });
      const gateway = new Gateway(config, logger);
      closers.push([1, id, () => gateway.close()]);
      const a = await gateway.start();
      const g: DemoGateway = { id, gateway, mqttUrl: `mqtt://127.0.0.1:${a.mqttPort}`, httpUrl: `http://127.0.0.1:${a.httpPort}` };
      gateways.push(g);
      const secret = (dev: string) => gateway.devices.rotate(dev).catch(() => gateway.devices.add(dev));
      const devices: SimDevice[] = [];
      for (const d of fleet.filter((x) => x.gateway === id)) devices.push({ id: d.id, secret: await secret(d.id), profile: d.profile });
      if (i === 0) guest = { id: GUEST_DEVICE, secret: await secret(GUEST_DEVICE), gateway: id, mqttUrl: g.mqttUrl };
      const sim = new Simulator({ url: g.mqttUrl, devices });
      closers.push([0, `${id} simulator`, () => sim.stop()]);
      sims.push(sim);
      await sim.start();
    }

    const firstBatchAt = Date.now() + o.firstBatchAfterMs;
    batchTimer = setTimeout(() => {
      batchTimer = null;
      const scheduler = cloud.scheduler();
      void scheduler.runNow('cron').catch((err: { code?: string }) => {
        // A cron run that got there first (the demo started just before a cron time): report that one.
        const running = err.code === 'BRAID_ERR_BATCH_RUNNING' ? scheduler.running : null;
        if (running) return running;
        throw err;
      }).then(async (run) => {
        const r = await run.done;
        onBatch?.(`Batch:   run ${r.id} published views v${r.version} (${r.readings} readings); next runs on "${o.batchCron}" (UTC)`);
      }).catch((err: { code?: string }) => {
        // Ctrl-C during the run, or a run starting at that very moment: nothing to report.
        if (err.code !== 'BRAID_ERR_BATCH_RUNNING' && err.code !== 'BRAID_ERR_BATCH_ABORTED' && err.code !== 'BRAID_ERR_CLOSED') logger.error({ err }, 'the demo\'s first batch run failed');
      });
    }, o.firstBatchAfterMs);

    return {
      dataDir: dirs.root, reused: dirs.reused, consoleUrl: `${cloudUrl}/`, readKey, adminKey, gateways, devices: fleet,
      guest: guest!, cloud, firstBatchAt, stats: () => sims.map((s) => s.snapshot()), close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
