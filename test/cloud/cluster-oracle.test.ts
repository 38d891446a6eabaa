/**
 * The oracle (test/cloud/oracle.test.ts, test/support/oracle.ts) against a two-node cluster
 * (issue 10): two in-process clouds (createCloud) on one PostgreSQL 15 database and one shared data
 * dir, each with a cache dir of its own; two real gateways with `cloud.url` naming both nodes (gw-a
 * A,B and gw-b B,A), MQTT.js devices publishing seeded random telemetry with repeats and readings
 * days late, and batch runs on either node at random moments while they publish.
 *
 * At each checkpoint (outboxes drained, both nodes sealed, speed pushes caught up in PostgreSQL, both
 * nodes serving the pointer's manifest): what reached the system is read from master/ (each
 * gateway's seqs 1..lastSeq exactly once, every acknowledged device message there, nothing not
 * published); then every query (every scope x agg x step of ORACLE_STEPS) is asked of the nodes in
 * turn, twice (A first, then B first), so each query is answered by both nodes, and every answer must
 * equal the computation from scratch under its own manifest.
 *
 * Batch runs do not overlap a sweep here: a node may serve the previous manifest for a moment after
 * another node published (within a second), and pruning speed partials behind the manifest every
 * node serves (the nodes' served_version) is not built yet; the single-node oracle covers runs
 * publishing during a sweep.
 *
 * Random but replayable: the seed is in the test name; BRAID_TEST_SEED=<n> replays it.
 */
import { type CloudApp, createCloud } from '../../cloud/app.js';
import type { BatchRunResult } from '../../cloud/batch/index.js';
import { addApiKey, addGateway } from '../../cloud/store/credentials.js';
import { PgCredentialStore, PgViewPointer, createPgPool, migrate } from '../../cloud/store/pg/index.js';
import { DAY_MS, HOUR_MS, MINUTE_MS, bucketStart } from '../../shared/time.js';
import type pg from 'pg';
import { testCloudConfig } from '../support/cloud.js';
import { type TestGateway, eventually, startTestGateway, tempDir } from '../support/gateway.js';
import { rng } from '../support/master-fixture.js';
import {
  type CloudSpeedSide, type DeviceMsg, OracleDevice, type OracleGateway, type PublishLog, type RawReading,
  masterReadings, sweepOracle, viewsDirOf, waitDrained, waitSpeedCaughtUp,
} from '../support/oracle.js';
import { type TestPostgres, havePostgres, startPostgres } from '../support/postgres.js';

