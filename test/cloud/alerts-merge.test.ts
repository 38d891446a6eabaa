/**
 * mergeGatewayTransition (cloud/alerts/merge.ts), pure: a gateway's transition and the cloud's own
 * state of the same alert make one episode in the history, whoever raised it first.
 */
import { mergeGatewayTransition } from '../../cloud/alerts/merge.js';
import type { AlertStateRow } from '../../shared/alerts/state.js';
import type { GatewayTransition } from '../../cloud/store/alerts.js';

const T0 = Date.UTC(2026, 11, 5, 12, 0);
const tr = (to: GatewayTransition['to'], at: number, from: GatewayTransition['from'] = null): GatewayTransition => ({
  gateway: 'gw-1', id: `i:${at}`, rule: 'hot', device: 'd-1', from, to, at, value: to === 'resolved' ? null : 61.5,
});
const state = (s: AlertStateRow['state'], since: number, o: Partial<AlertStateRow> = {}): AlertStateRow => ({
  rule: 'hot', scope: 'device:d-1', state: s, since, value: 60, activeSince: since, clearingSince: null, sentState: null, sentAt: null, ...o,
});

test('a firing the cloud does not have is taken at the gateway\'s time; one it has adds nothing', () => {
  expect(mergeGatewayTransition(undefined, tr('firing', T0))).toEqual({
    next: state('firing', T0, { value: 61.5 }),
    transition: { rule: 'hot', scope: 'device:d-1', from: null, to: 'firing', at: T0, value: 61.5 },
  });
  expect(mergeGatewayTransition(state('firing', T0 - 5_000), tr('firing', T0))).toBeNull();
  // Pending in the cloud (its `for` running): the gateway's firing completes that episode.
  const fromPending = mergeGatewayTransition(state('pending', T0 - 5_000), tr('firing', T0, 'pending'))!;
  expect(fromPending.next).toMatchObject({ state: 'firing', since: T0, activeSince: T0 - 5_000 });
  expect(fromPending.transition).toMatchObject({ from: 'pending', to: 'firing' });
  // After a resolved episode, a new one.
  expect(mergeGatewayTransition(state('resolved', T0 - 5_000), tr('firing', T0))?.transition).toMatchObject({ from: 'resolved', to: 'firing' });
});

test('pending only from nothing or resolved; resolved only from pending or firing; older than the cloud\'s state: nothing', () => {
  expect(mergeGatewayTransition(undefined, tr('pending', T0))?.next).toMatchObject({ state: 'pending', activeSince: T0 });
  expect(mergeGatewayTransition(state('firing', T0 - 1), tr('pending', T0))).toBeNull();
  expect(mergeGatewayTransition(state('firing', T0 - 1, { clearingSince: T0 - 1 }), tr('resolved', T0, 'firing'))).toEqual({
    next: state('resolved', T0, { value: null, activeSince: T0 - 1 }),
    transition: { rule: 'hot', scope: 'device:d-1', from: 'firing', to: 'resolved', at: T0, value: null },
  });
  expect(mergeGatewayTransition(undefined, tr('resolved', T0, 'firing'))).toBeNull();
  expect(mergeGatewayTransition(state('resolved', T0 - 1), tr('resolved', T0, 'firing'))).toBeNull();
  expect(mergeGatewayTransition(state('resolved', T0 + 1), tr('firing', T0))).toBeNull();
  // What Alertmanager was sent stays with the alert.
  expect(mergeGatewayTransition(state('resolved', T0 - 1, { sentState: 'resolved', sentAt: T0 - 1 }), tr('firing', T0))?.next)
    .toMatchObject({ sentState: 'resolved', sentAt: T0 - 1 });
});
