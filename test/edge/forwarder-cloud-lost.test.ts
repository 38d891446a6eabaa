/**
 * The forwarder on a seq-skip refusal (409 BRAID_ERR_INGEST_SEQ_SKIP): the seqs the cloud misses at
 * or below the gateway's acknowledged seq (it acknowledged them, then lost them: a restore) become
 * a cloud_lost gap record (its own acknowledged gap records among them go again as they were) and
 * the next batch is taken; it never claims a seq it still holds
 * (above acked_seq), and a refusal naming only those is an error that backs off, recording nothing.
 * Real gateway.db; a real cloud, or a scripted real HTTP server where the cloud's answer must be
 * one the real cloud does not give.
 */
import { setMeta } from '../../edge/store/schema.js';
import { ACKED_SEQ_KEY, type IngestBody } from '../../edge/forwarder/batch.js';
import { type TestCloud, addGatewayToken, ingestBody, makeReadings, postIngest, queryCloudDb, startTestCloud } from '../support/cloud.js';
import {
  captureLogger, decodeIngest, insertEpoch, insertGap, insertReadings, metricValue, outboxSeqs, until, useForwarderHarness,
} from '../support/forwarder-fixtures.js';
import { answer } from '../support/http-script.js';
import { tempDir } from '../support/gateway.js';

const h = useForwarderHarness();

/** The gateway after a cloud acknowledged everything up to `acked` (its rows deleted), with rows acked+1..acked+n still to send. */
async function gatewayAckedUpTo(acked: number, n: number): Promise<void> {
  await h.fx.writes.run((db) => setMeta(db, ACKED_SEQ_KEY, acked));
  await insertReadings(h.fx, acked + 1, n);
}

const seqSkip = (heldSeq: number, missing: Array<[number, number]>) => answer.status(409, {
  code: 'BRAID_ERR_INGEST_SEQ_SKIP', message: 'seq skip: ...', heldSeq,
  missing: missing.map(([fromSeq, toSeq]) => ({ fromSeq, toSeq })), missingCount: missing.reduce((n, [a, b]) => n + b - a + 1, 0),
});

const cloudLostGaps = (b: IngestBody) => b.gaps.filter((g) => g.reason === 'cloud_lost');

