/**
 * Two ingest processes on one data dir (docs/cloud-storage.md, "Scaling out ingest"): the same
 * batch sent to both at once is stored once between them [INV-2], different batches are all
 * stored, seals run side by side, and every master file stays readable.
 */
import { join } from 'node:path';
import {
  type Reading, addGatewayToken, ingestBody, killAllChildClouds, listFiles, makeReadings, postIngest,
  queryCloudDb, readMaster, spawnCloud, startTestCloud,
} from '../support/cloud.js';
import { tempDir } from '../support/gateway.js';

let dir: { path: string; remove: () => void };
beforeEach(() => { dir = tempDir('braid-concurrent-'); });
afterEach(async () => {
  await killAllChildClouds();
  dir.remove();
});

interface Target { url: string }

/** Post until 2xx; returns the answer body. */
async function send(t: Target, token: string, g: string, readings: Reading[]): Promise<{ stored: number; duplicates: number; ackSeq: number }> {
  for (;;) {
    const a = await postIngest(t.url, token, ingestBody(g, readings));
    if (a.status === 200) return a.body as { stored: number; duplicates: number; ackSeq: number };
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function exercise(a: Target, b: Target, tokens: Map<string, string>, n: number): Promise<{ storedSame: number; duplicatesSame: number }> {
  const BATCH = 150;
  let storedSame = 0;
  let duplicatesSame = 0;
  const same = async () => {
    for (let from = 1; from <= n; from += BATCH) {
      const r = makeReadings(from, Math.min(n, from + BATCH - 1), { days: 2 });
      const answers = await Promise.all([send(a, tokens.get('gw-same')!, 'gw-same', r), send(b, tokens.get('gw-same')!, 'gw-same', r)]);
      for (const x of answers) {
        expect(x.ackSeq).toBe(r[r.length - 1][0]);
        storedSame += x.stored;
        duplicatesSame += x.duplicates;
      }
    }
  };
  const only = async (t: Target, g: string) => {
    for (let from = 1; from <= n; from += BATCH) await send(t, tokens.get(g)!, g, makeReadings(from, Math.min(n, from + BATCH - 1)));
  };
  // Overlapping batches to a random side, with some resent to the other.
  const mixed = async () => {
    for (let from = 1; from <= n; from += 100) {
      const r = makeReadings(Math.max(1, from - 50), Math.min(n, from + 99));
      const t = Math.random() < 0.5 ? a : b;
      await send(t, tokens.get('gw-mixed')!, 'gw-mixed', r);
      if (Math.random() < 0.3) await send(t === a ? b : a, tokens.get('gw-mixed')!, 'gw-mixed', r);
    }
  };
  await Promise.all([same(), only(a, 'gw-a'), only(b, 'gw-b'), mixed()]);
  return { storedSame, duplicatesSame };
}

async function check(n: number): Promise<void> {
  const rows = await readMaster(dir.path);
  const want = Array.from({ length: n }, (_, i) => i + 1);
  for (const g of ['gw-same', 'gw-a', 'gw-b', 'gw-mixed']) {
    expect({ g, seqs: rows.filter((r) => r.gateway === g).map((r) => r.seq) }).toEqual({ g, seqs: want });
  }
  const sealed = await queryCloudDb(dir.path, 'SELECT gateway, from_seq, to_seq FROM sealed ORDER BY gateway');
  expect(sealed).toEqual(await queryCloudDb(dir.path, 'SELECT gateway, from_seq, to_seq FROM received ORDER BY gateway'));
  expect(await queryCloudDb(dir.path, 'SELECT * FROM staged')).toEqual([]);
  expect(listFiles(join(dir.path, 'staging')).filter((f) => f.endsWith('.ndjson'))).toEqual([]);
  const files = await queryCloudDb<{ n: number; rows: number }>(dir.path, 'SELECT COUNT(*) AS n, SUM(rows) AS rows FROM files');
  expect(files[0]).toEqual({ n: listFiles(join(dir.path, 'master')).length, rows: 4 * n });
}

async function tokensFor(): Promise<Map<string, string>> {
  const tokens = new Map<string, string>();
  for (const g of ['gw-same', 'gw-a', 'gw-b', 'gw-mixed']) tokens.set(g, await addGatewayToken(dir.path, g));
  return tokens;
}

test('[INV-2] two CloudServers on one data dir: each seq stored exactly once, all files readable', async () => {
  const tokens = await tokensFor();
  const opts = { ingest: { sealMaxReadings: 700, groupCommitMs: 1 } };
  const a = await startTestCloud(dir.path, opts);
  const b = await startTestCloud(dir.path, opts);
  try {
    const n = 3000;
    const { storedSame, duplicatesSame } = await exercise(a, b, tokens, n);
    expect(storedSame).toBe(n);
    expect(duplicatesSame).toBe(n);
    await Promise.all([a.server.ingest.sealNow(), b.server.ingest.sealNow()]);
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
  await check(3000);
}, 60_000);

test('[INV-2] two cloud processes on one data dir: each seq stored exactly once', async () => {
  const tokens = await tokensFor();
  const env = { BRAID_INGEST_SEAL_MAX_READINGS: '900', BRAID_INGEST_SEAL_MAX_AGE_MS: '500' };
  const [a, b] = await Promise.all([spawnCloud(dir.path, { env }), spawnCloud(dir.path, { env })]);
  const n = 2000;
  const { storedSame } = await exercise(a, b, tokens, n);
  expect(storedSame).toBe(n);
  expect(await Promise.all([a.stop('SIGTERM'), b.stop('SIGTERM')])).toEqual([{ code: 0, signal: null }, { code: 0, signal: null }]);
  await check(n);
}, 60_000);
