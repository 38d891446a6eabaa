/**
 * The credentials part of the cloud store (docs/cluster-store.md): gateway tokens and API keys as
 * rows keyed by the SHA-256 of the secret. Two implementations, SQLite (sqlite-credentials.ts, the
 * embedded cloud.db) and PostgreSQL (pg/credentials.ts), held equal by
 * test/support/store-conformance/credentials.ts.
 *
 * A store never sees a secret: issuing one, hashing it and checking names is credentials.ts's work,
 * above the store. Every method is one statement that commits on its own, and `lookup` reads the
 * database each time, never a cache [INV-7]: a removal or rotation committed by any process or node
 * is seen by the next lookup of every other one.
 */
import { ConflictError, NotFoundError } from '../../shared/errors.js';

export type ApiRole = 'read' | 'admin';
export const API_ROLES: readonly ApiRole[] = ['read', 'admin'];

/** Who a bearer secret belongs to. */
export type Principal =
  | { kind: 'gateway'; gateway: string }
  | { kind: 'key'; name: string; role: ApiRole };

/** Which table a secret's hash is looked up in (its prefix says). */
export type CredentialKind = Principal['kind'];

export interface GatewayListing { id: string; createdAt: number }
export interface ApiKeyListing { name: string; role: ApiRole; createdAt: number }

export interface CredentialStore {
  /** Register a gateway with its token's hash. ConflictError when the id is taken. */
  addGateway(id: string, tokenHash: string, now: number): Promise<void>;
  /** Replace a gateway's token hash; the old token stops working with this commit. NotFoundError when unknown. */
  rotateGateway(id: string, tokenHash: string): Promise<void>;
  /** NotFoundError when unknown. */
  removeGateway(id: string): Promise<void>;
  /** Ordered by id, byte order (as SQLite's BINARY collation), whatever the database's locale. */
  listGateways(): Promise<GatewayListing[]>;
  /** ConflictError when the name is taken. */
  addApiKey(name: string, role: ApiRole, keyHash: string, now: number): Promise<void>;
  /** NotFoundError when unknown. */
  removeApiKey(name: string): Promise<void>;
  /** Ordered by name, byte order. */
  listApiKeys(): Promise<ApiKeyListing[]>;
  /** The owner of a secret's hash now, or null: one indexed read per call, no cache [INV-7]. */
  lookup(hash: string, kind: CredentialKind): Promise<Principal | null>;
}

// The errors both implementations throw, worded once so a caller sees the same on either backend.
export const gatewayTaken = (id: string, cause: unknown) => new ConflictError(`gateway ${id} is already registered (use rotate for a new token)`, { cause });
export const gatewayUnknown = (id: string) => new NotFoundError(`gateway ${id} is not registered`);
export const apiKeyTaken = (name: string, cause: unknown) => new ConflictError(`an API key named ${name} exists already`, { cause });
export const apiKeyUnknown = (name: string) => new NotFoundError(`no API key named ${name}`);
