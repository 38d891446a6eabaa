/**
 * The cloud's whole transactional state behind one object (docs/cluster-store.md): the sub-stores
 * of one backend, `sqlite` (the data dir's cloud.db, opened as cloud/server.ts opens it) or a
 * `postgres://` URL (one pool, migrated at open under the migration lock; a schema newer than this
 * code is refused with StoreSchemaNewerError naming both versions).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigInvalidError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { type Db, WriteQueue } from '../../shared/sqlite.js';
import { type BatchStore, type ViewPointer, SqliteBatchStore, SqliteViewPointer } from '../batch/store.js';
import { SqliteIngestStore } from '../ingest/sqlite-store.js';
import { SqliteSpeedStore } from '../speed/sqlite-store.js';
import { type AlertStore, SqliteAlertStore } from './alerts.js';
import type { CredentialStore } from './credential-store.js';
import type { IngestStore } from './ingest.js';
import type { NodeRegistry } from './nodes.js';
import { openCloudDb } from './schema.js';
import type { RegistryStore, SpeedStore } from './speed.js';
import { SqliteCredentialStore } from './sqlite-credentials.js';

export type StoreKind = 'sqlite' | 'postgres';

export interface CloudStore {
  kind: StoreKind;
  credentials: CredentialStore;
  /** The speed store; the same object is the registry (one backend's tables). */
  speed: SpeedStore & RegistryStore;
  registry: RegistryStore;
  batch: BatchStore;
  views: ViewPointer;
  ingest: IngestStore;
  /** Alert rules, states and history, and the one-evaluator lock (cloud/store/alerts.ts). */
  alerts: AlertStore;
  /** Staging leases across nodes (PostgreSQL); null on SQLite, where an fcntl lock owns a staging dir. */
  nodes: NodeRegistry | null;
  /** SQLite: 0 (cloud.db's schema is created in place); PostgreSQL: the highest migration applied. */
  schemaVersion(): Promise<number>;
  /** One round trip to the store (health, braid_store_up); throws when it is out of reach. */
  ping(): Promise<void>;
  /** SQLite only: cloud.db's writer queue and reader (tests, tools that read cloud.db directly). */
  sqlite?: { writes: WriteQueue; reader: Db };
  close(): Promise<void>;
}

export interface OpenCloudStoreOptions {
  logger?: Logger;
  now?: () => number;
  /** PostgreSQL: connections at most in the pool. */
  poolMax?: number;
  /** PostgreSQL: the server-side statement_timeout, ms (0: none). */
  statementTimeoutMs?: number;
}

/** `sqlite`, or a `postgres://` / `postgresql://` URL; anything else throws a ConfigInvalidError naming store.url. */
export function storeKind(url: string): StoreKind {
  if (url === 'sqlite') return 'sqlite';
  if (/^postgres(ql)?:\/\//i.test(url)) {
    try {
      new URL(url); // eslint-disable-line no-new
      return 'postgres';
    } catch { /* below */ }
  }
  throw new ConfigInvalidError(`config key "store.url": must be "sqlite" or a postgres://user:password@host:port/database URL, got "${redactStoreUrl(url)}"`);
}

/** The URL with its password as [set], for messages and logs. */
export function redactStoreUrl(url: string): string {
  try {
    const u = new URL(url);
    if (!u.password) return url;
    u.password = '[set]';
    return u.toString();
  } catch {
    return url.replace(/:\/\/([^:@/]*):[^@/]*@/, '://$1:[set]@');
  }
}

export async function openCloudStore(url: string, dataDir: string, options: OpenCloudStoreOptions = {}): Promise<CloudStore> {
  const now = options.now ?? Date.now;
  if (storeKind(url) === 'sqlite') {
    mkdirSync(dataDir, { recursive: true, mode: 0o750 }); // as braid cloud makes it (cloud/server.ts)
    const dbFile = join(dataDir, 'cloud.db');
    // As cloud/server.ts: a writer behind a WriteQueue, a reader, a connection for the auth lookups;
    // and as a batch run: a connection of its own for the batch state (never inside a queued transaction).
    const opened: Db[] = [];
    try {
      const writer = await openCloudDb(dbFile); opened.push(writer);
      const reader = await openCloudDb(dbFile); opened.push(reader);
      const auth = await openCloudDb(dbFile); opened.push(auth);
      const batchDb = await openCloudDb(dbFile); opened.push(batchDb);
      const writes = new WriteQueue(writer);
      const speed = new SqliteSpeedStore(writes, reader);
      return {
        kind: 'sqlite',
        credentials: new SqliteCredentialStore(auth),
        speed,
        registry: speed,
        batch: new SqliteBatchStore(batchDb, join(dataDir, 'batch.lock'), now),
        views: new SqliteViewPointer(batchDb, join(dataDir, 'views')),
        ingest: new SqliteIngestStore(writes),
        alerts: new SqliteAlertStore(writes, reader, dbFile),
        nodes: null,
        schemaVersion: async () => 0,
        ping: async () => { await reader.get('SELECT 1'); },
        sqlite: { writes, reader },
        close: async () => {
          await writes.drain();
          for (const db of opened.reverse()) await db.close();
        },
      };
    } catch (err) {
      for (const db of opened.reverse()) await db.close().catch(() => undefined);
      throw err;
    }
  }
  const { createPgPool, migrate, schemaVersion, PgBatchStore, PgViewPointer, PgCredentialStore, PgSpeedStore, PgIngestStore, PgNodeRegistry, PgAlertStore } = await import('./pg/index.js');
  const { asStoreError } = await import('./pg/unavailable.js');
  const pool = createPgPool({
    url, ...(options.poolMax ? { poolMax: options.poolMax } : {}),
    ...(options.statementTimeoutMs !== undefined ? { statementTimeoutMs: options.statementTimeoutMs } : {}),
  }, options.logger);
  try {
    await migrate(pool, { now });
  } catch (err) {
    await pool.end().catch(() => undefined);
    // A server out of reach: the retriable StoreUnavailableError (a message, not a stack), naming where.
    throw asStoreError(err, `migrate at open of ${redactStoreUrl(url)}`);
  }
  const speed = new PgSpeedStore(pool);
  const views = new PgViewPointer({ pool, url, viewsDir: join(dataDir, 'views'), logger: options.logger });
  return {
    kind: 'postgres',
    credentials: new PgCredentialStore(pool),
    speed,
    registry: speed,
    batch: new PgBatchStore({ pool, url, logger: options.logger }),
    views,
    ingest: new PgIngestStore(pool),
    alerts: new PgAlertStore(pool),
    nodes: new PgNodeRegistry(pool),
    schemaVersion: () => schemaVersion(pool),
    ping: async () => {
      try {
        await pool.query('SELECT 1');
      } catch (err) {
        throw asStoreError(err, 'ping');
      }
    },
    close: async () => {
      views.stop(); // its LISTEN connection and poll, if onPublished started them
      await pool.end();
    },
  };
}
