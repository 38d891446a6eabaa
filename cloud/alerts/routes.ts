/**
 * The alert routes (DESIGN.md "Alerts", docs/alerts.md):
 * - PUT /api/v1/alerts/rules (admin key): replace the rule set; 400 naming the field otherwise;
 * - GET /api/v1/alerts/rules (read key): the rule set;
 * - GET /api/v1/alerts (read key): the current alerts, firing first, then pending, then resolved
 *   (in the last hour), newest first within each;
 * - GET /api/v1/alerts/history (read key): transitions, newest first (?rule=, ?device= or ?gateway=, ?limit=);
 * - GET /api/v1/alerts/silences (read key): Alertmanager's silences and the alerts they cover
 *   (silences.ts, registered beside these).
 */
import type { FastifyInstance, preHandlerHookHandler } from 'fastify';
import { BadRequestError } from '../../shared/errors.js';
import { iso } from '../../shared/time.js';
import { AUTH_ERRORS, errorResponses } from '../api/responses.js';
import type { AlertStore } from '../store/alerts.js';
import { compileRuleSet } from './rules.js';
import { parseScope, scopeKey } from './scope.js';

export interface AlertRouteDeps {
  store: AlertStore;
  maxRules: number;
  historyPerRule: number;
  now: () => number;
  read: preHandlerHookHandler;
  admin: preHandlerHookHandler;
  onRulesReplaced: (count: number) => void;
  /** Every error a route answers (auth refusals included), to count the 4xx. */
  refused: (err: Error) => void;
}

const ruleSchema = {
  type: 'object',
  description: 'A threshold rule {name, metric, agg, window, op, threshold, for[, device|gateway]} or a silence rule {name, silentFor[, device|gateway]}; no device or gateway: the fleet (a silence rule: every device). Durations like 30s, 5m, 1h; window in whole minutes, 1m to 1d; for 0 to 1d; silentFor 30s to 30d; op one of > >= < <=; agg one of the query\'s',
  required: ['name'],
  additionalProperties: true,
  properties: {
    name: { description: 'Unique in the set; the alertname label at Alertmanager' },
    metric: { description: 'Threshold rule: the metric' },
    agg: { description: 'Threshold rule: avg, min, max, sum, count, first, last or stddev' },
    window: { description: 'Threshold rule: the window, whole minutes (1m to 1d); evaluated on window-aligned buckets of the merged query' },
    op: { description: 'Threshold rule: > >= < <=' },
    threshold: { description: 'Threshold rule: a finite number' },
    for: { description: 'Threshold rule: how long the condition holds before the alert fires (0 to 1d)' },
    silentFor: { description: 'Silence rule: how long without a report (30s to 30d)' },
    device: { description: 'A device id: the rule is about this device' },
    gateway: { description: 'A gateway id: the rule is about this gateway' },
  },
} as const;

const rulesAnswer = { description: 'The rule set, in order', type: 'object', properties: { rules: { type: 'array', items: ruleSchema } } } as const;

const scopeSchema = {
  type: 'object',
  description: '{"device": id}, {"gateway": id} or {"fleet": true}',
  properties: { device: { type: 'string' }, gateway: { type: 'string' }, fleet: { type: 'boolean' } },
} as const;

