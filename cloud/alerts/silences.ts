/**
 * GET /api/v1/alerts/silences (read key): the silences Alertmanager holds (its v2 GET
 * /api/v2/silences, active and pending ones), and which of the cloud's current alerts they
 * silence, for the console's alerts page. Alertmanager owns silences (created in its UI or with
 * amtool); the cloud only reads them, within alerts.notifyTimeoutMs.
 *
 * Which alerts a silence covers is judged here, on the labels the cloud sends for each alert
 * (toAmAlert: alertname, scope, device or gateway), with Alertmanager's matcher semantics: every
 * matcher must hold; `=` equal, `!=` not, `=~` / `!~` a regex anchored at both ends; a missing
 * label is the empty string. A pending alert is matched too (it will be silenced when it fires).
 *
 * Without alerts.alertmanagerUrl the answer says so (configured: false). An Alertmanager out of
 * reach, slow or refusing is a 502 BRAID_ERR_ALERTMANAGER_UNAVAILABLE naming what happened,
 * counted in braid_alert_silence_reads_total{result="failed"}.
 */
import type { FastifyInstance, preHandlerHookHandler } from 'fastify';
import { Counter, type Registry } from 'prom-client';
import { BraidError } from '../../shared/errors.js';
import { AUTH_ERRORS, errorResponses } from '../api/responses.js';
import type { AlertStateRow, AlertStore } from '../store/alerts.js';
import { alertmanagerEndpoint, toAmAlert } from './alertmanager.js';
import { parseScope } from './scope.js';

/** Alertmanager could not be read (unreachable, too slow, an error answer, not its API). */
export class AlertmanagerUnavailableError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BRAID_ERR_ALERTMANAGER_UNAVAILABLE', message, 502, options);
  }
}

/** One matcher of a silence, as Alertmanager's v2 API gives it (`isEqual` absent before 0.22: true). */
export interface SilenceMatcher { name: string; value: string; isRegex: boolean; isEqual?: boolean }

export interface Silence {
  id: string;
  state: 'active' | 'pending';
  matchers: SilenceMatcher[];
  startsAt: string;
  endsAt: string;
  createdBy: string;
  comment: string;
}

/** Whether one matcher holds for `labels` (Alertmanager's semantics; a bad regex holds for nothing). */
export function matcherHolds(m: SilenceMatcher, labels: Record<string, string>): boolean {
  const v = labels[m.name] ?? '';
  let eq: boolean;
  if (m.isRegex) {
    try {
      eq = new RegExp(`^(?:${m.value})$`, 'u').test(v);
    } catch {
      return false;
    }
  } else {
    eq = v === m.value;
  }
  return m.isEqual === false ? !eq : eq;
}

/** The ids of the silences whose matchers all hold for `labels`. */
export function silencedBy(silences: Silence[], labels: Record<string, string>): string[] {
  return silences.filter((s) => s.matchers.length > 0 && s.matchers.every((m) => matcherHolds(m, labels))).map((s) => s.id);
}

