/**
 * The conformance suite of an AlertStore (cloud/store/alerts.ts), run on SQLite and PostgreSQL by
 * test/cloud/store-alerts.test.ts. `open` gives a store on a fresh database; `another()` a second
 * store on the same database (another node). What it holds an implementation to:
 * - the rule set is replaced whole and read back in order, with when it was replaced; an empty set
 *   is a set (updatedAt kept);
 * - a commit writes states (insert and replace), removes states and appends transitions in one
 *   transaction; history reads newest first, of one rule or all, and keeps the newest
 *   historyPerRule per rule (other rules untouched);
 * - what one store commits the other reads;
 * - gateway transitions are recorded once by (gateway, id) (a repeat counted a duplicate, the same
 *   id from another gateway is another), read pending oldest `at` first, and leave the pending list
 *   once a commit names them applied (with nothing else in it, too);
 * - exclusive(): while one store runs fn the other's exclusive() answers ran: false at once, and
 *   gets the lock once the first is done; an fn that throws releases it.
 */
import type { AlertStateRow, AlertStore } from '../../../cloud/store/alerts.js';

export interface AlertStoreUnderTest {
  store: AlertStore;
  another(): Promise<AlertStore>;
  close(): Promise<void>;
}

const T0 = Date.UTC(2026, 11, 5, 12, 0);

export const alertState = (rule: string, scope: string, o: Partial<AlertStateRow> = {}): AlertStateRow => ({
  rule, scope, state: 'pending', since: T0, value: 51.5, activeSince: T0, clearingSince: null, sentState: null, sentAt: null, ...o,
});

