/**
 * The forwarder against a scripted real HTTP server (undici style) and a real gateway.db:
 * docs/ingest-protocol.md, gateway side. Lifecycle (close, restart, notify) is in
 * forwarder-lifecycle.test.ts.
 */
import { outboxRowBytes, getMeta } from '../../edge/store/schema.js';
import {
  ack, captureLogger, decodeIngest, firstArrivals, insertEpoch, insertGap, insertReadings, metricValue as metric, range, seqsOf, until,
  useForwarderHarness,
} from '../support/forwarder-fixtures.js';
import { answer } from '../support/http-script.js';

const h = useForwarderHarness();
const { make, pending } = h;

describe('Forwarder', () => {
  test('sends every row in seq order, in batches of at most batchMaxReadings, as the protocol says', async () => {
    await insertReadings(h.fx, 1, 25);
    const { fwd, registry, acks } = make({ batchMaxReadings: 10 });
    await fwd.start();
    await until(async () => fwd.status().ackedSeq === 25 && (await pending()) === 0);

    expect(h.cloud.requests.map((r) => seqsOf(r).length)).toEqual([10, 10, 5]);
    expect(h.cloud.requests.flatMap(seqsOf)).toEqual(range(1, 25));
    const first = h.cloud.requests[0];
    expect(first).toMatchObject({ method: 'POST', url: '/api/v1/ingest' });
    expect(first.headers).toMatchObject({ authorization: 'Bearer tok-1', 'content-encoding': 'gzip', 'content-type': 'application/json' });
    const body = decodeIngest(first);
    expect(body).toMatchObject({ v: 1, gateway: 'gw-1', firstSeq: 1, lastSeq: 10, epochs: [], gaps: [] });
    expect(body.readings[0]).toEqual([1, 1, 'dev-1', 'temp', 1_732_406_400_001, 0.1]);
    expect(typeof body.sentAt).toBe('number');

    expect(acks).toEqual([
      { ackSeq: 10, rows: 10, bytes: 10 * outboxRowBytes('dev-1', 'temp') },
      { ackSeq: 20, rows: 10, bytes: 10 * outboxRowBytes('dev-1', 'temp') },
      { ackSeq: 25, rows: 5, bytes: 5 * outboxRowBytes('dev-1', 'temp') },
    ]);
    expect(await getMeta(h.fx.reader, 'acked_seq')).toBe('25');
    expect(fwd.status()).toMatchObject({ ackedSeq: 25, inflightUpToSeq: 25, consecutiveFailures: 0, sentReadings: 25, batchesSent: 3, lastError: null });
    expect(fwd.status().lastSuccessAt).toEqual(expect.any(Number));
    expect(await metric(registry, 'braid_forward_requests_total', { outcome: 'ok' })).toBe(3);
    expect(await metric(registry, 'braid_forward_readings_sent_total')).toBe(25);
    expect(await metric(registry, 'braid_forward_acked_seq')).toBe(25);
    expect(await metric(registry, 'braid_forward_bytes_sent_total')).toBe(h.cloud.requests.reduce((n, r) => n + r.body.length, 0));
  });

  test('[INV-1] rows survive a destroyed socket, a 500 and a timeout; deleted only after a 2xx', async () => {
    await insertReadings(h.fx, 1, 30);
    const seenWhileFailing: number[] = [];
    const look = async () => { seenWhileFailing.push(await pending()); };
    h.cloud.script(
      answer.checking(look, answer.destroy()),
      answer.checking(look, answer.status(500, { code: 'BRAID_ERR_INTERNAL', message: 'disk' })),
      answer.checking(look, answer.after(60_000, ack())), // past requestTimeoutMs
    );
    // 2 s for a request: the answered ones must all come within it (exactly 3 retries), and at
    // 150 ms a loaded run's slow answer would time out one more.
    const { fwd, registry } = make({ batchMaxReadings: 10, requestTimeoutMs: 2000 });
    await fwd.start();
    await until(async () => (await pending()) === 0, 15_000, 'outbox drained');

    expect(seenWhileFailing).toEqual([30, 30, 30]);
    expect(h.cloud.requests.slice(0, 4).map(seqsOf)).toEqual([range(1, 10), range(1, 10), range(1, 10), range(1, 10)]);
    expect(firstArrivals(h.cloud.requests)).toEqual(range(1, 30));
    for (const r of h.cloud.requests) expect(seqsOf(r)).toEqual([...seqsOf(r)].sort((a, b) => a - b));
    expect(await metric(registry, 'braid_forward_requests_total', { outcome: 'retry' })).toBe(3);
    expect(fwd.status()).toMatchObject({ ackedSeq: 30, consecutiveFailures: 0, lastError: { code: 'BRAID_ERR_INGEST_TIMEOUT' } });
  });

  test('backs off with delays that double from retryInitialMs', async () => {
    await insertReadings(h.fx, 1, 3);
    const failures: number[] = [];
    const note = () => { failures.push(fwd.status().consecutiveFailures); };
    h.cloud.script(...Array.from({ length: 5 }, () => answer.checking(note, answer.status(503, { code: 'BRAID_ERR_UNAVAILABLE' }))));
    // From 100 ms (was 20): the ratio below took one pause of ~100 ms in the first gap of 20 ms
    // to fail in a loaded run; now it takes ~450 ms.
    const INITIAL_MS = 100;
    const { fwd, registry } = make({ retryInitialMs: INITIAL_MS, retryMaxMs: 10_000, jitter: 0 });
    await fwd.start();
    await until(async () => (await pending()) === 0, 15_000);

    const at = h.cloud.requests.map((r) => r.at);
    const gaps = at.slice(1).map((t, i) => t - at[i]);
    expect(gaps).toHaveLength(5);
    // Timers never fire early, so the lower bounds are tight; upper bounds only as ratios.
    gaps.forEach((g, k) => expect(g).toBeGreaterThanOrEqual(INITIAL_MS * 2 ** k * 0.9));
    expect(gaps[4] / gaps[0]).toBeGreaterThan(3);
    expect(failures).toEqual([0, 1, 2, 3, 4]);
    expect(await metric(registry, 'braid_forward_consecutive_failures')).toBe(0);
  });

  test('honours Retry-After on a 429', async () => {
    await insertReadings(h.fx, 1, 3);
    h.cloud.script(answer.status(429, { code: 'BRAID_ERR_LIMIT_EXCEEDED', message: 'slow down' }, { 'retry-after': '1' }));
    const { fwd } = make({ retryInitialMs: 20, retryMaxMs: 5000 });
    await fwd.start();
    await until(async () => (await pending()) === 0);
    expect(h.cloud.requests).toHaveLength(2);
    expect(h.cloud.requests[1].at - h.cloud.requests[0].at).toBeGreaterThanOrEqual(950);
  });

  test('413 halves the batch at once, and successes grow it back gradually', async () => {
    await insertReadings(h.fx, 1, 60);
    h.cloud.script(answer.status(413, { code: 'BRAID_ERR_PAYLOAD_TOO_LARGE' }), answer.status(413, { code: 'BRAID_ERR_PAYLOAD_TOO_LARGE' }));
    // A backoff of 10 s: the three requests' 500 ms bound below is "no backoff", with room for a
    // loaded run's pauses (with 1 s the bound left 500 ms).
    const { fwd, registry } = make({ batchMaxReadings: 16, retryInitialMs: 10_000 });
    await fwd.start();
    await until(async () => (await pending()) === 0, 8000);

    const sizes = h.cloud.requests.map((r) => seqsOf(r).length);
    expect(sizes.slice(0, 3)).toEqual([16, 8, 4]);
    expect(sizes[3]).toBeGreaterThan(4);
    expect(sizes[3]).toBeLessThan(8);
    expect(Math.max(...sizes.slice(3))).toBeLessThanOrEqual(16);
    expect(firstArrivals(h.cloud.requests)).toEqual(range(1, 60));
    // No backoff after a 413 (retryInitialMs is 10 s).
    expect(h.cloud.requests[2].at - h.cloud.requests[0].at).toBeLessThan(5_000);
    expect(await metric(registry, 'braid_forward_requests_total', { outcome: 'retry' })).toBe(2);
  });

  test('401 is counted as rejected, logged with its code, and retried with backoff; nothing is dropped', async () => {
    await insertReadings(h.fx, 1, 5);
    const during: Array<string | undefined> = [];
    h.cloud.script(
      answer.status(401, { code: 'BRAID_ERR_UNAUTHORIZED', message: 'bad token' }),
      answer.checking(() => { during.push(fwd.status().lastError?.code); }, answer.status(403, { code: 'BRAID_ERR_FORBIDDEN', message: 'other gateway' })),
      answer.checking(async () => { during.push(String(await pending())); }, ack()),
    );
    const { logger, lines } = captureLogger();
    const { fwd, registry } = make({}, logger);
    await fwd.start();
    await until(async () => (await pending()) === 0);

    expect(during).toEqual(['BRAID_ERR_UNAUTHORIZED', '5']);
    expect(await metric(registry, 'braid_forward_requests_total', { outcome: 'rejected' })).toBe(2);
    expect(fwd.status().lastError).toMatchObject({ code: 'BRAID_ERR_FORBIDDEN', status: 403 });
    expect(lines.filter((l) => l.level === 50).map((l) => l.code)).toEqual(['BRAID_ERR_UNAUTHORIZED', 'BRAID_ERR_FORBIDDEN']);
    expect(JSON.stringify(lines)).not.toContain('tok-1');
    expect(firstArrivals(h.cloud.requests)).toEqual(range(1, 5));
  });

  test('a malformed 2xx acknowledges nothing: rows stay and the batch is resent', async () => {
    await insertReadings(h.fx, 1, 5);
    const seen: number[] = [];
    const look = async () => { seen.push(await pending()); };
    h.cloud.script(
      answer.checking(look, answer.status(200, '<html>proxy</html>')),
      answer.checking(look, answer.status(200, { stored: 5 })),
      answer.checking(look, answer.status(200, { ackSeq: '5' })),
      answer.checking(look, ack()),
    );
    const { fwd, registry } = make();
    await fwd.start();
    await until(async () => (await pending()) === 0);
    expect(seen).toEqual([5, 5, 5, 5]);
    expect(h.cloud.requests.map(seqsOf)).toEqual([range(1, 5), range(1, 5), range(1, 5), range(1, 5)]);
    expect(await metric(registry, 'braid_forward_requests_total', { outcome: 'retry' })).toBe(3);
    expect(fwd.status().lastError).toMatchObject({ code: 'BRAID_ERR_INGEST_RESPONSE_INVALID' });
  });

  test('[INV-2] an old or duplicate ackSeq is harmless; one past lastSeq deletes no more than was sent', async () => {
    await insertReadings(h.fx, 1, 20);
    const acked: number[] = [];
    const note = () => { acked.push(fwd.status().ackedSeq); };
    h.cloud.script(
      answer.checking(note, ack()),
      answer.checking(note, ack(() => 3)), // old: below what we acked
      answer.checking(note, ack(() => 999)),
    );
    const { fwd, acks } = make({ batchMaxReadings: 10 });
    await fwd.start();
    await until(async () => (await pending()) === 0);
    await insertReadings(h.fx, 21, 2);
    fwd.notify();
    await until(async () => (await pending()) === 0 && h.cloud.requests.length === 4);

    expect(acked).toEqual([0, 10, 10]);
    expect(h.cloud.requests.map(seqsOf)).toEqual([range(1, 10), range(11, 20), range(11, 20), [21, 22]]);
    expect(acks.map((a) => a.ackSeq)).toEqual([10, 20, 22]);
    expect(await getMeta(h.fx.reader, 'acked_seq')).toBe('22');
  });

  test('a partial ack deletes up to ackSeq and sends the rest at once', async () => {
    await insertReadings(h.fx, 1, 10);
    h.cloud.script(ack(() => 6));
    // "At once": well under a 10 s backoff (with 1 s the bound left a loaded run 500 ms).
    const { fwd, acks } = make({ retryInitialMs: 10_000 });
    await fwd.start();
    await until(async () => (await pending()) === 0, 8000);
    expect(h.cloud.requests.map(seqsOf)).toEqual([range(1, 10), range(7, 10)]);
    expect(acks.map((a) => a.rows)).toEqual([6, 4]);
    expect(h.cloud.requests[1].at - h.cloud.requests[0].at).toBeLessThan(5_000);
  });

  test('sends closed epochs with the batch that covers them, and unsent gaps; marks both once acknowledged', async () => {
    // Readings 1..5 were dropped at the disk budget (gap); 6..25 remain; epoch 3 is still open.
    const gap1 = await insertGap(h.fx, 1, 5, ['dev-1', 'dev-2']);
    await insertReadings(h.fx, 6, 7, { epoch: 1 });
    await insertReadings(h.fx, 13, 8, { epoch: 2 });
    await insertReadings(h.fx, 21, 5, { epoch: 3 });
    await insertEpoch(h.fx, 1, 1, 12, true);
    await insertEpoch(h.fx, 2, 13, 20, true);
    await insertEpoch(h.fx, 3, 21, 25, false);
    const { fwd } = make({ batchMaxReadings: 10, idlePollMs: 60_000 });
    await fwd.start();
    await until(async () => (await pending()) === 0 && h.cloud.requests.length === 2);

    const [b1, b2] = h.cloud.requests.map(decodeIngest);
    expect(b1).toMatchObject({ firstSeq: 1, lastSeq: 15, epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 12 }] });
    expect(b1.gaps).toEqual([{ id: gap1, reason: 'disk_budget', fromSeq: 1, toSeq: 5, count: 5, minTs: 10, maxTs: 20, devices: ['dev-1', 'dev-2'] }]);
    expect(b2).toMatchObject({ firstSeq: 16, lastSeq: 25, epochs: [{ epoch: 2, firstSeq: 13, lastSeq: 20 }], gaps: [] });

    // Epoch 3 closes and readings 26..30 are dropped: a batch with no readings carries both.
    await h.fx.writes.run((db) => db.run('UPDATE epochs SET closed_at = 5000, last_seq = 30 WHERE epoch = 3'));
    const gap2 = await insertGap(h.fx, 26, 30, ['dev-3']);
    fwd.notify();
    await until(() => h.cloud.requests.length === 3 && fwd.status().ackedSeq === 30, 10_000, 'the record-only batch');
    expect(decodeIngest(h.cloud.requests[2])).toMatchObject({
      firstSeq: 31, lastSeq: 30, readings: [], epochs: [{ epoch: 3, firstSeq: 21, lastSeq: 30 }], gaps: [{ id: gap2, devices: ['dev-3'] }],
    });
    expect(await h.fx.reader.all('SELECT epoch, reported FROM epochs ORDER BY epoch')).toEqual([
      { epoch: 1, reported: 1 }, { epoch: 2, reported: 1 }, { epoch: 3, reported: 1 }]);
    expect(await h.fx.reader.all('SELECT id, sent FROM gaps ORDER BY id')).toEqual([{ id: gap1, sent: 1 }, { id: gap2, sent: 1 }]);
    await new Promise((r) => setTimeout(r, 100));
    expect(h.cloud.requests).toHaveLength(3); // nothing left to send: no empty requests
  });
});

