/**
 * Bearer authentication for the cloud's routes: gateway tokens (ingest, speed push) and API keys
 * (read, admin; admin implies read). `requireRole(role)` is a fastify hook (preHandler, or
 * onRequest where the body should not even be read for a stranger, as ingest does).
 *
 * Every request's secret is looked up in the credential store (cloud.db: one indexed read by
 * hash, 20-50 us, on a connection of its own so it never waits behind a long query), never
 * answered from a cache [INV-7]: `braid cloud gateway remove|rotate` and `braid cloud key remove` run as other
 * processes, as may other cloud processes on the data dir, and nothing tells this process of
 * their commit. So a removed or rotated secret
 * is refused by the first request after the commit, on every process, on a keep-alive connection
 * as on a new one (auth runs per request, not per connection). Not even lookups in flight are
 * shared: one issued before a removal committed would admit a request that arrived after it.
 *
 * One exception, for reads only, while the store is out of reach (cluster mode: PostgreSQL down):
 * an API key that the store confirmed within the last OUTAGE_GRACE_MS may still read (queries are
 * answered, flagged degraded). No removal can commit while the store is down, so what this admits
 * is at most a key removed in the moments before the outage. Gateway tokens and admin routes get
 * the store's 503 as before (ingest cannot commit anyway).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ForbiddenError, UnauthorizedError } from '../../shared/errors.js';
import type { CredentialStore } from '../store/credential-store.js';
import { type Principal, hashSecret, lookupSecret } from '../store/credentials.js';
import { isStoreUnavailable } from '../store/pg/unavailable.js';

/** How long a key the store confirmed may still read while the store is out of reach, in ms. */
export const OUTAGE_GRACE_MS = 5 * 60_000;
/** Keys remembered for that (the most recently confirmed ones). */
const OUTAGE_KEYS_MAX = 1_000;

declare module 'fastify' {
  interface FastifyRequest {
    /** Who sent the request, set by requireRole. */
    principal?: Principal;
  }
}

export type Role = 'read' | 'admin' | 'gateway';


const BEARER_RE = /^Bearer[ \t]+([A-Za-z0-9_\-.~+/]+=*)[ \t]*$/i;

/** Whether `p` may use a route that requires `role`. */
export function allows(p: Principal, role: Role): boolean {
  if (role === 'gateway') return p.kind === 'gateway';
  if (p.kind !== 'key') return false;
  return role === 'read' ? p.role === 'read' || p.role === 'admin' : p.role === 'admin';
}

export class Authenticator {
  private readonly credentials: CredentialStore;
  /** hashSecret(secret) of API keys the store confirmed, with when: used only while it is out of reach. */
  private readonly confirmed = new Map<string, { p: Principal; at: number }>();

  constructor(credentials: CredentialStore, private readonly now: () => number = Date.now) {
    this.credentials = credentials;
  }

  /** The owner of a bearer secret now, or null: read from the store (no cache, see above). */
  principal(secret: string, hash?: string): Promise<Principal | null> {
    return lookupSecret(this.credentials, secret, hash);
  }

  /**
   * principal(), plus the outage rule for reads (above): the store's error is thrown unless `role`
   * is read and the key was confirmed within OUTAGE_GRACE_MS.
   */
  private async lookup(secret: string, role: Role | null): Promise<Principal | null> {
    // One SHA-256 a request: the store's lookup key is also the outage map's.
    const key = hashSecret(secret);
    try {
      const p = await this.principal(secret, key);
      if (p?.kind === 'key') {
        this.confirmed.delete(key);
        this.confirmed.set(key, { p, at: this.now() });
        if (this.confirmed.size > OUTAGE_KEYS_MAX) this.confirmed.delete(this.confirmed.keys().next().value!);
      } else {
        this.confirmed.delete(key);
      }
      return p;
    } catch (err) {
      const seen = this.confirmed.get(key);
      if (role === 'read' && seen && this.now() - seen.at <= OUTAGE_GRACE_MS && isStoreUnavailable(err)) return seen.p;
      throw err;
    }
  }

  /**
   * A fastify hook for routes open to any caller the cloud knows (a gateway token or an API key of
   * either role): 401 without a known bearer secret; sets `req.principal`.
   */
  authenticate(): (req: FastifyRequest, reply: FastifyReply) => Promise<void> {
    return async (req, reply) => {
      req.principal = await this.known(req, reply, null);
    };
  }

  /** A fastify hook: 401 without a known bearer secret, 403 when it lacks `role`; sets `req.principal`. */
  requireRole(role: Role): (req: FastifyRequest, reply: FastifyReply) => Promise<void> {
    return async (req, reply) => {
      const p = await this.known(req, reply, role);
      if (!allows(p, role)) {
        const who = p.kind === 'gateway' ? `a gateway token (${p.gateway})` : `a ${p.role} key`;
        throw new ForbiddenError(`this route needs ${role === 'gateway' ? 'a gateway token' : `an API key with role ${role}`}; the request has ${who}`);
      }
      req.principal = p;
    };
  }

  /** The owner of the request's bearer secret; throws the 401 (with its WWW-Authenticate) otherwise. */
  private async known(req: FastifyRequest, reply: FastifyReply, role: Role | null): Promise<Principal> {
    const header = req.headers.authorization;
    const m = typeof header === 'string' ? BEARER_RE.exec(header) : null;
    if (!m) {
      void reply.header('www-authenticate', 'Bearer realm="braid"');
      throw new UnauthorizedError(header ? 'Authorization must be "Bearer <token>"' : 'missing Authorization: Bearer <token>');
    }
    const p = await this.lookup(m[1], role);
    if (!p) {
      void reply.header('www-authenticate', 'Bearer realm="braid", error="invalid_token"');
      throw new UnauthorizedError('unknown or revoked token');
    }
    return p;
  }
}
