/**
 * POST /api/v1/ingest/alerts (gateway token; docs/alerts.md, "At the gateway"): the transitions a
 * gateway raised on its own windows, `{"v":1,"gateway","transitions":[{"id","rule","device","from",
 * "to","at","value"}]}` (JSON, optionally gzip, as at ingest). Validated whole first (400 naming the
 * field), the body's gateway must be the token's (403), then recorded in the store, each once by
 * (gateway, id); the 200 `{recorded, duplicates}` only after that commit. The next evaluation round
 * merges them into the alert states and history (service.ts), once per episode whoever raised it.
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { MAX_TS_MS, array, bad, describe, int, num, object, str } from '../api/json-checks.js';
import { AUTH_ERRORS, errorResponses } from '../api/responses.js';
import { parseJsonBody, prepareGatewayScope, requireOwnGateway } from '../ingest/index.js';
import type { AlertStateName } from '../../shared/alerts/state.js';
import type { AlertStore, GatewayTransition } from '../store/alerts.js';
import { RULE_BOUNDS } from './rules.js';

export const ALERTS_INGEST_PATH = '/api/v1/ingest/alerts';
/** Most transitions in one request (the gateway sends 500 at most). */
export const MAX_INTAKE_TRANSITIONS = 5_000;
const STATES: readonly AlertStateName[] = ['pending', 'firing', 'resolved'];

function intakeMetrics(registry: Registry) {
  const get = <T>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
  const registers = [registry];
  return {
    transitions: get('braid_alert_gateway_transitions_total', () => new Counter({
      name: 'braid_alert_gateway_transitions_total', labelNames: ['result'] as const, registers,
      help: 'Alert transitions gateways sent (result: recorded; duplicate: a re-send of one already recorded; merged: applied to the alert state; same_episode: the cloud already had that state, nothing added)',
    })),
    rejected: get('braid_alert_gateway_requests_rejected_total', () => new Counter({
      name: 'braid_alert_gateway_requests_rejected_total', labelNames: ['code'] as const, registers,
      help: 'POST /api/v1/ingest/alerts answered 4xx or 5xx, by error code',
    })),
    requests: get('braid_alert_gateway_requests_total', () => new Counter({
      name: 'braid_alert_gateway_requests_total', labelNames: ['outcome'] as const, registers,
      help: 'POST /api/v1/ingest/alerts by outcome: ok, rejected (4xx), failed (5xx)',
    })),
    requestSeconds: get('braid_alert_gateway_request_seconds', () => new Histogram({
      name: 'braid_alert_gateway_request_seconds', registers, buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      help: 'Time of POST /api/v1/ingest/alerts, body to answer',
    })),
  };
}

export type IntakeMetrics = ReturnType<typeof intakeMetrics>;

/** Check a parsed body completely; the transitions as the store records them. */
export function validateIntake(doc: unknown): { gateway: string; transitions: GatewayTransition[] } {
  const o = object(doc, 'body');
  if (o.v !== 1) throw bad('v', `protocol version must be 1, got ${describe(o.v)}`);
  const gateway = str(o.gateway, 'gateway', '', 64);
  const seen = new Set<string>();
  const transitions = array(o.transitions, 'transitions', MAX_INTAKE_TRANSITIONS, true).map((raw, i) => {
    const p = `transitions[${i}]`;
    const t = object(raw, p);
    const id = str(t.id, `${p}.id`, '', 128);
    if (seen.has(id)) throw bad(`${p}.id`, `'${id}' appears twice in the request`);
    seen.add(id);
    const state = (v: unknown, path: string, nullable: boolean): AlertStateName | null => {
      if (nullable && v === null) return null;
      if (typeof v !== 'string' || !STATES.includes(v as AlertStateName)) throw bad(path, `must be one of ${STATES.join(', ')}${nullable ? ' or null' : ''}, got ${describe(v)}`);
      return v as AlertStateName;
    };
    return {
      gateway, id,
      rule: str(t.rule, `${p}.rule`, '', RULE_BOUNDS.idMax),
      device: str(t.device, `${p}.device`, '', 64),
      from: state(t.from ?? null, `${p}.from`, true),
      to: state(t.to, `${p}.to`, false)!,
      at: int(t.at, `${p}.at`, '', 0, MAX_TS_MS),
      value: t.value === null || t.value === undefined ? null : num(t.value, `${p}.value`, ''),
    };
  });
  return { gateway, transitions };
}

export interface IntakeDeps {
  store: AlertStore;
  registry: Registry;
  limits: { maxBodyBytes: number; maxInflatedBytes: number };
  requireGateway: (req: FastifyRequest, reply: FastifyReply) => Promise<void>;
  now: () => number;
}

export async function registerAlertIntake(app: FastifyInstance, deps: IntakeDeps): Promise<IntakeMetrics> {
  const m = intakeMetrics(deps.registry);
  await app.register(async (scope) => {
    prepareGatewayScope(scope, deps.limits, m, 'alert intake');
    scope.post(ALERTS_INGEST_PATH, {
      onRequest: deps.requireGateway,
      schema: {
        summary: 'Record the alert transitions a gateway raised on its own windows (gateway token)',
        description: 'The body (JSON, optionally gzip) is docs/alerts.md\'s "At the gateway": {"v":1,"gateway","transitions":[{"id","rule","device","from","to","at","value"}]}. Each transition is recorded once by (gateway, id); the answer comes after the store committed them. The next evaluation round merges them into the alerts, once per episode.',
        operationId: 'ingestGatewayAlerts',
        tags: ['gateway'],
        response: {
          200: {
            description: 'Recorded (duplicates: re-sends already recorded)',
            type: 'object',
            properties: { recorded: { type: 'integer' }, duplicates: { type: 'integer' } },
          },
          ...errorResponses({
            400: 'BRAID_ERR_BAD_REQUEST: a malformed body; the message names the field',
            ...AUTH_ERRORS.gateway,
            413: 'BRAID_ERR_PAYLOAD_TOO_LARGE: the body or its list of transitions is over a limit',
            415: 'BRAID_ERR_UNSUPPORTED_ENCODING: a Content-Encoding other than gzip or identity',
            503: 'BRAID_ERR_STORE_UNAVAILABLE: not recorded; retry',
          }),
        },
      },
    }, async (req) => {
      const doc = parseJsonBody(req.body as Buffer | undefined, '{"v":1,"gateway","transitions":[...]}');
      const body = validateIntake(doc);
      requireOwnGateway(req.principal, body.gateway);
      const r = await deps.store.recordGatewayTransitions(body.transitions, deps.now());
      if (r.recorded) m.transitions.inc({ result: 'recorded' }, r.recorded);
      if (r.duplicates) m.transitions.inc({ result: 'duplicate' }, r.duplicates);
      return r;
    });
  });
  return m;
}