const SEED = process.env.BRAID_TEST_SEED ? Number(process.env.BRAID_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
const GATEWAYS = ['gw-a', 'gw-b'] as const;
const DEVICES: Array<{ id: string; home: (typeof GATEWAYS)[number]; metrics: string[] }> = [
  { id: 'd-a1', home: 'gw-a', metrics: ['temp', 'hum'] },
  { id: 'd-a2', home: 'gw-a', metrics: ['temp', 'pressure'] },
  { id: 'd-b1', home: 'gw-b', metrics: ['temp', 'hum'] },
  { id: 'd-b2', home: 'gw-b', metrics: ['hum', 'pressure'] },
];
const DEVICE_IDS = DEVICES.map((d) => d.id);
const secretOf = (device: string) => `secret-${device}`;
const NOW = Date.now();
const TODAY = bucketStart(NOW, DAY_MS);
const RANGE = { fromMs: TODAY - 7 * DAY_MS, toMs: TODAY + DAY_MS + HOUR_MS };
/** As the single-node oracle: short epochs, fast speed pushes and forwarding. */
const GATEWAY_TUNING = {
  cloud: { retryInitialMs: 50, retryMaxMs: 250, batchMaxReadings: 100 },
  outbox: { epochIdleMs: 200, epochMs: 700 },
  speed: { pushIntervalMs: 200, pruneCron: '* * * * * *' },
  mqtt: { ratePerDevice: 10_000, rateBurst: 10_000 },
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What the devices published (values per identity, acknowledged or not), as oracle.test.ts's Model, without a moving device. */
class Model implements PublishLog {
  readonly rand: () => number;
  readonly published = new Map<string, { values: Set<number>; acked: boolean }>();
  private readonly sent = new Map<string, DeviceMsg[]>();
  private readonly usedTs = new Map<string, Set<number>>();
  constructor(seed: number) { this.rand = rng(seed); }
  attempt(gateway: string, msg: DeviceMsg): void {
    for (const [metric, value] of Object.entries(msg.values)) {
      const k = `${gateway}|${msg.device}|${metric}|${msg.ts}`;
      const e = this.published.get(k) ?? { values: new Set<number>(), acked: false };
      e.values.add(value);
      this.published.set(k, e);
    }
  }
  acked(gateway: string, msg: DeviceMsg): void {
    for (const metric of Object.keys(msg.values)) this.published.get(`${gateway}|${msg.device}|${metric}|${msg.ts}`)!.acked = true;
  }
  /** `n` messages of `device` (recent on a 1 s grid, or some `lateDays` old on a 1 min grid), some repeated, some QoS 0. */
  plan(device: string, n: number, lateDays: number[]): Array<{ msg: DeviceMsg; qos: 0 | 1 }> {
    const out: Array<{ msg: DeviceMsg; qos: 0 | 1 }> = [];
    const used = this.usedTs.get(device) ?? new Set<number>();
    this.usedTs.set(device, used);
    const metrics = DEVICES.find((d) => d.id === device)!.metrics;
    for (let i = 0; i < n; i++) {
      const late = this.rand() < 0.3 ? lateDays[Math.floor(this.rand() * lateDays.length)] : null;
      let ts: number;
      do {
        ts = late === null ? NOW - 30 * MINUTE_MS + Math.floor(this.rand() * 1800) * 1000
          : TODAY - late * DAY_MS + 3 * HOUR_MS + Math.floor(this.rand() * 360) * MINUTE_MS;
      } while (used.has(ts));
      used.add(ts);
      const values: Record<string, number> = {};
      for (const m of metrics) {
        values[m] = m === 'pressure' ? 101_325 + Math.round(this.rand() * 1e5) / 1e3
          : m === 'temp' ? Math.round(this.rand() * 600) / 10 - 10 : Math.round(this.rand() * 1000) / 10;
      }
      const msg = { device, ts, values };
      this.sent.set(device, [...(this.sent.get(device) ?? []), msg]);
      out.push({ msg, qos: this.rand() < 0.1 ? 0 : 1 });
      if (this.rand() < 0.12) out.push({ msg: this.sent.get(device)![Math.floor(this.rand() * this.sent.get(device)!.length)], qos: 1 });
    }
    return out;
  }
}

const have = havePostgres();
const stats: string[] = [];

(have ? describe : describe.skip)('the oracle against a two-node cluster (postgresql-15)', () => {
  let server: TestPostgres;
  const cleanups: Array<() => Promise<void> | void> = [];
  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); }, 60_000);
  afterAll(async () => { await server?.stop(); }, 30_000);

  test(`devices -> two gateways -> two nodes on one store: every answer of either node equals the computation from scratch (seed ${SEED})`, async () => {
    try {
      await scenario();
    } catch (err) {
      // eslint-disable-next-line no-console
      console.error(`cluster oracle failed with seed ${SEED}; replay with BRAID_TEST_SEED=${SEED}\n${stats.join('\n')}`);
      if (err instanceof Error) err.message = `[BRAID_TEST_SEED=${SEED}] ${err.message}`;
      throw err;
    }
    // eslint-disable-next-line no-console
    console.log(`cluster oracle seed ${SEED}\n${stats.join('\n')}`);
  }, 170_000);

  async function scenario(): Promise<void> {
    const url = await server.createDatabase('oracle_cluster');
    const admin: pg.Pool = createPgPool({ url, poolMax: 3 });
    cleanups.push(() => admin.end());
    await migrate(admin);
    const creds = new PgCredentialStore(admin);
    const tokens: Record<string, string> = {};
    for (const g of GATEWAYS) tokens[g] = await addGateway(creds, g);
    const key = await addApiKey(creds, 'oracle', 'read');
    const pointer = new PgViewPointer({ pool: admin, url });
    const data = tempDir('braid-cluster-oracle-');
    cleanups.push(() => data.remove());
    const dir = data.path;

    // Two nodes: one store, one data dir, a cache dir each.
    const nodes: Array<{ app: CloudApp; url: string }> = [];
    for (let i = 0; i < 2; i++) {
      const cache = tempDir(`braid-cluster-oracle-cache${i}-`);
      cleanups.push(() => cache.remove());
      const app = createCloud(testCloudConfig(dir, {
        store: { url }, cacheDir: cache.path, ingest: { sealMaxAgeMs: 300, groupCommitMs: 2 }, batch: { threads: 1, memoryLimit: '512MB' },
      }), { speed: { pruneGraceMs: 300, manifestPollMs: 200 } });
      const a = await app.server.start();
      cleanups.push(() => app.server.close());
      nodes.push({ app, url: a.url });
    }
    const urls = nodes.map((n) => n.url);

    const gws: Record<string, TestGateway> = {};
    for (const [i, g] of GATEWAYS.entries()) {
      const list = i === 0 ? urls : [...urls].reverse();
      gws[g] = await startTestGateway({ id: g, ...GATEWAY_TUNING, cloud: { ...GATEWAY_TUNING.cloud, url: list.join(','), token: tokens[g] } });
      cleanups.push(() => gws[g].close());
      for (const d of DEVICES) if (d.home === g) await gws[g].addDevice(d.id, secretOf(d.id));
    }
    const gatewayNodes: OracleGateway[] = GATEWAYS.map((g) => ({
      id: g, dir: gws[g].dir, health: async () => (await gws[g].gateway.health()) as { outbox: { pending: number; lastSeq: number } },
    }));

    const model = new Model(SEED);
    const devices = new Map(DEVICES.map((d) => [d.id, new OracleDevice(d.id, secretOf(d.id), d.home, (g) => gws[g]?.mqttUrl ?? null, model)]));
    cleanups.push(async () => { for (const d of devices.values()) await d.drop(); });
    const publishAll = (n: number, lateDays: number[], paceMs: number) => Promise.all(DEVICE_IDS.map(async (id) => {
      for (const { msg, qos } of model.plan(id, n, lateDays)) {
        await devices.get(id)!.send(msg, qos);
        if (paceMs) await sleep(paceMs);
      }
    })).then(() => undefined);

    let batchChain: Promise<unknown> = Promise.resolve();
    const runBatch = (node: number, full: boolean): Promise<BatchRunResult> => {
      const run = batchChain.catch(() => undefined).then(async () => (await nodes[node].app.scheduler().runNow('api', { full })).done);
      batchChain = run;
      return run;
    };

    const speedSide: CloudSpeedSide = {
      watermark: async () => (await pointer.current())?.watermark ?? {},
      partials: async (g, above) => (await admin.query<{ device: string; metric: string; minute: number; epoch: number; count: number }>(
        'SELECT device, metric, minute, epoch, count FROM speed_partials WHERE gateway = $1 AND epoch > $2', [g, above])).rows,
      lastPushAt: async (g) => (await admin.query<{ at: number | null }>('SELECT MAX(last_push_at) AS at FROM gateway_status WHERE gateway = $1', [g])).rows[0]?.at ?? null,
    };

    const checkpoint = async (label: string) => {
      const t0 = Date.now();
      await batchChain.catch(() => undefined);
      const lastSeq = await waitDrained(gatewayNodes);
      for (const n of nodes) await n.app.server.ingest.sealNow();
      await waitSpeedCaughtUp(speedSide, gatewayNodes, t0);
      const readings = await masterReadings(dir);
      checkTruth(label, model, readings, lastSeq);
      // Both nodes serve the pointer's manifest (a publish is live on every node within a second).
      const live = (await pointer.current())?.version ?? 0;
      for (const n of nodes) {
        await eventually(async () => {
          const res = await fetch(`${n.url}/api/v1/query?metric=temp&from=${RANGE.fromMs}&to=${RANGE.toMs}&step=1d`, { headers: { authorization: `Bearer ${key}` } });
          return ((await res.json()) as { manifest: { version: number } }).manifest.version === live;
        }, 5_000, 50);
      }
      const reports = [];
      for (const order of [urls, [...urls].reverse()]) {
        const report = await sweepOracle({ url: order[0], urls: order, key, viewsDir: viewsDirOf(dir), liveManifest: () => pointer.current() },
          { readings, gateways: GATEWAYS, devices: DEVICE_IDS, ...RANGE });
        expect({ label, diffs: report.diffs.slice(0, 12), n: report.diffs.length }).toEqual({ label, diffs: [], n: 0 });
        reports.push(report);
      }
      const r = reports[0];
      stats.push(`${label}: ${readings.length} readings, ${r.queries} queries x 2 (each asked of both nodes), ${r.points} points (${r.batchPoints} with batch, ${r.speedPoints} with speed), manifest ${live}, ${Date.now() - t0} ms`);
      return r;
    };

    // 1. Every device, repeats, late readings; a batch run on node A at a random moment while they publish.
    const first = sleep(Math.floor(model.rand() * 300)).then(() => runBatch(0, false));
    await publishAll(20, [2, 3, 5], 5);
    expect((await first).published).toBe(true);
    const cp1 = await checkpoint('cp1');
    expect(cp1.batchPoints + cp1.speedPoints).toBeGreaterThan(0);

    // 2. More, with a run on node B meanwhile and one on node A after: both nodes answer from the newest manifest.
    const second = sleep(Math.floor(model.rand() * 400)).then(() => runBatch(1, model.rand() < 0.3));
    await publishAll(20, [2, 4], 5);
    await second;
    await sleep(600); // the epochs close
    await waitDrained(gatewayNodes);
    for (const n of nodes) await n.app.server.ingest.sealNow();
    await runBatch(0, false);
    const cp2 = await checkpoint('cp2');
    expect(cp2.batchPoints).toBeGreaterThan(0);

    // 3. New readings after the last run: the speed side (partials pushed to either node) carries them.
    await publishAll(15, [2], 5);
    const cp3 = await checkpoint('cp3');
    expect(cp3.speedPoints).toBeGreaterThan(0);
  }
});

