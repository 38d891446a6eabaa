/**
 * The oracle of invariant 3 for the merged query (DESIGN.md "The invariants", 3): every answer of
 * GET /api/v1/query equals the same computation from scratch over the deduplicated readings that
 * reached the system (each identity once, the lowest (gateway, seq) kept [INV-2]), and its batch /
 * speed split is the one the answer's own manifest E implies (batch: the readings of epochs
 * <= E[g], deduplicated as the batch job does; speed: the readings of epochs > E[g]).
 *
 * What "reached the system" is, the caller decides from the system's own durable state (master/
 * after the outboxes drained), cross-checked against what the devices published: see
 * test/cloud/oracle.test.ts. Here: the from-scratch computation (shared/summary.ts over single
 * readings, test/support/brute-force.ts for the dedup), the query sweep (every scope, every agg,
 * 1m and 5m at every scope plus hours and days), and a test-only fault for the speed side that
 * the oracle must catch.
 */
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { type Manifest, readManifest } from '../../cloud/batch/index.js';
import type { SpeedSource } from '../../cloud/query/index.js';
import { AGGS, type Agg, EMPTY, add } from '../../shared/summary.js';
import { bucketStart, iso, parseDuration } from '../../shared/time.js';
import { type RawReading, dedupCovered } from './brute-force.js';
import { queryGatewayDb } from './child-gateway.js';
import { queryCloudDb, readMaster } from './cloud.js';
import { connectDevice, eventually } from './gateway.js';
import { type ExpectedPoint, pointDiffs, type TestScope } from './query-fixture.js';

export type { RawReading } from './brute-force.js';
export type { TestScope } from './query-fixture.js';

/**
 * Steps swept per scope: 1m and 5m at every scope (the minute views, whole and merged five to a
 * bucket), and the hourly and daily views (docs/serving.md "Limits").
 */
export const ORACLE_STEPS = { device: ['1m', '5m', '1h'], gateway: ['1m', '5m', '1h', '1d'], fleet: ['1m', '5m', '1h', '1d'] } as const;

const epochOf = (e: Readonly<Record<string, number>>, g: string): number => (Object.hasOwn(e, g) ? e[g] : 0);

function inScope(r: RawReading, scope: TestScope): boolean {
  return 'device' in scope ? r.device === scope.device : 'gateway' in scope ? r.gateway === scope.gateway : true;
}

/**
 * The expected points of one query, from scratch: per bucket of `stepMs` in [fromMs, toMs), the
 * summary of the deduplicated readings of `metric` in `scope`; `batch` counts those the watermark
 * covers (deduplicated among themselves, as the views are), `speed` those of epochs above it.
 * A reading repeated across gateways must end up on one side only for batch + speed to equal
 * count: the answer is checked against that too.
 */
export function truthPoints(readings: readonly RawReading[], q: { metric: string; scope: TestScope; stepMs: number; fromMs: number; toMs: number },
  watermark: Readonly<Record<string, number>>, stale: (gateway: string) => boolean = () => false): ExpectedPoint[] {
  const mine = (r: RawReading) => r.metric === q.metric && r.ts >= q.fromMs && r.ts < q.toMs;
  const relevant = readings.filter(mine);
  const buckets = new Map<number, ExpectedPoint>();
  const at = (ts: number): ExpectedPoint => {
    const start = bucketStart(ts, q.stepMs);
    let b = buckets.get(start);
    if (!b) {
      b = { t: iso(start), summary: { ...EMPTY }, count: 0, batch: 0, speed: 0, provisional: false };
      buckets.set(start, b);
    }
    return b;
  };
  // The truth: each identity once, the lowest (gateway, seq); the scope applies to the one kept.
  for (const r of dedupCovered(relevant)) {
    if (!inScope(r, q.scope)) continue;
    const b = at(r.ts);
    b.summary = add(b.summary, r.value, r.ts, r.device);
    b.count += 1;
  }
  for (const r of dedupCovered(relevant, watermark)) if (inScope(r, q.scope)) at(r.ts).batch += 1;
  for (const r of relevant) {
    if (!(r.epoch > epochOf(watermark, r.gateway)) || !inScope(r, q.scope)) continue;
    const b = at(r.ts);
    b.speed += 1;
    if (stale(r.gateway)) b.provisional = true;
  }
  return [...buckets.entries()].sort(([a], [b]) => a - b).map(([, p]) => p);
}

