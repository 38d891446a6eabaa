/**
 * fast-body.ts against the old path (JSON.parse + validateIngestBody + readingsBytes), fuzzed: for
 * every body the fast path takes, the old one takes it too and gives the same batch (rows as
 * tuples, -0 and every float bit for bit, epochs, gaps, sentAt, the staging bytes); a body it does
 * not take goes to the old path, so every error stays the old one. The bodies are the documented
 * shape with the variations a JSON writer may produce (whitespace, number spellings, escapes,
 * non-ASCII, repeated keys) and random byte damage.
 */
import { describe, expect, test } from '@jest/globals';
import { ReadingColumns } from '../../cloud/ingest/columns.js';
import { parseFast, parseIngestBody, parseSlow } from '../../cloud/ingest/fast-body.js';
import { segmentLine } from '../../cloud/ingest/staging.js';
import type { IngestBatch } from '../../cloud/ingest/validate.js';
import { mulberry32 } from '../support/random.js';

const LIMITS = { maxReadings: 200, maxRecords: 100 };

type Outcome = { ok: true; batch: IngestBatch } | { ok: false; error: string };

function outcome(f: () => IngestBatch): Outcome {
  try {
    return { ok: true, batch: f() };
  } catch (err) {
    return { ok: false, error: `${(err as Error).constructor.name}: ${(err as Error).message}` };
  }
}

/** What the rest of ingest sees of a batch. */
function view(b: IngestBatch) {
  return {
    gateway: b.gateway, firstSeq: b.firstSeq, lastSeq: b.lastSeq, epochs: b.epochs, gaps: b.gaps, sentAt: b.sentAt,
    rows: b.readings.toTuples(), json: b.readingsJson?.toString('utf8') ?? null,
  };
}

const NUMBERS = ['0', '-0', '1', '21.5', '-3.25', '1e3', '1E+2', '2.5e-3', '0.1', '0.30000000000000004', '123456789012345678', '1.7976931348623157e308',
  '1e309', '-1e-400', '4.9e-324', '9007199254740993', '0.000001', '123.456e-7', '1.0', '01', '1.', '.5', '-', '1e', '+1', 'NaN', '"1"', 'null', 'true'];
const STRINGS = ['"dev-1"', '"dev-2"', '"temp"', '""', '"a]b"', '"\\u0041"', '"\\"q"', '"é"', '"\u{1F600}"', '"a\\u0000"', '"\\ud800"', `"${'x'.repeat(65)}"`, `"${'m'.repeat(129)}"`, '"a\\nb"', '"tab\there"', '1', 'null'];

function body(rand: () => number): string {
  const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)];
  const odd = (p: number) => rand() < p;
  const n = odd(0.1) ? 0 : 1 + Math.floor(rand() * 12);
  const first = 1 + Math.floor(rand() * 5);
  const sp = () => (odd(0.05) ? pick([' ', '\n', '\t', '\r\n ']) : '');
  const rows: string[] = [];
  let seq = first;
  for (let i = 0; i < n; i++) {
    const s = odd(0.03) ? pick(['0', String(seq - 2), '1.5', '1e1', '-1']) : String(seq);
    seq += odd(0.1) ? 2 : 1;
    const epoch = odd(0.03) ? pick(['0', '1.0', '-1', '"1"']) : String(1 + Math.floor(i / 4));
    const dev = odd(0.08) ? pick(STRINGS) : pick(['"dev-1"', '"dev-2"', '"dev-3"']);
    const met = odd(0.08) ? pick(STRINGS) : pick(['"temp"', '"hum"']);
    const ts = odd(0.03) ? pick(['-1', '253402300800000', '253402300799999', '1.7e12', '0']) : String(1_733_450_000_000 + i * 1000);
    const value = odd(0.3) ? pick(NUMBERS) : String(Math.round(rand() * 1e6) / 100 - 5000);
    let cells = [s, epoch, dev, met, ts, value];
    if (odd(0.02)) cells = cells.slice(0, 5);
    if (odd(0.02)) cells.push('1');
    const row = odd(0.01) ? '{"seq":1}' : `[${cells.map((c) => `${sp()}${c}${sp()}`).join(',')}]`;
    rows.push(row);
  }
  const last = odd(0.05) ? first + n - 3 : seq - 1;
  const members: string[] = [
    '"v":1', '"gateway":"gw-1"', `"firstSeq":${first}`, `"lastSeq":${n === 0 && odd(0.5) ? first - 1 : last}`,
    `"readings":${sp()}[${rows.join(`,${sp()}`)}]`,
    `"epochs":[{"epoch":1,"firstSeq":${first},"lastSeq":${first + 3}}]`, '"gaps":[]', '"sentAt":1733450000000',
  ];
  if (odd(0.05)) members.push(pick(['"v":2', '"readings":[]', '"extra":{"a":[1,2,"]"]}', '"gateway":"gw-2"', '"\\u0072eadings":[]']));
  if (odd(0.05)) members.splice(Math.floor(rand() * members.length), 1);
  if (odd(0.3)) members.sort(() => rand() - 0.5);
  let text = `${sp()}{${members.join(`,${sp()}`)}}${sp()}`;
  // Random damage to the text.
  if (odd(0.1)) {
    const at = Math.floor(rand() * text.length);
    text = odd(0.5) ? text.slice(0, at) + text.slice(at + 1) : text.slice(0, at) + pick(['[', ']', ',', '"', '\\', '0', ' ', '\u0001', '}']) + text.slice(at);
  }
  if (odd(0.02)) text = `\uFEFF${text}`;
  return text;
}

