/**
 * One alert's state machine (the cloud's and the gateway's: one implementation) (docs/alerts.md, "States"), pure. At each evaluation an alert (a rule
 * at one scope) is given whether its condition holds:
 * - inactive or resolved, true: pending (firing at once when `for` is 0);
 * - pending, true for `for` since it became true: firing; pending, false: resolved (it never fired,
 *   so nothing is sent to Alertmanager);
 * - firing, false: still firing, marked clearing; false again at the next evaluation: resolved.
 *   One whole evaluation interval of a false condition before a resolve is the hysteresis: a value
 *   that dips under the threshold for one evaluation does not resolve and fire again.
 * Each change of state is a transition for the history.
 */

export type AlertStateName = 'pending' | 'firing' | 'resolved';

/** One alert's state: a rule at one scope (`device:<id>`, `gateway:<id>` or `fleet`). */
export interface AlertStateRow {
  rule: string;
  scope: string;
  state: AlertStateName;
  /** When it entered `state`, epoch ms. */
  since: number;
  /** The last value evaluated (the aggregate, or seconds silent); null when there was none. */
  value: number | null;
  /** When the condition became true in this episode (pending's start), epoch ms. */
  activeSince: number | null;
  /** Firing only: the first evaluation that found the condition false (resolved at the next one that does too). */
  clearingSince: number | null;
  /** What Alertmanager last accepted for it ('firing' or 'resolved'), and when; null: nothing yet (the cloud's; the gateway leaves them null). */
  sentState: 'firing' | 'resolved' | null;
  sentAt: number | null;
}

/** One recorded transition. `from` null: the alert was not there before. */
export interface AlertTransition {
  rule: string;
  scope: string;
  from: AlertStateName | null;
  to: AlertStateName;
  at: number;
  value: number | null;
}

export interface StepResult {
  /** The state after this evaluation; null: none (the alert stays inactive). */
  next: AlertStateRow | null;
  /** Whether `next` differs from the previous row (it must be written). */
  changed: boolean;
  transition: AlertTransition | null;
}

export function stepAlert(rule: string, scope: string, prev: AlertStateRow | undefined, cond: boolean, value: number | null, now: number, forMs: number): StepResult {
  const move = (base: AlertStateRow | undefined, to: AlertStateName, o: Partial<AlertStateRow>): StepResult => {
    const next: AlertStateRow = {
      rule, scope, state: to, since: now, value, activeSince: base?.activeSince ?? null, clearingSince: null,
      sentState: base?.sentState ?? null, sentAt: base?.sentAt ?? null, ...o,
    };
    return { next, changed: true, transition: { rule, scope, from: base?.state ?? null, to, at: now, value } };
  };
  const update = (p: AlertStateRow, o: Partial<AlertStateRow>): StepResult => {
    const next = { ...p, ...o };
    const changed = (Object.keys(o) as Array<keyof AlertStateRow>).some((k) => next[k] !== p[k]);
    return { next, changed, transition: null };
  };
  if (!prev || prev.state === 'resolved') {
    if (!cond) return { next: prev ?? null, changed: false, transition: null };
    return move(prev, forMs === 0 ? 'firing' : 'pending', { activeSince: now });
  }
  if (prev.state === 'pending') {
    if (!cond) return move(prev, 'resolved', {});
    if (now - (prev.activeSince ?? prev.since) >= forMs) return move(prev, 'firing', {});
    return update(prev, { value });
  }
  // firing
  if (cond) return update(prev, { value, clearingSince: null });
  if (prev.clearingSince === null) return update(prev, { value, clearingSince: now });
  return move(prev, 'resolved', {});
}
