/**
 * Cluster mode (issue 10) under faults, real parts only: `braid cloud` child processes on one
 * PostgreSQL 15 database and one shared data dir (test/support/cluster.ts), a load client that
 * forwards as gateways do (one batch at a time per gateway, the same batch resent to the next node
 * on any non-2xx or network error). The contract checked after everything is sealed: every
 * acknowledged (gateway, seq) is in master/ exactly once, nothing unacknowledged is, and the
 * received ranges in PostgreSQL are the acknowledged seqs [INV-1][INV-2].
 * - a PostgreSQL restart under load: ingest answers 503 meanwhile (and /healthz says the store is
 *   unreachable), then everything resumes by itself;
 * - a rolling restart of every node under load (SIGTERM, start again on the same port);
 * - kill -9 of nodes under load (a group commit in flight is likely), restarted;
 * - kill -9 right after a 2xx for a batch larger than ingest.sealMaxReadings (a seal in progress).
 *
 * - kill -9 of a node that never comes back: a live node claims its staging (a lease in
 *   PostgreSQL, store.leaseMs) and seals it.
 * A killed node's staging is claimed by whichever live node finds its lease run out first (the node
 * itself, restarted, is a live node like any other); either way its acknowledged readings end up in
 * master once.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type Cluster, LoadClient, checkExactlyOnce, cleanReport, epochBody, sleep, startCluster } from '../support/cluster.js';
import { postIngest } from '../support/cloud.js';
import { eventually } from '../support/gateway.js';
import { type TestPostgres, havePostgres, startPostgres } from '../support/postgres.js';

const have = havePostgres();
const FAST_SEAL = { ingest: { sealMaxAgeMs: 500 } };

/** Resolves once `load` has `more` more batches acknowledged than now (or throws after `timeoutMs`). */
async function acksGrow(load: LoadClient, more: number, timeoutMs = 30_000): Promise<void> {
  const target = load.stats.batches + more;
  const until = Date.now() + timeoutMs;
  while (load.stats.batches < target) {
    if (Date.now() > until) throw new Error(`${load.stats.batches} of ${target} batches acknowledged after ${timeoutMs} ms: ${JSON.stringify(load.stats)}`);
    await sleep(20);
  }
}

