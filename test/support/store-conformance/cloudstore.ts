/**
 * CloudStore conformance (cloud/store/cloud-store.ts): what the aggregate promises on top of its
 * sub-stores' own suites, run on each backend by test/cloud/store-cloudstore.test.ts. Every call of
 * `open` in one test opens another store (another node) on the same data dir / database:
 * - it names its backend, and every sub-store is there and of that backend;
 * - its schema version is the one given, and a second open (a restart) does not change it;
 * - two stores opened at once both open (PostgreSQL: the migration runs once, under its lock);
 * - what one store commits, another reads: a gateway added through `credentials` is found by the
 *   other's lookup and listed by its `registry`; a speed push is its lastContact; a published manifest
 *   is its `views.current()`;
 * - two stores racing: one add of a gateway id wins (the other ConflictError), one batch lock holder
 *   (the other BatchRunningError), one publish from the same base version;
 * - close ends it: a closed store's sub-stores are not used again, and another store still works.
 */
import type { CloudStore } from '../../../cloud/store/cloud-store.js';
import { fixtureManifest } from './batch.js';
import { partial, push } from './speed.js';

export interface CloudStoreUnderTest {
  store: CloudStore;
  close: () => Promise<void>;
}

export interface CloudStoreConformanceOptions {
  kind: CloudStore['kind'];
  /** What schemaVersion() answers once open. */
  schemaVersion: number;
}

const NOW = Date.UTC(2024, 10, 24, 12, 0);

export function cloudStoreConformance(name: string, open: () => Promise<CloudStoreUnderTest>, o: CloudStoreConformanceOptions): void {
  describe(`CloudStore conformance: ${name}`, () => {
    const opened: CloudStoreUnderTest[] = [];
    const node = async () => { const s = await open(); opened.push(s); return s.store; };
    afterEach(async () => { for (const s of opened.splice(0).reverse()) await s.close(); });

    test('names its backend; every sub-store is there and of it; the schema version, unchanged by a second open', async () => {
      const a = await node();
      expect(a.kind).toBe(o.kind);
      expect(a.speed.kind).toBe(o.kind);
      expect(a.batch.kind).toBe(o.kind);
      for (const k of ['credentials', 'speed', 'registry', 'batch', 'views', 'ingest'] as const) expect(a[k]).toBeTruthy();
      expect(await a.schemaVersion()).toBe(o.schemaVersion);
      const b = await node();
      expect(await b.schemaVersion()).toBe(o.schemaVersion);
      expect(await a.schemaVersion()).toBe(o.schemaVersion);
    });

    test('two stores opened at once both open, on one schema', async () => {
      const [a, b] = await Promise.all([node(), node()]);
      expect(await a.schemaVersion()).toBe(o.schemaVersion);
      expect(await b.schemaVersion()).toBe(o.schemaVersion);
      await a.credentials.addGateway('gw-x', 'h-x', NOW);
      expect(await b.credentials.listGateways()).toEqual([{ id: 'gw-x', createdAt: NOW }]);
    });

    test('what one store commits another reads: credentials, registry, speed, views', async () => {
      const a = await node();
      const b = await node();
      await a.credentials.addGateway('gw-1', 'hash-1', NOW);
      expect(await b.credentials.lookup('hash-1', 'gateway')).toEqual({ kind: 'gateway', gateway: 'gw-1' });
      expect(await b.registry.gatewayIds()).toEqual(['gw-1']);
      await a.credentials.rotateGateway('gw-1', 'hash-2');
      expect(await b.credentials.lookup('hash-1', 'gateway')).toBeNull();
      expect(await b.credentials.lookup('hash-2', 'gateway')).toEqual({ kind: 'gateway', gateway: 'gw-1' });

      const [r] = await a.speed.storePushes([{ push: push('gw-1', [partial('d1', 'temp', 0, 1)]), clockOffsetMs: null }], NOW);
      expect(r).toBeTruthy();
      expect(await b.speed.lastContact()).toEqual({ 'gw-1': NOW });
      expect(await b.registry.registeredLastContact()).toEqual(new Map([['gw-1', NOW]]));

      expect(await b.views.current()).toBeNull();
      expect(await a.views.publish(null, fixtureManifest(1))).toBe(true);
      expect(await b.views.current()).toEqual(fixtureManifest(1));
    });

    test('two stores racing: one gateway add, one batch lock, one publish per base version', async () => {
      const a = await node();
      const b = await node();
      const adds = await Promise.allSettled([a, b].map((s, i) => s.credentials.addGateway('gw-r', `h-${i}`, NOW)));
      expect(adds.filter((x) => x.status === 'fulfilled')).toHaveLength(1);
      expect(adds.find((x) => x.status === 'rejected')).toMatchObject({ reason: { code: 'BRAID_ERR_CONFLICT' } });
      expect(await a.credentials.listGateways()).toEqual([{ id: 'gw-r', createdAt: NOW }]);

      const locks = await Promise.allSettled([a, b].map((s, i) => s.batch.tryLock(`node-${i}`)));
      const held = locks.filter((x): x is PromiseFulfilledResult<Awaited<ReturnType<CloudStore['batch']['tryLock']>>> => x.status === 'fulfilled');
      expect(held).toHaveLength(1);
      expect(locks.find((x) => x.status === 'rejected')).toMatchObject({ reason: { code: 'BRAID_ERR_BATCH_RUNNING' } });
      await held[0].value.release();
      const again = await b.batch.tryLock('node-b');
      await again.release();

      const pubs = await Promise.all([a, b].map((s, i) => s.views.publish(null, fixtureManifest(i + 1))));
      expect(pubs.filter(Boolean)).toHaveLength(1);
      const live = await a.views.current();
      expect(live).toEqual(fixtureManifest(pubs[0] ? 1 : 2));
      expect(await b.views.current()).toEqual(live);
    });

    test('a closed store leaves the others working', async () => {
      const a = await open();
      const b = await node();
      await a.store.credentials.addGateway('gw-c', 'h-c', NOW);
      await a.close();
      expect(await b.credentials.lookup('h-c', 'gateway')).toEqual({ kind: 'gateway', gateway: 'gw-c' });
      await b.credentials.removeGateway('gw-c');
      expect(await b.credentials.listGateways()).toEqual([]);
    });
  });
}