export function alertStoreConformance(open: () => Promise<AlertStoreUnderTest>): void {
  let handles: AlertStoreUnderTest[] = [];
  const fresh = async () => {
    const h = await open();
    handles.push(h);
    return h;
  };
  afterEach(async () => {
    for (const h of handles.splice(0).reverse()) await h.close();
  });

  test('the rule set is replaced whole and read back in order, with when; another store reads it', async () => {
    const { store, another } = await fresh();
    expect(await store.rules()).toEqual({ rules: [], updatedAt: null });
    const a = { name: 'hot', metric: 'temp', agg: 'max', window: '1m', op: '>', threshold: 50, for: '2m', device: 'd-1' };
    const b = { name: 'quiet', silentFor: '10m', gateway: 'gw-1' };
    await store.replaceRules([a, b], T0);
    expect(await store.rules()).toEqual({ rules: [a, b], updatedAt: T0 });
    const other = await another();
    expect(await other.rules()).toEqual({ rules: [a, b], updatedAt: T0 });
    await other.replaceRules([b], T0 + 1000);
    expect(await store.rules()).toEqual({ rules: [b], updatedAt: T0 + 1000 });
    await store.replaceRules([], T0 + 2000);
    expect(await store.rules()).toEqual({ rules: [], updatedAt: T0 + 2000 });
  });

  test('a commit puts and removes states and appends transitions; history newest first; another store reads them', async () => {
    const { store, another } = await fresh();
    const p = alertState('hot', 'device:d-1');
    await store.commit({ put: [p, alertState('hot', 'fleet', { value: null })], remove: [], transitions: [
      { rule: 'hot', scope: 'device:d-1', from: null, to: 'pending', at: T0, value: 51.5 },
    ], historyPerRule: 100 });
    const firing = { ...p, state: 'firing' as const, since: T0 + 60_000, sentState: 'firing' as const, sentAt: T0 + 60_001, value: -0.25 };
    await store.commit({ put: [firing], remove: [{ rule: 'hot', scope: 'fleet' }], transitions: [
      { rule: 'hot', scope: 'device:d-1', from: 'pending', to: 'firing', at: T0 + 60_000, value: -0.25 },
    ], historyPerRule: 100 });
    const other = await another();
    expect(await other.states()).toEqual([firing]);
    expect(await other.history({ limit: 10 })).toEqual([
      { rule: 'hot', scope: 'device:d-1', from: 'pending', to: 'firing', at: T0 + 60_000, value: -0.25 },
      { rule: 'hot', scope: 'device:d-1', from: null, to: 'pending', at: T0, value: 51.5 },
    ]);
    expect(await other.history({ limit: 1 })).toHaveLength(1);
    expect(await other.history({ rule: 'nope', limit: 10 })).toEqual([]);
    // Of one scope (the console's history of one device), alone or with the rule.
    await store.commit({ put: [], remove: [], transitions: [{ rule: 'cold', scope: 'device:d-2', from: null, to: 'pending', at: T0 + 1, value: 1 }], historyPerRule: 100 });
    expect((await other.history({ scope: 'device:d-1', limit: 10 })).map((x) => x.to)).toEqual(['firing', 'pending']);
    expect((await other.history({ scope: 'device:d-2', limit: 10 })).map((x) => x.rule)).toEqual(['cold']);
    expect(await other.history({ scope: 'device:d-2', rule: 'hot', limit: 10 })).toEqual([]);
    expect(await other.history({ scope: 'device:d-1', rule: 'hot', limit: 1 })).toHaveLength(1);
  });

  test('history keeps the newest historyPerRule transitions of each rule; other rules untouched', async () => {
    const { store } = await fresh();
    const t = (rule: string, i: number) => ({ rule, scope: 'fleet', from: null, to: 'pending' as const, at: T0 + i, value: i });
    await store.commit({ put: [], remove: [], transitions: [t('b', 0), t('b', 1)], historyPerRule: 3 });
    for (let i = 0; i < 7; i++) await store.commit({ put: [], remove: [], transitions: [t('a', i)], historyPerRule: 3 });
    expect((await store.history({ rule: 'a', limit: 100 })).map((x) => x.value)).toEqual([6, 5, 4]);
    expect((await store.history({ rule: 'b', limit: 100 })).map((x) => x.value)).toEqual([1, 0]);
    await store.commit({ put: [], remove: [], transitions: [t('b', 2), t('b', 3), t('b', 4), t('b', 5)], historyPerRule: 3 });
    expect((await store.history({ rule: 'b', limit: 100 })).map((x) => x.value)).toEqual([5, 4, 3]);
  });

  test('a failed commit leaves nothing of itself', async () => {
    const { store } = await fresh();
    const bad = alertState('hot', 'fleet', { state: 'bogus' as never });
    await expect(store.commit({ put: [alertState('ok', 'fleet'), bad], remove: [], transitions: [
      { rule: 'ok', scope: 'fleet', from: null, to: 'pending', at: T0, value: 1 },
    ], historyPerRule: 10 })).rejects.toThrow();
    expect(await store.states()).toEqual([]);
    expect(await store.history({ limit: 10 })).toEqual([]);
  });

  test('gateway transitions: recorded once by (gateway, id), pending oldest first, applied by a commit; another store reads them', async () => {
    const { store, another } = await fresh();
    const tr = (gateway: string, id: string, at: number, to: 'pending' | 'firing' | 'resolved' = 'firing') => ({
      gateway, id, rule: 'hot', device: 'd-1', from: null, to, at, value: to === 'resolved' ? null : 61.5,
    });
    expect(await store.recordGatewayTransitions([tr('gw-1', 'a:2', T0 + 2), tr('gw-1', 'a:1', T0 + 1, 'pending')], T0)).toEqual({ recorded: 2, duplicates: 0 });
    expect(await store.recordGatewayTransitions([tr('gw-1', 'a:2', T0 + 2), tr('gw-2', 'a:2', T0 + 3, 'resolved')], T0)).toEqual({ recorded: 1, duplicates: 1 });
    expect(await store.recordGatewayTransitions([], T0)).toEqual({ recorded: 0, duplicates: 0 });
    const other = await another();
    expect(await other.pendingGatewayTransitions(10)).toEqual([tr('gw-1', 'a:1', T0 + 1, 'pending'), tr('gw-1', 'a:2', T0 + 2), tr('gw-2', 'a:2', T0 + 3, 'resolved')]);
    expect(await store.pendingGatewayTransitions(1)).toEqual([tr('gw-1', 'a:1', T0 + 1, 'pending')]);
    await other.commit({ put: [], remove: [], transitions: [], historyPerRule: 10, intakeApplied: [{ gateway: 'gw-1', id: 'a:1' }, { gateway: 'gw-2', id: 'a:2' }] });
    expect(await store.pendingGatewayTransitions(10)).toEqual([tr('gw-1', 'a:2', T0 + 2)]);
    // Applied, still known: a re-send is a duplicate.
    expect(await store.recordGatewayTransitions([tr('gw-1', 'a:1', T0 + 1, 'pending')], T0 + 5)).toEqual({ recorded: 0, duplicates: 1 });
    expect(await store.history({ limit: 10 })).toEqual([]);
  });

  test('exclusive: one holder at a time across stores; the other skips at once; released after a throw', async () => {
    const { store, another } = await fresh();
    const other = await another();
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    let entered!: () => void;
    const inside = new Promise<void>((r) => { entered = r; });
    const first = store.exclusive(async () => { entered(); await held; return 'a'; });
    await inside;
    expect(await other.exclusive(async () => 'b')).toEqual({ ran: false });
    expect(await store.exclusive(async () => 'c')).toEqual({ ran: false });
    release();
    expect(await first).toEqual({ ran: true, value: 'a' });
    await expect(other.exclusive(async () => { throw new Error('boom'); })).rejects.toThrow('boom');
    expect(await store.exclusive(async () => 'd')).toEqual({ ran: true, value: 'd' });
    expect(await other.exclusive(async () => 'e')).toEqual({ ran: true, value: 'e' });
  });
}
