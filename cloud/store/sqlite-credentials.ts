/**
 * CredentialStore on cloud.db (`gateways`, `api_keys`). `braid cloud gateway|key ...` write from
 * another process while the cloud runs (WAL + busy_timeout); the cloud looks every request up on a
 * connection of its own (cloud/server.ts), so a removal or rotation takes effect with its commit.
 */
import type { Db } from '../../shared/sqlite.js';
import {
  type ApiKeyListing, type ApiRole, type CredentialKind, type CredentialStore, type GatewayListing, type Principal,
  apiKeyTaken, apiKeyUnknown, gatewayTaken, gatewayUnknown,
} from './credential-store.js';

const isUnique = (err: unknown) => /UNIQUE constraint failed/.test((err as Error)?.message ?? '');

export class SqliteCredentialStore implements CredentialStore {
  private readonly db: Db;

  /** `db` stays the caller's: this store never closes it. */
  constructor(db: Db) {
    this.db = db;
  }

  async addGateway(id: string, tokenHash: string, now: number): Promise<void> {
    try {
      await this.db.run('INSERT INTO gateways (id, token_hash, created_at) VALUES (?, ?, ?)', [id, tokenHash, now]);
    } catch (err) {
      if (isUnique(err)) throw gatewayTaken(id, err);
      throw err;
    }
  }

  async rotateGateway(id: string, tokenHash: string): Promise<void> {
    const r = await this.db.run('UPDATE gateways SET token_hash = ? WHERE id = ?', [tokenHash, id]);
    if (r.changes === 0) throw gatewayUnknown(id);
  }

  async removeGateway(id: string): Promise<void> {
    const r = await this.db.run('DELETE FROM gateways WHERE id = ?', [id]);
    if (r.changes === 0) throw gatewayUnknown(id);
  }

  listGateways(): Promise<GatewayListing[]> {
    return this.db.all('SELECT id, created_at AS createdAt FROM gateways ORDER BY id');
  }

  async addApiKey(name: string, role: ApiRole, keyHash: string, now: number): Promise<void> {
    try {
      await this.db.run('INSERT INTO api_keys (name, role, key_hash, created_at) VALUES (?, ?, ?, ?)', [name, role, keyHash, now]);
    } catch (err) {
      if (isUnique(err)) throw apiKeyTaken(name, err);
      throw err;
    }
  }

  async removeApiKey(name: string): Promise<void> {
    const r = await this.db.run('DELETE FROM api_keys WHERE name = ?', [name]);
    if (r.changes === 0) throw apiKeyUnknown(name);
  }

  listApiKeys(): Promise<ApiKeyListing[]> {
    return this.db.all('SELECT name, role, created_at AS createdAt FROM api_keys ORDER BY name');
  }

  async lookup(hash: string, kind: CredentialKind): Promise<Principal | null> {
    if (kind === 'gateway') {
      const row = await this.db.get<{ id: string }>('SELECT id FROM gateways WHERE token_hash = ?', [hash]);
      return row ? { kind: 'gateway', gateway: row.id } : null;
    }
    const row = await this.db.get<{ name: string; role: ApiRole }>('SELECT name, role FROM api_keys WHERE key_hash = ?', [hash]);
    return row ? { kind: 'key', name: row.name, role: row.role } : null;
  }
}