describe('against a real cloud that lost seqs it had acknowledged', () => {
  let dir: { path: string; remove: () => void };
  let cloud: TestCloud;
  let token: string;

  beforeEach(async () => {
    dir = tempDir('braid-cloud-lost-');
    token = await addGatewayToken(dir.path, 'gw-1');
    cloud = await startTestCloud(dir.path);
  });
  afterEach(async () => {
    await cloud.close();
    dir.remove();
  });

  test('the cloud holds 1..40, the gateway had 1..100 acknowledged: 41..100 becomes a cloud_lost gap record, 101..150 are stored, epochs reported again', async () => {
    // The cloud as restored: it has seqs 1..40 and epoch 1 (1..40); it had acknowledged up to 100 (epoch 2, 41..100) before.
    expect((await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(1, 40), { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 40 }] }))).status).toBe(200);
    await gatewayAckedUpTo(100, 50);
    await insertEpoch(h.fx, 1, 1, 40, true);
    await insertEpoch(h.fx, 2, 41, 100, true);
    await insertEpoch(h.fx, 3, 101, 150, true);
    await h.fx.writes.run((db) => db.run('UPDATE epochs SET reported = 1 WHERE epoch <= 2'));

    const { logger, lines } = captureLogger();
    const { fwd, registry } = h.make({ url: cloud.url, token }, logger);
    await fwd.start();
    await until(async () => (await outboxSeqs(h.fx)).length === 0, 10_000, 'the outbox to drain');

    expect(await queryCloudDb(dir.path, 'SELECT reason, from_seq, to_seq, count, min_ts, max_ts, devices FROM gaps WHERE gateway = ?', ['gw-1']))
      .toEqual([{ reason: 'cloud_lost', from_seq: 41, to_seq: 100, count: 60, min_ts: -1, max_ts: -1, devices: '[]' }]);
    expect(await queryCloudDb(dir.path, 'SELECT from_seq, to_seq FROM received WHERE gateway = ? ORDER BY from_seq', ['gw-1']))
      .toEqual([{ from_seq: 1, to_seq: 40 }, { from_seq: 101, to_seq: 150 }]);
    // Epoch 2 was reported before the loss: it is reported again, so the watermark can pass it.
    expect(await queryCloudDb(dir.path, 'SELECT epoch, first_seq, last_seq FROM epochs WHERE gateway = ? ORDER BY epoch', ['gw-1']))
      .toEqual([{ epoch: 1, first_seq: 1, last_seq: 40 }, { epoch: 2, first_seq: 41, last_seq: 100 }, { epoch: 3, first_seq: 101, last_seq: 150 }]);
    expect(await metricValue(registry, 'braid_forward_cloud_lost_readings_total')).toBe(60);
    expect(await metricValue(cloud.server.registry, 'braid_ingest_cloud_lost_readings_total')).toBe(60);
    expect(await metricValue(cloud.server.registry, 'braid_ingest_rejected_total', { code: 'BRAID_ERR_INGEST_SEQ_SKIP' })).toBe(1);
    expect(await h.fx.reader.all('SELECT reason, from_seq, to_seq, count, sent FROM gaps'))
      .toEqual([{ reason: 'cloud_lost', from_seq: 41, to_seq: 100, count: 60, sent: 1 }]);
    const warned = lines.filter((l) => l.level === 40 && /the cloud lost 60 reading\(s\) it had acknowledged \(seqs 41\.\.100;/.test(String(l.msg)));
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ heldSeq: 40, ackedSeq: 100, lost: [{ fromSeq: 41, toSeq: 100 }], count: 60 });
    expect(lines.filter((l) => (l.level as number) >= 50)).toEqual([]);
    expect(fwd.status().ackedSeq).toBe(150);
  });

  test('its own gap record the cloud had acknowledged inside the lost range goes again as it was; cloud_lost covers only the rest', async () => {
    expect((await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(1, 40)))).status).toBe(200);
    await gatewayAckedUpTo(100, 20);
    // 61..70 were dropped at the disk budget; the cloud had acknowledged that record too, then lost it.
    const id = await insertGap(h.fx, 61, 70, ['dev-9']);
    await h.fx.writes.run((db) => db.run('UPDATE gaps SET sent = 1 WHERE id = ?', [id]));
    const { logger, lines } = captureLogger();
    const { fwd, registry } = h.make({ url: cloud.url, token }, logger);
    await fwd.start();
    await until(async () => (await outboxSeqs(h.fx)).length === 0, 10_000, 'the outbox to drain');
    expect(await queryCloudDb(dir.path, 'SELECT id, reason, from_seq, to_seq, count, min_ts, max_ts, devices FROM gaps WHERE gateway = ? ORDER BY from_seq', ['gw-1'])).toEqual([
      { id: expect.any(Number), reason: 'cloud_lost', from_seq: 41, to_seq: 60, count: 20, min_ts: -1, max_ts: -1, devices: '[]' },
      { id, reason: 'disk_budget', from_seq: 61, to_seq: 70, count: 10, min_ts: 10, max_ts: 20, devices: '["dev-9"]' },
      { id: expect.any(Number), reason: 'cloud_lost', from_seq: 71, to_seq: 100, count: 30, min_ts: -1, max_ts: -1, devices: '[]' },
    ]);
    expect(await metricValue(registry, 'braid_forward_cloud_lost_readings_total')).toBe(50);
    expect(await metricValue(cloud.server.registry, 'braid_ingest_cloud_lost_readings_total')).toBe(50);
    expect(lines.filter((l) => /the cloud lost 50 reading\(s\) it had acknowledged \(seqs 41\.\.60, 71\.\.100, and its gap records of seqs 61\.\.70;/.test(String(l.msg)))).toHaveLength(1);
  });

  test('a forged empty batch far ahead is still refused, and the real gateway is not hurt by it', async () => {
    expect((await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(1, 100)))).status).toBe(200);
    const forged = await postIngest(cloud.url, token, ingestBody('gw-1', [], { firstSeq: 999_999, lastSeq: 999_998 }));
    expect({ status: forged.status, code: forged.body.code }).toEqual({ status: 409, code: 'BRAID_ERR_INGEST_SEQ_SKIP' });
    expect(await queryCloudDb(dir.path, 'SELECT * FROM gaps')).toEqual([]);
    // The real gateway, acknowledged up to 100, carries on with no gap record at all.
    await gatewayAckedUpTo(100, 20);
    const { fwd, registry } = h.make({ url: cloud.url, token });
    await fwd.start();
    await until(async () => (await outboxSeqs(h.fx)).length === 0, 10_000, 'the outbox to drain');
    expect(await queryCloudDb(dir.path, 'SELECT * FROM gaps')).toEqual([]);
    expect(await metricValue(registry, 'braid_forward_cloud_lost_readings_total')).toBe(0);
  });
});

