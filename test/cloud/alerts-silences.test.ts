/**
 * cloud/alerts/silences.ts apart from Alertmanager (which test/console/devices.test.ts runs for
 * real): Alertmanager's matcher semantics on the labels the cloud sends, and GET /api/v2/silences
 * answered by a scripted real HTTP server: a black hole (the timeout), a 500, not JSON, and the
 * states kept (active, pending; expired dropped).
 */
import { type Server, createServer } from 'node:http';
import { type AddressInfo } from 'node:net';
import { postAlerts } from '../../cloud/alerts/alertmanager.js';
import { type Silence, fetchSilences, matcherHolds, silencedBy } from '../../cloud/alerts/silences.js';

const labels = { alertname: 'hot-b', scope: 'device', device: 'fleet-04217' };

test('matchers: = != =~ !~ (regex anchored at both ends), a missing label is empty, a bad regex holds for nothing', () => {
  expect(matcherHolds({ name: 'alertname', value: 'hot-b', isRegex: false }, labels)).toBe(true);
  expect(matcherHolds({ name: 'alertname', value: 'hot', isRegex: false }, labels)).toBe(false);
  expect(matcherHolds({ name: 'alertname', value: 'hot', isRegex: false, isEqual: false }, labels)).toBe(true);
  expect(matcherHolds({ name: 'alertname', value: 'hot-.*', isRegex: true }, labels)).toBe(true);
  expect(matcherHolds({ name: 'alertname', value: 'hot', isRegex: true }, labels)).toBe(false);
  expect(matcherHolds({ name: 'alertname', value: 'b', isRegex: true }, labels)).toBe(false);
  expect(matcherHolds({ name: 'alertname', value: 'hot-a|hot-b', isRegex: true }, labels)).toBe(true);
  expect(matcherHolds({ name: 'device', value: 'fleet-0.*', isRegex: true, isEqual: false }, labels)).toBe(false);
  expect(matcherHolds({ name: 'gateway', value: '', isRegex: false }, labels)).toBe(true);
  expect(matcherHolds({ name: 'gateway', value: '.+', isRegex: true }, labels)).toBe(false);
  expect(matcherHolds({ name: 'alertname', value: '(', isRegex: true }, labels)).toBe(false);
  const s = (id: string, matchers: Silence['matchers']): Silence => ({ id, state: 'active', matchers, startsAt: '', endsAt: '', createdBy: '', comment: '' });
  expect(silencedBy([
    s('a', [{ name: 'alertname', value: 'hot-.*', isRegex: true }, { name: 'device', value: 'fleet-04217', isRegex: false }]),
    s('b', [{ name: 'alertname', value: 'hot-.*', isRegex: true }, { name: 'device', value: 'fleet-00042', isRegex: false }]),
    s('c', []),
  ], labels)).toEqual(['a']);
});

describe('GET /api/v2/silences and POST /api/v2/alerts on a scripted server', () => {
  let server: Server;
  let url: string;
  let answer: (res: import('node:http').ServerResponse) => void;
  const posted: string[] = [];
  beforeAll(async () => {
    // Credentials in alerts.alertmanagerUrl go as Basic authorization (fetch refuses them in a URL).
    server = createServer((req, res) => {
      if (req.headers.authorization !== `Basic ${Buffer.from('user:secret').toString('base64')}`) res.writeHead(401).end('who?');
      else if (req.url === '/api/v2/silences') answer(res);
      else if (req.url === '/api/v2/alerts' && req.method === 'POST') {
        let body = '';
        req.on('data', (c: Buffer) => { body += c; }).on('end', () => { posted.push(body); res.writeHead(200).end(); });
      }
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://user:secret@127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  test('active and pending kept, expired dropped, soonest end first', async () => {
    const m = [{ name: 'alertname', value: 'x', isRegex: false, isEqual: true }];
    answer = (res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify([
      { id: 's2', status: { state: 'active' }, matchers: m, startsAt: '2026-01-01T00:00:00Z', endsAt: '2026-01-03T00:00:00Z', createdBy: 'ops', comment: 'b' },
      { id: 's1', status: { state: 'pending' }, matchers: m, startsAt: '2026-01-02T00:00:00Z', endsAt: '2026-01-02T06:00:00Z', createdBy: 'ops', comment: 'a' },
      { id: 's0', status: { state: 'expired' }, matchers: m, startsAt: '2025-01-01T00:00:00Z', endsAt: '2025-01-02T00:00:00Z', createdBy: 'ops', comment: '' },
    ]));
    expect((await fetchSilences(url, 2_000)).map((s) => [s.id, s.state])).toEqual([['s1', 'pending'], ['s2', 'active']]);
  });

  test('a black hole, a 500 and an answer that is not a list are each a BRAID_ERR_ALERTMANAGER_UNAVAILABLE naming what happened (no credentials in it)', async () => {
    answer = () => undefined; // never answers
    const slow = fetchSilences(url, 200);
    await expect(slow).rejects.toMatchObject({ code: 'BRAID_ERR_ALERTMANAGER_UNAVAILABLE', statusCode: 502 });
    await expect(slow).rejects.toThrow(/did not answer within 200 ms \(alerts\.notifyTimeoutMs\)/);
    answer = (res) => res.writeHead(500).end('boom');
    await expect(fetchSilences(url, 2_000)).rejects.toThrow(/answered 500 to GET \/api\/v2\/silences: boom/);
    answer = (res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>');
    await expect(fetchSilences(url, 2_000)).rejects.toThrow(/did not answer a JSON array/);
    const err = await fetchSilences(url, 2_000).catch((e: Error) => e);
    expect(String((err as Error).message)).not.toContain('secret');
  });

  test('alerts are posted with the URL\'s credentials as Basic authorization (fetch refuses them in a URL), and a refusal does not show them', async () => {
    const alert = { labels: { alertname: 'hot', scope: 'device', device: 'd1' }, annotations: {}, startsAt: '2026-01-01T00:00:00Z', endsAt: '2026-01-01T00:05:00Z' };
    await postAlerts(url, [alert], 2_000);
    expect(posted.map((b) => JSON.parse(b))).toEqual([[alert]]);
    const wrong = url.replace('user:secret', 'user:wrong');
    const err = await postAlerts(wrong, [alert], 2_000).catch((e: Error) => e);
    expect(String((err as Error).message)).toMatch(/answered 401 to POST http:\/\/127\.0\.0\.1:\d+\/api\/v2\/alerts/);
    expect(String((err as Error).message)).not.toContain('wrong');
  });
});
