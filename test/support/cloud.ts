/**
 * Test support for the cloud: a real CloudServer in a temp dir on 127.0.0.1:0, a cloud in its own
 * process (`node bin/braid.js cloud`, for kill -9), ingest requests as a gateway sends them, and
 * DuckDB reading master/ back.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { DuckDBInstance } from '@duckdb/node-api';
import sqlite3 from 'sqlite3';
import { type CloudConfig, cloudConfigSchema } from '../../cloud/config.js';
import { CloudServer, type CloudServerOptions } from '../../cloud/server.js';
import { addGateway } from '../../cloud/store/credentials.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { loadConfig } from '../../shared/config.js';
import { Db } from '../../shared/sqlite.js';
import type { DeepPartial } from './gateway.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(ROOT, 'bin', 'braid.js');

export type Reading = [seq: number, epoch: number, device: string, metric: string, ts: number, value: number];

export interface IngestBodyDoc {
  v: number; gateway: string; firstSeq: number; lastSeq: number; readings: Reading[];
  epochs: Array<{ epoch: number; firstSeq: number; lastSeq: number }>;
  gaps: Array<{ id: number; reason: string; fromSeq: number; toSeq: number; count: number; minTs: number; maxTs: number; devices: string[] }>;
  sentAt: number;
}

/** A cloud config for tests: loopback, free port, silent, no cron, no env. */
export function testCloudConfig(dataDir: string, overrides: DeepPartial<CloudConfig> = {}): CloudConfig {
  const base = { dataDir, log: { level: 'silent' }, http: { host: '127.0.0.1', port: 0 }, batch: { cron: null } };
  const merge = (a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> => {
    const out = { ...a };
    for (const [k, v] of Object.entries(b)) {
      out[k] = v && typeof v === 'object' && !Array.isArray(v) && out[k] && typeof out[k] === 'object'
        ? merge(out[k] as Record<string, unknown>, v as Record<string, unknown>) : v;
    }
    return out;
  };
  return loadConfig(cloudConfigSchema, { env: {}, flags: merge(base, overrides as Record<string, unknown>) });
}

export interface TestCloud {
  server: CloudServer;
  dir: string;
  url: string;
  port: number;
  close: () => Promise<void>;
}

export async function startTestCloud(dataDir: string, overrides: DeepPartial<CloudConfig> = {}, options: CloudServerOptions = {}): Promise<TestCloud> {
  const server = new CloudServer(testCloudConfig(dataDir, overrides), options);
  const a = await server.start();
  return { server, dir: dataDir, url: a.url, port: a.port, close: () => server.close() };
}

/** Register a gateway in <dataDir>/cloud.db (what `braid cloud gateway add` does); returns its token. */
export async function addGatewayToken(dataDir: string, id: string): Promise<string> {
  const db = await openCloudDb(join(dataDir, 'cloud.db'));
  try {
    return await addGateway(db, id);
  } finally {
    await db.close();
  }
}

/** Run one query on <dataDir>/cloud.db, read-only. */
export async function queryCloudDb<T>(dataDir: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const db = await Db.open(join(dataDir, 'cloud.db'), sqlite3.OPEN_READONLY);
  try {
    await db.exec('PRAGMA busy_timeout = 10000');
    return await db.all<T>(sql, params);
  } finally {
    await db.close();
  }
}

export const T0 = Date.UTC(2024, 10, 24); // 2024-11-24T00:00:00Z

/** Readings seq from..to of one gateway: ts spread over `days` UTC days, value derived from seq. */
export function makeReadings(from: number, to: number, o: { epoch?: number | ((seq: number) => number); devices?: number; days?: number } = {}): Reading[] {
  const out: Reading[] = [];
  const days = o.days ?? 1;
  for (let seq = from; seq <= to; seq++) {
    const epoch = typeof o.epoch === 'function' ? o.epoch(seq) : o.epoch ?? 1;
    const ts = T0 + (seq % days) * 86_400_000 + seq * 1000;
    out.push([seq, epoch, `dev-${seq % (o.devices ?? 3)}`, seq % 2 ? 'temp' : 'hum', ts, seq / 4]);
  }
  return out;
}

/** An ingest body (docs/ingest-protocol.md) for `readings`, firstSeq/lastSeq from them unless given. */
export function ingestBody(gateway: string, readings: Reading[], extra: Partial<IngestBodyDoc> = {}): IngestBodyDoc {
  const firstSeq = readings.length ? readings[0][0] : 1;
  const lastSeq = readings.length ? readings[readings.length - 1][0] : 0;
  return { v: 1, gateway, firstSeq, lastSeq, readings, epochs: [], gaps: [], sentAt: Date.now(), ...extra };
}

export interface Answer { status: number; body: Record<string, unknown>; headers: Headers }

/** POST /api/v1/ingest as the forwarder does (gzip unless told otherwise). */
export async function postIngest(url: string, token: string | null, body: unknown, o: { gzip?: boolean; raw?: Buffer; headers?: Record<string, string> } = {}): Promise<Answer> {
  const gzip = o.gzip ?? true;
  const bytes = o.raw ?? (gzip ? gzipSync(JSON.stringify(body)) : Buffer.from(JSON.stringify(body)));
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(gzip ? { 'content-encoding': 'gzip' } : {}), ...o.headers };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${url}/api/v1/ingest`, { method: 'POST', headers, body: new Uint8Array(bytes) });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try { json = JSON.parse(text) as Record<string, unknown>; } catch { json = { text }; }
  return { status: res.status, body: json, headers: res.headers };
}

export interface MasterRow { gateway: string; seq: number; epoch: number; device: string; metric: string; ts: number; value: number; day: string }

/** Every reading in master/, read by DuckDB as an outside tool would, ordered by (gateway, seq). */
export async function readMaster(dataDir: string): Promise<MasterRow[]> {
  const files = listFiles(join(dataDir, 'master')).filter((f) => f.endsWith('.parquet'));
  if (files.length === 0) return [];
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  try {
    const reader = await conn.runAndReadAll(`
      SELECT gateway, seq, epoch, device, metric, epoch_ms(ts) AS ts, value, CAST(day AS VARCHAR) AS day
      FROM read_parquet('${join(dataDir, 'master').replace(/'/g, "''")}/**/*.parquet', hive_partitioning = true)
      ORDER BY gateway, seq`);
    return reader.getRowObjects().map((r) => ({
      gateway: String(r.gateway), seq: Number(r.seq), epoch: Number(r.epoch), device: String(r.device),
      metric: String(r.metric), ts: Number(r.ts), value: Number(r.value), day: String(r.day),
    }));
  } finally {
    conn.closeSync();
    instance.closeSync();
  }
}

/** Every file under `dir`, recursively (absolute paths). */
export function listFiles(dir: string): string[] {
  let names: string[];
  try { names = readdirSync(dir); } catch { return []; }
  return names.flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? listFiles(p) : [p];
  });
}

/** SHA-256 of every file under `dir`, by path relative to it. */
export function hashTree(dir: string): Map<string, string> {
  return new Map(listFiles(dir).map((p) => [relative(dir, p), createHash('sha256').update(readFileSync(p)).digest('hex')]));
}

// ---------------------------------------------------------------------------------------------
// A cloud in a child process

const READY_RE = /^cloud ready: (http:\/\/\S+)$/m;
const live = new Set<ChildProcess>();

export interface ChildCloud {
  proc: ChildProcess;
  url: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output: () => string;
  stop: (signal: NodeJS.Signals) => Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `node bin/braid.js cloud --data-dir D --http-port N` on 127.0.0.1; resolves once ready. */
export function spawnCloud(dataDir: string, o: { port?: number; env?: Record<string, string>; args?: string[]; readyTimeoutMs?: number } = {}): Promise<ChildCloud> {
  // No BRAID_* of the developer's shell; jest's NODE_OPTIONS are for jest, not the child.
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BRAID_') && k !== 'NODE_OPTIONS') env[k] = v;
  Object.assign(env, { BRAID_HTTP_HOST: '127.0.0.1' }, o.env);
  const proc = spawn(process.execPath, [BIN, 'cloud', '--data-dir', dataDir, '--http-port', String(o.port ?? 0), '--log-level', 'warn', ...(o.args ?? [])], {
    cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(proc);
  let out = '';
  proc.stdout!.setEncoding('utf8').on('data', (s: string) => { out += s; });
  proc.stderr!.setEncoding('utf8').on('data', (s: string) => { out += s; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('exit', (code, signal) => { live.delete(proc); resolve({ code, signal }); });
  });
  const stop = async (signal: NodeJS.Signals) => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    return exited;
  };
  return new Promise((resolve, reject) => {
    const limit = o.readyTimeoutMs ?? 20_000;
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`cloud did not get ready in ${limit} ms:\n${out}`)); }, limit);
    const onData = () => {
      const m = READY_RE.exec(out);
      if (!m) return;
      clearTimeout(timer);
      proc.stdout!.off('data', onData);
      resolve({ proc, url: m[1], exited, stop, output: () => out });
    };
    proc.stdout!.on('data', onData);
    void exited.then((e) => { clearTimeout(timer); reject(new Error(`cloud exited before ready (${e.code ?? e.signal}):\n${out}`)); });
  });
}

/** SIGKILL every child cloud still running (afterEach). */
export async function killAllChildClouds(): Promise<void> {
  await Promise.all([...live].map((p) => new Promise<void>((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) return resolve();
    p.once('exit', () => resolve());
    p.kill('SIGKILL');
  })));
}