describe('never a claim on seqs the gateway still holds', () => {
  test('a refusal naming 90..120 while acked_seq is 100: the gap record is 90..100, 101.. go as readings', async () => {
    await gatewayAckedUpTo(100, 50);
    h.cloud.script(seqSkip(89, [[90, 120]]));
    const { fwd, registry } = h.make();
    await fwd.start();
    await until(async () => (await outboxSeqs(h.fx)).length === 0, 5000, 'the outbox to drain');
    const bodies = h.cloud.requests.map(decodeIngest);
    expect(cloudLostGaps(bodies[0])).toEqual([]);
    expect(bodies[1]).toMatchObject({ firstSeq: 90, lastSeq: 150 });
    expect(cloudLostGaps(bodies[1])).toEqual([expect.objectContaining({ fromSeq: 90, toSeq: 100, count: 11, minTs: null, maxTs: null, devices: [] })]);
    expect(bodies[1].readings.map((r) => r[0])).toEqual(Array.from({ length: 50 }, (_, i) => 101 + i));
    for (const b of bodies) for (const g of cloudLostGaps(b)) expect(g.toSeq).toBeLessThanOrEqual(100);
    expect(await metricValue(registry, 'braid_forward_cloud_lost_readings_total')).toBe(11);
  });

  test('a refusal naming only seqs above acked_seq: an error, backing off, no gap record ever', async () => {
    await gatewayAckedUpTo(100, 50);
    h.cloud.script(seqSkip(100, [[101, 120]]), seqSkip(100, [[101, 120]]), seqSkip(100, [[101, 120]]));
    const { logger, lines } = captureLogger();
    const { fwd, registry } = h.make({ retryInitialMs: 100, retryMaxMs: 100, jitter: 0 }, logger);
    await fwd.start();
    await until(async () => (await outboxSeqs(h.fx)).length === 0, 5000, 'the outbox to drain');
    const reqs = h.cloud.requests;
    expect(reqs.length).toBe(4);
    for (const b of reqs.map(decodeIngest)) {
      expect(b.firstSeq).toBe(101);
      expect(cloudLostGaps(b)).toEqual([]);
    }
    // Backed off between the refusals (retryInitialMs 100, no jitter), not resent at once.
    for (let i = 1; i < reqs.length; i++) expect(reqs[i].at - reqs[i - 1].at).toBeGreaterThanOrEqual(90);
    expect(await h.fx.reader.all('SELECT * FROM gaps')).toEqual([]);
    expect(await metricValue(registry, 'braid_forward_cloud_lost_readings_total')).toBe(0);
    expect(lines.filter((l) => l.level === 50 && /skipping seqs this gateway still holds or never acknowledged: a bug/.test(String(l.msg)))).toHaveLength(3);
  });

  test('a refusal again for seqs an unsent cloud_lost record already names is an error, not a second record', async () => {
    await gatewayAckedUpTo(100, 10);
    // The cloud keeps refusing 41..100 even with the record (a broken cloud): one record, then back off.
    h.cloud.script(seqSkip(40, [[41, 100]]), seqSkip(40, [[41, 100]]), seqSkip(40, [[41, 100]]));
    const { logger, lines } = captureLogger();
    const { fwd } = h.make({ retryInitialMs: 100, retryMaxMs: 100, jitter: 0 }, logger);
    await fwd.start();
    await until(async () => (await outboxSeqs(h.fx)).length === 0, 5000, 'the outbox to drain');
    expect(await h.fx.reader.all('SELECT reason, from_seq, to_seq, sent FROM gaps')).toEqual([{ reason: 'cloud_lost', from_seq: 41, to_seq: 100, sent: 1 }]);
    expect(lines.filter((l) => l.level === 50 && /an unsent cloud_lost gap record already names/.test(String(l.msg)))).toHaveLength(2);
  });
});
