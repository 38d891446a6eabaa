/**
 * Notifications to Prometheus Alertmanager's v2 API (POST /api/v2/alerts), as Prometheus sends
 * them: a firing alert with endsAt some resends ahead (Alertmanager resolves it by itself if we
 * stop), re-sent every alerts.resendMs while it fires; a resolved one once with endsAt = when it
 * resolved (again at the next evaluation until Alertmanager took it). Alertmanager routes,
 * silences, groups and deduplicates.
 */
import type { AlertStateRow } from '../store/alerts.js';
import { parseScope } from './scope.js';

export interface AmAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt: string;
  generatorURL?: string;
}

export interface NotifyContext {
  /** The rule's threshold text (`> 50`, `silent for 10m`) by rule name. */
  threshold: (rule: string) => string;
  /** The console link for an alert; null: none (alerts.consoleUrl unset). */
  link: (s: AlertStateRow) => string | null;
  /** A firing alert's endsAt is now + this (ms): several resends, so one lost send resolves nothing. */
  firingTtlMs: number;
  now: number;
}

/** The Alertmanager alert of a firing or resolved state. */
export function toAmAlert(s: AlertStateRow, c: NotifyContext): AmAlert {
  const scope = parseScope(s.scope);
  const labels: Record<string, string> = { alertname: s.rule, scope: 'device' in scope ? 'device' : 'gateway' in scope ? 'gateway' : 'fleet' };
  if ('device' in scope) labels.device = scope.device;
  if ('gateway' in scope) labels.gateway = scope.gateway;
  const link = c.link(s);
  const annotations: Record<string, string> = {
    value: s.value === null ? '' : String(s.value),
    threshold: c.threshold(s.rule),
    ...(link ? { console: link } : {}),
  };
  const startsAt = new Date(s.activeSince ?? s.since).toISOString();
  const endsAt = new Date(s.state === 'resolved' ? s.since : c.now + c.firingTtlMs).toISOString();
  return { labels, annotations, startsAt, endsAt, ...(link ? { generatorURL: link } : {}) };
}

/**
 * The Alertmanager URL without its credentials (for requests and messages), and them as a Basic
 * authorization header: fetch refuses a URL with credentials, and a message must not show them.
 */
export function alertmanagerEndpoint(baseUrl: string): { base: string; auth: string | null } {
  const u = new URL(baseUrl);
  const auth = u.username || u.password
    ? `Basic ${Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64')}` : null;
  u.username = '';
  u.password = '';
  return { base: u.toString().replace(/\/+$/, ''), auth };
}

/** POST the alerts; throws on a network error, a timeout or a non-2xx answer (its status and body start). */
export async function postAlerts(baseUrl: string, alerts: AmAlert[], timeoutMs: number): Promise<void> {
  const { base, auth } = alertmanagerEndpoint(baseUrl);
  const url = `${base}/api/v2/alerts`;
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) },
    body: JSON.stringify(alerts),
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (!res.ok) {
    const body = (await res.text().catch(() => '')).slice(0, 200);
    throw new Error(`Alertmanager answered ${res.status} to POST ${url}: ${body}`);
  }
  await res.arrayBuffer().catch(() => undefined);
}
