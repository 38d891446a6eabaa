/**
 * The conformance suite of the speed store and the registry (cloud/store/speed.ts), run by every
 * implementation (aedes' test/abstract-persistence.js style; test/cloud/store-speed.test.ts runs
 * it on SQLite and on PostgreSQL). Every expectation is written out, so both backends answer the
 * same rows:
 * - a push group stores each push's partials, results in order;
 * - the count guard: a repeated push rewrites nothing smaller, an older one never shrinks a count,
 *   within one push the larger count wins whatever the order [idempotent];
 * - two stores on one database pushing the same groups at once (in opposite orders, a smaller and
 *   a larger version) end as if each had been pushed once;
 * - partials of epochs at or below the pruned epoch are not stored (stale), the epoch never goes back;
 * - prune removes exactly the partials at or below each gateway's E, chunk by chunk, and a push
 *   racing it from another store never puts one back [INV-3];
 * - readPartials: epochs above E[g] only, the minute range, one device or gateway, byte-wise order;
 * - gateway status, devices (metrics merged, the 5 s resolution, a device moving), last contact,
 *   clock offsets, and the console's reads of ingest's tables round trip;
 * - searchDevices: the devices page's search, filters, sorts and pages, in SQL, with the total;
 *   alerts=firing joins alert_states (firing alerts of the device's own scope);
 * - metricNames: the fleet's metrics with their device counts.
 */
import type { DeviceSearch, RegistryStore, SpeedStore } from '../../../cloud/store/speed.js';
import type { PartialTuple, SpeedPush } from '../../../cloud/speed/validate.js';

export type SpeedStoreUnderTest = SpeedStore & RegistryStore;

export interface SpeedStoreHarness {
  store: SpeedStoreUnderTest;
  /** Another store on the same database: a second node (PostgreSQL), a second pair of connections (SQLite). */
  another: () => Promise<SpeedStoreUnderTest>;
  /** Rows of tables other parts of the store write (gateways, received, gaps, seq_gaps); JSON columns as values. */
  insert: (table: string, rows: Array<Record<string, unknown>>) => Promise<void>;
  /**
   * Holds a lock a push of `gateway` needs part way through its transaction (after it has read the
   * gateway's pruned epoch and written its partials), until the returned release: PostgreSQL, the
   * gateway's gateway_status row (FOR UPDATE, which must exist); SQLite, the database's write lock.
   */
  hold: (gateway: string) => Promise<() => Promise<void>>;
  /** Closes the stores and their connections (another()'s too). */
  close: () => Promise<void>;
}

export const MINUTE0 = Date.UTC(2024, 10, 24, 10, 0);
const T = Date.UTC(2024, 10, 24, 12, 0);

/** A well-formed partial of `count` readings of value `v` (device, metric, minute index, epoch). */
export function partial(device: string, metric: string, minuteIndex: number, epoch: number, count = 1, v = 20): PartialTuple {
  const minute = MINUTE0 + minuteIndex * 60_000;
  return [device, metric, minute, epoch, count, v * count, v, v, 0, v, minute + 1000, v, minute + 1000 + (count - 1) * 10];
}

export function push(gateway: string, partials: PartialTuple[], o: { devices?: SpeedPush['devices']; health?: unknown; sentAt?: number | null } = {}): SpeedPush {
  return {
    gateway, partials, sentAt: o.sentAt === undefined ? T - 5 : o.sentAt,
    health: JSON.stringify(o.health ?? { status: 'ok', gatewayId: gateway }), devices: o.devices ?? [],
  };
}

const entry = (p: SpeedPush, clockOffsetMs: number | null = null) => ({ push: p, clockOffsetMs });

/** A stored row as readPartials returns it, from the tuple that was pushed. */
function row(gateway: string, p: PartialTuple) {
  const [device, , minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts] = p;
  return { gateway, device, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts };
}

const ALL = { fromMs: MINUTE0 - 86_400_000, toMs: MINUTE0 + 86_400_000, watermark: {} };
const everything = async (s: SpeedStore, metric = 'temp') => s.readPartials({ metric, ...ALL });
const keys = (rows: Array<{ gateway: string; device: string; minute: number; epoch: number }>) =>
  rows.map((r) => `${r.gateway}/${r.device}/${(r.minute - MINUTE0) / 60_000}/${r.epoch}`);

