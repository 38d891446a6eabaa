/**
 * Staging that survives a node (docs/cluster-store.md, shape 2): ingest nodes on one PostgreSQL 15
 * store (test/support/postgres.ts, a fresh database per test) and one shared data dir, staging
 * owned by a lease in the store (cloud/store/nodes.ts), never a pid or a hostname.
 * - kill -9 of a node (a real child process, test/support/lease-node.ts) in the middle of its
 *   stream: while its lease lives the two other nodes leave its staging alone; once it ran out (by
 *   the database's clock) one of them claims it and seals it; the gateways resend what was not
 *   acknowledged to a live node; every (gateway, seq) is in master/ once [INV-1][INV-2].
 * - a claim waits for a group commit of the claimed node in progress (the fence's row lock).
 * - a node that was only cut off from renewing (a pause, a partition): its staging is claimed, its
 *   next group commit is refused with a 503 before anything is staged (the fence), and it goes on
 *   under a fresh node id by itself; or its next renewal answers fenced and it does the same.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { IngestService } from '../../cloud/ingest/service.js';
import { type IngestBatch, validateIngestBody } from '../../cloud/ingest/validate.js';
import { type CloudStore, openCloudStore } from '../../cloud/store/cloud-store.js';
import type { NodeRegistry } from '../../cloud/store/nodes.js';
import { nullLogger } from '../../shared/logger.js';
import { ingestBody, listFiles, makeReadings, readMaster } from '../support/cloud.js';
import { eventually, tempDir } from '../support/gateway.js';
import { type TestPostgres, havePostgres, startPostgres } from '../support/postgres.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const LEASE_MS = 3_000;
const have = havePostgres();
let server: TestPostgres | null = null;
let n = 0;

let dir: { path: string; remove: () => void };
let stores: CloudStore[] = [];
let services: IngestService[] = [];
let children: ChildProcess[] = [];

const batchOf = (g: string, from: number, to: number, days = 2): IngestBatch => validateIngestBody(ingestBody(g, makeReadings(from, to, { days })));
const counter = async (r: Registry, name: string) => (await r.getSingleMetric(name)!.get()).values.reduce((s, v) => s + v.value, 0);
const stagingDirs = () => (existsSync(join(dir.path, 'staging')) ? readdirSync(join(dir.path, 'staging')) : []);

/** A registry whose renewals for the nodes in `held` never reach the store (the node paused, or cut off from it). */
function withHeldRenewals(r: NodeRegistry, held: Set<string>): NodeRegistry {
  return {
    register: (info, ms) => r.register(info, ms),
    renew: async (node, ms, v) => {
      if (held.has(node)) throw new Error(`test: the renewal of ${node} never reached the store`);
      return r.renew(node, ms, v);
    },
    claim: (dead, me) => r.claim(dead, me),
    known: (node) => r.known(node),
    live: () => r.live(),
    end: (node) => r.end(node),
  };
}

async function openStore(url: string): Promise<CloudStore> {
  const s = await openCloudStore(url, dir.path, { poolMax: 4 });
  stores.push(s);
  return s;
}

/** An ingest node in this process: the store's ingest and node registry, its own metrics. */
async function node(store: CloudStore, o: { nodes?: NodeRegistry; servedVersion?: () => number | null } = {}): Promise<{ ingest: IngestService; metrics: Registry }> {
  const metrics = new Registry();
  const ingest = new IngestService({
    dataDir: dir.path, store: store.ingest, nodes: o.nodes ?? store.nodes, leaseMs: LEASE_MS, servedVersion: o.servedVersion,
    logger: nullLogger(), registry: metrics,
  }, { orphanScanMs: 200, sealMaxAgeMs: 60_000, groupCommitMs: 2 });
  services.push(ingest);
  await ingest.start();
  return { ingest, metrics };
}

