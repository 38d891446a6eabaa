/**
 * POST /api/v1/ingest against a real cloud (docs/ingest-protocol.md): auth, every kind of bad
 * body refused with a code that names the problem and nothing stored [INV-5], size limits (413),
 * gzip and identity, idempotent retries and overlaps [INV-2], epochs and gap records stored once,
 * seq holes recorded.
 */
import { connect } from 'node:net';
import { gzipSync } from 'node:zlib';
import { addApiKey } from '../../cloud/store/credentials.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { join } from 'node:path';
import {
  type TestCloud, addGatewayToken, ingestBody, makeReadings, postIngest, queryCloudDb, startTestCloud,
} from '../support/cloud.js';
import { tempDir } from '../support/gateway.js';

let dir: { path: string; remove: () => void };
let cloud: TestCloud;
let token: string;

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = cloud.server.registry.getSingleMetric(name);
  if (!m) return 0;
  const { values } = await m.get();
  return values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((s, v) => s + v.value, 0);
}

const received = (g = 'gw-1') => queryCloudDb<{ from_seq: number; to_seq: number }>(dir.path, 'SELECT from_seq, to_seq FROM received WHERE gateway = ? ORDER BY from_seq', [g]);

beforeEach(async () => {
  dir = tempDir('braid-ingest-');
  token = await addGatewayToken(dir.path, 'gw-1');
  cloud = await startTestCloud(dir.path, { ingest: { maxBodyBytes: 64 * 1024, maxInflatedBytes: 512 * 1024, maxReadingsPerRequest: 2000 } });
});

afterEach(async () => {
  await cloud.close();
  dir.remove();
});

describe('auth', () => {
  test('no token, a wrong token and a malformed header are 401; nothing is stored', async () => {
    const body = ingestBody('gw-1', makeReadings(1, 10));
    const variants: Array<Record<string, string>> = [{}, { authorization: 'Bearer bgt_not-a-real-token' }, { authorization: `Basic ${token}` }];
    for (const headers of variants) {
      const a = await postIngest(cloud.url, null, body, { headers });
      expect(a.status).toBe(401);
      expect(a.body.code).toBe('BRAID_ERR_UNAUTHORIZED');
      expect(a.headers.get('www-authenticate')).toMatch(/^Bearer/);
    }
    expect(await metric('braid_ingest_rejected_total', { code: 'BRAID_ERR_UNAUTHORIZED' })).toBe(3);
    expect(await received()).toEqual([]);
  });

  test("another gateway's token, or an API key, is 403", async () => {
    const other = await addGatewayToken(dir.path, 'gw-2');
    const a = await postIngest(cloud.url, other, ingestBody('gw-1', makeReadings(1, 10)));
    expect(a.status).toBe(403);
    expect(a.body.code).toBe('BRAID_ERR_FORBIDDEN');
    expect(a.body.message).toMatch(/gw-2.*gw-1/);

    const db = await openCloudDb(join(dir.path, 'cloud.db'));
    const key = await addApiKey(db, 'ops', 'admin');
    await db.close();
    const b = await postIngest(cloud.url, key, ingestBody('gw-1', makeReadings(1, 10)));
    expect(b.status).toBe(403);
    expect(b.body.code).toBe('BRAID_ERR_FORBIDDEN');
    expect(await metric('braid_ingest_rejected_total', { code: 'BRAID_ERR_FORBIDDEN' })).toBe(2);
    expect(await received()).toEqual([]);
    expect(await received('gw-2')).toEqual([]);
  });
});

