/**
 * Staging liveness by lock: an ingest process holds `staging/<procId>/owner.lock` for its life, and
 * another adopts the dir's segments once that lock is free (the kernel drops it on kill -9), even
 * when owner.json's pid now names a live process (pid reuse fooled the pid test). While the owner
 * lives, nothing is adopted. A real cloud process, killed with SIGKILL.
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type TestCloud, addGatewayToken, ingestBody, killAllChildClouds, makeReadings, postIngest, queryCloudDb, spawnCloud, startTestCloud,
} from '../support/cloud.js';
import { eventually, tempDir } from '../support/gateway.js';

let clouds: TestCloud[] = [];
const dirs: Array<{ remove: () => void }> = [];

afterEach(async () => {
  for (const c of clouds) await c.close();
  clouds = [];
  await killAllChildClouds();
  for (const d of dirs.splice(0)) d.remove();
});

const stagingDirs = (dataDir: string) => readdirSync(join(dataDir, 'staging')).sort();

test('a live owner\'s staging is left alone; a killed one\'s is adopted even when its pid was reused', async () => {
  const d = tempDir('braid-staging-lock-');
  dirs.push(d);
  const dataDir = d.path;
  const token = await addGatewayToken(dataDir, 'gw-1');
  const a = await spawnCloud(dataDir, { env: { BRAID_INGEST_SEAL_MAX_AGE_MS: '3600000', BRAID_BATCH_CRON: 'null' } });
  expect((await postIngest(a.url, token, ingestBody('gw-1', makeReadings(1, 100)))).status).toBe(200);
  const [aDir] = stagingDirs(dataDir);
  expect(readdirSync(join(dataDir, 'staging', aDir))).toEqual(expect.arrayContaining(['owner.json', 'owner.lock']));

  // A second node on the same data dir, while A lives: A's staging stays A's.
  const b = await startTestCloud(dataDir, { ingest: { sealMaxAgeMs: 3_600_000 } });
  clouds.push(b);
  expect(stagingDirs(dataDir)).toContain(aDir);
  await b.close();
  clouds = [];

  // kill -9 A, then make its owner.json name a live process (this one, with its start time): the pid
  // test alone would call A alive. The free lock says it is dead.
  await a.stop('SIGKILL');
  const ownerFile = join(dataDir, 'staging', aDir, 'owner.json');
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const startTime = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  writeFileSync(ownerFile, JSON.stringify({ ...JSON.parse(readFileSync(ownerFile, 'utf8')), pid: process.pid, startTime }));

  const c = await startTestCloud(dataDir);
  clouds.push(c);
  await eventually(() => !stagingDirs(dataDir).includes(aDir), 10_000, 50);
  await c.server.ingest.sealNow();
  const sealed = await queryCloudDb<{ n: number }>(dataDir, 'SELECT COUNT(*) AS n FROM staged');
  expect(sealed[0].n).toBe(0);
}, 60_000);
