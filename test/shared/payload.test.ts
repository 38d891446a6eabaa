/**
 * Device payload parsing (DESIGN.md, MQTT contract): flat JSON and SenML (RFC 8428). Every
 * rejection is a PayloadInvalidError with code BRAID_ERR_PAYLOAD_INVALID and a stable `reason`.
 */
import fc from 'fast-check';
import { BraidError, PayloadInvalidError } from '../../shared/errors.js';
import { DEFAULT_PAYLOAD_LIMITS, parseFlatFast, parseFull, parsePayload, type PayloadLimits } from '../../shared/payload.js';

const NOW = Date.UTC(2024, 10, 24, 12, 0, 0); // 2024-11-24T12:00:00Z
const DAY = 86_400_000;
const Y2K = Date.UTC(2000, 0, 1);

const parse = (p: Buffer | string | object, limits?: PayloadLimits) =>
  parsePayload(typeof p === 'string' || Buffer.isBuffer(p) ? p : JSON.stringify(p), NOW, limits);

/** The error parsePayload throws, checked to be a PayloadInvalidError with the stable code. */
function rejection(p: Buffer | string | object, limits?: PayloadLimits): PayloadInvalidError {
  try {
    parse(p, limits);
  } catch (err) {
    expect(err).toBeInstanceOf(PayloadInvalidError);
    expect(err).toBeInstanceOf(BraidError);
    expect(err).toMatchObject({ code: 'BRAID_ERR_PAYLOAD_INVALID', statusCode: 400 });
    return err as PayloadInvalidError;
  }
  throw new Error(`expected a rejection of ${String(typeof p === 'object' && !Buffer.isBuffer(p) ? JSON.stringify(p) : p)}`);
}

const reasonOf = (p: Buffer | string | object, limits?: PayloadLimits) => rejection(p, limits).reason;