/** Each gateway's seqs in master/: 1..N once, in order, with the readings sent. */
async function expectMasterOnce(want: Record<string, number>): Promise<void> {
  const rows = await readMaster(dir.path);
  for (const [g, N] of Object.entries(want)) {
    const got = rows.filter((r) => r.gateway === g);
    expect(got.map((r) => r.seq)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    expect(got.map((r) => [r.seq, r.epoch, r.device, r.metric, r.ts, r.value])).toEqual(makeReadings(1, N, { days: 2 }));
  }
  expect(rows.length).toBe(Object.values(want).reduce((s, v) => s + v, 0));
}

(have ? describe : describe.skip)('staging leases across nodes (PostgreSQL)', () => {
  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  afterAll(async () => { await server?.stop(); }, 30_000);
  beforeEach(() => { dir = tempDir('braid-lease-'); });
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const s of services.splice(0).reverse()) await s.close().catch(() => undefined);
    for (const s of stores.splice(0)) await s.close().catch(() => undefined);
    dir.remove();
  }, 30_000);

  test('[INV-1] kill -9 of a node mid-stream: one of two live nodes claims its staging only after the lease ran out, seals it, and with the resends every (gateway, seq) is in master once', async () => {
    const url = await server!.createDatabase(`lease_${++n}`);
    const storeB = await openStore(url);
    const b = await node(storeB, { servedVersion: () => 5 });
    // A third node, C, scans for orphans too: the two race for A's staging, one claims it.
    const storeC = await openStore(url);
    const c = await node(storeC, { servedVersion: () => 4 });
    const gateways = ['gw-1', 'gw-2'];
    const N = 6_000;
    const BATCH = 100;

    // Node A: a child process streaming batches of its own, small segments sealed every 250 ms.
    const a = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'test/support/lease-node.ts'), dir.path, url, String(LEASE_MS), gateways.join(','), String(N), String(BATCH)], {
      cwd: ROOT, env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(a);
    let out = '';
    let err = '';
    const acked = new Map(gateways.map((g) => [g, 0]));
    a.stdout!.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      for (const m of s.matchAll(/^ack (\S+) (\d+)$/gm)) acked.set(m[1], Math.max(acked.get(m[1])!, Number(m[2])));
    });
    a.stderr!.setEncoding('utf8').on('data', (s: string) => { err += s; });
    const exited = new Promise((r) => a.once('exit', r));
    const ready = await eventually(() => /^ready (\S+)$/m.exec(out), 30_000, 20).catch((e) => { throw new Error(`${(e as Error).message}\n${err}`); });
    const aNode = ready![1];
    expect(aNode).not.toBe(b.ingest.nodeId);

    // While A lives (its lease renewed), B's scans (every 200 ms) leave its staging alone.
    const progress = () => [...acked.values()].reduce((s, v) => s + v, 0) / (N * gateways.length);
    await eventually(() => progress() >= 0.4, 60_000, 5);
    expect(stagingDirs()).toContain(aNode);
    await new Promise((r) => setTimeout(r, Math.random() * 30));
    a.kill('SIGKILL');
    await exited;
    expect(progress()).toBeLessThan(1);
    expect(stagingDirs()).toContain(aNode);

    // The gateways resend what A did not acknowledge, to B, at once (some of it A had committed).
    const resend = async (g: string) => {
      for (let from = acked.get(g)! + 1; from <= N; from += BATCH) {
        const ack = await b.ingest.submit(batchOf(g, from, Math.min(N, from + BATCH - 1)));
        expect(ack.ackSeq).toBe(Math.min(N, from + BATCH - 1));
      }
    };
    await Promise.all(gateways.map(resend));

    // Once A's lease ran out, B or C claims A's dir, moves its segments and seals them.
    await eventually(() => !stagingDirs().includes(aNode), 20_000, 50);
    await b.ingest.sealNow();
    await c.ingest.sealNow();
    const rows = await queryPg(url, `SELECT node, claimed_by, claimed_at >= lease_until AS after_expiry, ended_at FROM nodes ORDER BY started_at`);
    expect(rows.find((r) => r.node === aNode)).toEqual({ node: aNode, claimed_by: expect.any(String), after_expiry: true, ended_at: null });
    expect([b.ingest.nodeId, c.ingest.nodeId]).toContain(rows.find((r) => r.node === aNode)!.claimed_by);
    // Each node's renewals report the manifest version it serves.
    await eventually(async () => JSON.stringify((await storeB.nodes!.live()).map((x) => x.servedVersion).sort()) === '[4,5]', 5_000, 50);
    expect((await storeB.nodes!.live()).map((x) => x.node).sort()).toEqual([b.ingest.nodeId, c.ingest.nodeId].sort());

    await c.ingest.close();
    await b.ingest.close();
    expect(listFiles(join(dir.path, 'staging')).filter((f) => f.endsWith('.ndjson'))).toEqual([]);
    expect(await queryPg(url, 'SELECT * FROM staged')).toEqual([]);
    expect(await queryPg(url, 'SELECT gateway, from_seq, to_seq FROM sealed ORDER BY gateway')).toEqual(gateways.map((g) => ({ gateway: g, from_seq: 1, to_seq: N })));
    await expectMasterOnce(Object.fromEntries(gateways.map((g) => [g, N])));
    // B ended its lease at its clean close.
    expect((await queryPg(url, 'SELECT ended_at IS NOT NULL AS ended FROM nodes WHERE node = $1', [b.ingest.nodeId]))[0]).toEqual({ ended: true });
  }, 120_000);

  test('a node cut off from renewing: its staging is claimed; its next commit is refused with 503 before staging, and it goes on under a fresh node id', async () => {
    const url = await server!.createDatabase(`lease_${++n}`);
    const storeA = await openStore(url);
    const storeB = await openStore(url);
    const held = new Set<string>();
    const a = await node(storeA, { nodes: withHeldRenewals(storeA.nodes!, held) });
    const b = await node(storeB);
    const first = a.ingest.nodeId;
    for (let from = 1; from <= 300; from += 100) expect((await a.ingest.submit(batchOf('gw-1', from, from + 99))).ackSeq).toBe(from + 99);
    expect(a.ingest.status().openReadings).toBe(300);

    // A's renewals stop reaching the store: its lease runs out and B claims its staging, open segment included.
    held.add(first);
    await eventually(() => !stagingDirs().includes(first), 20_000, 50);
    expect(await counter(a.metrics, 'braid_ingest_lease_takeovers_total')).toBe(0);

    // A does not know yet: its next group commit is fenced. Nothing of it is staged or acknowledged.
    await expect(a.ingest.submit(batchOf('gw-1', 301, 400))).rejects.toMatchObject({ code: 'BRAID_ERR_INGEST_UNAVAILABLE', statusCode: 503, message: expect.stringMatching(/taken over/) });
    expect(await queryPg(url, 'SELECT MAX(to_seq) AS m FROM received WHERE gateway = $1', ['gw-1'])).toEqual([{ m: 300 }]);
    // It went on by itself under a fresh node id with a new staging dir; the gateway's resend is stored.
    expect(a.ingest.nodeId).not.toBe(first);
    expect(stagingDirs()).toContain(a.ingest.nodeId);
    expect(await counter(a.metrics, 'braid_ingest_lease_takeovers_total')).toBe(1);
    expect((await a.ingest.submit(batchOf('gw-1', 301, 400))).ackSeq).toBe(400);
    expect((await storeB.nodes!.live()).map((x) => x.node).sort()).toEqual([a.ingest.nodeId, b.ingest.nodeId].sort());

    await b.ingest.sealNow();
    await a.ingest.sealNow();
    await a.ingest.close();
    await b.ingest.close();
    expect(listFiles(join(dir.path, 'staging')).filter((f) => f.endsWith('.ndjson'))).toEqual([]);
    expect(await queryPg(url, 'SELECT * FROM staged')).toEqual([]);
    await expectMasterOnce({ 'gw-1': 400 });
  }, 60_000);

  test('a lone node whose lease ran out unclaimed (renewals lost, as while PostgreSQL was away) is fenced, goes on under a fresh id and seals its old staging itself', async () => {
    const url = await server!.createDatabase(`lease_${++n}`);
    const storeA = await openStore(url);
    const held = new Set<string>();
    const a = await node(storeA, { nodes: withHeldRenewals(storeA.nodes!, held) });
    const first = a.ingest.nodeId;
    expect((await a.ingest.submit(batchOf('gw-1', 1, 200))).ackSeq).toBe(200);
    held.add(first);
    const until = Number((await queryPg(url, 'SELECT (extract(epoch FROM lease_until) * 1000)::bigint AS t FROM nodes WHERE node = $1', [first]))[0].t);
    await eventually(async () => Number((await queryPg(url, 'SELECT (extract(epoch FROM now()) * 1000)::bigint AS t'))[0].t) > until, 20_000, 50);
    await expect(a.ingest.submit(batchOf('gw-1', 201, 300))).rejects.toMatchObject({ code: 'BRAID_ERR_INGEST_UNAVAILABLE', statusCode: 503 });
    expect(a.ingest.nodeId).not.toBe(first);
    // Nobody else is there: the old lease, ended by its owner, is claimed by its own new node.
    await eventually(() => !stagingDirs().includes(first), 10_000, 50);
    expect((await queryPg(url, 'SELECT claimed_by FROM nodes WHERE node = $1', [first]))[0]).toEqual({ claimed_by: a.ingest.nodeId });
    expect((await a.ingest.submit(batchOf('gw-1', 201, 300))).ackSeq).toBe(300);
    await a.ingest.close();
    expect(await queryPg(url, 'SELECT * FROM staged')).toEqual([]);
    await expectMasterOnce({ 'gw-1': 300 });
  }, 60_000);

  test('a claim waits for a group commit that holds the node\'s row (the fence): the lines are staged before the claim, and the next commit is refused', async () => {
    const url = await server!.createDatabase(`lease_${++n}`);
    const storeA = await openStore(url);
    const storeB = await openStore(url);
    await storeA.nodes!.register({ node: 'node-a', host: 'h', pid: 1, startedAt: Date.now() }, 1_500);
    await storeB.nodes!.register({ node: 'node-b', host: 'h', pid: 2, startedAt: Date.now() }, 60_000);
    const storeNow = async () => Number((await queryPg(url, 'SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS t'))[0].t);
    const leaseUntil = (await storeB.nodes!.live()).find((x) => x.node === 'node-a')!.leaseUntil;
    const order: string[] = [];
    let claim: Promise<boolean> | null = null;
    let atClaim: unknown[] | null = null;
    const req = (from: number, to: number) => ({
      batches: [batchOf('gw-1', from, to)], now: Date.now, maxFutureMs: Infinity, clockOffset: () => null, log: nullLogger(), node: 'node-a',
      stage: async (lines: Array<{ gateway: string }>) => {
        // Inside A's transaction, past the fence: A's lease runs out meanwhile, and B claims.
        while ((await storeNow()) <= leaseUntil) await new Promise((r) => setTimeout(r, 20));
        claim = storeB.nodes!.claim('node-a', 'node-b').then(async (won) => {
          order.push('claim');
          // What the claim's own store sees once it returned: A's group commit, committed. Had the
          // claim not waited for A's transaction it would have returned during the sleep below,
          // with A's transaction still open and nothing received.
          atClaim = await queryPg(url, 'SELECT gateway, from_seq, to_seq FROM received');
          return won;
        });
        await new Promise((r) => setTimeout(r, 300));
        order.push('staged');
        return new Map([['seg-a', new Map([[lines[0].gateway, [{ from, to }]]])]]);
      },
    });
    await storeA.ingest.commitGroup(req(1, 100));
    order.push('committed');
    expect(await claim!).toBe(true);
    // A's lines were staged before the claim returned, and A's commit was visible to it. Whether A's
    // caller or B's hears first after the COMMIT is a race between two connections, not an order.
    expect(order[0]).toBe('staged');
    expect([...order].sort()).toEqual(['claim', 'committed', 'staged']);
    expect(atClaim).toEqual([{ gateway: 'gw-1', from_seq: 1, to_seq: 100 }]);
    await expect(storeA.ingest.commitGroup(req(101, 200))).rejects.toMatchObject({ code: 'BRAID_ERR_INGEST_UNAVAILABLE', statusCode: 503 });
    expect(await queryPg(url, 'SELECT gateway, from_seq, to_seq FROM received')).toEqual([{ gateway: 'gw-1', from_seq: 1, to_seq: 100 }]);
    expect(await queryPg(url, 'SELECT segment, from_seq, to_seq FROM staged')).toEqual([{ segment: 'seg-a', from_seq: 1, to_seq: 100 }]);
  }, 60_000);

  test('a node whose renewal answers fenced (its staging was claimed) goes on under a fresh node id without a refused commit', async () => {
    const url = await server!.createDatabase(`lease_${++n}`);
    const storeA = await openStore(url);
    const storeB = await openStore(url);
    const held = new Set<string>();
    const a = await node(storeA, { nodes: withHeldRenewals(storeA.nodes!, held) });
    const b = await node(storeB);
    const first = a.ingest.nodeId;
    expect((await a.ingest.submit(batchOf('gw-1', 1, 250))).ackSeq).toBe(250);
    held.add(first);
    await eventually(() => !stagingDirs().includes(first), 20_000, 50);
    // The pause ends: the next renewal (every leaseMs / 3) is answered fenced.
    held.delete(first);
    await eventually(() => a.ingest.nodeId !== first, 10_000, 20);
    expect(await counter(a.metrics, 'braid_ingest_lease_takeovers_total')).toBe(1);
    expect((await a.ingest.submit(batchOf('gw-1', 251, 300))).ackSeq).toBe(300);

    await b.ingest.sealNow();
    await a.ingest.close();
    await b.ingest.close();
    expect(await queryPg(url, 'SELECT * FROM staged')).toEqual([]);
    await expectMasterOnce({ 'gw-1': 300 });
  }, 60_000);
});

/** Rows of a query on the test database, on a connection of its own. */
async function queryPg(url: string, sql: string, params: unknown[] = []): Promise<Array<Record<string, unknown>>> {
  const { createPgPool } = await import('../../cloud/store/pg/index.js');
  const pool = createPgPool({ url, poolMax: 1 });
  try {
    return (await pool.query(sql, params)).rows;
  } finally {
    await pool.end();
  }
}
