/** Fixtures for the forwarder tests: a real gateway.db in a temp dir, and an ingest-speaking script. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import type { IngestBody } from '../../edge/forwarder/batch.js';
import { type AckInfo, Forwarder, type ForwarderOptions } from '../../edge/forwarder/index.js';
import { openGatewayDb, openGatewayReader } from '../../edge/store/schema.js';
import { type Db, WriteQueue } from '../../shared/sqlite.js';
import { type Logger, nullLogger } from '../../shared/logger.js';
import { HttpScript, type ScriptedRequest, type Step, answer } from './http-script.js';

export interface GatewayFixture {
  dir: string;
  writer: Db;
  writes: WriteQueue;
  reader: Db;
  close(): Promise<void>;
}

export async function openGatewayFixture(): Promise<GatewayFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'braid-forwarder-'));
  const file = join(dir, 'gateway.db');
  const writer = await openGatewayDb(file);
  const reader = await openGatewayReader(file);
  return {
    dir, writer, writes: new WriteQueue(writer), reader,
    async close() {
      await reader.close();
      await writer.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Insert readings with seq from..from+count-1 (ts = seq, value = seq / 10). */
export function insertReadings(fx: GatewayFixture, from: number, count: number, o: { epoch?: number; device?: string; metric?: string } = {}): Promise<void> {
  return fx.writes.tx(async (db) => {
    for (let seq = from; seq < from + count; seq++) {
      await db.run('INSERT INTO outbox (seq, epoch, device, metric, ts, value) VALUES (?, ?, ?, ?, ?, ?)',
        [seq, o.epoch ?? 1, o.device ?? 'dev-1', o.metric ?? 'temp', 1_732_406_400_000 + seq, seq / 10]);
    }
  });
}

export function insertEpoch(fx: GatewayFixture, epoch: number, firstSeq: number, lastSeq: number, closed: boolean): Promise<unknown> {
  return fx.writes.run((db) => db.run('INSERT INTO epochs (epoch, first_seq, last_seq, opened_at, closed_at) VALUES (?, ?, ?, ?, ?)',
    [epoch, firstSeq, lastSeq, 1000, closed ? 2000 : null]));
}

export async function insertGap(fx: GatewayFixture, fromSeq: number, toSeq: number, devices: string[]): Promise<number> {
  const r = await fx.writes.run((db) => db.run(
    'INSERT INTO gaps (created_at, reason, from_seq, to_seq, count, min_ts, max_ts, devices) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    [3000, 'disk_budget', fromSeq, toSeq, toSeq - fromSeq + 1, 10, 20, JSON.stringify(devices)]));
  return r.lastID;
}

export async function outboxSeqs(fx: GatewayFixture): Promise<number[]> {
  return (await fx.reader.all<{ seq: number }>('SELECT seq FROM outbox ORDER BY seq')).map((r) => r.seq);
}

export function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/** The JSON a forwarder sent, un-gzipped. */
export function decodeIngest(req: ScriptedRequest): IngestBody {
  return JSON.parse(gunzipSync(req.body).toString('utf8')) as IngestBody;
}

/** 200 acknowledging `ackSeq(body)` (default: the batch's lastSeq), as cloud ingest does. */
export function ack(ackSeq: (b: IngestBody) => number = (b) => b.lastSeq): Step {
  return (req, res) => {
    const body = decodeIngest(req);
    return answer.status(200, { ackSeq: ackSeq(body), stored: body.readings.length, duplicates: 0 })(req, res);
  };
}

/** Poll `pred` every 10 ms until true, or throw after `timeoutMs`. */
export async function until(pred: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The seqs a request carried. */
export const seqsOf = (r: ScriptedRequest): number[] => decodeIngest(r).readings.map((x) => x[0]);

/** The seqs in first-arrival order: what the cloud ends up with, however often a batch was resent. */
export function firstArrivals(reqs: ScriptedRequest[]): number[] {
  const seen = new Set<number>();
  const out: number[] = [];
  for (const r of reqs) for (const s of seqsOf(r)) if (!seen.has(s)) { seen.add(s); out.push(s); }
  return out;
}

/** A metric's value (with these labels) on a registry. */
export async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (!m) throw new Error(`no metric ${name}`);
  const v = (await m.get()).values.find((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l));
  return v?.value ?? 0;
}

/** A pino logger (level warn) whose lines land parsed in `lines`. */
export function captureLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({ write(chunk, _enc, cb) { lines.push(JSON.parse(String(chunk)) as Record<string, unknown>); cb(); } });
  return { logger: pino({ level: 'warn' }, stream), lines };
}

export interface Made { fwd: Forwarder; registry: Registry; acks: AckInfo[] }

export interface ForwarderHarness {
  readonly fx: GatewayFixture;
  readonly cloud: HttpScript;
  /** A forwarder on the fixture's database, pointed at the cloud script, with small retry delays. */
  make(opts?: Partial<ForwarderOptions>, logger?: Logger): Made;
  /** Rows still in the outbox. */
  pending(): Promise<number>;
}

/**
 * Per test: a fresh gateway.db and a cloud script that acknowledges every batch by default;
 * afterEach closes in reverse start order: forwarders, then the server, then the database.
 */
export function useForwarderHarness(): ForwarderHarness {
  let fx: GatewayFixture | undefined;
  let cloud: HttpScript | undefined;
  let forwarders: Forwarder[] = [];
  beforeEach(async () => {
    fx = await openGatewayFixture();
    cloud = await HttpScript.start(ack());
  });
  afterEach(async () => {
    for (const f of forwarders) await f.close();
    forwarders = [];
    await cloud?.close();
    await fx?.close();
  });
  const h: ForwarderHarness = {
    get fx() { return fx as GatewayFixture; },
    get cloud() { return cloud as HttpScript; },
    make(opts = {}, logger = nullLogger()) {
      const registry = new Registry();
      const acks: AckInfo[] = [];
      const fwd = new Forwarder(
        { reader: h.fx.reader, writes: h.fx.writes, logger, registry, gatewayId: 'gw-1', onAcked: (i) => acks.push(i) },
        { url: h.cloud.url, token: 'tok-1', retryInitialMs: 20, retryMaxMs: 400, requestTimeoutMs: 10_000, idlePollMs: 50, ...opts },
      );
      forwarders.push(fwd);
      return { fwd, registry, acks };
    },
    async pending() { return (await outboxSeqs(h.fx)).length; },
  };
  return h;
}
