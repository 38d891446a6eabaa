/**
 * POST /api/v1/ingest against a real cloud (docs/ingest-protocol.md): auth, every kind of bad
 * body refused with a code that names the problem and nothing stored [INV-5], size limits (413),
 * gzip and identity, idempotent retries and overlaps [INV-2], epochs and gap records stored once,
 * a batch that skips seqs refused (409) while everything the forwarder sends is taken.
 */
import { connect } from 'node:net';
import { gzipSync } from 'node:zlib';
import { addApiKey } from '../../cloud/store/credentials.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { join } from 'node:path';
import {
  T0, type IngestBodyDoc, type TestCloud, addGatewayToken, ingestBody, makeReadings, postIngest, queryCloudDb, startTestCloud,
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
    ['gap count over its seq range', () => ({ body: { ...good(), gaps: [{ id: 1, reason: 'disk_budget', fromSeq: 1, toSeq: 2, count: 3, minTs: 1, maxTs: 2, devices: ['dev-1'] }] } }), 400, 'BRAID_ERR_BAD_REQUEST', /^gaps\[0\]\.count: count must be a whole number in 0\.\.2, got 3/],
    ['gap devices not a list', () => ({ body: { ...good(), gaps: [{ id: 1, reason: 'disk_budget', fromSeq: 1, toSeq: 2, count: 2, minTs: 1, maxTs: 2, devices: 'dev-1' }] } }), 400, 'BRAID_ERR_BAD_REQUEST', /^gaps\[0\]\.devices: must be an array/],
    ['gap with only minTs unknown', () => ({ body: { ...good(), gaps: [{ id: 1, reason: 'cloud_lost', fromSeq: 1, toSeq: 2, count: 2, minTs: null, maxTs: 2, devices: [] }] } }), 400, 'BRAID_ERR_BAD_REQUEST', /^gaps\[0\]\.minTs: minTs must be a whole number/],
    ['gap with only maxTs unknown', () => ({ body: { ...good(), gaps: [{ id: 1, reason: 'cloud_lost', fromSeq: 1, toSeq: 2, count: 2, minTs: 1, maxTs: null, devices: [] }] } }), 400, 'BRAID_ERR_BAD_REQUEST', /^gaps\[0\]\.maxTs: maxTs must be a whole number/],
    // [INV-5] U+0000: PostgreSQL TEXT refuses it, and the group commit it shares with other requests would fail.
    ['a NUL in a device id', () => ({ body: withRow(1, 2, 'dev\u00001') }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[1\]\[2\]: device must not contain the NUL character \(U\+0000\), got "dev\\u00001"$/],
    ['a lone surrogate in a device id (UTF-8 cannot hold it: stored as U+FFFD, another name)', () => ({ body: withRow(1, 2, 'dev\ud8001') }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[1\]\[2\]: device must be well-formed Unicode \(a lone surrogate cannot be stored as UTF-8\), got "dev\ufffd1"$/],
    ['a NUL in a metric name', () => ({ body: withRow(2, 3, 'te\u0000mp') }), 400, 'BRAID_ERR_BAD_REQUEST', /^readings\[2\]\[3\]: metric must not contain the NUL character \(U\+0000\)/],
    ['a NUL in the gateway id', () => ({ body: { ...good(), gateway: 'gw-1\u0000' } }), 400, 'BRAID_ERR_BAD_REQUEST', /^gateway: gateway must not contain the NUL character/],
    ['a NUL in a gap reason', () => ({ body: { ...good(), gaps: [{ id: 1, reason: 'disk\u0000', fromSeq: 1, toSeq: 2, count: 2, minTs: 1, maxTs: 2, devices: [] }] } }), 400, 'BRAID_ERR_BAD_REQUEST', /^gaps\[0\]\.reason: reason must not contain the NUL character/],
    ['a NUL in a gap device', () => ({ body: { ...good(), gaps: [{ id: 1, reason: 'disk_budget', fromSeq: 1, toSeq: 2, count: 2, minTs: 1, maxTs: 2, devices: ['dev-1', '\u0000'] }] } }), 400, 'BRAID_ERR_BAD_REQUEST', /^gaps\[0\]\.devices\[1\]: device must not contain the NUL character/],
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

  test('[INV-5] a body with U+0000 and good bodies of other gateways at the same moment: only the NUL one is refused', async () => {
    const tokens = { 'gw-2': await addGatewayToken(dir.path, 'gw-2'), 'gw-3': await addGatewayToken(dir.path, 'gw-3') };
    const nul = good();
    (nul.readings[7] as unknown[])[2] = 'dev-\u0000';
    const [bad, ok2, ok3] = await Promise.all([
      postIngest(cloud.url, token, nul),
      postIngest(cloud.url, tokens['gw-2'], ingestBody('gw-2', makeReadings(1, 20))),
      postIngest(cloud.url, tokens['gw-3'], ingestBody('gw-3', makeReadings(1, 5))),
    ]);
    expect({ status: bad.status, code: bad.body.code }).toEqual({ status: 400, code: 'BRAID_ERR_BAD_REQUEST' });
    expect(bad.body.message).toMatch(/^readings\[7\]\[2\]: device must not contain the NUL character \(U\+0000\)/);
    expect(ok2).toMatchObject({ status: 200, body: { ackSeq: 20, stored: 20, duplicates: 0 } });
    expect(ok3).toMatchObject({ status: 200, body: { ackSeq: 5, stored: 5, duplicates: 0 } });
    expect(await metric('braid_ingest_rejected_total', { code: 'BRAID_ERR_BAD_REQUEST' })).toBe(1);
    expect(await metric('braid_ingest_requests_total', { outcome: 'ok' })).toBe(2);
    expect(await received()).toEqual([]);
    expect(await received('gw-2')).toEqual([{ from_seq: 1, to_seq: 20 }]);
    expect(await received('gw-3')).toEqual([{ from_seq: 1, to_seq: 5 }]);
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

  test('a gzip body that inflates to many times gunzipChunkBytes (several chunks, joined) is stored whole', async () => {
    // Runs of spaces inflate well: ~330 KB of JSON from far less gzip, past the one chunk
    // that gunzipChunkBytes sizes from the Content-Length.
    const json = JSON.stringify(ingestBody('gw-1', makeReadings(1, 2000))).replace(/,/g, `,${' '.repeat(20)}`);
    const raw = gzipSync(json);
    expect(json.length).toBeGreaterThan(8 * raw.length);
    const a = await postIngest(cloud.url, token, null, { raw });
    expect(a.body).toEqual({ ackSeq: 2000, stored: 2000, duplicates: 0 });
    expect(await received()).toEqual([{ from_seq: 1, to_seq: 2000 }]);
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

  test('a cloud_lost gap record with an unknown event-time range (minTs and maxTs null) is stored, counted apart and accounts for its seqs', async () => {
    const lost = { id: 7, reason: 'cloud_lost', fromSeq: 1, toSeq: 40, count: 40, minTs: null, maxTs: null, devices: [] };
    const body = ingestBody('gw-1', makeReadings(41, 50), { firstSeq: 1, gaps: [lost] as unknown as IngestBodyDoc['gaps'] });
    for (let i = 0; i < 2; i++) expect((await postIngest(cloud.url, token, body)).status).toBe(200);
    expect(await queryCloudDb(dir.path, 'SELECT reason, from_seq, to_seq, count, min_ts, max_ts, devices FROM gaps'))
      .toEqual([{ reason: 'cloud_lost', from_seq: 1, to_seq: 40, count: 40, min_ts: -1, max_ts: -1, devices: '[]' }]);
    expect(await metric('braid_ingest_cloud_lost_readings_total')).toBe(40);
    expect(await metric('braid_ingest_gap_records_total')).toBe(1);
    expect(await received()).toEqual([{ from_seq: 41, to_seq: 50 }]);
  });

});

describe('seq skips: a batch must account for every seq above what the cloud holds', () => {
  const gap = (id: number, fromSeq: number, toSeq: number) => ({ id, reason: 'disk_budget', fromSeq, toSeq, count: toSeq - fromSeq + 1, minTs: T0, maxTs: T0 + 1, devices: ['dev-1'] });
  const state = async () => ({
    received: await received(),
    epochs: await queryCloudDb(dir.path, 'SELECT epoch FROM epochs ORDER BY epoch'),
    gaps: await queryCloudDb(dir.path, 'SELECT id FROM gaps ORDER BY id'),
    seqGaps: await queryCloudDb(dir.path, 'SELECT * FROM seq_gaps'),
  });
  const skip = (a: { status: number; body: Record<string, unknown> }) => ({ status: a.status, code: a.body.code });

  test('an empty batch far ahead (firstSeq 999999) is refused with 409 naming the skipped seqs; nothing of it is kept, counted', async () => {
    expect((await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(1, 100)))).status).toBe(200);
    const before = await state();
    const a = await postIngest(cloud.url, token, ingestBody('gw-1', [], { firstSeq: 999_999, lastSeq: 999_998, epochs: [{ epoch: 9, firstSeq: 101, lastSeq: 999_998 }] }));
    expect(skip(a)).toEqual({ status: 409, code: 'BRAID_ERR_INGEST_SEQ_SKIP' });
    expect(a.body.message).toMatch(/^seq skip: gateway gw-1 has had seqs up to 100 stored; this batch \(firstSeq 999999, lastSeq 999998\) skips 999898 seq\(s\), 101\.\.999998, /);
    // Machine-readable beside the message: what the cloud holds and what the batch skips.
    expect(a.body).toMatchObject({ heldSeq: 100, missing: [{ fromSeq: 101, toSeq: 999_998 }], missingCount: 999_898 });
    expect(await state()).toEqual(before);
    expect(await metric('braid_ingest_rejected_total', { code: 'BRAID_ERR_INGEST_SEQ_SKIP' })).toBe(1);
    expect(await metric('braid_ingest_seq_gaps_total')).toBe(1);
    // The gateway's real next batch is not hurt.
    expect((await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(101, 150)))).body).toEqual({ ackSeq: 150, stored: 50, duplicates: 0 });
  });

  test('readings that start above the next seq, a hole inside a batch and a gap record that starts too high are refused, each naming its seqs', async () => {
    await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(1, 100)));
    const cases: Array<[unknown, RegExp]> = [
      [ingestBody('gw-1', makeReadings(151, 200)), /skips 50 seq\(s\), 101\.\.150, /],
      [ingestBody('gw-1', [...makeReadings(101, 110), ...makeReadings(121, 130), ...makeReadings(135, 140)]), /skips 14 seq\(s\), 111\.\.120, 131\.\.134, /],
      [ingestBody('gw-1', makeReadings(171, 180), { firstSeq: 160, gaps: [gap(1, 160, 170)] }), /skips 59 seq\(s\), 101\.\.159, /],
      [ingestBody('gw-1', [], { firstSeq: 201, lastSeq: 200, gaps: [gap(2, 102, 200)] }), /skips 1 seq\(s\), 101, /],
    ];
    const before = await state();
    for (const [body, message] of cases) {
      const a = await postIngest(cloud.url, token, body);
      expect(skip(a)).toEqual({ status: 409, code: 'BRAID_ERR_INGEST_SEQ_SKIP' });
      expect(a.body.message).toMatch(message);
    }
    expect(await state()).toEqual(before);
    expect(await metric('braid_ingest_rejected_total', { code: 'BRAID_ERR_INGEST_SEQ_SKIP' })).toBe(cases.length);
  });

  test('what the forwarder sends is never refused: gap records (in the batch or earlier) account for a skip, repeats and late retries are duplicates', async () => {
    const ok = async (body: unknown, expected: Record<string, number>) => {
      const a = await postIngest(cloud.url, token, body);
      expect({ status: a.status, body: a.body }).toEqual({ status: 200, body: expected });
    };
    await ok(ingestBody('gw-1', makeReadings(1, 100)), { ackSeq: 100, stored: 100, duplicates: 0 });
    // A disk-budget drop of 101..150, its gap record in the batch that carries the next readings.
    await ok(ingestBody('gw-1', makeReadings(151, 200), { firstSeq: 101, gaps: [gap(1, 101, 150)] }), { ackSeq: 200, stored: 50, duplicates: 0 });
    // A gap-only batch (the outbox holds nothing else), then readings after it: the stored gap accounts.
    await ok(ingestBody('gw-1', [], { firstSeq: 301, lastSeq: 300, gaps: [gap(2, 201, 300)] }), { ackSeq: 300, stored: 0, duplicates: 0 });
    await ok(ingestBody('gw-1', makeReadings(301, 350)), { ackSeq: 350, stored: 50, duplicates: 0 });
    // A drop that overlaps seqs already stored (a row in flight when the budget dropped it): the stored reading wins.
    await ok(ingestBody('gw-1', makeReadings(381, 400), { firstSeq: 341, gaps: [gap(3, 341, 380)] }), { ackSeq: 400, stored: 20, duplicates: 0 });
    // An epoch-only batch, and an epoch naming seqs the cloud has not had yet (its readings follow).
    await ok(ingestBody('gw-1', [], { firstSeq: 401, lastSeq: 400, epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 400 }, { epoch: 2, firstSeq: 401, lastSeq: 450 }] }), { ackSeq: 400, stored: 0, duplicates: 0 });
    // A retransmit, a retry that arrives after newer batches, and a batch repeating held seqs with new ones.
    await ok(ingestBody('gw-1', makeReadings(301, 350)), { ackSeq: 350, stored: 0, duplicates: 50 });
    await ok(ingestBody('gw-1', makeReadings(1, 100)), { ackSeq: 100, stored: 0, duplicates: 100 });
    await ok(ingestBody('gw-1', makeReadings(391, 450)), { ackSeq: 450, stored: 50, duplicates: 10 });
    // A batch whose own hole lies at or below what the cloud holds only carries duplicates.
    await ok(ingestBody('gw-1', [...makeReadings(151, 160), ...makeReadings(171, 180)]), { ackSeq: 180, stored: 0, duplicates: 20 });
    expect(await received()).toEqual([{ from_seq: 1, to_seq: 100 }, { from_seq: 151, to_seq: 200 }, { from_seq: 301, to_seq: 350 }, { from_seq: 381, to_seq: 450 }]);
    expect(await metric('braid_ingest_rejected_total', { code: 'BRAID_ERR_INGEST_SEQ_SKIP' })).toBe(0);
  });

  test('in one group commit, a refused batch costs only itself; a later batch that builds on it is refused too', async () => {
    await cloud.close();
    cloud = await startTestCloud(dir.path, { ingest: { groupCommitMs: 200 } });
    // 51..60 is sent 50 ms after 1..50 (well inside the 200 ms group window): three requests sent at
    // once reach the queue in any order, and 51..60 ahead of 1..50 is a skip (seen under load, on the
    // code before 2026-12-06's session 7 as on it).
    const answers = await Promise.all([
      postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(1, 50))),
      postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(61, 70))),
      new Promise((r) => setTimeout(r, 50)).then(() => postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(51, 60)))),
    ]);
    // Whatever order the group took them in, 1..60 is stored and 61..70 was refused or arrived after 51..60.
    expect(answers[0].body).toEqual({ ackSeq: 50, stored: 50, duplicates: 0 });
    expect(answers[2].body).toEqual({ ackSeq: 60, stored: 10, duplicates: 0 });
    const held = await received();
    if (answers[1].status === 409) expect(held).toEqual([{ from_seq: 1, to_seq: 60 }]);
    else expect(held).toEqual([{ from_seq: 1, to_seq: 70 }]);
    // Two batches of one request stream where the first skips: the second, which starts after it, is refused too.
    const [x, y] = await Promise.all([
      postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(100, 110))),
      postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(111, 120))),
    ]);
    expect([skip(x), skip(y)]).toEqual([{ status: 409, code: 'BRAID_ERR_INGEST_SEQ_SKIP' }, { status: 409, code: 'BRAID_ERR_INGEST_SEQ_SKIP' }]);
  });
});

