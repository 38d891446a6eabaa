/**
 * Test support for the speed store and the registry: the whole cloud of `braid cloud` (createCloud:
 * server, batch layer, speed store) in a temp dir on 127.0.0.1:0, credentials, speed pushes as the
 * gateway sends them, and cloud.db read back.
 */
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { type CloudApp, createCloud } from '../../cloud/app.js';
import type { CloudConfig } from '../../cloud/config.js';
import type { SpeedOptions } from '../../cloud/speed/index.js';
import { addApiKey, addGateway } from '../../cloud/store/credentials.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { type Answer, queryCloudDb, testCloudConfig } from '../support/cloud.js';
import type { DeepPartial } from '../support/gateway.js';

export interface SpeedCloud {
  app: CloudApp;
  dir: string;
  url: string;
  port: number;
  close: () => Promise<void>;
}

/** createCloud on `dir`, silent, no cron, loopback, free port (or `http.port`). */
export async function startSpeedCloud(dir: string, overrides: DeepPartial<CloudConfig> = {}, speed: Partial<SpeedOptions> = {}): Promise<SpeedCloud> {
  const app = createCloud(testCloudConfig(dir, overrides), { speed });
  const a = await app.server.start();
  return { app, dir, url: a.url, port: a.port, close: () => app.server.close() };
}

/** Gateway tokens for `gateways` and an admin and a read key, written to <dir>/cloud.db before the cloud starts. */
export async function credentials(dir: string, gateways: string[]): Promise<{ tokens: Record<string, string>; admin: string; read: string }> {
  const db = await openCloudDb(join(dir, 'cloud.db'));
  try {
    const tokens: Record<string, string> = {};
    for (const g of gateways) tokens[g] = await addGateway(db, g);
    return { tokens, admin: await addApiKey(db, 'ops', 'admin'), read: await addApiKey(db, 'app', 'read') };
  } finally {
    await db.close();
  }
}

export type Tuple = [string, string, number, number, number, number, number, number, number, number, number, number, number];

export const MINUTE0 = Date.UTC(2024, 10, 24, 10, 0);

/** A well-formed partial of `count` readings of value `v` (device, metric, minute index, epoch). */
export function partial(device: string, metric: string, minuteIndex: number, epoch: number, count = 1, v = 20): Tuple {
  const minute = MINUTE0 + minuteIndex * 60_000;
  return [device, metric, minute, epoch, count, v * count, v, v, 0, v, minute + 1000, v, minute + 1000 + (count - 1) * 10];
}

export function pushBody(gateway: string, partials: unknown[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { v: 1, gateway, sentAt: Date.now(), partials, health: { status: 'ok', gatewayId: gateway, outbox: { pending: 3 } }, devices: [], ...extra };
}

/** POST /api/v1/speed as the pusher does (gzip unless told otherwise). */
export async function postSpeed(url: string, token: string | null, body: unknown, o: { gzip?: boolean; raw?: Buffer } = {}): Promise<Answer> {
  const gzip = o.gzip ?? true;
  const bytes = o.raw ?? (gzip ? gzipSync(JSON.stringify(body)) : Buffer.from(JSON.stringify(body)));
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(gzip ? { 'content-encoding': 'gzip' } : {}) };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${url}/api/v1/speed`, { method: 'POST', headers, body: new Uint8Array(bytes) });
  return answerOf(res);
}

export async function getJson(url: string, path: string, key: string | null): Promise<Answer> {
  const res = await fetch(`${url}${path}`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  return answerOf(res);
}

async function answerOf(res: Response): Promise<Answer> {
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try { json = JSON.parse(text) as Record<string, unknown>; } catch { json = { text }; }
  return { status: res.status, body: json, headers: res.headers };
}

export interface StoredPartial {
  gateway: string; device: string; metric: string; minute: number; epoch: number; count: number; sum: number;
  min: number; max: number; m2: number; first: number; first_ts: number; last: number; last_ts: number;
}

/** speed_partials in cloud.db, in key order. */
export function storedPartials(dir: string, gateway?: string): Promise<StoredPartial[]> {
  return queryCloudDb<StoredPartial>(dir,
    `SELECT gateway, device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts FROM speed_partials
     ${gateway ? 'WHERE gateway = ?' : ''} ORDER BY gateway, device, metric, minute, epoch`, gateway ? [gateway] : []);
}
