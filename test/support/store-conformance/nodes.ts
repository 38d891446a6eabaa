/**
 * The conformance suite of a NodeRegistry (cloud/store/nodes.ts), the staging leases of cluster
 * mode: call `nodeRegistryConformance(open)` inside a describe; `open` gives a registry on a fresh,
 * migrated database, `another()` a second registry with connections of its own (another node).
 * What it holds an implementation to:
 * - a registered node is live, with the lease's end by the store's clock and the manifest version
 *   its renewals report;
 * - no claim while a lease lives; a claim once it ran out, by the store's clock (the node's
 *   clock, set an hour ahead, changes nothing); an ended node's staging is claimable at once;
 * - two registries racing to claim one dead node: exactly one wins; the winner may claim again
 *   (it resumes the move), the loser never; a claimant that died before finishing is replaced;
 *   a node whose own lease is gone claims nothing;
 * - live() leaves out claimed, ended and expired nodes; a renewal after a claim or an end answers
 *   fenced and does not bring the lease back.
 */
import type { NodeInfo, NodeRegistry } from '../../../cloud/store/nodes.js';

export interface NodeRegistryUnderTest {
  registry: NodeRegistry;
  /** Another registry on the same database, with connections of its own: another node. */
  another(): Promise<NodeRegistry>;
  /** The store's clock, ms since the epoch. */
  storeNow(): Promise<number>;
  /** Closes what open() and another() opened. */
  close(): Promise<void>;
}

