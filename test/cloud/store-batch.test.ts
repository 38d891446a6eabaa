/**
 * The batch store's conformance suite (test/support/store-conformance/batch.ts):
 * SQLite: a temp data dir's cloud.db (openCloudDb), batch.lock and views/manifest.json, each
 * instance on a connection of its own, as `braid batch run` and `braid cloud` are today.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openSqliteBatchStores } from '../../cloud/batch/store.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import type { Db } from '../../shared/sqlite.js';
import { tempDir } from '../support/gateway.js';
import { batchStoreConformance } from '../support/store-conformance/batch.js';

describe('SQLite', () => {
  let dir: { path: string; remove: () => void };
  let seedDb: Db | null = null;
  beforeEach(() => {
    dir = tempDir('braid-store-batch-');
    mkdirSync(join(dir.path, 'views'), { recursive: true });
  });
  afterEach(async () => {
    await seedDb?.close();
    seedDb = null;
    dir.remove();
  });

  batchStoreConformance('SQLite (cloud.db, batch.lock, views/manifest.json)', async () => {
    const s = await openSqliteBatchStores(dir.path);
    return { store: s, close: () => s.close() };
  }, {
    exec: async (sql) => {
      seedDb ??= await openCloudDb(join(dir.path, 'cloud.db'));
      await seedDb.exec(sql);
    },
    // The holder's process is gone: batch.lock names a pid that no longer exists.
    killLockHolder: async () => {
      const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
      await writeFile(join(dir.path, 'batch.lock'), JSON.stringify({ pid: dead, startedAt: 1 }));
    },
  });
});
