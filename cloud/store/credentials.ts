/**
 * Gateway tokens and API keys: issue, list, remove, and look up by hash, through a CredentialStore
 * (credential-store.ts: cloud.db's `gateways` and `api_keys`, or PostgreSQL's). `braid cloud
 * gateway|key ...` write them from another process while the cloud runs; the cloud looks every
 * request's secret up (cloud/api/auth.ts, no cache), so a removal or rotation takes effect with its
 * commit [INV-7]. A cloud.db connection (Db) may stand for the store: it is wrapped in the SQLite one.
 *
 * Secrets are 32 random bytes (256 bits), base64url, behind a prefix that says what they are
 * (`bgt_` gateway token, `brk_` API key: a leaked one is recognisable in a log or a repo scan).
 * Only their SHA-256 is stored. A slow password hash (scrypt) guards low-entropy, user-chosen
 * secrets against guessing; against 2^256 possibilities a fast hash is as strong, and being
 * deterministic it lets a request find its row by hash instead of trying every row.
 */
import { createHash, randomBytes } from 'node:crypto';
import { BadRequestError } from '../../shared/errors.js';
import type { Db } from '../../shared/sqlite.js';
import {
  API_ROLES, type ApiKeyListing, type ApiRole, type CredentialStore, type GatewayListing, type Principal,
} from './credential-store.js';
import { SqliteCredentialStore } from './sqlite-credentials.js';

export { API_ROLES, type ApiRole, type Principal } from './credential-store.js';

export const GATEWAY_TOKEN_PREFIX = 'bgt_';
export const API_KEY_PREFIX = 'brk_';

/** Gateway ids as the gateway's own config allows them (edge/config.ts idSchema): safe in paths and labels. */
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.\-@ ]{0,63}$/;

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

function newSecret(prefix: string): string {
  return prefix + randomBytes(32).toString('base64url');
}

export function checkGatewayId(id: string): string {
  if (!ID_RE.test(id)) throw new BadRequestError(`gateway id "${id}": must be 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit`);
  return id;
}

function checkKeyName(name: string): string {
  if (!NAME_RE.test(name)) throw new BadRequestError(`key name "${name}": must be 1-64 characters of letters, digits, _ . - @ or space, starting with a letter or digit`);
  return name;
}

export function checkRole(role: string): ApiRole {
  if (!(API_ROLES as readonly string[]).includes(role)) throw new BadRequestError(`role "${role}": must be one of ${API_ROLES.join(', ')}`);
  return role as ApiRole;
}

/** Where credentials live: a store, or a cloud.db connection (wrapped in the SQLite store). */
export type CredentialTarget = CredentialStore | Db;

// By shape, not instanceof: a Db has no lookup, and a store need not be a class.
const storeOf = (t: CredentialTarget): CredentialStore => ('lookup' in t ? t : new SqliteCredentialStore(t));

/** Register a gateway; returns its token (shown once, only its hash is kept). */
export async function addGateway(target: CredentialTarget, id: string, now = Date.now()): Promise<string> {
  checkGatewayId(id);
  const token = newSecret(GATEWAY_TOKEN_PREFIX);
  await storeOf(target).addGateway(id, hashSecret(token), now);
  return token;
}

/** Give a gateway a new token; the old one stops working with this commit. */
export async function rotateGateway(target: CredentialTarget, id: string): Promise<string> {
  const token = newSecret(GATEWAY_TOKEN_PREFIX);
  await storeOf(target).rotateGateway(id, hashSecret(token));
  return token;
}

export async function removeGateway(target: CredentialTarget, id: string): Promise<void> {
  return storeOf(target).removeGateway(id);
}

export async function listGateways(target: CredentialTarget): Promise<GatewayListing[]> {
  return storeOf(target).listGateways();
}

/** Issue an API key; returns it (shown once). */
export async function addApiKey(target: CredentialTarget, name: string, role: string, now = Date.now()): Promise<string> {
  checkKeyName(name);
  const r = checkRole(role);
  const key = newSecret(API_KEY_PREFIX);
  await storeOf(target).addApiKey(name, r, hashSecret(key), now);
  return key;
}

export async function removeApiKey(target: CredentialTarget, name: string): Promise<void> {
  return storeOf(target).removeApiKey(name);
}

export async function listApiKeys(target: CredentialTarget): Promise<ApiKeyListing[]> {
  return storeOf(target).listApiKeys();
}

/**
 * The owner of a presented secret, or null. The prefix picks the table: one indexed lookup.
 * `hash` is hashSecret(secret), for a caller that has it already.
 */
export async function lookupSecret(target: CredentialTarget, secret: string, hash?: string): Promise<Principal | null> {
  if (secret.startsWith(GATEWAY_TOKEN_PREFIX)) return storeOf(target).lookup(hash ?? hashSecret(secret), 'gateway');
  if (secret.startsWith(API_KEY_PREFIX)) return storeOf(target).lookup(hash ?? hashSecret(secret), 'key');
  return null;
}