export function registerAlertRoutes(app: FastifyInstance, deps: AlertRouteDeps): void {
  const { store } = deps;
  const onError = (_req: unknown, _reply: unknown, err: Error, done: () => void) => {
    deps.refused(err);
    done();
  };

  app.put('/api/v1/alerts/rules', {
    preHandler: deps.admin,
    onError,
    // The body is validated by compileRuleSet (messages that name the field: rules[2].window); the schema documents it.
    attachValidation: true,
    schema: {
      summary: 'Replace the alert rule set (admin key)',
      operationId: 'putAlertRules',
      tags: ['alerts'],
      // No `type` on rules: fastify's ajv would coerce a string into a one-item array before our check
      // (the rule's shape is in the answer's schema, the same as GET's).
      body: { type: 'object', required: ['rules'], properties: { rules: { description: `An array of rules. ${ruleSchema.description}` } } },
      response: {
        200: rulesAnswer,
        ...errorResponses({ 400: 'BRAID_ERR_BAD_REQUEST: the message starts with the field at fault (rules[2].window: ...); nothing was changed', ...AUTH_ERRORS.admin }),
      },
    },
  }, async (req) => {
    const compiled = compileRuleSet(req.body, deps.maxRules);
    const rules = compiled.map((c) => c.rule as unknown as { name: string } & Record<string, unknown>);
    await store.replaceRules(rules, deps.now());
    deps.onRulesReplaced(rules.length);
    return { rules };
  });

  app.get('/api/v1/alerts/rules', {
    preHandler: deps.read,
    onError,
    schema: {
      summary: 'The alert rule set (read key)',
      operationId: 'getAlertRules',
      tags: ['alerts'],
      response: { 200: rulesAnswer, ...errorResponses(AUTH_ERRORS.read) },
    },
  }, async () => ({ rules: (await store.rules()).rules }));

  app.get('/api/v1/alerts', {
    preHandler: deps.read,
    onError,
    schema: {
      summary: 'The current alerts, firing first, then pending, then resolved in the last hour (read key)',
      operationId: 'listAlerts',
      tags: ['alerts'],
      response: {
        200: {
          description: 'One entry per alert (a rule at one scope)',
          type: 'object',
          properties: {
            alerts: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  rule: { type: 'string' },
                  scope: scopeSchema,
                  state: { type: 'string', enum: ['pending', 'firing', 'resolved'] },
                  since: { type: 'string', description: 'When it entered this state' },
                  value: { type: ['number', 'null'], description: 'The last value evaluated: the aggregate, or seconds without a report' },
                },
              },
            },
          },
        },
        ...errorResponses(AUTH_ERRORS.read),
      },
    },
  }, async () => {
    const order = { firing: 0, pending: 1, resolved: 2 } as const;
    const states = (await store.states()).sort((a, b) => order[a.state] - order[b.state] || b.since - a.since);
    return { alerts: states.map((s) => ({ rule: s.rule, scope: parseScope(s.scope), state: s.state, since: iso(s.since), value: s.value })) };
  });

  app.get('/api/v1/alerts/history', {
    preHandler: deps.read,
    onError,
    schema: {
      summary: 'Alert transitions, newest first (read key); the newest alerts.historyPerRule of each rule are kept',
      operationId: 'listAlertHistory',
      tags: ['alerts'],
      querystring: {
        type: 'object',
        properties: {
          rule: { type: 'string', minLength: 1, maxLength: 256, description: 'Only this rule\'s' },
          device: { type: 'string', minLength: 1, maxLength: 256, description: 'Only alerts whose scope is this device' },
          gateway: { type: 'string', minLength: 1, maxLength: 256, description: 'Only alerts whose scope is this gateway (not its devices\')' },
          limit: { type: 'integer', minimum: 1, maximum: 10_000, default: 100, description: 'Transitions at most' },
        },
        additionalProperties: false,
      },
      response: {
        200: {
          description: 'Transitions; `from` null: the alert was not there before',
          type: 'object',
          properties: {
            history: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  rule: { type: 'string' },
                  scope: scopeSchema,
                  from: { type: ['string', 'null'], enum: ['pending', 'firing', 'resolved', null] },
                  to: { type: 'string', enum: ['pending', 'firing', 'resolved'] },
                  at: { type: 'string' },
                  value: { type: ['number', 'null'] },
                },
              },
            },
          },
        },
        ...errorResponses({ 400: 'BRAID_ERR_BAD_REQUEST: an unknown or malformed query parameter', ...AUTH_ERRORS.read }),
      },
    },
  }, async (req) => {
    const q = req.query as { rule?: string; device?: string; gateway?: string; limit?: number };
    if (q.device !== undefined && q.gateway !== undefined) throw new BadRequestError('device, gateway: give one scope at most');
    const scope = q.device !== undefined ? scopeKey({ device: q.device }) : q.gateway !== undefined ? scopeKey({ gateway: q.gateway }) : undefined;
    const rows = await store.history({ ...(q.rule !== undefined ? { rule: q.rule } : {}), ...(scope !== undefined ? { scope } : {}), limit: q.limit ?? 100 });
    return { history: rows.map((t) => ({ rule: t.rule, scope: parseScope(t.scope), from: t.from, to: t.to, at: iso(t.at), value: t.value })) };
  });
}
