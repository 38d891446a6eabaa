/**
 * A temp dir's cloud.db with connections on it: the SQLite twin of postgres.ts's migratedDatabase,
 * what a store's conformance harness starts from on the embedded backend.
 */
import { join } from 'node:path';
import { openCloudDb } from '../../cloud/store/index.js';
import type { Db } from '../../shared/sqlite.js';
import { tempDir } from './gateway.js';

export interface TempCloudDb {
  file: string;
  /** Another connection on the same cloud.db (schema applied): a writer, a reader, or a second process. */
  open: () => Promise<Db>;
  /** Close every connection opened and remove the dir. */
  close: () => Promise<void>;
}

export function tempCloudDb(prefix: string): TempCloudDb {
  const dir = tempDir(prefix);
  const file = join(dir.path, 'cloud.db');
  const dbs: Db[] = [];
  return {
    file,
    open: async () => {
      const db = await openCloudDb(file);
      dbs.push(db);
      return db;
    },
    close: async () => {
      for (const db of dbs.splice(0)) await db.close();
      dir.remove();
    },
  };
}
