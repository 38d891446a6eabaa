/**
 * Bearer authentication for the cloud's routes: gateway tokens (ingest, speed push) and API keys
 * (read, admin; admin implies read). `requireRole(role)` is a fastify hook (preHandler, or
 * onRequest where the body should not even be read for a stranger, as ingest does).
 *
 * Lookups are cached for `cacheTtlMs` (5 s): ingest does not touch SQLite per request, and a key
 * removed with `braid cloud key remove` stops working within that time.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ForbiddenError, UnauthorizedError } from '../../shared/errors.js';
import type { Db } from '../../shared/sqlite.js';
import { type Principal, hashSecret, lookupSecret } from '../store/credentials.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who sent the request, set by requireRole. */
    principal?: Principal;
  }
}

export type Role = 'read' | 'admin' | 'gateway';

export interface AuthOptions {
  /** How long a lookup (hit or miss) is trusted, in ms. */
  cacheTtlMs: number;
  /** Cached secrets at most; past it the cache starts over (a flood of made-up tokens cannot grow it). */
  maxCacheEntries: number;
}

export const DEFAULT_AUTH_OPTIONS: AuthOptions = { cacheTtlMs: 5_000, maxCacheEntries: 10_000 };

const BEARER_RE = /^Bearer[ \t]+([A-Za-z0-9_\-.~+/]+=*)[ \t]*$/i;

/** Whether `p` may use a route that requires `role`. */
export function allows(p: Principal, role: Role): boolean {
  if (role === 'gateway') return p.kind === 'gateway';
  if (p.kind !== 'key') return false;
  return role === 'read' ? p.role === 'read' || p.role === 'admin' : p.role === 'admin';
}

export class Authenticator {
  private readonly reader: Db;
  private readonly o: AuthOptions;
  private readonly now: () => number;
  /** SHA-256 of a secret -> its lookup (a promise, so a burst of one new token costs one query). */
  private readonly cache = new Map<string, { at: number; principal: Promise<Principal | null> }>();

  constructor(reader: Db, options: Partial<AuthOptions> = {}, now: () => number = Date.now) {
    this.reader = reader;
    this.o = { ...DEFAULT_AUTH_OPTIONS, ...options };
    this.now = now;
  }

  /** The owner of a bearer secret, or null; cached for cacheTtlMs. */
  principal(secret: string): Promise<Principal | null> {
    const key = hashSecret(secret);
    const t = this.now();
    const hit = this.cache.get(key);
    if (hit && t - hit.at < this.o.cacheTtlMs) return hit.principal;
    if (this.cache.size >= this.o.maxCacheEntries) this.cache.clear();
    const principal = lookupSecret(this.reader, secret);
    this.cache.set(key, { at: t, principal });
    // A failed lookup (database busy) must not be remembered as an answer.
    principal.catch(() => this.cache.delete(key));
    return principal;
  }

  /** Forget every cached lookup (after a change made in this process). */
  clear(): void {
    this.cache.clear();
  }

  /**
   * A fastify hook for routes open to any caller the cloud knows (a gateway token or an API key of
   * either role): 401 without a known bearer secret; sets `req.principal`.
   */
  authenticate(): (req: FastifyRequest, reply: FastifyReply) => Promise<void> {
    return async (req, reply) => {
      req.principal = await this.known(req, reply);
    };
  }

  /** A fastify hook: 401 without a known bearer secret, 403 when it lacks `role`; sets `req.principal`. */
  requireRole(role: Role): (req: FastifyRequest, reply: FastifyReply) => Promise<void> {
    return async (req, reply) => {
      const p = await this.known(req, reply);
      if (!allows(p, role)) {
        const who = p.kind === 'gateway' ? `a gateway token (${p.gateway})` : `a ${p.role} key`;
        throw new ForbiddenError(`this route needs ${role === 'gateway' ? 'a gateway token' : `an API key with role ${role}`}; the request has ${who}`);
      }
      req.principal = p;
    };
  }

  /** The owner of the request's bearer secret; throws the 401 (with its WWW-Authenticate) otherwise. */
  private async known(req: FastifyRequest, reply: FastifyReply): Promise<Principal> {
    const header = req.headers.authorization;
    const m = typeof header === 'string' ? BEARER_RE.exec(header) : null;
    if (!m) {
      void reply.header('www-authenticate', 'Bearer realm="braid"');
      throw new UnauthorizedError(header ? 'Authorization must be "Bearer <token>"' : 'missing Authorization: Bearer <token>');
    }
    const p = await this.principal(m[1]);
    if (!p) {
      void reply.header('www-authenticate', 'Bearer realm="braid", error="invalid_token"');
      throw new UnauthorizedError('unknown or revoked token');
    }
    return p;
  }
}