/** GET /api/v2/silences: the active and pending ones, soonest to end first; throws AlertmanagerUnavailableError. */
export async function fetchSilences(baseUrl: string, timeoutMs: number): Promise<Silence[]> {
  const { base, auth } = alertmanagerEndpoint(baseUrl);
  const url = `${base}/api/v2/silences`;
  const where = `Alertmanager at ${base}`;
  let res: Response;
  try {
    res = await fetch(url, { headers: { accept: 'application/json', ...(auth ? { authorization: auth } : {}) }, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    const why = e.name === 'TimeoutError' ? `did not answer within ${timeoutMs} ms (alerts.notifyTimeoutMs)` : `is out of reach (${e.cause?.code ?? e.cause?.message ?? e.message})`;
    throw new AlertmanagerUnavailableError(`${where} ${why}: GET /api/v2/silences`, { cause: err });
  }
  const text = await res.text().catch(() => '');
  if (!res.ok) throw new AlertmanagerUnavailableError(`${where} answered ${res.status} to GET /api/v2/silences: ${text.slice(0, 200)}`);
  let doc: unknown;
  try { doc = JSON.parse(text); } catch { doc = null; }
  if (!Array.isArray(doc)) throw new AlertmanagerUnavailableError(`${where}: GET /api/v2/silences did not answer a JSON array (is alerts.alertmanagerUrl Alertmanager's base URL?)`);
  const out: Silence[] = [];
  for (const s of doc as Array<Record<string, unknown>>) {
    const state = (s?.status as { state?: string } | undefined)?.state;
    if (state !== 'active' && state !== 'pending') continue;
    const matchers = Array.isArray(s.matchers) ? (s.matchers as Array<Record<string, unknown>>).map((m) => ({
      name: String(m.name ?? ''), value: String(m.value ?? ''), isRegex: m.isRegex === true, isEqual: m.isEqual !== false,
    })) : [];
    out.push({
      id: String(s.id ?? ''), state, matchers, startsAt: String(s.startsAt ?? ''), endsAt: String(s.endsAt ?? ''),
      createdBy: String(s.createdBy ?? ''), comment: String(s.comment ?? ''),
    });
  }
  return out.sort((a, b) => a.endsAt.localeCompare(b.endsAt) || a.id.localeCompare(b.id));
}

export interface SilenceRouteDeps {
  store: AlertStore;
  alertmanagerUrl: string | null;
  timeoutMs: number;
  read: preHandlerHookHandler;
  registry: Registry;
  now: () => number;
  /** Every error the route answers (auth refusals included), to count the 4xx. */
  refused: (err: Error) => void;
}

const matcherSchema = {
  type: 'object',
  properties: { name: { type: 'string' }, value: { type: 'string' }, isRegex: { type: 'boolean' }, isEqual: { type: 'boolean' } },
} as const;

export function registerSilenceRoute(app: FastifyInstance, deps: SilenceRouteDeps): void {
  const reads = (deps.registry.getSingleMetric('braid_alert_silence_reads_total') as Counter<'result'> | undefined) ?? new Counter({
    name: 'braid_alert_silence_reads_total', labelNames: ['result'] as const, registers: [deps.registry],
    help: 'Reads of Alertmanager\'s silences for GET /api/v1/alerts/silences (result: ok, failed: unreachable, timed out or refusing; answered 502)',
  });
  app.get('/api/v1/alerts/silences', {
    preHandler: deps.read,
    onError: (_req, _reply, err, done) => { deps.refused(err); done(); },
    schema: {
      summary: 'The silences Alertmanager holds (active and pending) and the current alerts they silence (read key)',
      description: 'Read from Alertmanager\'s GET /api/v2/silences within alerts.notifyTimeoutMs. `silenced` lists the firing and pending alerts '
        + 'whose labels (alertname, scope, device or gateway, as the cloud sends them) every matcher of a silence holds for. '
        + 'Without alerts.alertmanagerUrl: configured false and empty lists.',
      operationId: 'listAlertSilences',
      tags: ['alerts'],
      response: {
        200: {
          description: 'The silences and the alerts they cover',
          type: 'object',
          properties: {
            configured: { type: 'boolean', description: 'Whether alerts.alertmanagerUrl is set' },
            silences: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  id: { type: 'string' }, state: { type: 'string', enum: ['active', 'pending'] }, matchers: { type: 'array', items: matcherSchema },
                  startsAt: { type: 'string' }, endsAt: { type: 'string' }, createdBy: { type: 'string' }, comment: { type: 'string' },
                },
              },
            },
            silenced: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  rule: { type: 'string' },
                  scope: { type: 'object', properties: { device: { type: 'string' }, gateway: { type: 'string' }, fleet: { type: 'boolean' } } },
                  state: { type: 'string', enum: ['pending', 'firing'] },
                  silencedBy: { type: 'array', items: { type: 'string' }, description: 'Ids of the silences that cover it' },
                },
              },
            },
          },
        },
        ...errorResponses({ ...AUTH_ERRORS.read, 502: 'BRAID_ERR_ALERTMANAGER_UNAVAILABLE: Alertmanager out of reach, too slow or refusing (the message says which)' }),
      },
    },
  }, async () => {
    if (!deps.alertmanagerUrl) return { configured: false, silences: [], silenced: [] };
    let silences: Silence[];
    try {
      silences = await fetchSilences(deps.alertmanagerUrl, deps.timeoutMs);
    } catch (err) {
      reads.inc({ result: 'failed' });
      throw err;
    }
    reads.inc({ result: 'ok' });
    const now = deps.now();
    const ctx = { threshold: () => '', link: () => null, firingTtlMs: 0, now };
    const current = (await deps.store.states()).filter((s): s is AlertStateRow & { state: 'firing' | 'pending' } => s.state !== 'resolved');
    const silenced = current.flatMap((s) => {
      const ids = silencedBy(silences, toAmAlert(s, ctx).labels);
      return ids.length ? [{ rule: s.rule, scope: parseScope(s.scope), state: s.state, silencedBy: ids }] : [];
    });
    return { configured: true, silences, silenced };
  });
}
