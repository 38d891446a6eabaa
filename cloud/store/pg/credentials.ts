/**
 * CredentialStore on PostgreSQL (migration 1's `gateways` and `api_keys`, the same keys as cloud.db).
 * Each method is one autocommitted statement on a pooled connection, so READ COMMITTED gives every
 * lookup the last committed rows: a token rotated or removed on any node is refused by the next
 * request on every node [INV-7]. Two nodes adding one id race on the primary key: one row, one
 * ConflictError (unique_violation, 23505). A database out of reach is a StoreUnavailableError
 * (503): the auth hook answers it with Retry-After, so a gateway resends or fails over.
 */
import type pg from 'pg';
import {
  type ApiKeyListing, type ApiRole, type CredentialKind, type CredentialStore, type GatewayListing, type Principal,
  apiKeyTaken, apiKeyUnknown, gatewayTaken, gatewayUnknown,
} from '../credential-store.js';
import { asStoreError } from './unavailable.js';

const isUnique = (err: unknown) => (err as { code?: string } | undefined)?.code === '23505';

/** What the store needs of a pool (or of one client). */
export type PgQueryable = Pick<pg.Pool, 'query'>;

export class PgCredentialStore implements CredentialStore {
  private readonly db: PgQueryable;

  /** `db` stays the caller's: this store never ends it. */
  constructor(db: PgQueryable) {
    this.db = db;
  }

  private async query<R extends pg.QueryResultRow = pg.QueryResultRow>(what: string, sql: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    try {
      return await this.db.query<R>(sql, params);
    } catch (err) {
      throw asStoreError(err, what);
    }
  }

  async addGateway(id: string, tokenHash: string, now: number): Promise<void> {
    try {
      await this.query('addGateway', 'INSERT INTO gateways (id, token_hash, created_at) VALUES ($1, $2, $3)', [id, tokenHash, now]);
    } catch (err) {
      if (isUnique(err)) throw gatewayTaken(id, err);
      throw err;
    }
  }

  async rotateGateway(id: string, tokenHash: string): Promise<void> {
    const r = await this.query('rotateGateway', 'UPDATE gateways SET token_hash = $1 WHERE id = $2', [tokenHash, id]);
    if (r.rowCount === 0) throw gatewayUnknown(id);
  }

  async removeGateway(id: string): Promise<void> {
    const r = await this.query('removeGateway', 'DELETE FROM gateways WHERE id = $1', [id]);
    if (r.rowCount === 0) throw gatewayUnknown(id);
  }

  async listGateways(): Promise<GatewayListing[]> {
    // COLLATE "C": byte order, as SQLite's BINARY; a database's own collation (en_US...) would sort
    // 'a' before 'B' and the two backends would list differently.
    const r = await this.query<{ id: string; created_at: number | string }>('listGateways', 'SELECT id, created_at FROM gateways ORDER BY id COLLATE "C"');
    return r.rows.map((row) => ({ id: row.id, createdAt: Number(row.created_at) }));
  }

  async addApiKey(name: string, role: ApiRole, keyHash: string, now: number): Promise<void> {
    try {
      await this.query('addApiKey', 'INSERT INTO api_keys (name, role, key_hash, created_at) VALUES ($1, $2, $3, $4)', [name, role, keyHash, now]);
    } catch (err) {
      if (isUnique(err)) throw apiKeyTaken(name, err);
      throw err;
    }
  }

  async removeApiKey(name: string): Promise<void> {
    const r = await this.query('removeApiKey', 'DELETE FROM api_keys WHERE name = $1', [name]);
    if (r.rowCount === 0) throw apiKeyUnknown(name);
  }

  async listApiKeys(): Promise<ApiKeyListing[]> {
    const r = await this.query<{ name: string; role: ApiRole; created_at: number | string }>('listApiKeys',
      'SELECT name, role, created_at FROM api_keys ORDER BY name COLLATE "C"');
    return r.rows.map((row) => ({ name: row.name, role: row.role, createdAt: Number(row.created_at) }));
  }

  async lookup(hash: string, kind: CredentialKind): Promise<Principal | null> {
    if (kind === 'gateway') {
      const r = await this.query<{ id: string }>('lookup', 'SELECT id FROM gateways WHERE token_hash = $1', [hash]);
      return r.rows.length > 0 ? { kind: 'gateway', gateway: r.rows[0].id } : null;
    }
    const r = await this.query<{ name: string; role: ApiRole }>('lookup', 'SELECT name, role FROM api_keys WHERE key_hash = $1', [hash]);
    return r.rows.length > 0 ? { kind: 'key', name: r.rows[0].name, role: r.rows[0].role } : null;
  }
}
