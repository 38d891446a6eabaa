/**
 * Test support: a real gateway in a temp dir on free loopback ports, real MQTT.js clients, and
 * Debian's mosquitto clients when installed (a missing one skips with a message, but fails under CI=true).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { Registry } from 'prom-client';
import { gatewayConfigSchema, type GatewayConfig } from '../../edge/config.js';
import { Gateway } from '../../edge/gateway.js';
import { loadConfig } from '../../shared/config.js';
import { nullLogger } from '../../shared/logger.js';

export type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

export function tempDir(prefix = 'braid-test-'): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A gateway config for tests: loopback, free ports, no env, no cron. */
export function testGatewayConfig(dataDir: string, overrides: DeepPartial<GatewayConfig> = {}): GatewayConfig {
  const base = {
    id: 'gw-test',
    dataDir,
    log: { level: 'silent' },
    mqtt: { host: '127.0.0.1', port: 0 },
    http: { host: '127.0.0.1', port: 0 },
    speed: { pruneCron: '0 0 1 1 *' },
  };
  const merged = mergeDeep(base, overrides as Record<string, unknown>);
  return loadConfig(gatewayConfigSchema, { env: {}, flags: merged });
}

function mergeDeep(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && out[k] && typeof out[k] === 'object'
      ? mergeDeep(out[k] as Record<string, unknown>, v as Record<string, unknown>)
      : v;
  }
  return out;
}

export interface TestGateway {
  gateway: Gateway;
  dir: string;
  mqttUrl: string;
  httpUrl: string;
  /** Register a device and return its secret. */
  addDevice: (id: string, secret?: string) => Promise<string>;
  close: () => Promise<void>;
}

export async function startTestGateway(overrides: DeepPartial<GatewayConfig> = {}, dir?: string): Promise<TestGateway> {
  const tmp = dir ? null : tempDir();
  const dataDir = dir ?? tmp!.path;
  const gateway = new Gateway(testGatewayConfig(dataDir, overrides), nullLogger());
  const a = await gateway.start();
  return {
    gateway,
    dir: dataDir,
    mqttUrl: `mqtt://127.0.0.1:${a.mqttPort}`,
    httpUrl: `http://127.0.0.1:${a.httpPort}`,
    addDevice: (id, secret) => gateway.devices.add(id, secret),
    close: async () => {
      await gateway.close();
      tmp?.remove();
    },
  };
}

/** Connect a device with MQTT.js; rejects with the CONNACK error on refusal. */
export function connectDevice(url: string, id: string, secret: string | undefined, extra: IClientOptions = {}): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { clientId: id, username: id, password: secret, reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, ...extra });
    client.once('connect', () => resolve(client));
    client.once('error', (err) => { client.end(true); reject(err); });
    client.once('close', () => reject(new Error('connection closed before CONNACK')));
  });
}

export function publish(client: MqttClient, topic: string, payload: string | Buffer, qos: 0 | 1 = 1): Promise<void> {
  return new Promise((resolve, reject) => client.publish(topic, payload, { qos }, (err) => (err ? reject(err) : resolve())));
}

export function endClient(client: MqttClient): Promise<void> {
  return new Promise((resolve) => client.end(true, {}, () => resolve()));
}

/** Group commits so far on a registry (the count of the braid_commit_batch_readings histogram). */
export async function commitCount(registry: Registry): Promise<number> {
  const { values } = await registry.getSingleMetric('braid_commit_batch_readings')!.get();
  return (values as Array<{ metricName?: string; value: number }>).find((v) => v.metricName === 'braid_commit_batch_readings_count')?.value ?? 0;
}

/** Poll `check` until it returns a truthy value or `timeoutMs` passes. */
/**
 * A read of a running gateway's gateway.db on its reader connection, once every reading it has
 * acknowledged is in the file: the commit log's groups go in within a second otherwise
 * (Outbox.applied, edge/outbox/commit-log.ts).
 */
export async function gatewayDbAll<T>(outbox: { applied(): Promise<void>; reader: { all<R>(sql: string, params?: unknown[]): Promise<R[]> } }, sql: string, params: unknown[] = []): Promise<T[]> {
  await outbox.applied();
  return outbox.reader.all<T>(sql, params);
}

/** gatewayDbAll's first row (undefined for none). */
export async function gatewayDbGet<T>(outbox: Parameters<typeof gatewayDbAll>[0], sql: string, params: unknown[] = []): Promise<T | undefined> {
  return (await gatewayDbAll<T>(outbox, sql, params))[0];
}

export async function eventually<T>(check: () => Promise<T> | T, timeoutMs = 5000, stepMs = 25): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`condition not met in ${timeoutMs} ms${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/**
 * Whether a Debian-packaged binary is installed. Missing: a visible skip message, except under
 * CI=true where the suite must fail rather than skip.
 */
export function requireBinary(name: string, debianPackage: string): boolean {
  try {
    execFileSync('which', [name], { stdio: 'ignore' });
    return true;
  } catch {
    const msg = `${name} is not installed (apt-get install ${debianPackage})`;
    if (process.env.CI === 'true') throw new Error(`${msg}: required under CI`);
    // eslint-disable-next-line no-console
    console.warn(`SKIPPED: ${msg}`);
    return false;
  }
}