export interface OracleTarget {
  /** Cloud base URL. */
  url: string;
  /** A read key. */
  key: string;
  /** The cloud's views/ (the live manifest). */
  viewsDir: string;
  /** Cluster mode: the nodes asked in turn (query i goes to urls[i mod n]) instead of `url`. */
  urls?: readonly string[];
  /** Cluster mode: the live manifest as the store's pointer says (default: views/manifest.json). */
  liveManifest?: () => Promise<Manifest | null>;
}

export interface OracleSweep {
  /** Every reading that reached the system, with gateway, seq and epoch (duplicates across gateways included). */
  readings: readonly RawReading[];
  /** Gateways to query one by one (also those without a reading of some metric: they must answer no points). */
  gateways: readonly string[];
  /** Devices to query one by one. */
  devices: readonly string[];
  /** The range queried, epoch ms; rounded to each step by the cloud (and here). */
  fromMs: number;
  toMs: number;
  /** Whether a gateway's speed parts are provisional (default: none is). */
  stale?: (gateway: string) => boolean;
  /** Queries in flight at once. */
  concurrency?: number;
}

export interface OracleReport {
  /** Every difference found, one line each (empty: the oracle agrees). */
  diffs: string[];
  queries: number;
  /** Answers with at least one difference. */
  wrongAnswers: number;
  /** Points compared. */
  points: number;
  /** Points with a batch part, with a speed part. */
  batchPoints: number;
  speedPoints: number;
  /** Manifest versions the answers carried. */
  versions: number[];
}

interface Answer {
  status: number;
  body: {
    metric: string; scope: TestScope; step: string; agg: string;
    manifest: { version: number; watermark: Record<string, number> };
    points: Array<{ t: string; value: number | null; count: number; batch: number; speed: number; provisional: boolean }>;
  };
}

async function ask(t: OracleTarget, params: Record<string, string | number>): Promise<Answer> {
  const qs = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]));
  const res = await fetch(`${t.url}/api/v1/query?${qs}`, { headers: { authorization: `Bearer ${t.key}` } });
  const text = await res.text();
  let body: Answer['body'];
  try { body = JSON.parse(text) as Answer['body']; } catch { body = { text } as unknown as Answer['body']; }
  return { status: res.status, body };
}

/** Run `fns` with at most `n` at once. */
async function pool(n: number, fns: Array<() => Promise<void>>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, fns.length) }, async () => {
    while (next < fns.length) await fns[next++]();
  }));
}

interface QuerySpec { metric: string; scope: TestScope; params: Record<string, string>; step: string; stepMs: number; agg: Agg }

/**
 * Ask every (metric, scope, step, agg) and compare each answer with truthPoints() under the
 * answer's own manifest; the manifest must be the live one (the one live before and after the
 * query, or, when a batch run published meanwhile, one of the two, with its E).
 */