describe('parsePayload: flat JSON', () => {
  it('reads the contract example', () => {
    expect(parse('{"ts":1732406400000,"temp":21.5,"hum":40}')).toEqual([
      { metric: 'temp', value: 21.5, ts: 1732406400000 },
      { metric: 'hum', value: 40, ts: 1732406400000 },
    ]);
  });

  it('leaves ts undefined when the payload has none (the gateway stamps it)', () => {
    expect(parse({ temp: 21.5 })).toEqual([{ metric: 'temp', value: 21.5, ts: undefined }]);
  });

  it('keeps the payload key order, wherever ts stands', () => {
    expect(parse('{"b":1,"ts":1732406400000,"a":2}').map((r) => r.metric)).toEqual(['b', 'a']);
  });

  it.each<[string, unknown, number]>([
    ['epoch ms', 1732406400000, 1732406400000],
    ['fractional epoch ms, rounded', 1732406400000.6, 1732406400001],
    ['an epoch ms digit string', '1732406400000', 1732406400000],
    ['ISO 8601 with Z', '2024-11-24T00:00:00Z', 1732406400000],
    ['ISO 8601 with ms', '2024-11-24T00:00:00.250Z', 1732406400250],
    ['ISO 8601 with an offset', '2024-11-24T01:00:00+01:00', 1732406400000],
    ['a bare date (UTC midnight)', '2024-11-24', 1732406400000],
    ['exactly 2000-01-01', Y2K, Y2K],
    ['exactly one day ahead of now', NOW + DAY, NOW + DAY],
  ])('takes ts as %s', (_what, ts, want) => {
    expect(parse({ ts, temp: 1 })).toEqual([{ metric: 'temp', value: 1, ts: want }]);
  });

  it.each<[string, number]>([
    ['0', 0], ['-0.5', -0.5], ['-40', -40], ['1e-5', 1e-5], ['1.7976931348623157e308', Number.MAX_VALUE],
    ['5e-324', 5e-324], ['123456789012345', 123456789012345],
  ])('takes the value %s', (text, value) => {
    expect(parse(`{"v":${text}}`)).toEqual([{ metric: 'v', value, ts: undefined }]);
  });

  it.each(['temp', 'Temp_2', 'engine.rpm', 'sensor:temp', 'a-b', '_x', '0', 'x'.repeat(128)])('takes the metric name %j', (name) => {
    expect(parse({ [name]: 1 })).toEqual([{ metric: name, value: 1, ts: undefined }]);
  });

  it('takes a Buffer and a string alike, with surrounding whitespace and a UTF-8 BOM', () => {
    const text = '{"ts":1732406400000,"temp":21.5}';
    const want = [{ metric: 'temp', value: 21.5, ts: 1732406400000 }];
    expect(parse(Buffer.from(text))).toEqual(want);
    expect(parse(`\n  ${text}\r\n`)).toEqual(want);
    expect(parse(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)]))).toEqual(want);
    expect(parse(`\ufeff${text}`)).toEqual(want);
  });

  it('passes a metric repeated in one message through (JSON keeps the last)', () => {
    expect(parse('{"temp":1,"temp":2}')).toEqual([{ metric: 'temp', value: 2, ts: undefined }]);
  });

  it('accepts a payload of exactly maxPayloadBytes and exactly maxReadingsPerMessage', () => {
    const text = '{"temp":21.5}';
    expect(parse(text, { maxPayloadBytes: text.length, maxReadingsPerMessage: 1 })).toHaveLength(1);
    const many = Object.fromEntries(Array.from({ length: DEFAULT_PAYLOAD_LIMITS.maxReadingsPerMessage }, (_, i) => [`m${i}`, i]));
    expect(parse({ ts: NOW, ...many })).toHaveLength(1000);
  });

  it('round-trips any object of finite numbers under valid names', () => {
    const name = fc.stringMatching(/^[A-Za-z0-9_.:-]{1,20}$/).filter((n) => n !== 'ts' && n !== '__proto__');
    fc.assert(fc.property(
      fc.dictionary(name, fc.double({ noNaN: true, noDefaultInfinity: true }), { minKeys: 1, maxKeys: 30 }),
      fc.option(fc.integer({ min: Y2K, max: NOW + DAY }), { nil: undefined }),
      (metrics, ts) => {
        const out = parse(ts === undefined ? metrics : { ...metrics, ts });
        // JSON writes -0 as 0.
        expect(out).toEqual(Object.entries(metrics).map(([metric, value]) => ({ metric, value: value + 0, ts })));
      },
    ));
  });
});