describe('malformed bodies', () => {
  const good = () => ingestBody('gw-1', makeReadings(1, 20), { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 20 }] });
  const withRow = (i: number, j: number, v: unknown) => {
    const b = good();
    (b.readings[i] as unknown[])[j] = v;
    return b;
  };
  const cases: Array<[string, () => { body?: unknown; raw?: Buffer; gzip?: boolean; headers?: Record<string, string> }, number, string, RegExp]> = [
    ['not JSON', () => ({ raw: gzipSync('{"v":1,') }), 400, 'BRAID_ERR_BAD_REQUEST', /^body: not valid JSON/],
    ['not gzip although it says so', () => ({ raw: Buffer.from('{"v":1}') }), 400, 'BRAID_ERR_BAD_REQUEST', /^body: not valid gzip/],
    ['empty', () => ({ raw: Buffer.alloc(0), gzip: false }), 400, 'BRAID_ERR_BAD_REQUEST', /^body: empty/],
    ['an array', () => ({ body: [1, 2] }), 400, 'BRAID_ERR_BAD_REQUEST', /^body: must be a JSON object/],
    ['another version', () => ({ body: { ...good(), v: 2 } }), 400, 'BRAID_ERR_BAD_REQUEST', /^v: protocol version must be 1/],
    ['no gateway', () => ({ body: { ...good(), gateway: undefined } }), 400, 'BRAID_ERR_BAD_REQUEST', /^gateway: /],
    ['firstSeq not whole', () => ({ body: { ...good(), firstSeq: 1.5 } }), 400, 'BRAID_ERR_BAD_REQUEST', /^firstSeq: firstSeq must be a whole number/],
    ['lastSeq below firstSeq - 1', () => ({ body: { ...good(), firstSeq: 10, lastSeq: 5 } }), 400, 'BRAID_ERR_BAD_REQUEST', /^lastSeq: /],
    ['readings not an array', () => ({ body: { ...good(), readings: {} } }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings: must be an array/],
    ['a row of 5', () => ({ body: (() => { const b = good(); (b.readings[3] as unknown[]).pop(); return b; })() }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[3\]: must be \[seq, epoch, device, metric, ts, value\]/],
    ['seq not ascending', () => ({ body: withRow(4, 0, 2) }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[4\]\[0\]: seq 2 .*must ascend/],
    ['seq outside firstSeq..lastSeq', () => ({ body: { ...good(), lastSeq: 19 } }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[19\]\[0\]: seq 20 is outside/],
    ['epoch 0', () => ({ body: withRow(0, 1, 0) }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[0\]\[1\]: epoch must be a whole number/],
    ['empty device', () => ({ body: withRow(1, 2, '') }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[1\]\[2\]: device must be a string of 1-64/],
    ['device too long', () => ({ body: withRow(1, 2, 'd'.repeat(65)) }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[1\]\[2\]: device/],
    ['metric a number', () => ({ body: withRow(2, 3, 7) }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[2\]\[3\]: metric must be a string/],
    ['ts not whole', () => ({ body: withRow(5, 4, 1.5) }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[5\]\[4\]: ts \(epoch ms\) must be a whole number/],
    ['ts negative', () => ({ body: withRow(5, 4, -1) }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[5\]\[4\]: ts/],
    ['value null', () => ({ body: withRow(12, 5, null) }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[12\]\[5\]: value must be a finite number/],
    ['value a string', () => ({ body: withRow(12, 5, '21.5') }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[12\]\[5\]: value must be a finite number/],
    ['value overflowing to Infinity', () => ({ raw: gzipSync(JSON.stringify(good()).replace('[1,1,"dev-1","temp",1732406401000,0.25]', '[1,1,"dev-1","temp",1732406401000,1e400]')) }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[0\]\[5\]: value must be a finite number/],
    ['no readings but firstSeq != lastSeq + 1', () => ({ body: { ...good(), readings: [], firstSeq: 1, lastSeq: 20 } }), 400, 'BRAID_ERR_BAD_REQUEST', /^firstSeq: a batch without readings/],
    ['epoch span backwards', () => ({ body: { ...good(), epochs: [{ epoch: 1, firstSeq: 5, lastSeq: 4 }] } }), 400, 'BRAID_ERR_BAD_REQUEST', /^epochs\[0\]\.lastSeq: /],
    ['gap devices not a list', () => ({ body: { ...good(), gaps: [{ id: 1, reason: 'disk_budget', fromSeq: 1, toSeq: 2, count: 2, minTs: 1, maxTs: 2, devices: 'dev-1' }] } }), 400, 'BRAID_ERR_BAD_REQUEST', /^gaps\[0\]\.devices: must be an array/],
    ['brotli', () => ({ body: good(), headers: { 'content-encoding': 'br' } }), 415, 'BRAID_ERR_UNSUPPORTED_ENCODING', /Content-Encoding "br"/],
    ['too many readings', () => ({ body: ingestBody('gw-1', makeReadings(1, 2001)) }), 413, 'BRAID_ERR_PAYLOAD_TOO_LARGE', /^readings: 2001 entries, over the limit of 2000/],
  ];

  test.each(cases)('%s: refused, named, counted, nothing stored', async (_name, make, status, code, message) => {
    const c = make();
    const a = await postIngest(cloud.url, token, c.body, { raw: c.raw, gzip: c.gzip, headers: c.headers });
    expect({ status: a.status, code: a.body.code }).toEqual({ status, code });
    expect(a.body.message).toMatch(message);
    expect(await metric('braid_ingest_rejected_total', { code })).toBe(1);
    expect(await metric('braid_ingest_requests_total', { outcome: 'rejected' })).toBe(1);
    expect(await received()).toEqual([]);
    expect(await queryCloudDb(dir.path, 'SELECT * FROM epochs')).toEqual([]);
    // The server is still fine: the same gateway's good batch goes through [INV-5].
    const ok = await postIngest(cloud.url, token, good());
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ ackSeq: 20, stored: 20, duplicates: 0 });
  });
});

describe('size limits', () => {
  test('a body over maxBodyBytes is 413, by Content-Length or while streaming', async () => {
    const big = ingestBody('gw-1', makeReadings(1, 2000));
    expect(JSON.stringify(big).length).toBeGreaterThan(64 * 1024);
    const a = await postIngest(cloud.url, token, big, { gzip: false });
    expect(a.status).toBe(413);
    expect(a.body.code).toBe('BRAID_ERR_PAYLOAD_TOO_LARGE');
    expect(a.body.message).toMatch(/ingest\.maxBodyBytes/);

    // Chunked: no Content-Length, the limit trips while reading.
    const bytes = Buffer.from(JSON.stringify(big));
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < bytes.length; i += 8192) c.enqueue(new Uint8Array(bytes.subarray(i, i + 8192)));
        c.close();
      },
    });
    const res = await fetch(`${cloud.url}/api/v1/ingest`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: stream, duplex: 'half' } as RequestInit);
    expect(res.status).toBe(413);
    expect(((await res.json()) as { code: string }).code).toBe('BRAID_ERR_PAYLOAD_TOO_LARGE');
    expect(await received()).toEqual([]);
  });

  test('a refused body much larger than the limit is read to its end before the 413, as a proxy sending it first needs (else 502)', async () => {
    // Like nginx: the whole body is written before the answer is looked at; a reset on the way fails.
    const { port } = new URL(cloud.url);
    for (const chunked of [false, true]) {
      const total = 8 * 1024 * 1024;
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), '127.0.0.1');
        let received = '';
        socket.setEncoding('utf8');
        socket.on('data', (c: string) => { received += c; });
        socket.on('error', reject);
        socket.on('close', () => resolve(received));
        socket.once('connect', async () => {
          const head = [`POST /api/v1/ingest HTTP/1.1`, `host: 127.0.0.1:${port}`, `authorization: Bearer ${token}`, 'content-type: application/json',
            chunked ? 'transfer-encoding: chunked' : `content-length: ${total}`, '', ''].join('\r\n');
          const write = (b: Buffer | string) => new Promise<void>((ok, bad) => socket.write(b, (err) => (err ? bad(err) : ok())));
          try {
            await write(head);
            for (let sent = 0; sent < total; sent += chunk.length) {
              await write(chunked ? Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]) : chunk);
            }
            if (chunked) await write('0\r\n\r\n');
          } catch (err) {
            reject(err);
          }
        });
      });
      expect({ chunked, status: answer.split('\r\n')[0] }).toEqual({ chunked, status: 'HTTP/1.1 413 Payload Too Large' });
      expect(answer).toContain('BRAID_ERR_PAYLOAD_TOO_LARGE');
    }
  });

  test('a gzip body inflating past maxInflatedBytes is 413 (a gzip bomb costs at most the limit)', async () => {
    const bomb = gzipSync(Buffer.alloc(8 * 1024 * 1024, 0x20));
    expect(bomb.length).toBeLessThan(64 * 1024);
    const a = await postIngest(cloud.url, token, null, { raw: bomb });
    expect(a.status).toBe(413);
    expect(a.body.message).toMatch(/ingest\.maxInflatedBytes/);
    expect(await metric('braid_ingest_rejected_total', { code: 'BRAID_ERR_PAYLOAD_TOO_LARGE' })).toBe(1);
  });
});

