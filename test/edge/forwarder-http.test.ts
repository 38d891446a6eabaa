/** The forwarder's pure retry schedule, and one ingest request against a scripted real server. */
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { backoffDelayMs, parseRetryAfterMs, retryDelayMs } from '../../edge/forwarder/backoff.js';
import { gzipJson, postIngest } from '../../edge/forwarder/http.js';
import { HttpError } from '../../shared/errors.js';
import { HttpScript, answer } from '../support/http-script.js';

describe('backoff', () => {
  const o = { retryInitialMs: 100, retryMaxMs: 1000, jitter: 0.2 };

  test('doubles from retryInitialMs up to retryMaxMs', () => {
    expect([1, 2, 3, 4, 5, 6, 50].map((n) => backoffDelayMs(n, o, () => 0))).toEqual([100, 200, 400, 800, 1000, 1000, 1000]);
  });

  test('jitter takes up to its fraction off, uniformly', () => {
    expect(backoffDelayMs(3, o, () => 1)).toBe(320);
    expect(backoffDelayMs(3, o, () => 0.5)).toBe(360);
    expect(backoffDelayMs(3, { ...o, jitter: 1 }, () => 0.25)).toBe(300); // classic full jitter
    for (let i = 0; i < 100; i++) {
      const d = backoffDelayMs(2, o);
      expect(d).toBeGreaterThanOrEqual(160);
      expect(d).toBeLessThanOrEqual(200);
    }
  });

  test('Retry-After: delta-seconds or an HTTP-date; garbage is ignored', () => {
    const now = Date.parse('2024-11-24T00:00:00Z');
    expect(parseRetryAfterMs('1', now)).toBe(1000);
    expect(parseRetryAfterMs(' 0.5 ', now)).toBe(500);
    expect(parseRetryAfterMs('Sun, 24 Nov 2024 00:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfterMs('Sat, 23 Nov 2024 00:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfterMs('soon', now)).toBeUndefined();
    expect(parseRetryAfterMs('', now)).toBeUndefined();
    expect(parseRetryAfterMs(null, now)).toBeUndefined();
  });

  test('Retry-After wins when longer than our backoff, capped at retryMaxMs', () => {
    expect(retryDelayMs(1, 500, o, () => 0)).toBe(500);
    expect(retryDelayMs(4, 500, o, () => 0)).toBe(800);
    expect(retryDelayMs(1, 3_600_000, o, () => 0)).toBe(1000);
    expect(retryDelayMs(1, undefined, o, () => 0)).toBe(100);
  });
});

describe('postIngest', () => {
  let server: HttpScript;
  beforeEach(async () => { server = await HttpScript.start(answer.status(200, { ackSeq: 7, stored: 7, duplicates: 0 })); });
  afterEach(async () => { await server.close(); });

  const post = async (timeoutMs = 2000) => postIngest({ url: `${server.url}/`, token: 't', timeoutMs }, await gzipJson('{"v":1}'));

  test('a 2xx with ackSeq resolves to the ack', async () => {
    await expect(post()).resolves.toEqual({ ackSeq: 7, stored: 7, duplicates: 0 });
    expect(server.requests[0].url).toBe('/api/v1/ingest');
  });

  test('a non-2xx rejects with HttpError carrying status, body and Retry-After', async () => {
    expect.assertions(4);
    server.script(
      answer.status(401, { code: 'BRAID_ERR_UNAUTHORIZED', message: 'bad token' }),
      answer.status(429, { code: 'BRAID_ERR_LIMIT_EXCEEDED' }, { 'retry-after': '2' }),
      answer.status(503, 'down'),
    );
    await expect(post()).rejects.toMatchObject({ name: 'HttpError', code: 'BRAID_ERR_HTTP', statusCode: 401 });
    await expect(post()).rejects.toMatchObject({ statusCode: 429, retryAfterMs: 2000 });
    const err = await post().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HttpError);
    expect((err as HttpError).canRetry()).toBe(true);
  });

  test('a malformed 2xx rejects with BRAID_ERR_INGEST_RESPONSE_INVALID', async () => {
    expect.assertions(3);
    server.script(answer.status(200, 'ok'), answer.status(200, { ackSeq: -1 }), answer.status(204));
    for (let i = 0; i < 3; i++) await expect(post()).rejects.toMatchObject({ code: 'BRAID_ERR_INGEST_RESPONSE_INVALID' });
  });

  test('a slow answer rejects with BRAID_ERR_INGEST_TIMEOUT', async () => {
    expect.assertions(1);
    server.script(answer.after(2000, answer.status(200, { ackSeq: 1 })));
    await expect(post(50)).rejects.toMatchObject({ code: 'BRAID_ERR_INGEST_TIMEOUT' });
  });

  test('a dropped connection and a closed port reject with BRAID_ERR_INGEST_UNREACHABLE', async () => {
    expect.assertions(2);
    server.script(answer.destroy());
    await expect(post()).rejects.toMatchObject({ code: 'BRAID_ERR_INGEST_UNREACHABLE' });
    // A port that was just free: nothing listens there.
    const probe = createServer().listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const port = (probe.address() as AddressInfo).port;
    probe.close();
    await once(probe, 'close');
    await expect(postIngest({ url: `http://127.0.0.1:${port}`, token: null, timeoutMs: 2000 }, await gzipJson('{}')))
      .rejects.toMatchObject({ code: 'BRAID_ERR_INGEST_UNREACHABLE', cause: expect.anything() });
  });

  test('an outer abort rejects with its reason', async () => {
    expect.assertions(1);
    server.script(answer.hang());
    const ctl = new AbortController();
    const p = postIngest({ url: server.url, token: null, timeoutMs: 5000, signal: ctl.signal }, await gzipJson('{}'));
    await server.waitForRequests(1);
    ctl.abort(Object.assign(new Error('closing'), { code: 'BRAID_ERR_CLOSED' }));
    await expect(p).rejects.toMatchObject({ code: 'BRAID_ERR_CLOSED' });
  });
});