export async function sweepOracle(target: OracleTarget, sweep: OracleSweep): Promise<OracleReport> {
  const report: OracleReport = { diffs: [], queries: 0, wrongAnswers: 0, points: 0, batchPoints: 0, speedPoints: 0, versions: [] };
  const versions = new Set<number>();
  const manifests = new Map<number, Manifest>();
  const live = async (): Promise<Manifest | null> => {
    const m = target.liveManifest ? await target.liveManifest() : await readManifest(target.viewsDir);
    if (m) manifests.set(m.version, m);
    return m;
  };
  // One truth per (metric, scope, step, watermark): the aggs derive from the same buckets.
  const truths = new Map<string, ExpectedPoint[]>();
  const truth = (q: QuerySpec, watermark: Record<string, number>) => {
    const k = JSON.stringify([q.metric, q.scope, q.step, watermark]);
    let t = truths.get(k);
    if (!t) {
      const fromMs = bucketStart(sweep.fromMs, q.stepMs);
      const toMs = Math.ceil(sweep.toMs / q.stepMs) * q.stepMs;
      t = truthPoints(sweep.readings, { metric: q.metric, scope: q.scope, stepMs: q.stepMs, fromMs, toMs }, watermark, sweep.stale);
      truths.set(k, t);
    }
    return t;
  };

  let asked = 0;
  const check = async (q: QuerySpec): Promise<string[]> => {
    const before = await live();
    const url = target.urls ? target.urls[asked++ % target.urls.length] : target.url;
    const { status, body } = await ask({ ...target, url }, { metric: q.metric, ...q.params, from: sweep.fromMs, to: sweep.toMs, step: q.step, agg: q.agg });
    const after = await live();
    if (status !== 200) return [`status ${status} ${JSON.stringify(body).slice(0, 200)}`];
    const out: string[] = [];
    const echo = { metric: body.metric, scope: body.scope, step: body.step, agg: body.agg };
    if (JSON.stringify(echo) !== JSON.stringify({ metric: q.metric, scope: q.scope, step: q.step, agg: q.agg })) out.push(`answered ${JSON.stringify(echo)}`);
    const v = body.manifest.version;
    versions.add(v);
    const lo = before?.version ?? 0;
    const hi = after?.version ?? 0;
    const wantE = v === 0 ? {} : manifests.get(v)?.watermark;
    if (v < lo || v > hi || JSON.stringify(body.manifest.watermark) !== JSON.stringify(wantE)) {
      out.push(`manifest ${JSON.stringify(body.manifest)}, live was ${lo} before and ${hi} after (E ${JSON.stringify(wantE)})`);
    }
    out.push(...pointDiffs(body.points, truth(q, body.manifest.watermark), q.agg));
    for (const p of body.points) {
      report.points++;
      if (p.batch > 0) report.batchPoints++;
      if (p.speed > 0) report.speedPoints++;
      if (p.batch + p.speed !== p.count) out.push(`${p.t} batch ${p.batch} + speed ${p.speed} != count ${p.count}`);
    }
    return out;
  };

  const scopes: Array<{ scope: TestScope; params: Record<string, string>; steps: readonly string[] }> = [
    { scope: { fleet: true }, params: {}, steps: ORACLE_STEPS.fleet },
    ...sweep.gateways.map((g) => ({ scope: { gateway: g }, params: { gateway: g }, steps: ORACLE_STEPS.gateway })),
    ...sweep.devices.map((d) => ({ scope: { device: d }, params: { device: d }, steps: ORACLE_STEPS.device })),
  ];
  const specs: QuerySpec[] = [];
  for (const metric of [...new Set(sweep.readings.map((r) => r.metric))].sort()) {
    for (const { scope, params, steps } of scopes) {
      for (const step of steps) for (const agg of AGGS) specs.push({ metric, scope, params, step, stepMs: parseDuration(step), agg });
    }
  }
  await pool(sweep.concurrency ?? 4, specs.map((q) => async () => {
    const diffs = await check(q);
    report.queries++;
    if (diffs.length) report.wrongAnswers++;
    for (const d of diffs) report.diffs.push(`${q.metric} ${JSON.stringify(q.scope)} step ${q.step} agg ${q.agg}: ${d}`);
  }));
  report.versions = [...versions].sort((a, b) => a - b);
  return report;
}

/** A deliberately broken merge, switched on and off by the test while the cloud runs. */
export interface SpeedFault {
  /** Count the stored partials of epochs <= E[g] again (the batch views already hold their readings). */
  doubleCountCovered: boolean;
}

/**
 * The speed side of the merged query with a test-only fault: `QueryLayerOptions.speed` takes it
 * (createCloud(config, { query: { speed: (ctx) => faultySpeed(cloudSpeedSource(ctx.db.reader), fault) } })).
 * With the fault off it is the store, unchanged.
 */
export function faultySpeed(inner: SpeedSource, fault: SpeedFault): SpeedSource {
  return {
    async readSpeedPartials(req) {
      const rows = await inner.readSpeedPartials(req);
      if (!fault.doubleCountCovered) return rows;
      // The partials the cut leaves out (still stored until the prune behind the live manifest), counted again.
      const every = await inner.readSpeedPartials({ ...req, watermark: {} });
      return rows.concat(every.filter((p) => !(p.epoch > epochOf(req.watermark, p.gateway))));
    },
    gatewayLastContact: () => inner.gatewayLastContact(),
  };
}

