/**
 * Test support: a gateway.db of its own for each test, in a temp dir, opened as the speed pusher
 * reads it: the writer, a reader connection, and the push's index on epoch.
 */
import { join } from 'node:path';
import { ensurePushIndex } from '../../edge/speedpush/page.js';
import { openGatewayDb, openGatewayReader } from '../../edge/store/schema.js';
import { type Db, WriteQueue } from '../../shared/sqlite.js';
import { tempDir } from './gateway.js';

export interface GatewayDbFixture {
  /** The writer connection. */
  db: Db;
  reader: Db;
}

/**
 * Registers a beforeEach that opens a fresh gateway.db in a temp dir named `prefix`… and an
 * afterEach that closes both connections and removes the dir; read `db` and `reader` inside a test.
 */
export function gatewayDbEach(prefix: string): GatewayDbFixture {
  let dir: { path: string; remove: () => void };
  const fx = {} as GatewayDbFixture;
  beforeEach(async () => {
    dir = tempDir(prefix);
    fx.db = await openGatewayDb(join(dir.path, 'gateway.db'));
    fx.reader = await openGatewayReader(join(dir.path, 'gateway.db'));
    await ensurePushIndex(new WriteQueue(fx.db));
  });
  afterEach(async () => {
    await fx.reader.close();
    await fx.db.close();
    dir.remove();
  });
  return fx;
}
