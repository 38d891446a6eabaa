/**
 * `braid cloud` and `braid batch run` check their config as --check-config does before opening
 * anything: a bad batch.cron used to surface only when the scheduler started, after cloud.db was
 * opened. Every problem in one message, exit 2, the data dir not created. Real child processes.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { runBraid as braid } from '../support/cli.js';
import { tempDir } from '../support/gateway.js';

const dirs: Array<{ remove: () => void }> = [];

afterEach(() => { for (const d of dirs.splice(0)) d.remove(); });


test.each([
  ['cloud', ['cloud', '--http-port', '0']],
  ['batch run', ['batch', 'run']],
])('braid %s: a bad batch.cron and a bad query.viewStore -> exit 2, one message naming both, nothing created', async (_name, args) => {
  const d = tempDir('braid-cloud-cfg-');
  dirs.push(d);
  const dataDir = join(d.path, 'cloud');
  // query.viewStore=influx without influx.url is a lint error of another key than the cron's.
  const r = await braid([...args, '--data-dir', dataDir], { BRAID_BATCH_CRON: 'at two', BRAID_QUERY_VIEW_STORE: 'influx' });
  expect(r.code).toBe(2);
  const lines = r.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^braid: 2 config errors: .*"batch\.cron".*"query\.viewStore".*\[BRAID_ERR_CONFIG_INVALID\]$/);
  expect(existsSync(dataDir)).toBe(false);

  // A schema error and a lint error of another key are reported together as well.
  const r2 = await braid([...args, '--data-dir', dataDir], { BRAID_BATCH_CRON: 'at two', BRAID_INGEST_MAX_BODY_BYTES: 'big' });
  expect(r2.code).toBe(2);
  expect(r2.stderr).toMatch(/"ingest\.maxBodyBytes".*"batch\.cron"/);
  expect(existsSync(dataDir)).toBe(false);
}, 60_000);
