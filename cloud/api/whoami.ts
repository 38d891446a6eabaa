/**
 * GET /api/v1/whoami (any gateway token or API key): who the cloud takes the caller for. The
 * console asks it once per key to know what to offer (an admin key may start batch runs); a script
 * can check a key without side effects. Answers `{"kind":"key","name":"app","role":"read"}` or
 * `{"kind":"gateway","gateway":"gw-1"}`; 401 without a known bearer secret. The secret itself is
 * never echoed back.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ERROR_SCHEMA } from '../query/route.js';

export const WHOAMI_PATH = '/api/v1/whoami';

const PRINCIPAL_SCHEMA = {
  description: 'The owner of the bearer secret: an API key (its name and role) or a gateway token (its gateway)',
  type: 'object',
  required: ['kind'],
  properties: {
    kind: { type: 'string', enum: ['key', 'gateway'] },
    name: { type: 'string', description: 'The key\'s name (braid cloud key add <name>); keys only' },
    role: { type: 'string', enum: ['read', 'admin'], description: 'read: every GET; admin: also POST /api/v1/batch/run; keys only' },
    gateway: { type: 'string', description: 'The gateway id; gateway tokens only' },
  },
  additionalProperties: false,
} as const;

export interface WhoamiRouteDeps {
  /** The hook that admits any known bearer secret and sets req.principal (Authenticator.authenticate()). */
  authenticate: (req: FastifyRequest, reply: FastifyReply) => Promise<void>;
}

export function registerWhoamiRoute(app: FastifyInstance, deps: WhoamiRouteDeps): void {
  app.get(WHOAMI_PATH, {
    onRequest: deps.authenticate,
    schema: {
      summary: 'The caller: an API key\'s name and role, or a gateway token\'s gateway',
      operationId: 'whoami',
      tags: ['auth'],
      response: {
        200: PRINCIPAL_SCHEMA,
        401: { description: 'No or unknown key or token', ...ERROR_SCHEMA },
      },
    },
  }, async (req) => req.principal);
}
