/**
 * Gateway tokens and API keys in cloud.db (`gateways`, `api_keys`): issue, list, remove, and look
 * up by hash. `braid cloud gateway|key ...` write them from another process while the cloud runs
 * (WAL + busy_timeout); the cloud looks every request's secret up (cloud/api/auth.ts, no cache), so a
 * removal or rotation takes effect with its commit.
 *
 * Secrets are 32 random bytes (256 bits), base64url, behind a prefix that says what they are
 * (`bgt_` gateway token, `brk_` API key: a leaked one is recognisable in a log or a repo scan).
 * Only their SHA-256 is stored. A slow password hash (scrypt) guards low-entropy, user-chosen
 * secrets against guessing; against 2^256 possibilities a fast hash is as strong, and being
 * deterministic it lets a request find its row by hash instead of trying every row.
 */
import { createHash, randomBytes } from 'node:crypto';
import { BadRequestError, ConflictError, NotFoundError } from '../../shared/errors.js';
import type { Db } from '../../shared/sqlite.js';

export const GATEWAY_TOKEN_PREFIX = 'bgt_';
export const API_KEY_PREFIX = 'brk_';

export type ApiRole = 'read' | 'admin';
export const API_ROLES: readonly ApiRole[] = ['read', 'admin'];

/** Who a bearer secret belongs to. */
export type Principal =
  | { kind: 'gateway'; gateway: string }
  | { kind: 'key'; name: string; role: ApiRole };

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

const isUnique = (err: unknown) => /UNIQUE constraint failed/.test((err as Error)?.message ?? '');

/** Register a gateway; returns its token (shown once, only its hash is kept). */
export async function addGateway(db: Db, id: string, now = Date.now()): Promise<string> {
  checkGatewayId(id);
  const token = newSecret(GATEWAY_TOKEN_PREFIX);
  try {
    await db.run('INSERT INTO gateways (id, token_hash, created_at) VALUES (?, ?, ?)', [id, hashSecret(token), now]);
  } catch (err) {
    if (isUnique(err)) throw new ConflictError(`gateway ${id} is already registered (use rotate for a new token)`, { cause: err });
    throw err;
  }
  return token;
}

/** Give a gateway a new token; the old one stops working with this commit. */
export async function rotateGateway(db: Db, id: string): Promise<string> {
  const token = newSecret(GATEWAY_TOKEN_PREFIX);
  const r = await db.run('UPDATE gateways SET token_hash = ? WHERE id = ?', [hashSecret(token), id]);
  if (r.changes === 0) throw new NotFoundError(`gateway ${id} is not registered`);
  return token;
}

export async function removeGateway(db: Db, id: string): Promise<void> {
  const r = await db.run('DELETE FROM gateways WHERE id = ?', [id]);
  if (r.changes === 0) throw new NotFoundError(`gateway ${id} is not registered`);
}

export async function listGateways(db: Db): Promise<Array<{ id: string; createdAt: number }>> {
  return db.all('SELECT id, created_at AS createdAt FROM gateways ORDER BY id');
}

/** Issue an API key; returns it (shown once). */
export async function addApiKey(db: Db, name: string, role: string, now = Date.now()): Promise<string> {
  checkKeyName(name);
  const r = checkRole(role);
  const key = newSecret(API_KEY_PREFIX);
  try {
    await db.run('INSERT INTO api_keys (name, role, key_hash, created_at) VALUES (?, ?, ?, ?)', [name, r, hashSecret(key), now]);
  } catch (err) {
    if (isUnique(err)) throw new ConflictError(`an API key named ${name} exists already`, { cause: err });
    throw err;
  }
  return key;
}

export async function removeApiKey(db: Db, name: string): Promise<void> {
  const r = await db.run('DELETE FROM api_keys WHERE name = ?', [name]);
  if (r.changes === 0) throw new NotFoundError(`no API key named ${name}`);
}

export async function listApiKeys(db: Db): Promise<Array<{ name: string; role: ApiRole; createdAt: number }>> {
  return db.all('SELECT name, role, created_at AS createdAt FROM api_keys ORDER BY name');
}

/** The owner of a presented secret, or null. The prefix picks the table: one indexed lookup. */
export async function lookupSecret(db: Db, secret: string): Promise<Principal | null> {
  const hash = hashSecret(secret);
  if (secret.startsWith(GATEWAY_TOKEN_PREFIX)) {
    const row = await db.get<{ id: string }>('SELECT id FROM gateways WHERE token_hash = ?', [hash]);
    return row ? { kind: 'gateway', gateway: row.id } : null;
  }
  if (secret.startsWith(API_KEY_PREFIX)) {
    const row = await db.get<{ name: string; role: ApiRole }>('SELECT name, role FROM api_keys WHERE key_hash = ?', [hash]);
    return row ? { kind: 'key', name: row.name, role: row.role } : null;
  }
  return null;
}