describe('parsePayload: rejections', () => {
  it('names the offending key in the message', () => {
    const err = rejection({ temp: '21.5' });
    expect(err.reason).toBe('not_numeric');
    expect(err.message).toBe('metric "temp": value is a string, expected a finite number');
  });

  describe('too_large (checked on the byte length, before parsing)', () => {
    const limits = { maxPayloadBytes: 16, maxReadingsPerMessage: 10 };
    it.each<[string, Buffer | string]>([
      ['a string one byte over', '{"temp":21.5555}!'],
      ['a Buffer one byte over', Buffer.alloc(17, 0x20)],
      ['something that is not even JSON', 'x'.repeat(100)],
      ['invalid UTF-8', Buffer.alloc(100, 0xff)],
      ['multi-byte characters counted as bytes, not chars', '{"t":"éééééé"}'], // 14 chars, 20 bytes
    ])('%s', (_what, p) => {
      const err = rejection(p, limits);
      expect(err.reason).toBe('too_large');
      expect(err.message).toMatch(/over the limit of 16/);
    });

    it('by default above 64 KiB', () => {
      expect(reasonOf(`{"a":1,"pad":"${'x'.repeat(64 * 1024)}"}`)).toBe('too_large');
    });
  });

  describe('empty', () => {
    it.each<[string, Buffer | string]>([
      ['an empty string', ''],
      ['an empty Buffer', Buffer.alloc(0)],
      ['whitespace', ' \n\t '],
      ['a lone BOM', '\ufeff'],
      ['an empty object', '{}'],
      ['an object with only ts', '{"ts":1732406400000}'],
      ['an empty SenML pack', '[]'],
    ])('%s', (_what, p) => {
      expect(reasonOf(p)).toBe('empty');
    });
  });

  describe('json', () => {
    it.each<[string, Buffer | string]>([
      ['broken JSON', '{"temp":'],
      ['a trailing comma', '{"temp":1,}'],
      ['single quotes', "{'temp':1}"],
      ['NaN literal', '{"temp":NaN}'],
      ['Infinity literal', '{"temp":Infinity}'],
      ['two documents', '{"a":1}{"b":2}'],
      ['a bare number', '42'],
      ['a bare string', '"temp"'],
      ['true', 'true'],
      ['null', 'null'],
      ['invalid UTF-8 (0xff)', Buffer.from([0x7b, 0xff, 0x7d])],
      ['an overlong UTF-8 encoding', Buffer.concat([Buffer.from('{"a":1,"b":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')])],
      ['an encoded UTF-16 surrogate', Buffer.concat([Buffer.from('{"a":1,"b":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')])],
      ['a truncated multi-byte character', Buffer.concat([Buffer.from('{"a":1}'), Buffer.from([0xe2, 0x82])])],
    ])('%s', (_what, p) => {
      expect(reasonOf(p)).toBe('json');
    });

    it('keeps the JSON.parse error as cause', () => {
      expect(rejection('{"temp":').cause).toBeInstanceOf(SyntaxError);
    });
  });

  describe('not_numeric, nested, non_finite', () => {
    it.each<[string, string, string, RegExp]>([
      ['a string', '{"temp":"21.5"}', 'not_numeric', /metric "temp": value is a string/],
      ['an empty string', '{"temp":""}', 'not_numeric', /metric "temp"/],
      ['null', '{"temp":null}', 'not_numeric', /metric "temp": value is null/],
      ['true', '{"temp":true}', 'not_numeric', /metric "temp": value is a boolean/],
      ['false', '{"temp":false}', 'not_numeric', /metric "temp": value is a boolean/],
      ['an object', '{"temp":{"value":1}}', 'nested', /metric "temp": value is an object/],
      ['an empty object', '{"temp":{}}', 'nested', /metric "temp"/],
      ['an array', '{"temp":[1,2]}', 'nested', /metric "temp": value is an array/],
      ['an empty array', '{"temp":[]}', 'nested', /metric "temp"/],
      ['1e400 (parses to Infinity)', '{"temp":1e400}', 'non_finite', /metric "temp"/],
      ['-1e400', '{"temp":-1e400}', 'non_finite', /metric "temp"/],
    ])('%s', (_what, p, reason, message) => {
      const err = rejection(p);
      expect(err.reason).toBe(reason);
      expect(err.message).toMatch(message);
    });

    it('names the first bad key even after good ones', () => {
      expect(rejection('{"ok":1,"bad":"x","worse":{}}').message).toMatch(/^metric "bad"/);
    });
  });

  describe('bad_ts', () => {
    it.each<[string, unknown, RegExp]>([
      ['garbage', 'yesterday', /^ts: /],
      ['a zone-less date-time', '2024-11-24T00:00:00', /ISO 8601/],
      ['a day the month lacks', '2024-02-30', /^ts: /],
      ['null', null, /^ts: /],
      ['a boolean', true, /^ts: /],
      ['an object', { ms: 1 }, /^ts: /],
      ['an array', [1732406400000], /^ts: /],
      ['epoch seconds (reads as 1970)', 1732406400, /before 2000-01-01/],
      ['0', 0, /before 2000-01-01/],
      ['a negative number', -1, /before 2000-01-01/],
      ['one ms before 2000', Y2K - 1, /before 2000-01-01/],
      ['an ISO date before 2000', '1999-12-31T23:59:59Z', /before 2000-01-01/],
      ['more than a day in the future', NOW + DAY + 1, /future/],
      ['an ISO date next year', '2025-11-24T00:00:00Z', /future/],
    ])('%s', (_what, ts, message) => {
      const err = rejection({ ts, temp: 1 });
      expect(err.reason).toBe('bad_ts');
      expect(err.message).toMatch(message);
    });

    it('1e400 as ts', () => {
      expect(reasonOf('{"ts":1e400,"temp":1}')).toBe('bad_ts');
    });
  });

  describe('bad_metric', () => {
    it.each(['', 'a b', 'temp/1', 'devices/+/x', 'temp#', 'a+b', 'x'.repeat(129), 'température', 'tab\there', 'nul\u0000', 'line\n', '__proto__', '"q"'])(
      '%j',
      (name) => {
        const err = rejection(`{${JSON.stringify(name)}:1}`);
        expect(err.reason).toBe('bad_metric');
        expect(err.message).toMatch(/^metric "/);
      },
    );

    it('cuts a long bad name short in the message', () => {
      expect(rejection({ ['é'.repeat(5000)]: 1 }).message.length).toBeLessThan(200);
    });
  });

  describe('too_many', () => {
    it('above maxReadingsPerMessage (ts does not count)', () => {
      const many = Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`m${i}`, i]));
      expect(reasonOf(many)).toBe('too_many');
      expect(reasonOf({ ts: NOW, a: 1, b: 2, c: 3 }, { maxPayloadBytes: 1000, maxReadingsPerMessage: 2 })).toBe('too_many');
      expect(parse({ ts: NOW, a: 1, b: 2 }, { maxPayloadBytes: 1000, maxReadingsPerMessage: 2 })).toHaveLength(2);
    });
  });

  it('never throws anything but a PayloadInvalidError, whatever the bytes', () => {
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)), fc.json(), fc.string()), (p) => {
      try {
        const out = parsePayload(p, NOW);
        for (const r of out) {
          expect(Number.isFinite(r.value)).toBe(true);
          expect(r.metric).toMatch(/^[A-Za-z0-9_.:-]{1,128}$/);
          if (r.ts !== undefined) expect(r.ts >= Y2K && r.ts <= NOW + DAY).toBe(true);
        }
      } catch (err) {
        expect(err).toBeInstanceOf(PayloadInvalidError);
        expect((err as PayloadInvalidError).code).toBe('BRAID_ERR_PAYLOAD_INVALID');
      }
    }), { numRuns: 500 });
  });
});

