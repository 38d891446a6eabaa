/**
 * `braid cloud --check-config` with a PostgreSQL store.url: connect, read the schema version and
 * change nothing (no migration: that happens when a command opens the store).
 */
import { redactStoreUrl } from './cloud-store.js';

export interface StoreCheck {
  ok: boolean;
  /** 0 ok; 2 a schema newer than this code; 1 the server out of reach (or refusing us). */
  exitCode: 0 | 1 | 2;
  /** The database's schema version, null when it could not be read. */
  schemaVersion: number | null;
  /** The highest migration this code has. */
  codeVersion: number;
  message: string;
}

export async function checkStore(url: string): Promise<StoreCheck> {
  const { createPgPool, schemaVersion, PG_SCHEMA_VERSION } = await import('./pg/index.js');
  const where = `PostgreSQL ${redactStoreUrl(url)}`;
  const pool = createPgPool({ url, poolMax: 1 });
  try {
    let v: number;
    try {
      v = await schemaVersion(pool);
    } catch (err) {
      return {
        ok: false, exitCode: 1, schemaVersion: null, codeVersion: PG_SCHEMA_VERSION,
        message: `${where} unreachable or refusing the connection: ${(err as Error).message || (err as { code?: string }).code || String(err)}`,
      };
    }
    const base = { schemaVersion: v, codeVersion: PG_SCHEMA_VERSION };
    if (v > PG_SCHEMA_VERSION) {
      return {
        ...base, ok: false, exitCode: 2,
        message: `${where}: error: schema ${v} is newer than this braid knows (version ${PG_SCHEMA_VERSION}); run that version (or newer)`,
      };
    }
    if (v < PG_SCHEMA_VERSION) {
      return { ...base, ok: true, exitCode: 0, message: `${where}: schema ${v}, will be migrated to ${PG_SCHEMA_VERSION} at start (needs migration ${v}→${PG_SCHEMA_VERSION})` };
    }
    return { ...base, ok: true, exitCode: 0, message: `${where}: schema ${v}, ok` };
  } finally {
    await pool.end().catch(() => undefined);
  }
}