describe('Forwarder: the batch after a full one is read while its request runs', () => {
  test('the read-ahead leaves out the records in flight, and one closed meanwhile rides with a later batch', async () => {
    const gap1 = await insertGap(h.fx, 1, 5, ['dev-1']);
    await insertReadings(h.fx, 6, 30, { epoch: 1 });
    await insertEpoch(h.fx, 1, 1, 12, true);
    await insertEpoch(h.fx, 2, 13, 40, false);
    // The first request is answered 300 ms late; by then the read-ahead has read 16..25, so epoch 3,
    // closed now (seqs 13..20), is not in it although it ends below its lastSeq: it goes with 26..35.
    h.cloud.script(answer.checking(async () => {
      await new Promise((r) => setTimeout(r, 300));
      await h.fx.writes.run((db) => db.run('UPDATE epochs SET closed_at = 3000, last_seq = 20 WHERE epoch = 2'));
    }, ack()));
    const { fwd } = make({ batchMaxReadings: 10, idlePollMs: 60_000 });
    await fwd.start();
    await until(async () => (await pending()) === 0 && h.cloud.requests.length === 3);

    const [b1, b2, b3] = h.cloud.requests.map(decodeIngest);
    expect(b1).toMatchObject({ firstSeq: 1, lastSeq: 15, epochs: [{ epoch: 1 }], gaps: [{ id: gap1 }] });
    expect(b2).toMatchObject({ firstSeq: 16, lastSeq: 25, epochs: [], gaps: [] });
    expect(b3).toMatchObject({ firstSeq: 26, lastSeq: 35, epochs: [{ epoch: 2, firstSeq: 13, lastSeq: 20 }], gaps: [] });
    expect(h.cloud.requests.flatMap(seqsOf)).toEqual(range(6, 35));
    expect(await h.fx.reader.all('SELECT epoch, reported FROM epochs ORDER BY epoch')).toEqual([{ epoch: 1, reported: 1 }, { epoch: 2, reported: 1 }]);
  });

  test('a partial ack drops the batch read ahead: the next request begins after ackSeq', async () => {
    await insertReadings(h.fx, 1, 30);
    h.cloud.script(ack(() => 6));
    const { fwd, acks } = make({ batchMaxReadings: 10, idlePollMs: 60_000 });
    await fwd.start();
    await until(async () => (await pending()) === 0, 8000);
    expect(h.cloud.requests.map(seqsOf)).toEqual([range(1, 10), range(7, 16), range(17, 26), range(27, 30)]);
    expect(acks.map((a) => a.ackSeq)).toEqual([6, 16, 26, 30]);
  });

  test('a failed request drops it too: the same readings go again', async () => {
    await insertReadings(h.fx, 1, 20);
    h.cloud.script(answer.status(500, { code: 'BRAID_ERR_INTERNAL', message: 'disk' }));
    const { fwd } = make({ batchMaxReadings: 10, idlePollMs: 60_000 });
    await fwd.start();
    await until(async () => (await pending()) === 0, 8000);
    expect(h.cloud.requests.map(seqsOf)).toEqual([range(1, 10), range(1, 10), range(11, 20)]);
  });
});