// ---------------------------------------------------------------------------------------------
// The fleet side: devices that publish like firmware, and the checkpoint waits.

/** One publish; resolves true on the PUBACK (QoS 1) or once written (QoS 0), false if the connection went first. */
export function publishOnce(client: MqttClient, topic: string, payload: string, qos: 0 | 1): Promise<boolean> {
  return new Promise((resolve) => {
    if (!client.connected) return resolve(false);
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      client.off('close', onClose);
      resolve(ok);
    };
    const onClose = () => finish(false);
    client.on('close', onClose);
    client.publish(topic, payload, { qos }, (err) => finish(!err));
  });
}

/** A message of one device: one event time, one value per metric. */
export interface DeviceMsg { device: string; ts: number; values: Record<string, number> }

/** Told about every publish attempt and every PUBACK (the publisher's side of what reached a gateway). */
export interface PublishLog {
  attempt(gateway: string, msg: DeviceMsg): void;
  acked(gateway: string, msg: DeviceMsg): void;
}

/**
 * A device as firmware behaves: publishes one message at a time to the gateway it is attached to,
 * and when the connection goes before the PUBACK (a gateway killed, restarting), reconnects and
 * sends the same message again (at least once); a QoS 0 message is not sent again.
 */
export class OracleDevice {
  private client: MqttClient | null = null;
  /** QoS 1 messages sent again because the connection went before their PUBACK. */
  resends = 0;

  constructor(readonly id: string, private readonly secret: string, public gateway: string,
    private readonly urlOf: (gateway: string) => string | null, private readonly log: PublishLog) {}

  async send(msg: DeviceMsg, qos: 0 | 1, timeoutMs = 30_000): Promise<void> {
    const payload = JSON.stringify({ ts: msg.ts, ...msg.values });
    const until = Date.now() + timeoutMs;
    for (;;) {
      const c = await this.connected(until);
      const g = this.gateway;
      this.log.attempt(g, msg);
      if (await publishOnce(c, `devices/${this.id}/telemetry`, payload, qos)) {
        if (qos === 1) this.log.acked(g, msg);
        return;
      }
      await this.drop();
      if (qos === 0) return;
      this.resends++;
      if (Date.now() > until) throw new Error(`${this.id}: no PUBACK for ts ${msg.ts} in ${timeoutMs} ms`);
    }
  }

  /** Attach to another gateway (the next send connects there). */
  async moveTo(gateway: string): Promise<void> {
    await this.drop();
    this.gateway = gateway;
  }

  /** End the connection (pending callbacks fail). */
  async drop(): Promise<void> {
    const c = this.client;
    this.client = null;
    if (c) await new Promise<void>((resolve) => c.end(true, {}, () => resolve()));
  }

