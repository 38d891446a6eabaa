/**
 * The device registry (`<data-dir>/registry.db`): which devices may connect, with their secrets
 * stored as scrypt hashes. `braid device add|list|remove|rotate` write it from another process
 * while the gateway runs (WAL + busy_timeout); the gateway reads it on every CONNECT, so a change
 * applies to the next connection, and `watch` tells it which devices changed so their live sessions
 * end too [INV-7].
 */
import { createHash, randomBytes, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ConflictError, NotFoundError, BadRequestError } from '../../shared/errors.js';
import { Db } from '../../shared/sqlite.js';
import { idSchema } from '../config.js';

const scrypt = promisify(scryptCb) as (pw: string | Buffer, salt: Buffer, len: number, opts: { N: number; r: number; p: number; maxmem?: number }) => Promise<Buffer>;

/**
 * scrypt cost. Generated secrets carry 256 bits of entropy, so the hash's cost guards only
 * operator-chosen secrets; N = 2^12 keeps a reconnect storm of 10k devices to seconds of CPU
 * (about 6 ms a verify here) and a cache of verified credentials makes reconnects free.
 */
export const DEFAULT_SCRYPT = { N: 4096, r: 8, p: 1 };
const KEY_LEN = 32;

/** A registered device's credential check: `remembered` when the secret is the one that verified last. */
export interface CredentialLookup {
  version: number;
  remembered: boolean;
  /** Compute the hash (scrypt) and compare; remembers the secret on success. */
  check: () => Promise<boolean>;
}

export interface DeviceRecord {
  id: string;
  createdAt: number;
  updatedAt: number;
}