describe('parsePayload: SenML (RFC 8428)', () => {
  it('§5.1.1 single datapoint: no bn, so the metric is the whole name; no time means "now"', () => {
    expect(parse('[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]')).toEqual([
      { metric: 'urn:dev:ow:10e2073a01080063', value: 23.1, ts: undefined },
    ]);
  });

  it('§5.1.2 multiple datapoints: a bn ending in ":" is the device prefix and is stripped', () => {
    const pack = [
      { bn: 'urn:dev:ow:10e2073a01080063:', n: 'voltage', u: 'V', v: 120.1 },
      { n: 'current', u: 'A', v: 1.2 },
    ];
    expect(parse(pack)).toEqual([
      { metric: 'voltage', value: 120.1, ts: undefined },
      { metric: 'current', value: 1.2, ts: undefined },
    ]);
  });

  it('§5.1.3 multiple measurements: bt (seconds, absolute) plus negative t, base fields carried forward', () => {
    const pack = `[
      {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,"bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},
      {"n":"current","t":-5,"v":1.2},
      {"n":"current","t":-4,"v":1.3},
      {"n":"current","t":-3,"v":1.4},
      {"n":"current","t":-2,"v":1.5},
      {"n":"current","t":-1,"v":1.6},
      {"n":"current","v":1.7}
    ]`;
    const bt = 1276020076001; // 2010-06-08T18:01:16.001Z
    expect(parse(pack)).toEqual([
      { metric: 'voltage', value: 120.1, ts: bt },
      { metric: 'current', value: 1.2, ts: bt - 5000 },
      { metric: 'current', value: 1.3, ts: bt - 4000 },
      { metric: 'current', value: 1.4, ts: bt - 3000 },
      { metric: 'current', value: 1.5, ts: bt - 2000 },
      { metric: 'current', value: 1.6, ts: bt - 1000 },
      { metric: 'current', value: 1.7, ts: bt },
    ]);
  });

  it('§5.1.4 resolved data: absolute t on every record; without bn the name is kept whole', () => {
    const pack = [
      { n: 'urn:dev:ow:10e2073a0108006:voltage', u: 'V', v: 120.1, t: 1.276020076001e+09 },
      { n: 'urn:dev:ow:10e2073a0108006:current', u: 'A', v: 1.2, t: 1.276020071001e+09 },
    ];
    expect(parse(pack)).toEqual([
      { metric: 'urn:dev:ow:10e2073a0108006:voltage', value: 120.1, ts: 1276020076001 },
      { metric: 'urn:dev:ow:10e2073a0108006:current', value: 1.2, ts: 1276020071001 },
    ]);
  });

  describe('relative times (below 2^28 s) are seconds from now', () => {
    it.each<[string, object[], Array<number | undefined>]>([
      ['t only', [{ n: 'temp', v: 20, t: -60 }], [NOW - 60_000]],
      ['bt only', [{ bt: -120, n: 'temp', v: 20 }], [NOW - 120_000]],
      ['bt + t, carried forward', [{ bt: -120, n: 'temp', v: 20 }, { n: 'temp', v: 21, t: 60 }, { n: 'temp', v: 22, t: 120 }], [NOW - 120_000, NOW - 60_000, undefined]],
      ['fractional seconds, rounded to ms', [{ n: 'temp', v: 20, t: -1.2346 }], [NOW - 1235]],
      ['a little in the future', [{ n: 'temp', v: 20, t: 30 }], [NOW + 30_000]],
      ['explicit t: 0 is "roughly now"', [{ n: 'temp', v: 20, t: 0 }], [undefined]],
      ['an hour ago', [{ n: 'temp', v: 20, t: -3600 }], [NOW - 3_600_000]],
    ])('%s', (_what, pack, ts) => {
      expect(parse(pack).map((r) => r.ts)).toEqual(ts);
    });

    it('2^28 s is absolute (1978-07-04, before 2000); just below is relative (8.5 years ahead)', () => {
      const abs = rejection([{ n: 'temp', v: 1, t: 2 ** 28 }]);
      expect(abs.reason).toBe('bad_ts');
      expect(abs.message).toMatch(/before 2000-01-01/);
      const rel = rejection([{ n: 'temp', v: 1, t: 2 ** 28 - 1 }]);
      expect(rel.reason).toBe('bad_ts');
      expect(rel.message).toMatch(/future/);
    });
  });

  it('adds bv to v and bs to s, carried forward until replaced', () => {
    const pack = [
      { bn: 'dev:', bv: 100, n: 'a', v: 1 },
      { n: 'b', v: -1.5 },
      { bv: 0, n: 'c', v: 7 },
      { bs: 1000, n: 'energy', s: 5 },
      { n: 'energy', s: 6 },
    ];
    expect(parse(pack).map((r) => [r.metric, r.value])).toEqual([['a', 101], ['b', 98.5], ['c', 7], ['energy', 1005], ['energy', 1006]]);
  });

  it('takes v over s when a record has both', () => {
    expect(parse([{ n: 'x', v: 2, s: 9 }])).toEqual([{ metric: 'x', value: 2, ts: undefined }]);
  });

  describe('names', () => {
    it.each<[string, object[], string[]]>([
      ['bn ending in "/"', [{ bn: 'dev42/', n: 'temp', v: 1 }], ['temp']],
      ['bn ending in "."', [{ bn: 'site.dev42.', n: 'temp', v: 1 }], ['temp']],
      ['bn not ending in a separator is part of the name', [{ bn: 'dev42_', n: 'temp', v: 1 }], ['dev42_temp']],
      ['bn alone names the metric when it ends in no separator', [{ bn: 'temp', v: 1 }, { v: 2 }], ['temp', 'temp']],
      ['a new bn replaces the old one', [{ bn: 'a:', n: 'x', v: 1 }, { bn: 'b_', n: 'y', v: 2 }, { n: 'z', v: 3 }], ['x', 'b_y', 'b_z']],
      ['an empty bn is no bn', [{ bn: '', n: 'x', v: 1 }], ['x']],
    ])('%s', (_what, pack, metrics) => {
      expect(parse(pack).map((r) => r.metric)).toEqual(metrics);
    });
  });

  it('ignores unknown fields that do not end in "_" (RFC 8428 §4.4)', () => {
    expect(parse([{ n: 'x', v: 1, ct: '60', foo: { a: 1 }, u: 'Cel', ut: 60 }])).toEqual([{ metric: 'x', value: 1, ts: undefined }]);
  });

  it('accepts bver up to 10', () => {
    expect(parse([{ bver: 10, n: 'x', v: 1 }])).toHaveLength(1);
    expect(parse([{ bver: 1, n: 'x', v: 1 }])).toHaveLength(1);
  });

  it('passes duplicate (metric, ts) in one pack through', () => {
    expect(parse([{ bt: 1.7324064e9, n: 'x', v: 1 }, { n: 'x', v: 2 }])).toEqual([
      { metric: 'x', value: 1, ts: 1732406400000 },
      { metric: 'x', value: 2, ts: 1732406400000 },
    ]);
  });

  describe('rejections', () => {
    it.each<[string, unknown, string, RegExp]>([
      ['bver 11', [{ bver: 11, n: 'x', v: 1 }], 'senml', /bver 11/],
      ['bver on a later record', [{ n: 'x', v: 1 }, { bver: 26, n: 'y', v: 2 }], 'senml', /^record 1: bver/],
      ['bver not an integer', [{ bver: 'ten', n: 'x', v: 1 }], 'senml', /bver/],
      ['bver 0', [{ bver: 0, n: 'x', v: 1 }], 'senml', /bver/],
      ['a must-understand field', [{ n: 'x', v: 1, foo_: 1 }], 'senml', /"foo_".*must-understand/],
      ['a must-understand base field', [{ bn: 'd:', n: 'x', v: 1 }, { n: 'y', v: 2, bct_: 'x' }], 'senml', /^record 1: field "bct_"/],
      ['no name at all', [{ v: 1 }], 'senml', /^record 0: has no name/],
      ['no name on a later record', [{ n: 'x', v: 1 }, { v: 2 }], 'senml', /^record 1: has no name/],
      ['only a device-prefix bn, no n', [{ bn: 'urn:dev:ow:10e2073a01080063:', v: 1 }], 'senml', /^record 0: name is only the base name/],
      ['a record that is not an object', [{ n: 'x', v: 1 }, 42], 'senml', /^record 1: is a number/],
      ['a record that is an array', [[{ n: 'x', v: 1 }]], 'senml', /^record 0: is an array/],
      ['a null record', [null], 'senml', /^record 0: is null/],
      ['no value and no sum', [{ n: 'x' }], 'senml', /no value/],
      ['only base fields', [{ bn: 'd:', bt: 1.7e9, bv: 1 }], 'senml', /^record 0/],
      ['two value fields', [{ n: 'x', v: 1, vs: 'a' }], 'senml', /several value fields \(v, vs\)/],
      ['n not a string', [{ n: 5, v: 1 }], 'senml', /n is a number, expected a string/],
      ['bn not a string', [{ bn: 5, n: 'x', v: 1 }], 'senml', /bn/],
      ['u not a string', [{ n: 'x', u: 1, v: 1 }], 'senml', /u is a number/],
      ['bv not a number', [{ bv: '1', n: 'x', v: 1 }], 'senml', /bv is a string/],
      ['vb (boolean value)', [{ n: 'door', vb: true }], 'not_numeric', /^record 0 \(metric "door"\): vb is a boolean/],
      ['vs (string value)', [{ n: 'state', vs: 'open' }], 'not_numeric', /vs is a string value/],
      ['vd (data value)', [{ n: 'blob', vd: 'aGVsbG8' }], 'not_numeric', /vd is a data value/],
      ['v as a string', [{ n: 'x', v: '1' }], 'not_numeric', /^record 0 \(metric "x"\): value is a string/],
      ['v null', [{ n: 'x', v: null }], 'not_numeric', /value is null/],
      ['v an object', [{ n: 'x', v: { a: 1 } }], 'nested', /value is an object/],
      ['s as a string', [{ n: 'x', s: '1' }], 'not_numeric', /sum: value is a string/],
      ['t as a string', [{ n: 'x', v: 1, t: '2024-11-24T00:00:00Z' }], 'bad_ts', /^record 0: t is a string/],
      ['bt as a string', [{ bt: 'now', n: 'x', v: 1 }], 'bad_ts', /bt is a string/],
      ['an absolute time before 2000', [{ n: 'x', v: 1, t: 9.46684799e8 }], 'bad_ts', /before 2000-01-01/],
      ['an absolute time in milliseconds (year 56000)', [{ n: 'x', v: 1, t: 1732406400000 }], 'bad_ts', /future/],
      ['a relative time more than a day ahead', [{ n: 'x', v: 1, t: 86_401 }], 'bad_ts', /future/],
      ['a relative time reaching before 2000', [{ bt: -1e9, n: 'x', v: 1 }], 'bad_ts', /before 2000-01-01/],
      ['a metric name with a "/" inside', [{ bn: 'dev:', n: 'a/b', v: 1 }], 'bad_metric', /^record 0 \(metric "a\/b"\)/],
      ['a full resolved name with "/"', [{ n: 'dev42/temp', v: 1 }], 'bad_metric', /name must be/],
      ['a metric name too long', [{ bn: 'd:', n: 'x'.repeat(129), v: 1 }], 'bad_metric', /name must be/],
      ['a NUL in n', [{ bn: 'd:', n: 'te\u0000mp', v: 1 }], 'bad_metric', /^record 0 \(metric "te\\u0000mp"\): name must be/],
      ['a NUL in a bn that is part of the name', [{ bn: 'dev\u0000', n: 'temp', v: 1 }], 'bad_metric', /^record 0 \(metric "dev\\u0000temp"\): name must be/],
    ])('%s', (_what, pack, reason, message) => {
      const err = rejection(pack as object);
      expect(err.reason).toBe(reason);
      expect(err.message).toMatch(message);
    });

    it('1e400 in v, bv and bv + v overflowing are non_finite', () => {
      expect(reasonOf('[{"n":"x","v":1e400}]')).toBe('non_finite');
      expect(reasonOf('[{"bv":1e400,"n":"x","v":1}]')).toBe('non_finite');
      expect(reasonOf('[{"bv":1.7e308,"n":"x","v":1.7e308}]')).toBe('non_finite');
      expect(reasonOf('[{"n":"x","v":1,"t":1e400}]')).toBe('bad_ts');
    });

    it('too_many above maxReadingsPerMessage records', () => {
      const pack = Array.from({ length: 1001 }, (_, i) => ({ n: 'x', v: i }));
      expect(reasonOf(pack)).toBe('too_many');
      expect(parse(pack.slice(0, 1000))).toHaveLength(1000);
      expect(reasonOf(pack.slice(0, 3), { maxPayloadBytes: 10_000, maxReadingsPerMessage: 2 })).toBe('too_many');
    });
  });
});

