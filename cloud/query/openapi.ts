/**
 * GET /api/v1/openapi.json (no auth): an OpenAPI 3 document generated from the route schemas by
 * @fastify/swagger. Its onRoute hook must see every route, so the plugin is registered before any
 * route (CloudServer.useFirst). Every /api/v1 route takes `Authorization: Bearer ...` (gateway
 * token, read or admin key) unless marked public here.
 */
import swagger from '@fastify/swagger';
import type { FastifyInstance } from 'fastify';

export const OPENAPI_PATH = '/api/v1/openapi.json';

/** Routes that take no bearer token. */
const PUBLIC = new Set([OPENAPI_PATH, '/healthz']);

export interface OpenApiOptions {
  /** The API's version (package.json). */
  version: string;
}

export async function registerOpenApi(app: FastifyInstance, o: OpenApiOptions): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Braid cloud API',
        version: o.version,
        description: 'Ingest and speed push (gateway tokens); every GET, the merged query, the registry and the batch status (read key); '
          + 'starting a batch run (admin key; an admin key also reads). GET /api/v1/whoami names the caller. '
          + 'Errors are {code, message} with a stable code.',
        license: { name: 'Apache-2.0', url: 'https://www.apache.org/licenses/LICENSE-2.0' },
      },
      // Relative: the paths are served by the node that serves this document, whatever name or
      // proxy a client reached it by (a fixed host here would be wrong behind nginx or Caddy).
      servers: [{ url: '/', description: 'The Braid cloud node (or the proxy in front of it) that served this document' }],
      components: {
        securitySchemes: {
          bearerAuth: {
            type: 'http', scheme: 'bearer',
            description: 'A gateway token (`braid cloud gateway add`) or an API key (`braid cloud key add --role read|admin`)',
          },
        },
      },
      security: [{ bearerAuth: [] }],
    },
    transform: ({ schema, url }) => {
      const s = { ...(schema ?? {}) } as Record<string, unknown>;
      if (PUBLIC.has(url)) s.security = [];
      return { schema: s as never, url };
    },
  });
  app.get(OPENAPI_PATH, {
    schema: {
      summary: 'This document (no auth)', operationId: 'getOpenApi', tags: ['meta'],
      response: { 200: { description: 'OpenAPI 3.0 document', type: 'object', additionalProperties: true } },
    },
  }, async () => app.swagger());
}
