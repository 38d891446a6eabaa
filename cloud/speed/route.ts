/**
 * POST /api/v1/speed (docs/serving.md): gateway token first (a stranger's body is not even read),
 * the body within its limits (gzip as at ingest), the body's gateway must be the token's (403),
 * full validation (400 naming the row and field, 413 past a limit), then the store; 200
 * `{watermark, manifestVersion, stored}`. Every refusal is counted by code in
 * braid_speed_rejected_total [INV-5].
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AUTH_ERRORS, errorResponses } from '../api/responses.js';
import type { GatewayClocks } from '../ingest/clock.js';
import { parseJsonBody, prepareGatewayScope, requireOwnGateway } from '../ingest/index.js';
import type { SpeedMetrics } from './metrics.js';
import { type SpeedLimits, type SpeedPush, pushGateway, validateSpeedPush } from './validate.js';

export const SPEED_PATH = '/api/v1/speed';

export interface SpeedAnswer {
  watermark: number;
  manifestVersion: number | null;
  stored: number;
  /** Only for a push that named the alert rules it holds (docs/alerts.md, "At the gateway"). */
  alertRules?: { version: string; rules?: Array<Record<string, unknown>> };
}

export interface SpeedRouteDeps {
  metrics: SpeedMetrics;
  limits: SpeedLimits & { maxBodyBytes: number; maxInflatedBytes: number };
  /** The gateway-token hook (Authenticator.requireRole('gateway')). */
  requireGateway: (req: FastifyRequest, reply: FastifyReply) => Promise<void>;
  /** Store a validated push; resolves with the answer once committed. */
  submit: (push: SpeedPush) => Promise<SpeedAnswer>;
  /** Where each push's clock sample goes (sentAt against its receive time; cloud/ingest/clock.ts). */
  clocks: Pick<GatewayClocks, 'sample'>;
}

/** Register the route in its own encapsulated scope (its body parser and error counting stay there). */
export async function registerSpeedRoute(app: FastifyInstance, deps: SpeedRouteDeps): Promise<void> {
  const { metrics: m, limits } = deps;
  await app.register(async (scope) => {
    prepareGatewayScope(scope, limits, m, 'speed push');

    scope.post(SPEED_PATH, {
      onRequest: deps.requireGateway,
      schema: {
        summary: 'Push a gateway\'s speed partials, health and connected devices (gateway token)',
        description: 'The body (JSON, optionally gzip) is docs/serving.md\'s speed push. The answer carries E[gateway] of the live views.',
        operationId: 'pushSpeed',
        tags: ['gateway'],
        response: {
          200: {
            description: 'Stored; watermark is E[gateway] of the live manifest',
            type: 'object',
            properties: {
              watermark: { type: 'integer' }, manifestVersion: { type: ['integer', 'null'] }, stored: { type: 'integer' },
              alertRules: {
                type: 'object',
                description: 'Only when the push named the version of the alert rules it holds (alertRules): the device rules the gateway evaluates too; rules only when that version is not the current one',
                properties: { version: { type: 'string' }, rules: { type: 'array', items: { type: 'object', additionalProperties: true } } },
                required: ['version'],
              },
            },
          },
          ...errorResponses({
            400: 'BRAID_ERR_BAD_REQUEST: a malformed body; the message names the field and row',
            ...AUTH_ERRORS.gateway,
            413: 'BRAID_ERR_PAYLOAD_TOO_LARGE: the body or a list in it is over a limit',
            415: 'BRAID_ERR_UNSUPPORTED_ENCODING: a Content-Encoding other than gzip or identity',
            429: 'BRAID_ERR_LIMIT_EXCEEDED: too many pushes wait for the store; retry after Retry-After',
            503: 'BRAID_ERR_SPEED_UNAVAILABLE: not stored; retry',
          }),
        },
      },
    }, async (req, reply) => {
      // When the request arrived (fastify's clock starts at onRequest): the clock sample's receive time.
      const receivedAt = Date.now() - reply.elapsedTime;
      const doc = parseJsonBody(req.body as Buffer | undefined, 'a speed push');
      const gateway = pushGateway(doc);
      requireOwnGateway(req.principal, gateway);
      const push = validateSpeedPush(doc, limits);
      // A push every second per gateway: the clock estimate's main source of samples.
      deps.clocks.sample(gateway, push.sentAt, receivedAt);
      return deps.submit(push);
    });
  });
}