export function speedStoreConformance(name: string, factory: () => Promise<SpeedStoreHarness>): void {
  describe(`SpeedStore and RegistryStore conformance: ${name}`, () => {
    let h: SpeedStoreHarness;
    let s: SpeedStoreUnderTest;
    beforeEach(async () => {
      h = await factory();
      s = h.store;
    }, 30_000);
    afterEach(async () => { await h?.close(); });

    test('a push group stores each push\'s partials in one call, its results in the group\'s order', async () => {
      const a = [partial('d1', 'temp', 0, 1, 3, 21.5), partial('d1', 'hum', 0, 1), partial('d2', 'temp', 1, 2, 2, 1 / 3)];
      const b = [partial('d9', 'temp', 0, 1, 4, -7.25), partial('d9', 'temp', 2, 1)];
      const c = [partial('d1', 'temp', 5, 3, 1, 0.1 + 0.2)];
      expect(await s.storePushes([entry(push('gw-1', a)), entry(push('gw-2', b)), entry(push('gw-1', c))], T))
        .toEqual([{ stored: 3, stale: 0 }, { stored: 2, stale: 0 }, { stored: 1, stale: 0 }]);
      expect(await everything(s)).toEqual([row('gw-1', a[0]), row('gw-2', b[0]), row('gw-1', a[2]), row('gw-2', b[1]), row('gw-1', c[0])]);
      expect(await everything(s, 'hum')).toEqual([row('gw-1', a[1])]);
      expect(await s.lastContact()).toEqual({ 'gw-1': T, 'gw-2': T });
      expect(await s.storePushes([], T)).toEqual([]);
    });

    test('a push of 10,000 partials (several statements on either backend\'s parameter limit) is stored whole, and grown whole', async () => {
      const big = (count: number) => Array.from({ length: 10_000 }, (_, i) => partial(`d${i % 100}`, 'temp', Math.floor(i / 100), 1, count, i / 7));
      expect(await s.storePushes([entry(push('gw-1', big(1)))], T)).toEqual([{ stored: 10_000, stale: 0 }]);
      expect(await s.storePushes([entry(push('gw-1', big(2)))], T)).toEqual([{ stored: 10_000, stale: 0 }]);
      const rows = await everything(s);
      expect(rows).toHaveLength(10_000);
      expect(rows.every((r) => r.count === 2)).toBe(true);
      expect(rows[9_999]).toEqual(row('gw-1', big(2)[9_999]));
      expect(await s.listDevices()).toHaveLength(100);
    }, 30_000);

    test('the count guard: the same push again rewrites in place, an older smaller one is ignored, within a push the larger count wins', async () => {
      const newer = partial('d1', 'temp', 0, 4, 7, 22);
      const older = partial('d1', 'temp', 0, 4, 5, 21);
      expect(await s.storePushes([entry(push('gw-1', [newer]))], T)).toEqual([{ stored: 1, stale: 0 }]);
      expect(await s.storePushes([entry(push('gw-1', [older]))], T)).toEqual([{ stored: 0, stale: 0 }]);
      expect(await s.storePushes([entry(push('gw-1', [newer]))], T)).toEqual([{ stored: 1, stale: 0 }]);
      expect(await everything(s)).toEqual([row('gw-1', newer)]);

      // One push naming a key twice: applied in order, so the larger count stays either way.
      const bigger = partial('d1', 'temp', 0, 4, 9, 23);
      expect(await s.storePushes([entry(push('gw-1', [bigger, older]))], T)).toEqual([{ stored: 1, stale: 0 }]);
      const small = partial('d2', 'temp', 1, 1, 2, 10);
      const large = partial('d2', 'temp', 1, 1, 3, 11);
      expect(await s.storePushes([entry(push('gw-1', [small, large]))], T)).toEqual([{ stored: 2, stale: 0 }]);
      // Equal counts: the later one is what stays (as a re-push of the same partial would).
      const tieA = partial('d3', 'temp', 2, 1, 3, 1);
      const tieB = partial('d3', 'temp', 2, 1, 3, 2);
      expect(await s.storePushes([entry(push('gw-1', [tieA])), entry(push('gw-1', [tieB]))], T)).toEqual([{ stored: 1, stale: 0 }, { stored: 1, stale: 0 }]);
      expect(await everything(s)).toEqual([row('gw-1', bigger), row('gw-1', large), row('gw-1', tieB)]);
    });

    test('two stores on one database pushing the same groups at once, in opposite orders, end as if each had been pushed once', async () => {
      const other = await h.another();
      const gws = ['gw-1', 'gw-2', 'gw-3'];
      const version = (g: string, count: number) => Array.from({ length: 120 }, (_, i) => partial(`d${i % 12}`, 'temp', Math.floor(i / 12), 1 + (i % 2), count + (i % 3), i + 0.5));
      const group = (count: number) => gws.map((g) => entry(push(g, version(g, count)), 100));
      for (let round = 0; round < 4; round++) {
        // The larger version from one store, the smaller from the other, each group in the other's order.
        const [x, y] = await Promise.all([
          s.storePushes(group(5), T + round),
          other.storePushes(group(4).reverse().map((e) => ({ ...e, push: { ...e.push, partials: [...e.push.partials].reverse() } })), T + round),
        ]);
        expect(x).toHaveLength(3);
        expect(y).toHaveLength(3);
      }
      // The same group twice at once: as once.
      await Promise.all([s.storePushes(group(5), T + 9), other.storePushes(group(5), T + 9)]);
      const want = gws.flatMap((g) => version(g, 5).map((p) => row(g, p)));
      const got = await everything(s);
      expect(got).toHaveLength(want.length);
      const byKey = (r: { gateway: string; device: string; minute: number; epoch: number }) => `${r.gateway}/${r.device}/${r.minute}/${r.epoch}`;
      expect(new Map(got.map((r) => [byKey(r), r]))).toEqual(new Map(want.map((r) => [byKey(r), r])));
      expect(await other.readPartials({ metric: 'temp', ...ALL })).toEqual(got);
      expect(await s.lastContact()).toEqual({ 'gw-1': T + 9, 'gw-2': T + 9, 'gw-3': T + 9 });
    }, 60_000);

    test('partials of epochs at or below the pruned epoch are not stored (stale); the pruned epoch never goes back', async () => {
      expect(await s.prune({ 'gw-1': 2 }, 100)).toBe(0);
      expect(await s.prunedEpoch('gw-1')).toBe(2);
      expect(await s.prunedEpoch('gw-2')).toBe(0);
      const g1 = [partial('d1', 'temp', 0, 1), partial('d1', 'temp', 1, 2), partial('d1', 'temp', 2, 3)];
      const g2 = [partial('d1', 'temp', 0, 1), partial('d1', 'temp', 1, 2)];
      expect(await s.storePushes([entry(push('gw-1', g1)), entry(push('gw-2', g2))], T)).toEqual([{ stored: 1, stale: 2 }, { stored: 2, stale: 0 }]);
      expect(keys(await everything(s))).toEqual(['gw-2/d1/0/1', 'gw-2/d1/1/2', 'gw-1/d1/2/3']);
      expect(await s.prune({ 'gw-1': 1 }, 100)).toBe(0);
      expect(await s.prunedEpoch('gw-1')).toBe(2);
      expect(await s.storePushes([entry(push('gw-1', [partial('d1', 'temp', 1, 2, 5)]))], T)).toEqual([{ stored: 0, stale: 1 }]);
    });

    test('prune removes exactly the partials at or below each gateway\'s E, chunk by chunk', async () => {
      const many = (g: string, devices: number, epochs: number) => {
        const out: PartialTuple[] = [];
        for (let d = 0; d < devices; d++) for (let e = 1; e <= epochs; e++) out.push(partial(`d${d}`, 'temp', e, e, 1 + d));
        return entry(push(g, out));
      };
      await s.storePushes([many('gw-1', 5, 5), many('gw-2', 5, 2), many('constructor', 3, 1)], T);
      expect(await everything(s)).toHaveLength(25 + 10 + 3);
      // gw-2 at 0 and an unknown gateway: nothing of theirs goes; 3 rows of gw-1 per epoch <= 3.
      expect(await s.prune({ 'gw-1': 3, 'gw-2': 0, 'gw-9': 4 }, 4)).toBe(15);
      const left = await everything(s);
      expect(left.filter((r) => r.gateway === 'gw-1').map((r) => r.epoch).sort()).toEqual([4, 4, 4, 4, 4, 5, 5, 5, 5, 5]);
      expect(left.filter((r) => r.gateway === 'gw-2')).toHaveLength(10);
      expect(left.filter((r) => r.gateway === 'constructor')).toHaveLength(3);
      // A chunk of one row at a time still gets every row; a watermark already pruned to deletes nothing.
      expect(await s.prune({ 'gw-2': 2, constructor: 1 }, 1)).toBe(13);
      expect(await s.prune({ 'gw-1': 3 }, 4)).toBe(0);
      expect(keys(await everything(s)).filter((k) => !k.startsWith('gw-1/'))).toEqual([]);
      expect(await s.prunedEpoch('constructor')).toBe(1);
    });

    test('a push racing a prune of its gateway from another store never puts back a pruned partial [INV-3]', async () => {
      const other = await h.another();
      // Epochs 1..8 of three devices, and filler partials that make each push's transaction longer.
      const at = (count: number) => [
        ...[1, 2, 3, 4, 5, 6, 7, 8].flatMap((e) => [0, 1, 2].map((d) => partial(`d${d}`, 'temp', e, e, count))),
        ...Array.from({ length: 150 }, (_, k) => partial(`f${k}`, 'temp', 9, 8, count)),
      ];
      await s.storePushes([entry(push('gw-1', at(1)))], T);
      let pushes = 0;
      let pruning = true;
      let last = 1;
      const pusher = (async () => {
        for (let i = 2; pruning || i < 12; i++) {
          await s.storePushes([entry(push('gw-1', at(i)))], T + i);
          last = i;
          pushes++;
        }
      })();
      const pruner = (async () => {
        let deleted = 0;
        for (const [after, e] of [[3, 2], [6, 4], [9, 6]]) {
          while (pushes < after) await new Promise((r) => setTimeout(r, 1));
          deleted += await other.prune({ 'gw-1': e }, 2);
        }
        pruning = false;
        return deleted;
      })();
      const [, deleted] = await Promise.all([pusher, pruner]);
      expect(deleted).toBe(18);
      const left = await everything(s);
      expect(left.filter((r) => r.epoch <= 6)).toEqual([]);
      expect(left.filter((r) => r.device.startsWith('d')).map((r) => `${r.device}/${r.epoch}/${r.count}`).sort())
        .toEqual(['d0/7', 'd0/8', 'd1/7', 'd1/8', 'd2/7', 'd2/8'].map((k) => `${k}/${last}`));
      expect(await s.prunedEpoch('gw-1')).toBe(6);
    }, 60_000);

    test('a push held part way through its transaction while another store prunes: its partials at or below E go too [INV-3]', async () => {
      const other = await h.another();
      const at = (count: number) => [1, 2, 3].flatMap((e) => [0, 1].map((d) => partial(`d${d}`, 'temp', e, e, count)));
      await s.storePushes([entry(push('gw-1', at(1)))], T);
      const release = await h.hold('gw-1');
      const pushing = s.storePushes([entry(push('gw-1', at(2)))], T + 1);
      await new Promise((r) => setTimeout(r, 300)); // the push reads pruned = 0 and waits
      const pruning = other.prune({ 'gw-1': 2 }, 1);
      await new Promise((r) => setTimeout(r, 300));
      await release();
      // Either order is right (the push before the epoch moved, or after it, its epochs <= 2 stale); never a row <= 2 left.
      const [stored] = await pushing;
      expect([{ stored: 6, stale: 0 }, { stored: 2, stale: 4 }]).toContainEqual(stored);
      expect(await pruning).toBe(4);
      expect(keys(await everything(s))).toEqual(['gw-1/d0/3/3', 'gw-1/d1/3/3']);
      expect((await everything(s)).map((r) => r.count)).toEqual([2, 2]);
    }, 30_000);

    test('readPartials: epochs above E[g] only (0 when absent), minute in [fromMs, toMs), by device, gateway or fleet, ordered byte-wise', async () => {
      // "constructor" must not find Object's prototype; upper case sorts before lower case, as SQLite orders text.
      await s.storePushes([
        entry(push('gw-1', [partial('d1', 'temp', 0, 1), partial('d1', 'temp', 1, 2), partial('d2', 'temp', 2, 3), partial('d2', 'hum', 2, 3), partial('D2', 'temp', 1, 1)])),
        entry(push('constructor', [partial('d9', 'temp', 1, 1)])),
        entry(push('GW-0', [partial('d1', 'temp', 1, 7)])),
      ], T);
      const q = { metric: 'temp', fromMs: MINUTE0, toMs: MINUTE0 + 3 * 60_000 };
      expect(keys(await s.readPartials({ ...q, watermark: {} }))).toEqual(['gw-1/d1/0/1', 'GW-0/d1/1/7', 'constructor/d9/1/1', 'gw-1/D2/1/1', 'gw-1/d1/1/2', 'gw-1/d2/2/3']);
      expect(keys(await s.readPartials({ ...q, watermark: { 'gw-1': 2, 'GW-0': 6 } }))).toEqual(['GW-0/d1/1/7', 'constructor/d9/1/1', 'gw-1/d2/2/3']);
      expect(keys(await s.readPartials({ ...q, device: 'd1', watermark: { 'gw-1': 1, 'GW-0': 7 } }))).toEqual(['gw-1/d1/1/2']);
      expect(keys(await s.readPartials({ ...q, gateway: 'constructor', watermark: {} }))).toEqual(['constructor/d9/1/1']);
      expect(keys(await s.readPartials({ ...q, gateway: 'gw-1', device: 'D2', watermark: {} }))).toEqual(['gw-1/D2/1/1']);
      expect(keys(await s.readPartials({ ...q, fromMs: MINUTE0 + 60_000, toMs: MINUTE0 + 2 * 60_000, watermark: {} })))
        .toEqual(['GW-0/d1/1/7', 'constructor/d9/1/1', 'gw-1/D2/1/1', 'gw-1/d1/1/2']);
      expect(await s.readPartials({ ...q, metric: 'none', watermark: {} })).toEqual([]);
      const [r] = await s.readPartials({ ...q, device: 'd2', watermark: {} });
      expect(r).toEqual({ gateway: 'gw-1', device: 'd2', minute: MINUTE0 + 120_000, epoch: 3, count: 1, sum: 20, min: 20, max: 20, m2: 0, first: 20, first_ts: MINUTE0 + 121_000, last: 20, last_ts: MINUTE0 + 121_000 });
    });

    test('gateway status, devices, last contact and clock offsets round trip', async () => {
      await h.insert('gateways', [{ id: 'gw-1', token_hash: 'h1', created_at: 1 }, { id: 'gw-3', token_hash: 'h3', created_at: 1 }]);
      const health = { status: 'ok', gatewayId: 'gw-1', outbox: { pending: 3 }, dropped: { diskBudget: 2 } };
      await s.storePushes([
        entry(push('gw-1', [partial('d1', 'temp', 0, 1), partial('d4', 'hum', 0, 1)], {
          health, devices: [{ id: 'd2', connected: true }, { id: 'd1', connected: true }, { id: 'd3', connected: false }],
        }), 1234.4),
        entry(push('gw-2', [partial('e1', 'temp', 0, 1)], { sentAt: null })),
      ], T);
      expect(await s.gatewayIds()).toEqual(['gw-1', 'gw-2', 'gw-3']);
      expect(await s.registeredLastContact()).toEqual(new Map([['gw-1', T]]));
      expect(await s.lastContact()).toEqual({ 'gw-1': T, 'gw-2': T });
      const status = await s.gatewayStatuses();
      // sentAt: the push's own (the gateway's clock), null when it sent none.
      expect(status.get('gw-1')).toEqual({ gateway: 'gw-1', lastPushAt: T, sentAt: T - 5, health, connected: ['d1', 'd2'] });
      expect(status.get('gw-2')).toEqual({ gateway: 'gw-2', lastPushAt: T, sentAt: null, health: { status: 'ok', gatewayId: 'gw-2' }, connected: [] });
      expect(status.has('gw-3')).toBe(false);
      const dev = (id: string, gateway: string, firstSeen: number, lastSeen: number, metrics: string[]) => ({ id, gateway, firstSeen, lastSeen, metrics });
      expect(await s.listDevices()).toEqual([
        dev('d1', 'gw-1', T, T, ['temp']), dev('d2', 'gw-1', T, T, []), dev('d3', 'gw-1', T, T, []), dev('d4', 'gw-1', T, T, ['hum']), dev('e1', 'gw-2', T, T, ['temp']),
      ]);
      expect(await s.listDevices('gw-2')).toEqual([dev('e1', 'gw-2', T, T, ['temp'])]);
      expect(await s.listDevices('gw-9')).toEqual([]);
      expect(await s.clockRows()).toEqual(new Map([['gw-1', { offsetMs: 1234, offsetAt: T, futureReadings: 0, lastFuture: null }]]));

      // 1 s later: a new metric rewrites d1; d2, within the 5 s resolution and nothing new, keeps its last_seen.
      await s.storePushes([entry(push('gw-1', [partial('d1', 'hum', 1, 2)], { health: {}, devices: [{ id: 'd2', connected: false }] }), -50)], T + 1000);
      // 6 s later d2 is seen again; 7 s later d1 reports through gw-2 (moved), its metrics merged.
      await s.storePushes([entry(push('gw-1', [], { devices: [{ id: 'd2', connected: true }] }))], T + 6000);
      await s.storePushes([entry(push('gw-2', [partial('d1', 'co2', 2, 2)]))], T + 7000);
      expect(await s.listDevices()).toEqual([
        dev('d1', 'gw-2', T, T + 7000, ['co2', 'hum', 'temp']), dev('d2', 'gw-1', T, T + 6000, []), dev('d3', 'gw-1', T, T, []), dev('d4', 'gw-1', T, T, ['hum']),
        dev('e1', 'gw-2', T, T, ['temp']),
      ]);
      expect(await s.listDevices('gw-2')).toEqual([dev('d1', 'gw-2', T, T + 7000, ['co2', 'hum', 'temp']), dev('e1', 'gw-2', T, T, ['temp'])]);
      // The fleet's metrics (GET /api/v1/metrics): each once, counted by the devices that reported it, a moved device once.
      expect(await s.metricNames()).toEqual([{ name: 'co2', devices: 1 }, { name: 'hum', devices: 2 }, { name: 'temp', devices: 2 }]);
      expect((await s.clockRows()).get('gw-1')).toEqual({ offsetMs: -50, offsetAt: T + 1000, futureReadings: 0, lastFuture: null });

      // A push committed with an older clock (another node's) does not move last contact back; its health is the latest sent.
      await s.storePushes([entry(push('gw-1', [], { health: { status: 'late' } }))], T - 60_000);
      expect(await s.lastContact()).toEqual({ 'gw-1': T + 6000, 'gw-2': T + 7000 });
      expect((await s.gatewayStatuses()).get('gw-1')).toEqual({ gateway: 'gw-1', lastPushAt: T + 6000, sentAt: T - 5, health: { status: 'late' }, connected: [] });
      expect(await s.registeredLastContact()).toEqual(new Map([['gw-1', T + 6000]]));
      expect(await (await h.another()).listDevices('gw-1')).toEqual((await s.listDevices('gw-1')));
    });

    test('searchDevices: id substring (case-insensitive, % and _ literal), gateway, online/offline, sort by id, last seen or gateway both ways, offset and limit, the total', async () => {
      // gw-a pushes at T (online after T - 1), connected A-1 and a_2; gw-b last pushed at T - 10 s (offline
      // then), naming b%3 as connected. Devices first seen at distinct times, in this order.
      const seen: Array<[string, string, number]> = [
        ['A-1', 'gw-a', T - 5000], ['a_2', 'gw-a', T - 4000], ['b%3', 'gw-b', T - 10_000], ['Ab4', 'gw-a', T - 3000], ['zz5', 'gw-b', T - 10_000],
        ['c-A6', 'gw-a', T - 2000],
      ];
      for (const [id, gw, at] of seen) await s.storePushes([entry(push(gw, [partial(id, 'temp', 0, 1)]))], at);
      await s.storePushes([entry(push('gw-b', [], { devices: [{ id: 'b%3', connected: true }, { id: 'zz5', connected: false }] }))], T - 10_000);
      await s.storePushes([entry(push('gw-a', [], { devices: [{ id: 'A-1', connected: true }, { id: 'a_2', connected: true }] }))], T);
      const ids = async (q: Omit<DeviceSearch, 'onlineAfter'>, onlineAfter = T - 1) => {
        const page = await s.searchDevices({ ...q, onlineAfter });
        return { total: page.total, ids: page.devices.map((d) => d.id), online: page.devices.filter((d) => d.online).map((d) => d.id) };
      };
      // Every device, by id, byte-wise (upper case first); online: connected at an online gateway. A-1's
      // last seen moved to T with gw-a's push; a_2's did not (within the 5 s resolution).
      expect(await ids({})).toEqual({ total: 6, ids: ['A-1', 'Ab4', 'a_2', 'b%3', 'c-A6', 'zz5'], online: ['A-1', 'a_2'] });
      // The whole row, as listDevices has it, plus online.
      const all = await s.searchDevices({ onlineAfter: T - 1 });
      const listed = await s.listDevices();
      expect(all.devices.map(({ online: _, firingAlerts: __, ...d }) => d)).toEqual(listed);
      expect(all.devices[0]).toEqual({ id: 'A-1', gateway: 'gw-a', firstSeen: T - 5000, lastSeen: T, metrics: ['temp'], online: true, firingAlerts: 0 });
      // q: a substring anywhere, either case; % and _ match only themselves.
      expect(await ids({ q: 'a' })).toEqual({ total: 4, ids: ['A-1', 'Ab4', 'a_2', 'c-A6'], online: ['A-1', 'a_2'] });
      expect(await ids({ q: 'AB' })).toEqual({ total: 1, ids: ['Ab4'], online: [] });
      expect(await ids({ q: '_' })).toEqual({ total: 1, ids: ['a_2'], online: ['a_2'] });
      expect(await ids({ q: '%' })).toEqual({ total: 1, ids: ['b%3'], online: [] });
      expect(await ids({ q: 'nothing' })).toEqual({ total: 0, ids: [], online: [] });
      // gateway and status, alone and together; b%3 is online while gw-b counts as online.
      expect(await ids({ gateway: 'gw-b' })).toEqual({ total: 2, ids: ['b%3', 'zz5'], online: [] });
      expect(await ids({ gateway: 'gw-b', status: 'online' }, T - 20_000)).toEqual({ total: 1, ids: ['b%3'], online: ['b%3'] });
      expect(await ids({ status: 'online' })).toEqual({ total: 2, ids: ['A-1', 'a_2'], online: ['A-1', 'a_2'] });
      expect(await ids({ status: 'offline' })).toEqual({ total: 4, ids: ['Ab4', 'b%3', 'c-A6', 'zz5'], online: [] });
      expect(await ids({ status: 'offline', q: 'a', gateway: 'gw-a' })).toEqual({ total: 2, ids: ['Ab4', 'c-A6'], online: [] });
      // Sorts: the key, then the id, in the one direction.
      expect((await ids({ sort: 'lastSeen' })).ids).toEqual(['b%3', 'zz5', 'a_2', 'Ab4', 'c-A6', 'A-1']);
      expect((await ids({ sort: 'lastSeen', order: 'desc' })).ids).toEqual(['A-1', 'c-A6', 'Ab4', 'a_2', 'zz5', 'b%3']);
      expect((await ids({ sort: 'gateway' })).ids).toEqual(['A-1', 'Ab4', 'a_2', 'c-A6', 'b%3', 'zz5']);
      expect((await ids({ sort: 'gateway', order: 'desc' })).ids).toEqual(['zz5', 'b%3', 'c-A6', 'a_2', 'Ab4', 'A-1']);
      expect((await ids({ order: 'desc' })).ids).toEqual(['zz5', 'c-A6', 'b%3', 'a_2', 'Ab4', 'A-1']);
      // Pages: the total is every match's; an offset past the end is an empty page.
      expect(await ids({ limit: 2 })).toEqual({ total: 6, ids: ['A-1', 'Ab4'], online: ['A-1'] });
      expect(await ids({ limit: 2, offset: 2 })).toEqual({ total: 6, ids: ['a_2', 'b%3'], online: ['a_2'] });
      expect(await ids({ limit: 4, offset: 4 })).toEqual({ total: 6, ids: ['c-A6', 'zz5'], online: [] });
      expect(await ids({ offset: 5 })).toEqual({ total: 6, ids: ['zz5'], online: [] });
      expect(await ids({ limit: 2, offset: 6 })).toEqual({ total: 6, ids: [], online: [] });
      expect(await ids({ q: 'a', sort: 'lastSeen', order: 'desc', limit: 2, offset: 1 })).toEqual({ total: 4, ids: ['c-A6', 'Ab4'], online: [] });
      // Another store on the database answers the same.
      expect(await (await h.another()).searchDevices({ q: 'a', limit: 3, onlineAfter: T - 1 })).toEqual(await s.searchDevices({ q: 'a', limit: 3, onlineAfter: T - 1 }));
    });

    test('searchDevices with 10,000 devices: one search finds one, pages of 1,000 by last seen hold each device once (times printed)', async () => {
      const N = 10_000;
      const id = (i: number) => `sensor-${String(i).padStart(5, '0')}`;
      // Ten pushes of 1,000 devices, 10 s apart (distinct last-seen times), every 7th connected at the last.
      for (let k = 0; k < 10; k++) {
        const devices = Array.from({ length: 1_000 }, (_, j) => ({ id: id(k * 1_000 + j), connected: (k * 1_000 + j) % 7 === 0 }));
        await s.storePushes([entry(push('gw-1', [], { devices }))], T + k * 10_000);
      }
      const times: string[] = [];
      const timed = async (what: string, q: Omit<DeviceSearch, 'onlineAfter'>) => {
        const t0 = performance.now();
        const page = await s.searchDevices({ ...q, onlineAfter: T + 90_000 - 1 });
        times.push(`${what} ${(performance.now() - t0).toFixed(1)} ms`);
        return page;
      };
      const one = await timed('q=SENSOR-04217', { q: 'SENSOR-04217', limit: 50 });
      expect(one.total).toBe(1);
      expect(one.devices.map((d) => d.id)).toEqual([id(4217)]);
      // Only the last push's connected list counts (a gateway's latest word): 1,000 devices, every 7th.
      const online = await timed('status=online count', { status: 'online', limit: 1 });
      expect(online.total).toBe(Array.from({ length: 1_000 }, (_, j) => 9_000 + j).filter((i) => i % 7 === 0).length);
      const seen = new Set<string>();
      let last = Infinity;
      for (let offset = 0; offset < N; offset += 1_000) {
        const page = await timed(`page at ${offset}`, { sort: 'lastSeen', order: 'desc', limit: 1_000, offset });
        expect(page.total).toBe(N);
        for (const d of page.devices) {
          expect(d.lastSeen).toBeLessThanOrEqual(last);
          last = d.lastSeen;
          seen.add(d.id);
        }
      }
      expect(seen.size).toBe(N);

      // alerts=firing joins alert_states: a device with a firing alert of its own scope (every 10th
      // from 3, and every 50th from 3 a second rule too); pending and resolved ones, a gateway's
      // and the fleet's firing alerts, and one of a device the registry does not know mark none.
      const alert = (rule: string, scope: string, state: string) => ({ rule, scope, state, since: T, value: 1 });
      const firingIds = Array.from({ length: N }, (_, i) => i).filter((i) => i % 10 === 3);
      await h.insert('alert_states', [
        ...firingIds.map((i) => alert('hot', `device:${id(i)}`, 'firing')),
        ...firingIds.filter((i) => i % 50 === 3).map((i) => alert('silent', `device:${id(i)}`, 'firing')),
        ...Array.from({ length: N / 10 }, (_, k) => alert('hot', `device:${id(k * 10 + 5)}`, k % 2 ? 'pending' : 'resolved')),
        alert('hot', 'gateway:gw-1', 'firing'), alert('fleet-hot', 'fleet', 'firing'), alert('hot', 'device:ghost', 'firing'),
      ]);
      const firing = new Map<string, number>();
      for (let offset = 0; offset < 1_000; offset += 250) {
        const page = await timed(`alerts=firing page at ${offset}`, { alerts: 'firing', limit: 250, offset });
        expect(page.total).toBe(firingIds.length);
        for (const d of page.devices) firing.set(d.id, d.firingAlerts);
      }
      expect([...firing.keys()]).toEqual(firingIds.map(id));
      expect([...firing].filter(([, n]) => n === 2).map(([d]) => d)).toEqual(firingIds.filter((i) => i % 50 === 3).map(id));
      expect([...firing.values()].every((n) => n === 1 || n === 2)).toBe(true);
      // With the other filters, and in an unfiltered page (the count beside every device, 0 for most).
      const onlineFiring = await s.searchDevices({ alerts: 'firing', status: 'online', onlineAfter: T + 90_000 - 1 });
      expect(onlineFiring.devices.map((d) => d.id)).toEqual(firingIds.filter((i) => i >= 9_000 && i % 7 === 0).map(id));
      expect(onlineFiring.total).toBe(onlineFiring.devices.length);
      expect((await s.searchDevices({ alerts: 'firing', q: 'sensor-0421', onlineAfter: 0 })).devices.map((d) => [d.id, d.firingAlerts])).toEqual([[id(4213), 1]]);
      const plain = await s.searchDevices({ limit: 20, offset: 4_200, onlineAfter: 0 });
      expect(plain.devices.map((d) => d.firingAlerts)).toEqual(Array.from({ length: 20 }, (_, k) => (k % 10 === 3 ? 1 + Number((4_200 + k) % 50 === 3) : 0)));
      // eslint-disable-next-line no-console
      console.log(`searchDevices on ${name}, 10,000 devices: ${times.join(', ')}`);
    }, 60_000);

    test('the console\'s reads of ingest\'s tables: received seq, gap records (cloud_lost apart, unknown times null), seq holes (the newest 1,000)', async () => {
      await h.insert('received', [{ gateway: 'gw-1', from_seq: 1, to_seq: 10 }, { gateway: 'gw-1', from_seq: 11, to_seq: 40 }, { gateway: 'gw-2', from_seq: 1, to_seq: 5 }]);
      const gap = (gateway: string, id: number, reason: string, from: number, to: number, minTs: number, maxTs: number, devices: string[]) =>
        ({ gateway, id, reason, from_seq: from, to_seq: to, count: to - from + 1, min_ts: minTs, max_ts: maxTs, devices, received_at: T });
      await h.insert('gaps', [
        gap('gw-1', 2, 'cloud_lost', 46, 50, -1, -1, []), gap('gw-1', 1, 'disk_budget', 41, 45, 1000, 2000, ['d1', 'd 2']),
        gap('gw-2', 1, 'disk_floor', 6, 8, 5, 6, ['x']), gap('gw-1', 3, 'disk_budget', 51, 51, 3000, 3000, ['d1']),
      ]);
      await h.insert('seq_gaps', [
        { gateway: 'gw-1', from_seq: 11, to_seq: 15, seen_at: T },
        ...Array.from({ length: 1003 }, (_, i) => ({ gateway: 'gw-3', from_seq: 10 * (i + 1), to_seq: 10 * (i + 1) + 1, seen_at: T + i })),
      ]);
      expect(await s.receivedSeqs()).toEqual(new Map([['gw-1', 40], ['gw-2', 5]]));
      const g = await s.gapRecords();
      expect(g.gaps).toEqual(new Map([
        ['gw-1', [
          { fromSeq: 41, toSeq: 45, count: 5, reason: 'disk_budget', minTs: 1000, maxTs: 2000, devices: ['d1', 'd 2'] },
          { fromSeq: 46, toSeq: 50, count: 5, reason: 'cloud_lost', minTs: null, maxTs: null, devices: [] },
          { fromSeq: 51, toSeq: 51, count: 1, reason: 'disk_budget', minTs: 3000, maxTs: 3000, devices: ['d1'] },
        ]],
        ['gw-2', [{ fromSeq: 6, toSeq: 8, count: 3, reason: 'disk_floor', minTs: 5, maxTs: 6, devices: ['x'] }]],
      ]));
      expect(g.totals).toEqual(new Map([['gw-1', 6], ['gw-2', 3]]));
      expect(g.lost).toEqual(new Map([['gw-1', 5]]));
      const holes = await s.seqGaps();
      expect(holes.get('gw-1')).toEqual([{ fromSeq: 11, toSeq: 15, seenAt: T }]);
      const newest = holes.get('gw-3')!;
      expect(newest).toHaveLength(1000);
      expect(newest[0]).toEqual({ fromSeq: 40, toSeq: 41, seenAt: T + 3 });
      expect(newest[999]).toEqual({ fromSeq: 10030, toSeq: 10031, seenAt: T + 1002 });
      expect(await s.gatewayIds()).toEqual([]);
    });
  });
}
