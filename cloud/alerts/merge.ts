/**
 * A gateway's transition merged into the cloud's state of the same alert (a rule at `device:<id>`),
 * pure (docs/alerts.md, "At the gateway"). The cloud keeps one state per alert whoever raised it,
 * so one episode is in the history once:
 * - to pending: taken when the cloud has none or a resolved one;
 * - to firing: taken unless the cloud's alert is firing already (the same episode, raised by both);
 * - to resolved: taken when the cloud's alert is pending or firing;
 * - anything older than the cloud's current state (`at` before its `since`) changes nothing: the
 *   cloud has moved past it.
 * Taken: the state moves to the gateway's at `at` and the move is a transition of the history. The
 * cloud's own evaluation then goes on from that state (a firing alert its data finds false resolves
 * after the hysteresis, as any other).
 */
import type { AlertStateRow, AlertTransition } from '../../shared/alerts/state.js';
import type { GatewayTransition } from '../store/alerts.js';

export function mergeGatewayTransition(prev: AlertStateRow | undefined, t: GatewayTransition): { next: AlertStateRow; transition: AlertTransition } | null {
  if (prev && t.at < prev.since) return null;
  const was = prev?.state ?? null;
  const take = t.to === 'pending' ? was === null || was === 'resolved'
    : t.to === 'firing' ? was !== 'firing'
      : was === 'pending' || was === 'firing';
  if (!take) return null;
  const scope = `device:${t.device}`;
  const activeSince = t.to === 'pending' ? t.at : t.to === 'firing' ? (was === 'pending' ? prev!.activeSince ?? prev!.since : t.at) : prev?.activeSince ?? null;
  const next: AlertStateRow = {
    rule: t.rule, scope, state: t.to, since: t.at, value: t.value, activeSince, clearingSince: null,
    sentState: prev?.sentState ?? null, sentAt: prev?.sentAt ?? null,
  };
  return { next, transition: { rule: t.rule, scope, from: was, to: t.to, at: t.at, value: t.value } };
}