  private async connected(until: number): Promise<MqttClient> {
    if (this.client?.connected) return this.client;
    await this.drop();
    for (;;) {
      const url = this.urlOf(this.gateway);
      if (url) {
        try {
          const c = await connectDevice(url, this.id, this.secret);
          // Errors after the CONNACK (a reset when the gateway dies) arrive as 'close' too.
          c.on('error', () => undefined);
          this.client = c;
          return c;
        } catch { /* the gateway is down or restarting */ }
      }
      if (Date.now() > until) throw new Error(`${this.id}: could not connect to ${this.gateway}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** One gateway as the checkpoint waits see it: its data dir and its health document. */
export interface OracleGateway {
  id: string;
  dir: string;
  health: () => Promise<{ outbox: { pending: number; lastSeq: number } }>;
}

/** GET /api/v1/health of a gateway (a child process). */
export async function httpHealth(httpUrl: string): Promise<{ outbox: { pending: number; lastSeq: number } }> {
  const res = await fetch(`${httpUrl}/api/v1/health`);
  if (res.status !== 200) throw new Error(`health: ${res.status}`);
  return (await res.json()) as { outbox: { pending: number; lastSeq: number } };
}

/** Wait until every outbox is empty (everything acknowledged by cloud ingest); each gateway's last seq. */
export async function waitDrained(gateways: readonly OracleGateway[], timeoutMs = 20_000): Promise<Record<string, number>> {
  const last: Record<string, number> = {};
  for (const g of gateways) {
    last[g.id] = (await eventually(async () => {
      const h = await g.health();
      return h.outbox.pending === 0 ? { seq: h.outbox.lastSeq } : null;
    }, timeoutMs, 50))!.seq;
  }
  return last;
}

/** Wait until every epoch of every gateway is closed and reported to the cloud; each gateway's last epoch. */
export async function waitEpochsReported(gateways: readonly OracleGateway[], timeoutMs = 20_000): Promise<Record<string, number>> {
  const last: Record<string, number> = {};
  for (const g of gateways) {
    last[g.id] = (await eventually(async () => {
      const [r] = await queryGatewayDb<{ open: number | null; unreported: number | null; last: number | null }>(g.dir,
        'SELECT SUM(closed_at IS NULL) AS open, SUM(reported = 0) AS unreported, MAX(epoch) AS last FROM epochs');
      return r.open === 0 && r.unreported === 0 ? { epoch: r.last ?? 0 } : null;
    }, timeoutMs, 50))!.epoch;
  }
  return last;
}

/**
 * Wait until the speed pushes caught up: every partial a gateway holds of an epoch above the live
 * E[g] is in the cloud's speed store with the same count (a partial only grows while its epoch is
 * open), and every gateway pushed after `since` (so none is stale). Returns the live manifest's E.
 */
/** The cloud side waitSpeedCaughtUp reads: cloud.db by default, PostgreSQL in cluster mode. */
export interface CloudSpeedSide {
  watermark(): Promise<Record<string, number>>;
  partials(gateway: string, above: number): Promise<Array<{ device: string; metric: string; minute: number; epoch: number; count: number }>>;
  lastPushAt(gateway: string): Promise<number | null>;
}

/** cloud.db of `cloudDir` and its views/manifest.json. */
export function sqliteSpeedSide(cloudDir: string): CloudSpeedSide {
  return {
    watermark: async () => (await readManifest(join(cloudDir, 'views')))?.watermark ?? {},
    partials: (g, above) => queryCloudDb(cloudDir, 'SELECT device, metric, minute, epoch, count FROM speed_partials WHERE gateway = ? AND epoch > ?', [g, above]),
    lastPushAt: async (g) => (await queryCloudDb<{ at: number | null }>(cloudDir, 'SELECT MAX(last_push_at) AS at FROM gateway_status WHERE gateway = ?', [g]))[0]?.at ?? null,
  };
}

export async function waitSpeedCaughtUp(cloud: string | CloudSpeedSide, gateways: readonly OracleGateway[], since: number, timeoutMs = 20_000): Promise<Record<string, number>> {
  const side = typeof cloud === 'string' ? sqliteSpeedSide(cloud) : cloud;
  let lag = '';
  try {
    return (await eventually(async () => {
      const e = await side.watermark();
      for (const g of gateways) {
        const mine = await queryGatewayDb<{ device: string; metric: string; minute: number; epoch: number; count: number }>(g.dir,
          'SELECT device, metric, minute, epoch, count FROM partials WHERE epoch > ?', [epochOf(e, g.id)]);
        const theirs = await side.partials(g.id, epochOf(e, g.id));
        const stored = new Map(theirs.map((p) => [`${p.device}|${p.metric}|${p.minute}|${p.epoch}`, p.count]));
        const behind = mine.filter((p) => stored.get(`${p.device}|${p.metric}|${p.minute}|${p.epoch}`) !== p.count);
        const contact = { at: await side.lastPushAt(g.id) };
        lag = `${g.id}: ${behind.length} of ${mine.length} partials behind, last push ${contact?.at ?? 'never'} (since ${since})`;
        if (behind.length || !(contact?.at && contact.at > since)) return null;
      }
      return e;
    }, timeoutMs, 100))!;
  } catch (err) {
    throw new Error(`speed pushes did not catch up: ${lag}`, { cause: err });
  }
}

/** Every reading in master/ as the oracle takes it (call after the outboxes drained and ingest sealed). */
export async function masterReadings(cloudDir: string): Promise<RawReading[]> {
  return (await readMaster(cloudDir)).map(({ device, metric, ts, value, gateway, seq, epoch }) => ({ device, metric, ts, value, gateway, seq, epoch }));
}

/** The cloud's views dir. */
export const viewsDirOf = (cloudDir: string): string => join(cloudDir, 'views');