const info = (node: string, o: Partial<NodeInfo> = {}): NodeInfo => ({ node, host: `host-of-${node}`, pid: 4242, startedAt: Date.now(), ...o });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function nodeRegistryConformance(open: () => Promise<NodeRegistryUnderTest>): void {
  let handles: NodeRegistryUnderTest[] = [];
  const fresh = async () => {
    const h = await open();
    handles.push(h);
    return h;
  };
  afterEach(async () => {
    const hs = handles;
    handles = [];
    await Promise.all(hs.map((h) => h.close()));
  });

  /** Wait until the store's clock is past `t` (ms). */
  const storePast = async (h: NodeRegistryUnderTest, t: number) => {
    const deadline = Date.now() + 20_000;
    while ((await h.storeNow()) <= t) {
      if (Date.now() > deadline) throw new Error(`the store's clock did not pass ${t} in 20 s`);
      await sleep(20);
    }
  };
  const leaseOf = async (r: NodeRegistry, node: string) => (await r.live()).find((n) => n.node === node)?.leaseUntil ?? null;

  test('a registered node is live with its lease end by the store\'s clock; renewals report the served manifest version', async () => {
    const h = await fresh();
    const r = h.registry;
    const before = await h.storeNow();
    await r.register(info('node-a'), 10_000);
    const after = await h.storeNow();
    const [a] = await r.live();
    expect(a).toEqual({ node: 'node-a', host: 'host-of-node-a', servedVersion: null, leaseUntil: expect.any(Number) });
    expect(a.leaseUntil).toBeGreaterThanOrEqual(before + 10_000 - 5);
    expect(a.leaseUntil).toBeLessThanOrEqual(after + 10_000 + 5);
    expect(await r.known('node-a')).toBe(true);
    expect(await r.known('node-nobody')).toBe(false);

    expect(await r.renew('node-a', 20_000, 7)).toEqual({ fenced: false });
    const b = (await r.live())[0];
    expect(b.servedVersion).toBe(7);
    expect(b.leaseUntil).toBeGreaterThan(a.leaseUntil + 5_000);
    expect(await r.renew('node-a', 20_000, null)).toEqual({ fenced: false });
    expect((await r.live())[0].servedVersion).toBeNull();
    // A node id is registered once: a second start takes a fresh one.
    await expect(r.register(info('node-a'), 10_000)).rejects.toThrow();
    // A renewal of a node never registered is fenced (nothing to renew).
    expect(await r.renew('node-nobody', 10_000, null)).toEqual({ fenced: true });
  });

  test('no claim while the lease lives; a claim once it ran out by the store\'s clock; then live() leaves it out and its renewal is fenced', async () => {
    const h = await fresh();
    const r = h.registry;
    await r.register(info('node-a'), 1_500);
    await r.register(info('node-b'), 60_000);
    expect(await r.claim('node-a', 'node-b')).toBe(false);
    expect(await r.claim('node-b', 'node-b')).toBe(false);
    const until = (await leaseOf(r, 'node-a'))!;
    await storePast(h, until);
    // Expired: not live, though nobody claimed it yet.
    expect((await r.live()).map((n) => n.node)).toEqual(['node-b']);
    expect(await r.claim('node-a', 'node-b')).toBe(true);
    expect(await r.renew('node-a', 60_000, 3)).toEqual({ fenced: true });
    expect(await r.renew('node-a', 60_000, 3)).toEqual({ fenced: true });
    expect((await r.live()).map((n) => n.node)).toEqual(['node-b']);
    // Claimed stays claimed: nobody else takes it, its old owner's renewals bring nothing back.
    await r.register(info('node-c'), 60_000);
    expect(await r.claim('node-a', 'node-c')).toBe(false);
    // The claimant claiming again (a scan that resumes the move) is told yes again.
    expect(await r.claim('node-a', 'node-b')).toBe(true);
  });

  test('a lease that ran out but was not claimed is taken up again by a renewal, and then is not claimable', async () => {
    const h = await fresh();
    const r = h.registry;
    await r.register(info('node-a'), 500);
    await r.register(info('node-b'), 60_000);
    await storePast(h, (await leaseOf(r, 'node-a'))!);
    expect(await r.renew('node-a', 60_000, 1)).toEqual({ fenced: false });
    expect(await r.claim('node-a', 'node-b')).toBe(false);
    expect((await r.live()).map((n) => n.node)).toEqual(['node-a', 'node-b']);
  });

  test('expiry is judged by the store\'s clock: a node whose own clock runs an hour ahead changes nothing', async () => {
    const h = await fresh();
    const r = h.registry;
    const realNow = Date.now;
    // This process's clock an hour ahead: the node's (and the claimant's) clock; the store's is its own.
    Date.now = () => realNow() + 3_600_000;
    try {
      await r.register(info('node-a', { startedAt: Date.now() }), 30_000);
      await r.register(info('node-b', { startedAt: Date.now() }), 30_000);
      expect(await r.claim('node-a', 'node-b')).toBe(false);
      const until = (await leaseOf(r, 'node-a'))!;
      const storeNow = await h.storeNow();
      expect(until - storeNow).toBeGreaterThan(25_000);
      expect(until - storeNow).toBeLessThanOrEqual(30_000 + 5);
    } finally {
      Date.now = realNow;
    }
  });

  test('an ended node is not live and is claimable at once; its renewal is fenced', async () => {
    const h = await fresh();
    const r = h.registry;
    await r.register(info('node-a'), 60_000);
    await r.register(info('node-b'), 60_000);
    await r.end('node-a');
    await r.end('node-a'); // idempotent
    expect((await r.live()).map((n) => n.node)).toEqual(['node-b']);
    expect(await r.renew('node-a', 60_000, null)).toEqual({ fenced: true });
    expect(await r.claim('node-a', 'node-b')).toBe(true);
    expect(await r.known('node-a')).toBe(true);
  });

  test('two registries racing to claim one dead node: exactly one wins, every time', async () => {
    const h = await fresh();
    const r1 = h.registry;
    const r2 = await h.another();
    await r1.register(info('node-b'), 60_000);
    await r2.register(info('node-c'), 60_000);
    for (let i = 0; i < 12; i++) {
      const dead = `node-dead-${i}`;
      await r1.register(info(dead), 60_000);
      await r1.end(dead);
      // Several claims from each side at once, as scans on two nodes (and a retry) could be.
      const answers = await Promise.all([
        r1.claim(dead, 'node-b'), r2.claim(dead, 'node-c'), r2.claim(dead, 'node-c'), r1.claim(dead, 'node-b'),
      ]);
      const winners = new Set(answers.flatMap((won, k) => (won ? [k % 3 === 0 ? 'node-b' : 'node-c'] : [])));
      expect(winners.size).toBe(1);
      // The loser keeps losing; the winner's repeat is yes.
      const [winner] = [...winners];
      const loser = winner === 'node-b' ? 'node-c' : 'node-b';
      expect(await (loser === 'node-b' ? r1 : r2).claim(dead, loser)).toBe(false);
      expect(await (winner === 'node-b' ? r1 : r2).claim(dead, winner)).toBe(true);
    }
  });

  test('a claimant that died before finishing is replaced; a node whose own lease is gone claims nothing', async () => {
    const h = await fresh();
    const r = h.registry;
    await r.register(info('node-a'), 60_000);
    await r.register(info('node-b'), 1_000);
    await r.register(info('node-c'), 60_000);
    await r.end('node-a');
    expect(await r.claim('node-a', 'node-b')).toBe(true);
    // B is live: C cannot take A from it.
    expect(await r.claim('node-a', 'node-c')).toBe(false);
    await storePast(h, (await leaseOf(r, 'node-b'))!);
    // B's lease ran out: it claims nothing more, and what it claimed goes to a live node.
    await r.register(info('node-d'), 60_000);
    await r.end('node-d');
    expect(await r.claim('node-d', 'node-b')).toBe(false);
    expect(await r.claim('node-a', 'node-c')).toBe(true);
    expect(await r.claim('node-a', 'node-b')).toBe(false);
    expect(await r.claim('node-b', 'node-c')).toBe(true);
    expect((await r.live()).map((n) => n.node)).toEqual(['node-c']);
  });
}
