/**
 * The cloud's files: its own state for its user only (cloud.db and its WAL 0600, staging/ 0700), the
 * data dir 0750 so the operator's group can read master/ and views/ with DuckDB or Spark, others nothing.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { addGatewayToken, ingestBody, makeReadings, postIngest, startTestCloud, type TestCloud } from '../support/cloud.js';
import { tempDir } from '../support/gateway.js';

let cloud: TestCloud | null = null;
let dir: { path: string; remove: () => void } | null = null;

afterEach(async () => {
  await cloud?.close();
  cloud = null;
  dir?.remove();
  dir = null;
});

const mode = (p: string) => (statSync(p).mode & 0o777).toString(8);

test('cloud.db and its WAL are 0600, staging/ 0700, the data dir 0750', async () => {
  dir = tempDir('braid-cloud-modes-');
  const dataDir = join(dir.path, 'cloud');
  cloud = await startTestCloud(dataDir);
  const token = await addGatewayToken(dataDir, 'gw-1');
  const r = await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(1, 10)));
  expect(r.status).toBe(200);

  expect(mode(dataDir)).toBe('750');
  for (const f of readdirSync(dataDir).filter((n) => n.startsWith('cloud.db'))) expect([f, mode(join(dataDir, f))]).toEqual([f, '600']);
  expect(readdirSync(dataDir)).toEqual(expect.arrayContaining(['cloud.db', 'cloud.db-wal', 'cloud.db-shm', 'staging']));
  expect(mode(join(dataDir, 'staging'))).toBe('700');
  for (const p of readdirSync(join(dataDir, 'staging'))) expect([p, mode(join(dataDir, 'staging', p))]).toEqual([p, '700']);
});
