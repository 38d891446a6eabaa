/**
 * The conformance suite every CredentialStore runs (aedes' test/abstract-persistence.js style):
 * call `credentialStoreConformance(open)` inside a describe; `open` gives a store on a fresh,
 * migrated database. What it holds both backends to:
 * - add, rotate, remove and list gateways and API keys, in byte order, created_at as a number;
 * - a taken id or name: ConflictError, an unknown one: NotFoundError, the same codes and messages;
 * - only hashes stored: no column of any row holds a secret issued through credentials.ts;
 * - [INV-7] across processes and nodes: a second store on the same database (connections of its
 *   own) sees a rotation or removal by the first with the next lookup, no delay, no cache;
 * - two stores racing: one add of an id wins and the other gets ConflictError, one remove wins
 *   and the other gets NotFoundError, distinct adds all land.
 */
import {
  API_KEY_PREFIX, GATEWAY_TOKEN_PREFIX, addApiKey, addGateway, hashSecret, lookupSecret, rotateGateway,
} from '../../../cloud/store/credentials.js';
import type { CredentialStore } from '../../../cloud/store/credential-store.js';

export interface CredentialStoreUnderTest {
  store: CredentialStore;
  /** Another store on the same database, with connections of its own: another process or node. */
  another(): Promise<CredentialStore>;
  /** Every row of `gateways` and `api_keys` as stored, every column. */
  rows(): Promise<Array<Record<string, unknown>>>;
  /** Closes what open() and another() opened. */
  close(): Promise<void>;
}

/** Past 2^31 ms, so a 32-bit column or a string BIGINT would show. */
const T0 = 1_732_406_400_123;
const hash = (s: string) => hashSecret(s);