describe('epoch conflicts: a closed epoch never changes', () => {
  test('an epoch record whose span differs from the stored one, or from another in the same batch, is refused with 409; nothing of the batch is kept', async () => {
    const body = ingestBody('gw-1', makeReadings(1, 30), { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 20 }] });
    expect((await postIngest(cloud.url, token, body)).status).toBe(200);
    // The same record again is fine (sent until acknowledged).
    expect((await postIngest(cloud.url, token, body)).body).toEqual({ ackSeq: 30, stored: 0, duplicates: 30 });
    const cases: Array<[unknown, RegExp]> = [
      [ingestBody('gw-1', makeReadings(31, 40), { epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 999_999 }, { epoch: 2, firstSeq: 21, lastSeq: 40 }] }),
        /^epochs: epoch 1 of gateway gw-1 is stored as seqs 1\.\.20, this batch says 1\.\.999999; /],
      [ingestBody('gw-1', makeReadings(31, 40), { epochs: [{ epoch: 2, firstSeq: 21, lastSeq: 40 }, { epoch: 2, firstSeq: 21, lastSeq: 35 }] }),
        /^epochs: epoch 2 of gateway gw-1 appears twice in this batch, as 21\.\.40 and 21\.\.35/],
    ];
    for (const [b, message] of cases) {
      const a = await postIngest(cloud.url, token, b);
      expect({ status: a.status, code: a.body.code }).toEqual({ status: 409, code: 'BRAID_ERR_INGEST_EPOCH_CONFLICT' });
      expect(a.body.message).toMatch(message);
    }
    expect(await queryCloudDb(dir.path, 'SELECT epoch, first_seq, last_seq FROM epochs')).toEqual([{ epoch: 1, first_seq: 1, last_seq: 20 }]);
    expect(await received()).toEqual([{ from_seq: 1, to_seq: 30 }]);
    expect(await metric('braid_ingest_rejected_total', { code: 'BRAID_ERR_INGEST_EPOCH_CONFLICT' })).toBe(2);
    // The real next batch goes through.
    expect((await postIngest(cloud.url, token, ingestBody('gw-1', makeReadings(31, 40), { epochs: [{ epoch: 2, firstSeq: 21, lastSeq: 40 }] }))).body)
      .toEqual({ ackSeq: 40, stored: 10, duplicates: 0 });
  });
});
