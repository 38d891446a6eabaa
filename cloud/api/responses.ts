/**
 * The error answers of the cloud's routes, for their OpenAPI schemas: every error is
 * `{code, message}` (shared/http-errors.ts), and each route lists the statuses it can answer with
 * what they mean there. One place for the texts that most routes share (401, 403 of the auth hook).
 */
import { ERROR_SCHEMA } from '../query/route.js';

/** What the auth hook answers, by the kind of secret a route takes. */
export const AUTH_ERRORS = {
  read: { 401: 'BRAID_ERR_UNAUTHORIZED: no, malformed, unknown or revoked bearer secret', 403: 'BRAID_ERR_FORBIDDEN: a gateway token, not a read or admin key' },
  admin: { 401: 'BRAID_ERR_UNAUTHORIZED: no, malformed, unknown or revoked bearer secret', 403: 'BRAID_ERR_FORBIDDEN: not an admin key' },
  gateway: {
    401: 'BRAID_ERR_UNAUTHORIZED: no, malformed, unknown or revoked gateway token',
    403: 'BRAID_ERR_FORBIDDEN: an API key, or the token of another gateway than the body names',
  },
} as const;

/** `{status: description}` -> OpenAPI responses of the `{code, message}` body. */
export function errorResponses(byStatus: Record<number, string>): Record<number, typeof ERROR_SCHEMA & { description: string }> {
  const out: Record<number, typeof ERROR_SCHEMA & { description: string }> = {};
  for (const [status, description] of Object.entries(byStatus)) out[Number(status)] = { description, ...ERROR_SCHEMA };
  return out;
}