export function credentialStoreConformance(open: () => Promise<CredentialStoreUnderTest>): void {
  let handles: CredentialStoreUnderTest[] = [];
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

  test('gateways: add, list in byte order with created_at, lookup by hash of the right kind only', async () => {
    const { store } = await fresh();
    const ids = ['gw-b', 'GW-a', 'gw-a', '9gw', '10gw', 'gw_a', 'gw.a'];
    for (const [i, id] of ids.entries()) await store.addGateway(id, hash(`t-${id}`), T0 + i);
    const list = await store.listGateways();
    // Byte order: digits, upper case, then lower case; '-' < '.' < '_'. A locale's order (en-US) differs.
    expect(list.map((g) => g.id)).toEqual(['10gw', '9gw', 'GW-a', 'gw-a', 'gw-b', 'gw.a', 'gw_a']);
    for (const g of list) expect(g).toEqual({ id: g.id, createdAt: T0 + ids.indexOf(g.id) });
    expect(await store.lookup(hash('t-gw-a'), 'gateway')).toEqual({ kind: 'gateway', gateway: 'gw-a' });
    expect(await store.lookup(hash('t-GW-a'), 'gateway')).toEqual({ kind: 'gateway', gateway: 'GW-a' });
    expect(await store.lookup(hash('t-nobody'), 'gateway')).toBeNull();
    // A gateway's hash presented as an API key finds nothing.
    expect(await store.lookup(hash('t-gw-a'), 'key')).toBeNull();
  });

  test('gateways: a taken id is a ConflictError and leaves the first token working', async () => {
    expect.assertions(5);
    const { store } = await fresh();
    await store.addGateway('gw-1', hash('first'), T0);
    await expect(store.addGateway('gw-1', hash('second'), T0 + 1)).rejects.toMatchObject({
      code: 'BRAID_ERR_CONFLICT', statusCode: 409, message: 'gateway gw-1 is already registered (use rotate for a new token)',
    });
    expect(await store.lookup(hash('first'), 'gateway')).toEqual({ kind: 'gateway', gateway: 'gw-1' });
    expect(await store.lookup(hash('second'), 'gateway')).toBeNull();
    expect(await store.listGateways()).toEqual([{ id: 'gw-1', createdAt: T0 }]);
    // The id is case-sensitive on both backends: another gateway.
    await store.addGateway('GW-1', hash('third'), T0);
    expect((await store.listGateways()).map((g) => g.id)).toEqual(['GW-1', 'gw-1']);
  });

  test('gateways: rotate replaces the hash at once and keeps created_at; unknown ids are NotFoundError', async () => {
    const { store } = await fresh();
    await store.addGateway('gw-1', hash('old'), T0);
    await store.rotateGateway('gw-1', hash('new'));
    expect(await store.lookup(hash('old'), 'gateway')).toBeNull();
    expect(await store.lookup(hash('new'), 'gateway')).toEqual({ kind: 'gateway', gateway: 'gw-1' });
    expect(await store.listGateways()).toEqual([{ id: 'gw-1', createdAt: T0 }]);
    await expect(store.rotateGateway('gw-2', hash('x'))).rejects.toMatchObject({ code: 'BRAID_ERR_NOT_FOUND', statusCode: 404, message: 'gateway gw-2 is not registered' });
    await expect(store.removeGateway('gw-2')).rejects.toMatchObject({ code: 'BRAID_ERR_NOT_FOUND', statusCode: 404, message: 'gateway gw-2 is not registered' });
    // Nothing was created by the failed rotate.
    expect(await store.lookup(hash('x'), 'gateway')).toBeNull();
  });

  test('gateways: remove ends lookups; a second remove is NotFoundError; the id can be registered again', async () => {
    const { store } = await fresh();
    await store.addGateway('gw-1', hash('a'), T0);
    await store.addGateway('gw-2', hash('b'), T0);
    await store.removeGateway('gw-1');
    expect(await store.lookup(hash('a'), 'gateway')).toBeNull();
    expect(await store.lookup(hash('b'), 'gateway')).toEqual({ kind: 'gateway', gateway: 'gw-2' });
    expect(await store.listGateways()).toEqual([{ id: 'gw-2', createdAt: T0 }]);
    await expect(store.removeGateway('gw-1')).rejects.toMatchObject({ code: 'BRAID_ERR_NOT_FOUND' });
    await store.addGateway('gw-1', hash('c'), T0 + 5);
    expect(await store.lookup(hash('c'), 'gateway')).toEqual({ kind: 'gateway', gateway: 'gw-1' });
    expect(await store.lookup(hash('a'), 'gateway')).toBeNull();
  });

  test('API keys: add both roles, list in byte order, lookup with the role, conflict and not-found codes', async () => {
    const { store } = await fresh();
    await store.addApiKey('ops admin', 'admin', hash('k1'), T0);
    await store.addApiKey('Grafana', 'read', hash('k2'), T0 + 1);
    await store.addApiKey('grafana', 'read', hash('k3'), T0 + 2);
    await store.addApiKey('ci@build', 'admin', hash('k4'), T0 + 3);
    expect(await store.listApiKeys()).toEqual([
      { name: 'Grafana', role: 'read', createdAt: T0 + 1 },
      { name: 'ci@build', role: 'admin', createdAt: T0 + 3 },
      { name: 'grafana', role: 'read', createdAt: T0 + 2 },
      { name: 'ops admin', role: 'admin', createdAt: T0 },
    ]);
    expect(await store.lookup(hash('k1'), 'key')).toEqual({ kind: 'key', name: 'ops admin', role: 'admin' });
    expect(await store.lookup(hash('k3'), 'key')).toEqual({ kind: 'key', name: 'grafana', role: 'read' });
    expect(await store.lookup(hash('k1'), 'gateway')).toBeNull();
    expect(await store.lookup(hash('k9'), 'key')).toBeNull();

    await expect(store.addApiKey('grafana', 'admin', hash('k5'), T0)).rejects.toMatchObject({
      code: 'BRAID_ERR_CONFLICT', statusCode: 409, message: 'an API key named grafana exists already',
    });
    expect(await store.lookup(hash('k5'), 'key')).toBeNull();
    expect(await store.lookup(hash('k3'), 'key')).toEqual({ kind: 'key', name: 'grafana', role: 'read' });

    await store.removeApiKey('grafana');
    expect(await store.lookup(hash('k3'), 'key')).toBeNull();
    await expect(store.removeApiKey('grafana')).rejects.toMatchObject({ code: 'BRAID_ERR_NOT_FOUND', statusCode: 404, message: 'no API key named grafana' });
    expect((await store.listApiKeys()).map((k) => k.name)).toEqual(['Grafana', 'ci@build', 'ops admin']);
  });

  test('secrets issued through credentials.ts: only their SHA-256 is stored, never the secret', async () => {
    const { store, rows } = await fresh();
    const token = await addGateway(store, 'gw-1', T0);
    const key = await addApiKey(store, 'reader', 'read', T0);
    expect(token.startsWith(GATEWAY_TOKEN_PREFIX)).toBe(true);
    expect(key.startsWith(API_KEY_PREFIX)).toBe(true);
    expect(await lookupSecret(store, token)).toEqual({ kind: 'gateway', gateway: 'gw-1' });
    expect(await lookupSecret(store, key)).toEqual({ kind: 'key', name: 'reader', role: 'read' });
    const rotated = await rotateGateway(store, 'gw-1');
    expect(await lookupSecret(store, token)).toBeNull();
    expect(await lookupSecret(store, rotated)).toEqual({ kind: 'gateway', gateway: 'gw-1' });

    const stored = await rows();
    expect(stored).toHaveLength(2);
    const text = JSON.stringify(stored);
    for (const secret of [token, key, rotated]) {
      expect(text).not.toContain(secret);
      expect(text).not.toContain(secret.slice(4)); // without its prefix
    }
    expect(text).toContain(hashSecret(rotated));
    expect(text).toContain(hashSecret(key));
    expect(text).not.toContain(hashSecret(token));
  });

  test('[INV-7] a second store on the database sees another\'s rotation and removal with its next lookup', async () => {
    const { store: a, another } = await fresh();
    const b = await another();
    await a.addGateway('gw-1', hash('old'), T0);
    await a.addApiKey('reader', 'read', hash('key'), T0);
    // B sees A's adds at once.
    expect(await b.lookup(hash('old'), 'gateway')).toEqual({ kind: 'gateway', gateway: 'gw-1' });
    expect(await b.lookup(hash('key'), 'key')).toEqual({ kind: 'key', name: 'reader', role: 'read' });
    // Lookups on A before the change, then B changes: A's very next lookups see it, however many at once.
    expect(await a.lookup(hash('old'), 'gateway')).not.toBeNull();
    await b.rotateGateway('gw-1', hash('new'));
    const afterRotate = await Promise.all(Array.from({ length: 20 }, () => a.lookup(hash('old'), 'gateway')));
    expect(afterRotate.every((p) => p === null)).toBe(true);
    expect(await a.lookup(hash('new'), 'gateway')).toEqual({ kind: 'gateway', gateway: 'gw-1' });

    expect(await a.lookup(hash('key'), 'key')).not.toBeNull();
    await b.removeApiKey('reader');
    const afterRemove = await Promise.all(Array.from({ length: 20 }, () => a.lookup(hash('key'), 'key')));
    expect(afterRemove.every((p) => p === null)).toBe(true);
    await expect(a.removeApiKey('reader')).rejects.toMatchObject({ code: 'BRAID_ERR_NOT_FOUND' });

    await a.removeGateway('gw-1');
    expect(await b.lookup(hash('new'), 'gateway')).toBeNull();
    expect(await b.listGateways()).toEqual([]);
  });

  test('two stores racing to add one id or name: one wins, the other gets ConflictError, one row', async () => {
    const { store: a, another } = await fresh();
    const b = await another();
    for (let round = 0; round < 10; round++) {
      const id = `gw-${round}`;
      const r = await Promise.allSettled([a.addGateway(id, hash(`a${round}`), T0), b.addGateway(id, hash(`b${round}`), T0)]);
      expect(r.filter((x) => x.status === 'fulfilled')).toHaveLength(1);
      const lost = r.find((x): x is PromiseRejectedResult => x.status === 'rejected');
      expect(lost?.reason).toMatchObject({ code: 'BRAID_ERR_CONFLICT' });
      const winner = r[0].status === 'fulfilled' ? 'a' : 'b';
      const loser = winner === 'a' ? 'b' : 'a';
      expect(await a.lookup(hash(`${winner}${round}`), 'gateway')).toEqual({ kind: 'gateway', gateway: id });
      expect(await b.lookup(hash(`${loser}${round}`), 'gateway')).toBeNull();

      const name = `key ${round}`;
      const k = await Promise.allSettled([a.addApiKey(name, 'read', hash(`ka${round}`), T0), b.addApiKey(name, 'admin', hash(`kb${round}`), T0)]);
      expect(k.filter((x) => x.status === 'fulfilled')).toHaveLength(1);
      expect(k.find((x): x is PromiseRejectedResult => x.status === 'rejected')?.reason).toMatchObject({ code: 'BRAID_ERR_CONFLICT' });
    }
    expect(await a.listGateways()).toHaveLength(10);
    expect(await b.listApiKeys()).toHaveLength(10);
  });

  test('two stores racing to remove one gateway or key: one resolves, the other gets NotFoundError', async () => {
    const { store: a, another } = await fresh();
    const b = await another();
    for (let round = 0; round < 10; round++) {
      await a.addGateway(`gw-${round}`, hash(`g${round}`), T0);
      await a.addApiKey(`key ${round}`, 'read', hash(`k${round}`), T0);
    }
    for (let round = 0; round < 10; round++) {
      const r = await Promise.allSettled([a.removeGateway(`gw-${round}`), b.removeGateway(`gw-${round}`), a.removeApiKey(`key ${round}`), b.removeApiKey(`key ${round}`)]);
      expect(r.map((x) => x.status).sort()).toEqual(['fulfilled', 'fulfilled', 'rejected', 'rejected']);
      expect([r[0].status, r[1].status].sort()).toEqual(['fulfilled', 'rejected']);
      for (const x of r) if (x.status === 'rejected') expect(x.reason).toMatchObject({ code: 'BRAID_ERR_NOT_FOUND' });
    }
    expect(await a.listGateways()).toEqual([]);
    expect(await b.listApiKeys()).toEqual([]);
  });

  test('two stores adding distinct gateways and keys at once: every one lands', async () => {
    const { store: a, another } = await fresh();
    const b = await another();
    const ids = Array.from({ length: 40 }, (_, i) => `gw-${String(i).padStart(2, '0')}`);
    await Promise.all(ids.map((id, i) => (i % 2 === 0 ? a : b).addGateway(id, hash(id), T0 + i)));
    await Promise.all(ids.map((id, i) => (i % 2 === 0 ? b : a).addApiKey(`k-${id}`, i % 3 === 0 ? 'admin' : 'read', hash(`k-${id}`), T0)));
    expect((await a.listGateways()).map((g) => g.id)).toEqual(ids);
    expect((await b.listApiKeys()).map((k) => k.name)).toEqual(ids.map((id) => `k-${id}`));
    for (const [i, id] of ids.entries()) {
      expect(await (i % 2 === 0 ? b : a).lookup(hash(id), 'gateway')).toEqual({ kind: 'gateway', gateway: id });
    }
  });
}
