/**
 * The gateway appliance: outbox, device registry, broker, forwarder, speed pusher, local API and
 * host sampler, started in that order and closed in reverse.
 */
import { mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../shared/logger.js';
import { acquireOwnerLock, tryChmod, type OwnerLock } from '../shared/owner-lock.js';
import { metricValue } from '../shared/metrics.js';
import { buildGatewayApi } from './api/index.js';
import { CloudNodes, createCloudNodeMetrics, splitCloudUrls } from './cloudclient/index.js';
import { GatewayAlerts } from './alerts/index.js';
import { GatewayBroker } from './broker/index.js';
import type { GatewayConfig } from './config.js';
import { Forwarder } from './forwarder/index.js';
import { HostSampler } from './health/host.js';
import { Outbox } from './outbox/index.js';
import { DeviceRegistry } from './registry/index.js';
import { readWindows } from './speed/index.js';
import { SpeedPusher } from './speedpush/index.js';

export interface GatewayAddresses {
  mqttPort: number;
  wsPort: number | null;
  tlsPort: number | null;
  httpPort: number;
}

const VERSION = '0.1.0';

export class Gateway {
  readonly config: GatewayConfig;
  readonly registry = new Registry();
  readonly logger: Logger;
  outbox!: Outbox;
  devices!: DeviceRegistry;
  broker!: GatewayBroker;
  forwarder!: Forwarder;
  speedPush!: SpeedPusher;
  alerts!: GatewayAlerts;
  /** The cloud's nodes (cloud.url), shared by the forwarder and the speed pusher; null without a cloud. */
  cloudNodes: CloudNodes | null = null;
  api!: FastifyInstance;
  private host!: HostSampler;
  private ownerLock: OwnerLock | null = null;
  private startedAt = Date.now();
  addresses!: GatewayAddresses;
  private closing: Promise<void> | null = null;

  constructor(config: GatewayConfig, logger: Logger) {
    this.config = config;
    this.logger = logger.child({ gateway: config.id });
    this.registry.setDefaultLabels({});
    collectDefaultMetrics({ register: this.registry });
  }

  async start(): Promise<GatewayAddresses> {
    const c = this.config;
    // Everything in the data dir is this process's own state (readings, device secrets' hashes): 0700.
    mkdirSync(c.dataDir, { recursive: true, mode: 0o700 });
    tryChmod(c.dataDir, 0o700);
    // One owner per data dir, before anything in it is opened: a second gateway exits 2 naming this one.
    this.ownerLock = await acquireOwnerLock(c.dataDir, `braid gateway ${c.id}`);
    this.outbox = await Outbox.open({ dataDir: c.dataDir, logger: this.logger.child({ component: 'outbox' }), registry: this.registry }, {
      ...c.outbox,
      retentionMinutes: c.speed.retentionMinutes,
      pruneCron: c.speed.pruneCron,
      keepUnpushedPartials: c.cloud.url !== null,
    });
    this.devices = await DeviceRegistry.open(c.dataDir);
    // One list for both senders: a node the forwarder left is not the speed push's next target.
    const nodeMetrics = createCloudNodeMetrics(this.registry);
    this.cloudNodes = c.cloud.url === null ? null : new CloudNodes(splitCloudUrls(c.cloud.url), { logger: this.logger, metrics: nodeMetrics }, {
      probeIntervalMs: c.cloud.probeIntervalMs, probeTimeoutMs: Math.min(c.cloud.requestTimeoutMs, 5_000),
    });
    this.forwarder = new Forwarder({
      reader: this.outbox.reader,
      writes: this.outbox.writes,
      // The forwarder binds component=forwarder itself (a second binding is a duplicate JSON key).
      logger: this.logger,
      registry: this.registry,
      gatewayId: c.id,
      nodes: this.cloudNodes ?? undefined,
      onAcked: (info) => {
        this.outbox.acked(info);
        // The cloud is back: a speed push backing off need not wait out its delay.
        this.speedPush?.cloudReachable();
      },
    }, c.cloud);
    this.outbox.inflightUpTo = () => this.forwarder.status().inflightUpToSeq;
    // The outbox's lastSeq lets the forwarder's linger end as soon as a full batch is committed.
    this.outbox.onWork = () => this.forwarder.notify(this.outbox.status().lastSeq);
    this.broker = await GatewayBroker.create({ outbox: this.outbox, registry: this.devices, logger: this.logger.child({ component: 'broker' }), metrics: this.registry }, c.mqtt);
    const broker = this.broker;
    this.alerts = new GatewayAlerts({
      reader: this.outbox.reader,
      writes: this.outbox.writes,
      logger: this.logger,
      registry: this.registry,
      gatewayId: c.id,
      nodes: this.cloudNodes,
      publish: (topic, payload, retain) => new Promise((resolve, reject) => {
        broker.aedes.publish({ cmd: 'publish', topic, payload, qos: 1, retain, dup: false }, (err?: Error | null) => (err ? reject(err) : resolve()));
      }),
    }, {
      ...c.alerts, token: c.cloud.token, requestTimeoutMs: c.cloud.requestTimeoutMs, retryInitialMs: c.cloud.retryInitialMs,
      retryMaxMs: Math.min(c.speed.retryMaxMs, c.cloud.retryMaxMs), retryAfterMaxMs: c.cloud.retryMaxMs, closeGraceMs: 2_000,
    });
    this.speedPush = new SpeedPusher({
      reader: this.outbox.reader,
      writes: this.outbox.writes,
      applied: () => this.outbox.applied(),
      logger: this.logger,
      registry: this.registry,
      gatewayId: c.id,
      health: () => this.health(),
      connectedDevices: () => this.broker.connectedDevices(),
      nodes: this.cloudNodes ?? undefined,
      // The cloud is back: the forwarder's catch-up need not wait out its (longer) backoff.
      onAnswered: () => {
        this.forwarder.cloudReachable();
        this.alerts.cloudReachable();
      },
      alertRules: { version: () => this.alerts.rulesVersion(), received: (version, rules) => this.alerts.received(version, rules) },
    }, {
      url: c.cloud.url, token: c.cloud.token, pushIntervalMs: c.speed.pushIntervalMs, pushMaxPartials: c.speed.pushMaxPartials,
      requestTimeoutMs: c.cloud.requestTimeoutMs, retryInitialMs: Math.min(c.cloud.retryInitialMs, c.speed.retryMaxMs),
      retryMaxMs: Math.min(c.speed.retryMaxMs, c.cloud.retryMaxMs), retryAfterMaxMs: c.cloud.retryMaxMs,
    });
    this.host = new HostSampler(c.dataDir, this.logger, this.registry);
    this.api = buildGatewayApi({
      logger: this.logger,
      registry: this.registry,
      // After every acknowledged reading is in gateway.db: a device's PUBACK, then its window.
      windows: async (device, metric) => {
        await this.outbox.applied();
        return readWindows(this.outbox.reader, device, metric, Date.now());
      },
      health: () => this.health(),
    });

    this.outbox.start();
    await this.forwarder.start();
    await this.alerts.start();
    await this.speedPush.start();
    this.host.start();
    const mqtt = await this.broker.listen();
    await this.api.listen({ host: c.http.host, port: c.http.port });
    const httpPort = (this.api.server.address() as AddressInfo).port;
    this.addresses = { mqttPort: mqtt.port, wsPort: mqtt.wsPort, tlsPort: mqtt.tlsPort, httpPort };
    this.startedAt = Date.now();
    this.logger.info({ ...this.addresses, dataDir: c.dataDir, cloud: this.cloudNodes?.status().nodes.join(',') ?? null }, 'gateway started');
    return this.addresses;
  }

  /** The health document of GET /api/v1/health. */
  async health(): Promise<Record<string, unknown>> {
    const o = this.outbox.status();
    const f = this.forwarder.status();
    const sp = this.speedPush.status();
    const value = (name: string, labels?: Record<string, string>) => metricValue(this.registry, name, labels);
    return {
      status: 'ok',
      gatewayId: this.config.id,
      version: VERSION,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      outbox: {
        pending: o.pending,
        lastSeq: o.lastSeq,
        bytes: o.bytes,
        maxBytes: this.config.outbox.maxBytes,
        epoch: o.epoch,
        epochOpen: o.epochOpen,
        ackedSeq: f.ackedSeq,
        commitsFailingSince: this.outbox.commitsFailingSince() === null ? null : new Date(this.outbox.commitsFailingSince()!).toISOString(),
      },
      cloud: this.cloudNodes === null ? null : this.cloudStatus(),
      forwarder: {
        cloudUrl: f.cloudUrl,
        lastSuccessAt: f.lastSuccessAt ? new Date(f.lastSuccessAt).toISOString() : null,
        consecutiveFailures: f.consecutiveFailures,
        lastError: f.lastError ?? null,
      },
      speedPush: {
        cloudUrl: sp.cloudUrl,
        lastSuccessAt: sp.lastSuccessAt ? new Date(sp.lastSuccessAt).toISOString() : null,
        watermark: sp.watermark,
        consecutiveFailures: sp.consecutiveFailures,
      },
      alerts: (() => {
        const a = this.alerts.status();
        return { ...a, lastSuccessAt: a.lastSuccessAt ? new Date(a.lastSuccessAt).toISOString() : null };
      })(),
      dropped: {
        queueFull: await value('braid_readings_dropped_total', { reason: 'queue_full' }),
        diskBudget: await value('braid_readings_dropped_total', { reason: 'disk_budget' }),
        diskFloor: await value('braid_readings_dropped_total', { reason: 'disk_floor' }),
        quarantineOverflow: await value('braid_quarantine_dropped_total'),
      },
      readings: {
        accepted: await value('braid_readings_accepted_total'),
        duplicates: await value('braid_readings_duplicate_total'),
        invalid: await value('braid_payload_invalid_total'),
      },
      quarantined: o.quarantined,
      devices: { connected: this.broker.connected, registered: await this.devices.count() },
      host: this.host.current,
    };
  }

  /** The `cloud` part of the health document: the nodes of cloud.url and the one requests go to. */
  private cloudStatus(): Record<string, unknown> {
    const s = this.cloudNodes!.status();
    return { ...s, lastFailoverAt: s.lastFailoverAt === null ? null : new Date(s.lastFailoverAt).toISOString() };
  }

  /** SIGTERM path: stop taking connections, commit what is in flight, close everything. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const step = async (name: string, fn: () => Promise<unknown> | undefined) => {
      try { await fn(); } catch (err) { this.logger.error({ err }, `closing ${name} failed`); }
    };
    await step('api', () => this.api?.close());
    // Before the broker: a round in progress still publishes its transitions.
    await step('alerts', () => this.alerts?.close());
    await step('broker', () => this.broker?.close());
    await step('speed push', () => this.speedPush?.close());
    await step('forwarder', () => this.forwarder?.close());
    this.cloudNodes?.close();
    await step('host', () => this.host?.close());
    await step('outbox', () => this.outbox?.close());
    await step('registry', () => this.devices?.close());
    await step('owner lock', () => this.ownerLock?.release());
    this.logger.info('gateway stopped');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
