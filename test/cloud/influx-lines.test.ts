/** The InfluxDB sink's pure parts: line protocol, escaping, API choice, retry delays. */
import { chooseApi, escapeMeasurement, escapeTag, parseVersion, tagProblem, toLine } from '../../cloud/sinks/influx/index.js';
import { backoffDelayMs, canRetryRequest, parseRetryAfterMs, retryDelayMs, type RetryOptions } from '../../cloud/sinks/retry.js';
import { HttpError } from '../../shared/errors.js';
import type { ViewRow } from '../../cloud/sinks/view-rows.js';

const row: ViewRow = {
  tags: { metric: 'rel hum', device: 'd,1 =x"q' }, bucket: 1732406400000, count: 3, sum: 0.30000000000000004,
  min: -1, max: 2.5, m2: 1.5, first: 0.1, firstTs: 1732406401000, last: 2.5, lastTs: 1732406459999,
};

describe('line protocol', () => {
  it('writes measurement = view, sorted escaped tags, every field (count and *_ts integers), time = bucket ms', () => {
    expect(toLine('device_1m', row)).toEqual({
      line: 'device_1m,device=d\\,1\\ \\=x"q,metric=rel\\ hum count=3i,sum=0.30000000000000004,min=-1,max=2.5,m2=1.5,'
        + 'mean=0.10000000000000002,stddev=0.7071067811865476,first=0.1,last=2.5,first_ts=1732406401000i,last_ts=1732406459999i 1732406400000',
    });
  });

  it('a fleet row has only the metric tag; huge floats use exponent form; missing first/last are left out', () => {
    expect(toLine('fleet_1d', { ...row, tags: { metric: 'temp' }, sum: 1.5e300, first: null, firstTs: null })).toEqual({
      line: 'fleet_1d,metric=temp count=3i,sum=1.5e+300,min=-1,max=2.5,m2=1.5,mean=5e+299,stddev=0.7071067811865476,last=2.5,last_ts=1732406459999i 1732406400000',
    });
  });

  it('stddev is the population one, 0 for one reading (and for an m2 a rounding error below 0)', () => {
    const one = toLine('device_1m', { ...row, count: 1, sum: 4, m2: -1e-18 });
    expect('line' in one && one.line).toContain(',mean=4,stddev=0,');
  });

  it('leaves out non-finite fields: line protocol has no NaN or Infinity', () => {
    const r = toLine('device_1m', { ...row, sum: Infinity });
    expect('line' in r && r.line).not.toMatch(/sum=|mean=/);
  });

  it('escapes commas and spaces in measurements; commas, equals and spaces in tags; leaves quotes and other backslashes', () => {
    expect(escapeMeasurement('a b,c=d')).toBe('a\\ b\\,c=d');
    expect(escapeTag('a b,c=d"e\\f')).toBe('a\\ b\\,c\\=d"e\\f');
  });

  it.each([
    ['', 'empty_tag'],
    ['ends with\\', 'unrepresentable_tag'],
    ['a\\,b', 'unrepresentable_tag'],
    ['a\\ b', 'unrepresentable_tag'],
    ['line\nbreak', 'unrepresentable_tag'],
    ['a\\b', undefined],
    ['dé"4', undefined],
  ])('tag value %j: %s', (value, problem) => {
    expect(tagProblem(value)).toBe(problem);
    const r = toLine('device_1m', { ...row, tags: { device: value, metric: 'm' } });
    expect(r).toEqual(problem ? { skip: problem } : { line: expect.any(String) });
  });

  it('skips a row without readings', () => {
    expect(toLine('device_1m', { ...row, count: 0 })).toEqual({ skip: 'bad_count' });
  });
});

describe('API choice from /ping', () => {
  it.each([
    ['1.6.7~rc0', 'v1', true],
    ['1.7.11', 'v1', true],
    ['1.8.10', 'v2', true],
    ['v2.7.1', 'v2', false],
    ['3.0.0', 'v2', false],
    [null, 'v2', false], // VictoriaMetrics: /ping is 204 without the header
    ['OSS', 'v2', false],
  ] as const)('X-Influxdb-Version %j -> %s', (version, api, influx1) => {
    expect(chooseApi(version)).toEqual({ api, version: version ?? undefined, influx1 });
  });

  it('parses major and minor', () => {
    expect(parseVersion('v2.7.1')).toEqual({ major: 2, minor: 7 });
    expect(parseVersion('nightly')).toBeUndefined();
  });
});

describe('retry policy', () => {
  const o: RetryOptions = { maxRetries: 5, retryInitialMs: 100, retryMaxMs: 1000, jitter: 0.5, retryAfterMaxMs: 5000 };

  it('doubles up to the max, the jitter fraction random', () => {
    expect([1, 2, 3, 4, 5, 9].map((n) => backoffDelayMs(n, o, () => 0))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(backoffDelayMs(2, o, () => 1)).toBe(100);
  });

  it('reads Retry-After as seconds or an HTTP date, and honours it when longer, up to retryAfterMaxMs', () => {
    expect(parseRetryAfterMs('2', 0)).toBe(2000);
    expect(parseRetryAfterMs('Thu, 01 Jan 1970 00:00:03 GMT', 1000)).toBe(2000);
    expect(parseRetryAfterMs('soon', 0)).toBeUndefined();
    expect(retryDelayMs(1, 2000, o, () => 0)).toBe(2000);
    expect(retryDelayMs(1, 60_000, o, () => 0)).toBe(5000);
    expect(retryDelayMs(4, 10, o, () => 0)).toBe(800);
  });

  it('retries 5xx, 408, 429, timeouts and socket errors; not other 4xx', () => {
    expect([500, 503, 429, 408, 404, 400, 413].map((s) => canRetryRequest(new HttpError(s, '')))).toEqual([true, true, true, true, false, false, false]);
    expect(canRetryRequest(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }))).toBe(true);
    expect(canRetryRequest(Object.assign(new Error('x'), { name: 'RequestTimedOutError' }))).toBe(true);
    expect(canRetryRequest(new Error('bad'))).toBe(false);
  });
});