describe('the ingest body straight into columns', () => {
  test('fuzzed against JSON.parse + validateIngestBody: what the fast path takes, the old path takes alike; the rest is the old path\'s', () => {
    const rand = mulberry32(20261206);
    let fastTaken = 0;
    let accepted = 0;
    for (let k = 0; k < 20_000; k++) {
      const buf = Buffer.from(body(rand), 'utf8');
      const slow = outcome(() => parseSlow(buf, LIMITS));
      const fast = parseFast(buf, LIMITS);
      if (fast) {
        fastTaken++;
        if (!slow.ok) throw new Error(`the fast path took a body the old path refuses (${slow.error}): ${buf.toString('utf8')}`);
        expect(view(fast)).toEqual(view(slow.batch));
      }
      if (slow.ok) accepted++;
      // Whatever the path, the route's answer is the old one.
      const both = outcome(() => parseIngestBody(buf, LIMITS));
      if (both.ok !== slow.ok || (!both.ok && !slow.ok && both.error !== slow.error)) {
        throw new Error(`parseIngestBody differs from the old path on ${buf.toString('utf8')}: ${JSON.stringify([both, slow].map((o) => (o.ok ? 'ok' : o.error)))}`);
      }
      if (both.ok && slow.ok) expect(view(both.batch)).toEqual(view(slow.batch));
    }
    // The fuzz reaches both sides: most good bodies by the fast path, and plenty of refusals.
    expect(accepted).toBeGreaterThan(2000);
    expect(accepted).toBeLessThan(19_000);
    expect(fastTaken).toBeGreaterThan(accepted / 2);
  });

  test('a gateway\'s body goes the fast path whole, its readings bytes as the staging line, read back to the same rows', () => {
    const rows = Array.from({ length: 5000 }, (_, i) => [i + 1, 1 + Math.floor(i / 600), `dev-${i % 40}`, ['temp', 'hum', 'co2'][i % 3], 1_733_450_000_000 + i * 7, Math.round(Math.sin(i) * 1e4) / 100 + 0]); // + 0: no -0, which JSON writes as 0
    const doc = { v: 1, gateway: 'gw-7', firstSeq: 1, lastSeq: 5000, readings: rows, epochs: [{ epoch: 1, firstSeq: 1, lastSeq: 600 }], gaps: [], sentAt: 1_733_450_000_000 };
    const buf = Buffer.from(JSON.stringify(doc), 'utf8');
    const fast = parseFast(buf, { maxReadings: 100_000, maxRecords: 100 });
    expect(fast).not.toBeNull();
    expect(fast!.readings.toTuples()).toEqual(rows);
    expect(fast!.readings.devices).toHaveLength(40);
    expect(JSON.parse(fast!.readingsJson!.toString('utf8'))).toEqual(rows);
    // Over the request limit: the old path's 413.
    expect(() => parseIngestBody(buf, { maxReadings: 4999, maxRecords: 100 })).toThrow('readings: 5000 entries, over the limit of 4999');
    // A line serialized from columns (a partly duplicate request) is the JSON.stringify of the tuples.
    const some = fast!.readings.select([{ from: 3, to: 9 }, { from: 4000, to: 4002 }]);
    expect(segmentLine('gw-7', some).toString('utf8')).toBe(`${JSON.stringify({ g: 'gw-7', r: some.toTuples() })}\n`);
    expect(ReadingColumns.fromTuples(some.toTuples()).toTuples()).toEqual(some.toTuples());
  });
});