/** As oracle.test.ts's checkTruth: master/ holds each gateway's seqs 1..lastSeq once, every acknowledged message, nothing unpublished. */
function checkTruth(label: string, model: Model, readings: RawReading[], lastSeq: Record<string, number>): void {
  for (const g of GATEWAYS) {
    const seqs = readings.filter((r) => r.gateway === g).map((r) => r.seq).sort((a, b) => a - b);
    expect({ label, g, n: seqs.length, contiguous: seqs.every((s, i) => s === i + 1) }).toEqual({ label, g, n: lastSeq[g], contiguous: true });
  }
  const got = new Map<string, number>();
  const twice: string[] = [];
  for (const r of readings) {
    const k = `${r.gateway}|${r.device}|${r.metric}|${r.ts}`;
    if (got.has(k)) twice.push(k);
    got.set(k, r.value);
  }
  const unpublished = [...got].filter(([k, v]) => !model.published.get(k)?.values.has(v)).map(([k, v]) => `${k}=${v}`);
  const lost = [...model.published].filter(([k, e]) => e.acked && !got.has(k)).map(([k]) => k);
  expect({ label, twice, unpublished: unpublished.slice(0, 10), lost: lost.slice(0, 10) }).toEqual({ label, twice: [], unpublished: [], lost: [] });
}
