/**
 * The forwarder's batch never skips seqs without their gap record, even when the disk budget drops
 * rows between its reads: readBatch reads the unsent gaps, then the rows, on a connection without
 * a snapshot, so a drop committed in between leaves rows missing that the first read of gaps did
 * not name. The cloud refuses such a batch (409 BRAID_ERR_INGEST_SEQ_SKIP); readBatch reads the
 * gaps again when its rows have a hole. Real gateway.db, the real budget drop (dropOldest) run by
 * a second connection at exactly that moment, and a real cloud.
 */
import { type IngestBody, ingestBody, readBatch } from '../../edge/forwarder/batch.js';
import { dropOldest } from '../../edge/outbox/budget.js';
import { outboxRowBytes } from '../../edge/store/schema.js';
import type { Db } from '../../shared/sqlite.js';
import { type TestCloud, addGatewayToken, postIngest, queryCloudDb, startTestCloud } from '../support/cloud.js';
import { type GatewayFixture, insertGap, insertReadings, openGatewayFixture } from '../support/forwarder-fixtures.js';
import { tempDir } from '../support/gateway.js';

let fx: GatewayFixture;
let cloudDir: { path: string; remove: () => void };
let cloud: TestCloud;
let token: string;

beforeEach(async () => {
  fx = await openGatewayFixture();
  cloudDir = tempDir('braid-gap-race-');
  token = await addGatewayToken(cloudDir.path, 'gw-1');
  cloud = await startTestCloud(cloudDir.path);
});

afterEach(async () => {
  await cloud.close();
  cloudDir.remove();
  await fx.close();
});

/**
 * The gateway's reader, with one real write slipped in: the first time the outbox rows are about to
 * be read, the budget drops the `n` oldest unsent rows (its own transaction, on the writer).
 */
function readerDroppingBeforeRows(reader: Db, n: number, afterSeq = 0): Db {
  let dropped = false;
  return new Proxy(reader, {
    get(target, key) {
      if (key === 'all') {
        return async (sql: string, params?: unknown[]) => {
          if (!dropped && sql.includes('FROM outbox')) {
            dropped = true;
            const gap = await fx.writes.tx((db) => dropOldest(db, afterSeq, n * outboxRowBytes('dev-1', 'temp'), Date.now()));
            expect(gap).toMatchObject({ fromSeq: afterSeq + 1, toSeq: afterSeq + n, count: n });
          }
          return target.all(sql, params);
        };
      }
      const v = Reflect.get(target, key) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

test('a budget drop between the reads of gaps and rows: the batch carries the new gap record, and the cloud takes it', async () => {
  await insertReadings(fx, 1, 300);
  const batch = await readBatch(readerDroppingBeforeRows(fx.reader, 100), 0, 5000);
  expect(batch).not.toBeNull();
  expect({ firstSeq: batch!.firstSeq, lastSeq: batch!.lastSeq, first: batch!.readings[0][0], n: batch!.readings.length })
    .toEqual({ firstSeq: 1, lastSeq: 300, first: 101, n: 200 });
  expect(batch!.gaps).toMatchObject([{ reason: 'disk_budget', fromSeq: 1, toSeq: 100, count: 100, devices: ['dev-1'] }]);

  const body: IngestBody = ingestBody(batch!, 'gw-1', Date.now());
  const a = await postIngest(cloud.url, token, body);
  expect({ status: a.status, body: a.body }).toEqual({ status: 200, body: { ackSeq: 300, stored: 200, duplicates: 0 } });
  expect(await queryCloudDb(cloudDir.path, 'SELECT from_seq, to_seq FROM gaps')).toEqual([{ from_seq: 1, to_seq: 100 }]);
});

test('the same with no rows left: a gap-only batch names the rows dropped below an earlier gap', async () => {
  // The cloud holds 1..100; 201..300 were dropped while 101..200 were in flight, and that request failed.
  expect((await postIngest(cloud.url, token, ingestBody({ firstSeq: 1, lastSeq: 100, readings: Array.from({ length: 100 }, (_, i) => [i + 1, 1, 'dev-1', 'temp', 1_732_406_400_000 + i, i] as [number, number, string, string, number, number]), epochs: [], gaps: [] }, 'gw-1', Date.now()))).status).toBe(200);
  await insertReadings(fx, 101, 100);
  await insertGap(fx, 201, 300, ['dev-1']);
  const batch = await readBatch(readerDroppingBeforeRows(fx.reader, 100, 100), 100, 5000);
  expect({ firstSeq: batch!.firstSeq, lastSeq: batch!.lastSeq, readings: batch!.readings }).toEqual({ firstSeq: 301, lastSeq: 300, readings: [] });
  expect(batch!.gaps.map((g) => [g.fromSeq, g.toSeq]).sort((a, b) => a[0] - b[0])).toEqual([[101, 200], [201, 300]]);
  expect((await postIngest(cloud.url, token, ingestBody(batch!, 'gw-1', Date.now()))).body).toEqual({ ackSeq: 300, stored: 0, duplicates: 0 });
});

test('without the drop, a contiguous batch reads the gaps once and carries none', async () => {
  await insertReadings(fx, 1, 50);
  const batch = await readBatch(fx.reader, 0, 5000);
  expect({ firstSeq: batch!.firstSeq, lastSeq: batch!.lastSeq, gaps: batch!.gaps }).toEqual({ firstSeq: 1, lastSeq: 50, gaps: [] });
  expect((await postIngest(cloud.url, token, ingestBody(batch!, 'gw-1', Date.now()))).body).toEqual({ ackSeq: 50, stored: 50, duplicates: 0 });
});