(have ? describe : describe.skip)('cluster under faults: 0 acknowledged readings lost, nothing twice', () => {
  let server: TestPostgres;
  let n = 0;
  let cluster: Cluster | null = null;
  let load: LoadClient | null = null;

  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  afterEach(async () => {
    await load?.stop().catch(() => undefined);
    load = null;
    await cluster?.close();
    cluster = null;
  }, 120_000);
  afterAll(async () => { await server?.stop(); }, 30_000);

  const withOutput = async (fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (err) {
      // The nodes' output less the 503s of an outage (one line each), then PostgreSQL's log.
      const out = cluster?.output().split('\n').filter((l) => !/"msg":"(ingest request failed|request failed)"/.test(l)).join('\n');
      if (cluster && err instanceof Error) err.message += `\nload: ${JSON.stringify(load?.stats)}\n${out!.slice(-8000)}\n--- postgres\n${server.log().slice(-2000)}`;
      throw err;
    }
  };

  test('a PostgreSQL restart under load: ingest answers 503 meanwhile, /healthz says unreachable, everything resumes by itself', async () => withOutput(async () => {
    const gateways = ['gw-1', 'gw-2', 'gw-3'];
    cluster = await startCluster(server, `pgrestart_${++n}`, { nodes: 2, gateways, config: FAST_SEAL });
    const c = cluster;
    load = new LoadClient(c.urls, c.tokens, { batchSize: 40, paceMs: 5, retryMs: 100 }).start();
    await acksGrow(load, 30);
    // Watch every node's /healthz across the outage.
    const health = new Set<string>();
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        for (const node of c.nodes) {
          try {
            const h = (await (await fetch(`${node.url}/healthz`)).json()) as { store: string };
            health.add(h.store);
          } catch { health.add('no answer'); }
        }
        await sleep(100);
      }
    })();
    const before = { ...load.stats.outcomes };
    const downFrom = Date.now();
    // Down 5 s: longer than the store probe's 2 s, so /healthz has to notice.
    await server.restart({ downMs: 5_000 });
    const upAt = Date.now();
    // Everything resumes by itself: new batches acknowledged after the restart, without touching a node.
    await acksGrow(load, 40, 60_000);
    const resumedMs = Date.now() - upAt;
    watching = false;
    await watcher;
    await load.stop();
    const during = Object.fromEntries(Object.entries(load.stats.outcomes).map(([k, v]) => [k, v - (before[k] ?? 0)]));
    // eslint-disable-next-line no-console
    console.log(`PostgreSQL down ${upAt - downFrom} ms under load: answers meanwhile ${JSON.stringify(during)}, /healthz said ${[...health].join(', ')}; 40 more batches acknowledged ${resumedMs} ms after it was back; total ${JSON.stringify(load.stats)}`);
    expect(during['503'] ?? 0).toBeGreaterThan(0);
    expect(health).toContain('unreachable');
    // The nodes stayed up through the outage (no restart needed), and report the store up again.
    for (const node of c.nodes) {
      expect(node.child?.proc.exitCode).toBeNull();
      // The store probe runs every 2 s: up again by the next probe or so.
      await eventually(async () => (await (await fetch(`${node.url}/healthz`)).json() as { store: string }).store === 'up', 10_000, 100);
    }
    await c.sealAll();
    expect(await checkExactlyOnce(c, load.acked)).toEqual(cleanReport(load.acked));
  }), 180_000);

  test('a rolling restart of every node under load (SIGTERM, start again on the same port): 0 lost, 0 twice', async () => withOutput(async () => {
    const gateways = ['gw-1', 'gw-2', 'gw-3', 'gw-4'];
    cluster = await startCluster(server, `rolling_${++n}`, { nodes: 3, gateways, config: FAST_SEAL });
    const c = cluster;
    load = new LoadClient(c.urls, c.tokens, { batchSize: 40, paceMs: 5 }).start();
    await acksGrow(load, 20);
    const steps: string[] = [];
    for (let round = 0; round < 2; round++) {
      for (const node of c.nodes) {
        let t = Date.now();
        const stopped = await c.stop(node.index, 'SIGTERM');
        expect(stopped).toEqual({ code: 0, signal: null });
        steps.push(`stop ${Date.now() - t}`);
        t = Date.now();
        await acksGrow(load, 10);
        steps.push(`acks ${Date.now() - t}`);
        t = Date.now();
        await c.start(node.index);
        steps.push(`start ${Date.now() - t}`);
        t = Date.now();
        await acksGrow(load, 10);
        steps.push(`acks ${Date.now() - t}`);
      }
    }
    await load.stop();
    // eslint-disable-next-line no-console
    console.log(`rolling restart (2 rounds over 3 nodes) under load: ${JSON.stringify(load.stats)}; ms per step: ${steps.join(', ')}`);
    await c.sealAll();
    expect(await checkExactlyOnce(c, load.acked)).toEqual(cleanReport(load.acked));
  }), 180_000);

  test('kill -9 of nodes under load (group commits in flight), restarted: every acknowledged reading in master exactly once', async () => withOutput(async () => {
    const gateways = ['gw-1', 'gw-2', 'gw-3', 'gw-4'];
    cluster = await startCluster(server, `kill9_${++n}`, { nodes: 2, gateways, config: { store: { leaseMs: 3_000 }, ingest: { sealMaxAgeMs: 500, groupCommitMs: 5 } } });
    const c = cluster;
    load = new LoadClient(c.urls, c.tokens, { batchSize: 60, paceMs: 0 }).start();
    await acksGrow(load, 20);
    for (let round = 0; round < 4; round++) {
      const victim = round % 2;
      // A random moment under load: a request is most likely being decided or staged.
      await sleep(50 + Math.floor(Math.random() * 300));
      expect(await c.stop(victim, 'SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
      await acksGrow(load, 10);
      await c.start(victim);
      await acksGrow(load, 10);
    }
    await load.stop();
    // eslint-disable-next-line no-console
    console.log(`4 kill -9 under load: ${JSON.stringify(load.stats)}`);
    await c.sealAll();
    expect(await checkExactlyOnce(c, load.acked)).toEqual(cleanReport(load.acked));
  }), 180_000);

  test('kill -9 of a node that never comes back: a live node claims its staging once the lease ran out and seals it; every acknowledged reading in master exactly once', async () => withOutput(async () => {
    const gateways = ['gw-1', 'gw-2', 'gw-3'];
    // Nothing is sealed by age while the test runs: the dead node leaves acknowledged, unsealed staging.
    cluster = await startCluster(server, `lease_${++n}`, { nodes: 2, gateways, config: { store: { leaseMs: 3_000 }, ingest: { sealMaxAgeMs: 600_000 } } });
    const c = cluster;
    load = new LoadClient(c.urls, c.tokens, { batchSize: 50, paceMs: 0 }).start();
    await acksGrow(load, 30);
    const dead = (await c.admin.query<{ node: string }>('SELECT node FROM nodes WHERE ended_at IS NULL AND claimed_by IS NULL ORDER BY started_at')).rows.map((r) => r.node);
    expect(dead).toHaveLength(2);
    const killedAt = Date.now();
    expect(await c.stop(0, 'SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    await acksGrow(load, 20); // the load goes on through node 1
    // Node 0's row: claimed by node 1 (the other live row) after its lease ran out, by the database's clock.
    const claimed = async () => (await c.admin.query<{ node: string; claimed_by: string | null; late: boolean }>(
      'SELECT node, claimed_by, claimed_at >= lease_until AS late FROM nodes WHERE claimed_by IS NOT NULL')).rows;
    await eventually(async () => (await claimed()).length === 1, 30_000, 50);
    const [row] = await claimed();
    const claimMs = Date.now() - killedAt;
    expect(dead).toContain(row.node);
    expect(dead).toContain(row.claimed_by);
    expect(row.claimed_by).not.toBe(row.node);
    expect(row.late).toBe(true);
    // The claimant moved the dead node's segments into its own dir and dropped the dir.
    await eventually(() => !existsSync(join(c.dataDir, 'staging', row.node)), 30_000, 50);
    await load.stop();
    // eslint-disable-next-line no-console
    console.log(`kill -9, never restarted: staging claimed ${claimMs} ms after the kill (store.leaseMs 3000); load ${JSON.stringify(load.stats)}`);
    await c.sealAll();
    expect(await checkExactlyOnce(c, load.acked)).toEqual(cleanReport(load.acked));
  }), 180_000);

  test('kill -9 right after a 2xx for a batch larger than ingest.sealMaxReadings (a seal in progress): sealed once after the restart', async () => withOutput(async () => {
    cluster = await startCluster(server, `killseal_${++n}`, { nodes: 2, gateways: ['gw-1', 'gw-2'], config: { store: { leaseMs: 3_000 }, ingest: { sealMaxReadings: 1_000, sealMaxAgeMs: 60_000 } } });
    const c = cluster;
    const acked = new Map<string, Array<[number, number]>>([['gw-1', []], ['gw-2', []]]);
    const size = 20_000;
    // Each round: node 0 acknowledges a big batch (its segment is past sealMaxReadings: it rotates
    // and seals), is killed -9 after a different delay, and is started again. Meanwhile node 1 takes gw-2's batches.
    const delays = [0, 5, 25, 100, 400];
    for (const [k, delay] of delays.entries()) {
      const from = k * size + 1;
      const to = (k + 1) * size;
      const [r1, r2] = await Promise.all([
        postIngest(c.nodes[0].url, c.tokens['gw-1'], epochBody('gw-1', from, to, k + 1)),
        postIngest(c.nodes[1].url, c.tokens['gw-2'], epochBody('gw-2', k * 500 + 1, (k + 1) * 500, k + 1)),
      ]);
      expect([r1.status, r1.body.stored, r2.status]).toEqual([200, size, 200]);
      acked.get('gw-1')!.push([from, to]);
      acked.get('gw-2')!.push([k * 500 + 1, (k + 1) * 500]);
      if (delay) await sleep(delay);
      expect(await c.stop(0, 'SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
      await c.start(0);
    }
    // Resent after the restarts: every batch was stored before (a 2xx means durable), so all duplicates.
    for (const [k] of delays.entries()) {
      const r = await postIngest(c.nodes[k % 2].url, c.tokens['gw-1'], epochBody('gw-1', k * size + 1, (k + 1) * size, k + 1));
      expect([r.status, r.body.stored, r.body.duplicates]).toEqual([200, 0, size]);
    }
    await c.sealAll();
    expect(existsSync(join(c.dataDir, 'staging'))).toBe(true);
    expect(await checkExactlyOnce(c, acked)).toEqual(cleanReport(acked));
  }), 180_000);
});