export async function hashSecret(secret: string, cost = DEFAULT_SCRYPT): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(secret, salt, KEY_LEN, cost);
  return `scrypt$${cost.N}$${cost.r}$${cost.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number);
  const salt = Buffer.from(parts[4], 'base64');
  const expected = Buffer.from(parts[5], 'base64');
  const key = await scrypt(secret, salt, expected.length, { N, r, p });
  return timingSafeEqual(key, expected);
}

/** A new random secret: 32 bytes, base64url. */
export function generateSecret(): string {
  return randomBytes(32).toString('base64url');
}

function checkId(id: string): string {
  const r = idSchema.safeParse(id);
  if (!r.success) throw new BadRequestError(`device id "${id}": ${r.error.issues[0].message}`);
  return id;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest();

export class DeviceRegistry {
  private readonly db: Db;
  /** id -> (record version, digest of the secret that last verified): spares scrypt on reconnect. */
  private readonly verified = new Map<string, { updatedAt: number; digest: Buffer }>();
  private dataVersion = -1;
  /** A write on this very connection: data_version counts only other connections' commits. */
  private dirty = false;
  private watchTimer: NodeJS.Timeout | null = null;
  private polling: Promise<void> | null = null;
  /** Bumped by every scan that found a change. */
  generation = 0;

  private constructor(db: Db) {
    this.db = db;
  }

  static async open(dataDir: string): Promise<DeviceRegistry> {
    // `braid device add` may come first on a new gateway: the data dir as the gateway makes it (0700).
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const db = await Db.open(join(dataDir, 'registry.db'));
    await db.exec(`
      PRAGMA journal_mode = WAL;
      PRAGMA synchronous = FULL;
      PRAGMA busy_timeout = 10000;
      CREATE TABLE IF NOT EXISTS devices (
        id         TEXT PRIMARY KEY,
        secret     TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      ) WITHOUT ROWID;
    `);
    return new DeviceRegistry(db);
  }

  /** Register a device; returns its secret (generated unless given). */
  async add(id: string, secret?: string): Promise<string> {
    checkId(id);
    const s = secret ?? generateSecret();
    if (!s) throw new BadRequestError('secret must not be empty');
    const hash = await hashSecret(s);
    const now = Date.now();
    try {
      await this.db.run('INSERT INTO devices (id, secret, created_at, updated_at) VALUES (?, ?, ?, ?)', [id, hash, now, now]);
      this.dirty = true;
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT') throw new ConflictError(`device "${id}" is already registered (use rotate to change its secret)`, { cause: err });
      throw err;
    }
    return s;
  }

  /** Give a device a new secret; its old one stops working at its next connect. */
  async rotate(id: string, secret?: string): Promise<string> {
    checkId(id);
    const s = secret ?? generateSecret();
    const hash = await hashSecret(s);
    const { changes } = await this.db.run('UPDATE devices SET secret = ?, updated_at = MAX(updated_at + 1, ?) WHERE id = ?', [hash, Date.now(), id]);
    if (!changes) throw new NotFoundError(`device "${id}" is not registered`);
    this.dirty = true;
    return s;
  }

  async remove(id: string): Promise<void> {
    const { changes } = await this.db.run('DELETE FROM devices WHERE id = ?', [id]);
    if (!changes) throw new NotFoundError(`device "${id}" is not registered`);
    this.dirty = true;
  }

  async list(): Promise<DeviceRecord[]> {
    const rows = await this.db.all<{ id: string; created_at: number; updated_at: number }>('SELECT id, created_at, updated_at FROM devices ORDER BY id');
    return rows.map((r) => ({ id: r.id, createdAt: r.created_at, updatedAt: r.updated_at }));
  }

  async count(): Promise<number> {
    const row = await this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM devices');
    return row?.n ?? 0;
  }

  /** Whether `secret` is the device's current secret. Unknown devices are simply false. */
  async verify(id: string, secret: string): Promise<boolean> {
    const c = await this.lookup(id, secret);
    if (!c) return false;
    return c.remembered || c.check();
  }

  /**
   * The first, cheap half of `verify`: one indexed read, and whether the secret is the one that
   * verified last for this row version (no hash). null for an unknown device. The caller decides
   * when the hash (`check`) may run: the broker queues it behind its CONNECT throttle.
   */
  async lookup(id: string, secret: string): Promise<CredentialLookup | null> {
    const row = await this.db.get<{ secret: string; updated_at: number }>('SELECT secret, updated_at FROM devices WHERE id = ?', [id]);
    if (!row) {
      this.verified.delete(id);
      return null;
    }
    const digest = sha256(secret);
    const hit = this.verified.get(id);
    const remembered = !!hit && hit.updatedAt === row.updated_at && timingSafeEqual(hit.digest, digest);
    return {
      version: row.updated_at,
      remembered,
      check: async () => {
        const ok = await verifySecret(secret, row.secret);
        if (ok) this.verified.set(id, { updatedAt: row.updated_at, digest });
        return ok;
      },
    };
  }

  /**
   * Look for changes by other processes (`braid device remove|rotate`) every `intervalMs`:
   * `PRAGMA data_version` moves when another connection commits, so an idle registry costs one
   * pragma a tick. On a move every device's version (`updated_at`, which rises with each rotate)
   * is read again and passed to `onChange`, after the remembered secrets of devices removed or
   * changed are dropped. The whole map, not a diff: a device added and removed between two looks
   * must still end the session it had meanwhile.
   */
  async watch(intervalMs: number, onChange: (versions: ReadonlyMap<string, number>) => void, onError: (err: unknown) => void = () => {}): Promise<void> {
    this.unwatch();
    await this.poll(() => {});
    this.watchTimer = setInterval(() => {
      this.polling ??= this.poll(onChange).catch(onError).finally(() => { this.polling = null; });
    }, intervalMs);
    this.watchTimer.unref();
  }

  unwatch(): void {
    if (this.watchTimer) clearInterval(this.watchTimer);
    this.watchTimer = null;
  }

  private async poll(onChange: (versions: ReadonlyMap<string, number>) => void): Promise<void> {
    const row = await this.db.get<{ data_version: number }>('PRAGMA data_version');
    const dv = row?.data_version ?? 0;
    if (dv === this.dataVersion && !this.dirty) return;
    this.dataVersion = dv;
    this.dirty = false;
    const rows = await this.db.all<{ id: string; updated_at: number }>('SELECT id, updated_at FROM devices');
    const versions = new Map<string, number>();
    for (const r of rows) versions.set(r.id, r.updated_at);
    for (const [id, hit] of this.verified) if (versions.get(id) !== hit.updatedAt) this.verified.delete(id);
    this.generation++;
    onChange(versions);
  }

  async close(): Promise<void> {
    this.unwatch();
    await this.polling;
    return this.db.close();
  }
}