describe('parsePayload: the fast path for the usual flat payload (Buffers, as the broker hands them)', () => {
  /** Both parsers' answer: the readings, or the error's reason and message. */
  const answer = (f: () => unknown) => {
    try {
      return { ok: f() };
    } catch (err) {
      expect(err).toBeInstanceOf(PayloadInvalidError);
      return { reason: (err as PayloadInvalidError).reason, message: (err as Error).message };
    }
  };
  const limits: PayloadLimits = { maxPayloadBytes: 300, maxReadingsPerMessage: 3 };
  const same = (text: string) => {
    const buf = Buffer.from(text, 'utf8');
    expect(answer(() => parsePayload(buf, NOW, limits))).toEqual(answer(() => parseFull(buf, NOW, limits)));
  };

  it('takes the common shapes, with what the full parser gives', () => {
    for (const text of ['{"ts":1732406400000,"temp":21.5,"hum":40}', '{"temp":-0.125}', ' {\n"a.b:c-d_e" : -0 ,"ts":1732406400000.5}\t']) {
      const buf = Buffer.from(text);
      expect(parseFlatFast(buf, NOW, limits)).not.toBeNull();
      expect(parsePayload(buf, NOW, limits)).toEqual(parseFull(text, NOW, limits));
    }
    expect(Object.is(parsePayload(Buffer.from('{"t":-0}'), NOW)[0].value, -0)).toBe(true);
  });

  it('leaves the rest to the full parser: same readings, same errors', () => {
    const cases = [
      '', ' ', '{}', '{"ts":1732406400000}', '[]', 'null', '{"a":1,"a":2}', '{"2":1,"b":2}', '{"__proto__":1}', '{"a":01}', '{"a":1.}',
      '{"a":.5}', '{"a":1e3}', '{"a":1E-3}', '{"a":1e400}', '{"a":"1"}', '{"a":true}', '{"a":null}', '{"a":{"b":1}}', '{"a":[1]}',
      '{"a\\u0062":1}', '{"é":1}', '{"a b":1}', '{"a":1,}', '{"a":1}x', '{"a":1', '{"a":1234567890123456}', '{"a":0.1234567890123456}',
      '{"a":123456789012345}', '{"a":-0.00000000000001}', '{"ts":946684799999,"a":1}', `{"ts":${NOW + 86_400_001},"a":1}`,
      `{"ts":${NOW + 86_400_000},"a":1}`, '{"ts":"2024-11-24T12:00:00Z","a":1}', '{"ts":-1,"a":1}', '{"a":1,"b":2,"c":3,"d":4}',
      '{"a":1,"b":2,"c":3,"ts":1732406400000}', `{"${'m'.repeat(128)}":1}`, `{"${'m'.repeat(129)}":1}`, `{"x":"${'y'.repeat(300)}"}`,
      '\ufeff{"a":1}', '{"a":-}', '{"a":--1}', '{"a":+1}', '{"":1}',
    ];
    for (const text of cases) same(text);
  });

  it('agrees with the full parser on generated payloads', () => {
    const key = fc.oneof(fc.constantFrom('ts', 'temp', 'hum', 'a', '7', '__proto__', 'x.y', 'é', 'a"b'), fc.stringMatching(/^[A-Za-z0-9_.:-]{1,6}$/));
    const num = fc.oneof(
      fc.double({ noNaN: true, noDefaultInfinity: true }).map((v) => String(v)),
      fc.integer({ min: -1e6, max: 1e6 }).map(String),
      fc.integer({ min: 946_684_800_000, max: NOW + 2 * DAY }).map(String),
      fc.tuple(fc.integer({ min: 0, max: 99999 }), fc.integer({ min: 0, max: 9999999999 })).map(([a, b]) => `${a}.${b}`),
      fc.stringMatching(/^-?[0-9]{1,17}(\.[0-9]{0,8})?([eE][+-]?[0-9]{1,3})?$/),
      fc.constantFrom('"1"', 'true', 'null', '{}', '[1]', '-0', '0.0'),
    );
    const ws = fc.constantFrom('', ' ', '\n', '\t ');
    const payload = fc.tuple(fc.array(fc.tuple(key, num, ws), { maxLength: 5 }), ws).map(([pairs, w]) => `${w}{${pairs.map(([k, v, s]) => `${s}${JSON.stringify(k)}${s}:${s}${v}${s}`).join(',')}}${w}`);
    fc.assert(fc.property(payload, (text) => same(text)), { numRuns: 3000 });
  });
});