describe('queue limit', () => {
  test('[INV-6] past maxQueuedReadings a request is 429 with Retry-After, counted; the queued ones are stored', async () => {
    await cloud.close();
    cloud = await startTestCloud(dir.path, { ingest: { groupCommitMs: 300 } }, { ingest: { maxQueuedReadings: 100 } });
    const answers = await Promise.all([
      postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(1, 60))),
      new Promise((r) => setTimeout(r, 50)).then(() => postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(61, 120)))),
    ]);
    expect(answers[0].body).toEqual({ ackSeq: 60, stored: 60, duplicates: 0 });
    expect({ status: answers[1].status, code: answers[1].body.code, retryAfter: answers[1].headers.get('retry-after') })
      .toEqual({ status: 429, code: 'BRAID_ERR_LIMIT_EXCEEDED', retryAfter: '1' });
    expect(await metric('braid_ingest_rejected_total', { code: 'BRAID_ERR_LIMIT_EXCEEDED' })).toBe(1);
    expect((await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(61, 120)))).body).toEqual({ ackSeq: 120, stored: 60, duplicates: 0 });
  });
});

describe('storing', () => {
  test('gzip and identity bodies are both stored', async () => {
    const a = await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(1, 50)), { gzip: true });
    const b = await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(51, 100)), { gzip: false });
    expect(a.body).toEqual({ ackSeq: 50, stored: 50, duplicates: 0 });
    expect(b.body).toEqual({ ackSeq: 100, stored: 50, duplicates: 0 });
    expect(await received()).toEqual([{ from_seq: 1, to_seq: 100 }]);
    expect(await metric('braid_ingest_readings_total')).toBe(100);
  });

  test('[INV-2] retries and overlapping batches are stored once, repeats counted', async () => {
    const first = ingestBody('gw-1', makeReadings(1, 100));
    expect((await postIngest(cloud.url, token, first)).body).toEqual({ ackSeq: 100, stored: 100, duplicates: 0 });
    expect((await postIngest(cloud.url, token, first)).body).toEqual({ ackSeq: 100, stored: 0, duplicates: 100 });
    expect((await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(51, 150)))).body).toEqual({ ackSeq: 150, stored: 50, duplicates: 50 });
    // Five copies at once: one group commit or several, they are stored once between them.
    const same = ingestBody('gw-1', makeReadings(151, 250));
    const answers = await Promise.all([1, 2, 3, 4, 5].map(() => postIngest(cloud.url, token, same)));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200]);
    expect(answers.reduce((s, a) => s + (a.body.stored as number), 0)).toBe(100);
    expect(answers.reduce((s, a) => s + (a.body.duplicates as number), 0)).toBe(400);
    expect(await received()).toEqual([{ from_seq: 1, to_seq: 250 }]);
    expect(await metric('braid_ingest_readings_total')).toBe(250);
    expect(await metric('braid_ingest_duplicates_total')).toBe(550);
  });

  test('epochs and gap records are stored once however often they are sent', async () => {
    const gap = { id: 1, reason: 'disk_budget', fromSeq: 1, toSeq: 10, count: 10, minTs: 1000, maxTs: 2000, devices: ['dev-1', 'dev-2'] };
    const body = ingestBody('gw-1', makeReadings(11, 30), { firstSeq: 1, epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 30 }], gaps: [gap] });
    for (let i = 0; i < 3; i++) expect((await postIngest(cloud.url, token, body)).status).toBe(200);
    // An epoch-only batch: firstSeq = lastSeq + 1, no readings.
    const tail = ingestBody('gw-1', [], { firstSeq: 31, lastSeq: 30, epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 30 }] });
    expect((await postIngest(cloud.url, token, tail)).body).toEqual({ ackSeq: 30, stored: 0, duplicates: 0 });
    expect(await queryCloudDb(dir.path, 'SELECT gateway, epoch, first_seq, last_seq FROM epochs')).toEqual([{ gateway: 'gw-1', epoch: 1, first_seq: 1, last_seq: 30 }]);
    const gaps = await queryCloudDb<Record<string, unknown>>(dir.path, 'SELECT gateway, id, reason, from_seq, to_seq, count, devices FROM gaps');
    expect(gaps).toEqual([{ gateway: 'gw-1', id: 1, reason: 'disk_budget', from_seq: 1, to_seq: 10, count: 10, devices: '["dev-1","dev-2"]' }]);
    expect(await metric('braid_ingest_epochs_total')).toBe(1);
    expect(await metric('braid_ingest_gap_records_total')).toBe(1);
    // The gap covered 1..10: no seq hole.
    expect(await queryCloudDb(dir.path, 'SELECT * FROM seq_gaps')).toEqual([]);
  });

  test('a seq hole no gap record covers is recorded, counted and not papered over', async () => {
    await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(1, 100)));
    const a = await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(151, 200)));
    expect(a.body).toEqual({ ackSeq: 200, stored: 50, duplicates: 0 });
    expect(await queryCloudDb(dir.path, 'SELECT gateway, from_seq, to_seq FROM seq_gaps')).toEqual([{ gateway: 'gw-1', from_seq: 101, to_seq: 150 }]);
    expect(await metric('braid_ingest_seq_gaps_total')).toBe(1);
    expect(await received()).toEqual([{ from_seq: 1, to_seq: 100 }, { from_seq: 151, to_seq: 200 }]);
    // A gap record accounts for its seqs: no hole.
    const gap = { id: 7, reason: 'disk_budget', fromSeq: 201, toSeq: 220, count: 20, minTs: 1, maxTs: 2, devices: ['dev-1'] };
    await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(221, 240), { firstSeq: 201, gaps: [gap] }));
    expect(await queryCloudDb(dir.path, 'SELECT from_seq, to_seq FROM seq_gaps ORDER BY from_seq')).toEqual([{ from_seq: 101, to_seq: 150 }]);
    // A batch starting above the next seq, and one with a hole inside.
    await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(250, 260)));
    await postIngest(cloud.url, token, ingestBody('gw-1', [...makeReadings(261, 270), ...makeReadings(281, 290)]));
    expect(await queryCloudDb(dir.path, 'SELECT from_seq, to_seq FROM seq_gaps ORDER BY from_seq')).toEqual([
      { from_seq: 101, to_seq: 150 }, { from_seq: 241, to_seq: 249 }, { from_seq: 271, to_seq: 280 },
    ]);
    expect(await metric('braid_ingest_seq_gaps_total')).toBe(3);
    // The late seqs still arrive and are stored.
    expect((await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(101, 150)))).body).toEqual({ ackSeq: 150, stored: 50, duplicates: 0 });
  });
});
