/**
 * The gateway's rolling windows (DESIGN.md, REST gateway; edge/speed/index.ts): GET /api/v1/windows
 * equals a brute-force computation over the deduplicated readings that went through MQTT, for
 * every window, and bad requests answer 400 BRAID_ERR_BAD_REQUEST naming the parameter.
 */
import fc from 'fast-check';
import { type PartialRow, WINDOW_SPANS, type WindowName, windowsFromRows } from '../../edge/speed/index.js';
import { merge, of, type Summary, type WindowStats } from '../../shared/summary.js';
import { MINUTE_MS, minuteOf } from '../../shared/time.js';
import { type TestGateway, connectDevice, endClient, publish, startTestGateway } from '../support/gateway.js';
import { mulberry32 } from '../support/random.js';
import type { MqttClient } from 'mqtt';

interface Reading { device: string; metric: string; ts: number; value: number }

const NAMES = Object.keys(WINDOW_SPANS) as WindowName[];

/** Brute force: the window of span W at `now` holds the readings whose minute is in [minuteOf(now - W), minuteOf(now)]. */
function expectedWindows(readings: Reading[], now: number): Record<WindowName, WindowStats> {
  const out = {} as Record<WindowName, WindowStats>;
  for (const name of NAMES) {
    const from = minuteOf(now - WINDOW_SPANS[name] * MINUTE_MS);
    const to = minuteOf(now);
    const xs = readings.filter((r) => minuteOf(r.ts) >= from && minuteOf(r.ts) <= to).sort((a, b) => a.ts - b.ts);
    if (!xs.length) {
      out[name] = { count: 0, avg: null, min: null, max: null, stddev: null, first: null, last: null, lastTs: null };
      continue;
    }
    const n = xs.length;
    const mean = xs.reduce((a, r) => a + r.value, 0) / n;
    const variance = xs.reduce((a, r) => a + (r.value - mean) ** 2, 0) / n;
    out[name] = {
      count: n,
      avg: mean,
      min: Math.min(...xs.map((r) => r.value)),
      max: Math.max(...xs.map((r) => r.value)),
      stddev: Math.sqrt(variance),
      first: xs[0].value,
      last: xs[n - 1].value,
      lastTs: xs[n - 1].ts,
    };
  }
  return out;
}

/** Equal within 1e-9 relative (relative to the series' scale, so a stddev of 0 compares too). */
function expectStatsClose(actual: WindowStats, expected: WindowStats, scale: number, label: string): void {
  expect({ label, count: actual.count, lastTs: actual.lastTs }).toEqual({ label, count: expected.count, lastTs: expected.lastTs });
  for (const k of ['avg', 'min', 'max', 'stddev', 'first', 'last'] as const) {
    const a = actual[k];
    const e = expected[k];
    if (e === null || a === null) {
      expect({ label, k, a }).toEqual({ label, k, a: e });
      continue;
    }
    const tol = 1e-9 * Math.max(Math.abs(a), Math.abs(e), scale);
    if (!(Math.abs(a - e) <= tol)) throw new Error(`${label} ${k}: got ${a}, expected ${e} (tolerance ${tol})`);
  }
}

describe('GET /api/v1/windows through MQTT', () => {
  let gw: TestGateway;
  let clients: MqttClient[] = [];

  beforeEach(async () => {
    gw = await startTestGateway({ mqtt: { ratePerDevice: 100_000, rateBurst: 100_000 } });
  });

  afterEach(async () => {
    await Promise.all(clients.map((c) => endClient(c)));
    clients = [];
    await gw.close();
  });

  async function windows(device: string, metric: string): Promise<{ body: { device: string; metric: string; windows: Record<WindowName, WindowStats> }; now: number }> {
    // The answer depends on the server's minute: retry a request that straddled a minute boundary.
    for (;;) {
      const t0 = Date.now();
      const res = await fetch(`${gw.httpUrl}/api/v1/windows?device=${encodeURIComponent(device)}&metric=${encodeURIComponent(metric)}`);
      const t1 = Date.now();
      expect(res.status).toBe(200);
      const body = await res.json();
      if (minuteOf(t0) === minuteOf(t1)) return { body, now: t0 };
    }
  }

  test('each series equals a brute force over the deduplicated readings (random, 25 h, duplicates)', async () => {
    const seed = Number(process.env.BRAID_TEST_SEED ?? Date.now() % 1_000_000);
    const rnd = mulberry32(seed);
    const int = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
    const devices = ['win-a', 'win-b', 'win-c'];
    const metrics = ['temp', 'hum', 'co2'];
    const secret = 'windows-secret';
    for (const d of devices) await gw.addDevice(d, secret);
    for (const d of devices) clients.push(await connectDevice(gw.mqttUrl, d, secret));
    const client = new Map(devices.map((d, i) => [d, clients[i]]));

    const now = Date.now();
    // Event times: spread over the last 25 h, some at each window's edge minute and the minute
    // before it, some in the current minute.
    const times: number[] = [];
    for (let i = 0; i < 150; i++) times.push(now - int(0, 25 * 3600_000));
    for (const name of NAMES) {
      const edge = minuteOf(now - WINDOW_SPANS[name] * MINUTE_MS);
      times.push(edge + int(0, MINUTE_MS - 1), edge - int(1, MINUTE_MS));
    }
    for (let i = 0; i < 20; i++) times.push(int(minuteOf(now), now));

    // The value scale makes sum-of-squares cancel: stddev must come from m2.
    const value = () => Math.round((1e6 + rnd() * 50) * 1e4) / 1e4;
    type Msg = { device: string; payload: string; readings: Reading[] };
    const originals: Msg[] = [];
    for (const device of devices) {
      const used = new Set<number>();
      for (const t of times) {
        const ts = t + int(0, 3); // devices differ a little
        if (used.has(ts)) continue;
        used.add(ts);
        const ms = metrics.filter(() => rnd() < 0.7);
        if (!ms.length) ms.push(metrics[0]);
        const readings = ms.map((metric) => ({ device, metric, ts, value: value() }));
        const style = int(0, 2);
        let payload: string;
        if (style === 0) {
          payload = JSON.stringify({ ts, ...Object.fromEntries(readings.map((r) => [r.metric, r.value])) });
        } else if (style === 1) {
          payload = JSON.stringify({ ts: new Date(ts).toISOString(), ...Object.fromEntries(readings.map((r) => [r.metric, r.value])) });
        } else {
          // SenML with a repeat of the first record inside the pack: the first occurrence wins.
          const recs = readings.map((r) => ({ n: r.metric, t: r.ts / 1000, v: r.value }));
          recs.push({ ...recs[0], v: recs[0].v + 1 });
          payload = JSON.stringify([{ bn: `urn:dev:${device}:`, ...recs[0] }, ...recs.slice(1)]);
        }
        originals.push({ device, payload, readings });
      }
    }
    // Exact retransmits in the same burst (the order between them does not matter).
    const burst = [...originals, ...originals.filter(() => rnd() < 0.15)];
    await Promise.all(burst.map((m) => publish(client.get(m.device)!, `devices/${m.device}/telemetry`, m.payload)));
    // Later repeats with other values: the identity is already known, they are dropped.
    const late = originals.filter(() => rnd() < 0.15).map((m) => {
      const ts = m.readings[0].ts;
      return { device: m.device, payload: JSON.stringify({ ts, ...Object.fromEntries(m.readings.map((r) => [r.metric, r.value + 7])) }) };
    });
    for (const m of late) await publish(client.get(m.device)!, `devices/${m.device}/telemetry`, m.payload);

    const truth = originals.flatMap((m) => m.readings);
    const health = await (await fetch(`${gw.httpUrl}/api/v1/health`)).json();
    expect(health.readings.accepted).toBe(truth.length);
    expect(health.readings.duplicates).toBeGreaterThan(0);

    for (const device of devices) {
      for (const metric of [...metrics, 'absent']) {
        const series = truth.filter((r) => r.device === device && r.metric === metric);
        const { body, now: at } = await windows(device, metric);
        expect(body.device).toBe(device);
        expect(body.metric).toBe(metric);
        const expected = expectedWindows(series, at);
        for (const name of NAMES) expectStatsClose(body.windows[name], expected[name], 1e6, `seed ${seed} ${device}/${metric} ${name}`);
      }
    }
    // The series do cover each window's edge: readings before the 24h edge exist and are left out.
    const a = truth.filter((r) => r.device === 'win-a' && r.metric === 'temp');
    expect(a.some((r) => minuteOf(r.ts) < minuteOf(Date.now() - 24 * 3600_000))).toBe(true);
  });

  test.each([
    ['device', '?metric=temp'],
    ['metric', '?device=win-a'],
    ['device', '?device=&metric=temp'],
    ['metric', '?device=win-a&metric='],
  ])('a request without a valid %s answers 400 BRAID_ERR_BAD_REQUEST naming it (%s)', async (param, query) => {
    const res = await fetch(`${gw.httpUrl}/api/v1/windows${query}`);
    expect(res.status).toBe(400);
    const body = await res.json();
    expect(body.code).toBe('BRAID_ERR_BAD_REQUEST');
    expect(body.message).toContain(`"${param}"`);
  });

  test('a request with neither parameter answers 400 naming one of them', async () => {
    const res = await fetch(`${gw.httpUrl}/api/v1/windows`);
    expect(res.status).toBe(400);
    const body = await res.json();
    expect(body.code).toBe('BRAID_ERR_BAD_REQUEST');
    expect(body.message).toMatch(/"(device|metric)"/);
  });
});

describe('windowsFromRows', () => {
  const DEVICE = 'unit-dev';

  /** Partial rows per (minute, epoch) as the committer writes them. */
  function partials(readings: Array<{ ts: number; value: number; epoch: number }>): PartialRow[] {
    const by = new Map<string, { minute: number; s: Summary }>();
    for (const r of readings) {
      const minute = minuteOf(r.ts);
      const k = `${minute}|${r.epoch}`;
      const prev = by.get(k);
      by.set(k, { minute, s: prev ? merge(prev.s, of(r.value, r.ts, DEVICE)) : of(r.value, r.ts, DEVICE) });
    }
    return [...by.values()].map(({ minute, s }) => ({
      minute, count: s.count, sum: s.sum, min: s.min, max: s.max, m2: s.m2,
      first: s.first, first_ts: s.firstTs, last: s.last, last_ts: s.lastTs,
    }));
  }

  test('several epochs in one minute merge into the same windows as one pass over the readings', () => {
    const now = Date.UTC(2025, 0, 15, 12, 30, 40);
    const cur = minuteOf(now);
    // Three epochs write the current minute, two the one before, one a minute 30 min back.
    const readings = [
      { ts: cur + 1000, value: 5, epoch: 7 }, { ts: cur + 2000, value: 9, epoch: 8 }, { ts: cur + 500, value: -3, epoch: 9 },
      { ts: cur - 30_000, value: 2, epoch: 7 }, { ts: cur - 50_000, value: 4, epoch: 9 },
      { ts: cur - 30 * MINUTE_MS + 1, value: 100, epoch: 8 },
    ];
    const rows = partials(readings);
    expect(rows.filter((r) => r.minute === cur)).toHaveLength(3);
    const got = windowsFromRows(rows, DEVICE, now);
    const want = expectedWindows(readings.map((r) => ({ device: DEVICE, metric: 'm', ts: r.ts, value: r.value })), now);
    for (const name of NAMES) expectStatsClose(got[name], want[name], 100, name);
    expect(got['1m']).toMatchObject({ count: 5, first: 4, last: 9, lastTs: cur + 2000 });
    expect(got['15m'].count).toBe(5);
    expect(got['1h']).toMatchObject({ count: 6, first: 100, max: 100 });
  });

  test('any readings, epochs and row order: equals the brute force for every window', () => {
    const now = Date.UTC(2025, 5, 1, 8, 0, 0) + 12_345;
    fc.assert(fc.property(
      fc.array(fc.record({
        ts: fc.integer({ min: now - 26 * 3600_000, max: now + 3 * MINUTE_MS }),
        value: fc.double({ min: -1e6, max: 1e6, noNaN: true, noDefaultInfinity: true }),
        epoch: fc.integer({ min: 1, max: 4 }),
      }), { maxLength: 200 }).map((rs) => {
        // One reading per ts: identities are unique after dedup.
        const seen = new Set<number>();
        return rs.filter((r) => !seen.has(r.ts) && seen.add(r.ts));
      }),
      fc.integer(),
      (readings, shuffleSeed) => {
        const rows = partials(readings);
        const rnd = mulberry32(shuffleSeed);
        for (let i = rows.length - 1; i > 0; i--) {
          const j = Math.floor(rnd() * (i + 1));
          [rows[i], rows[j]] = [rows[j], rows[i]];
        }
        const got = windowsFromRows(rows, DEVICE, now);
        const want = expectedWindows(readings.map((r) => ({ device: DEVICE, metric: 'm', ts: r.ts, value: r.value })), now);
        for (const name of NAMES) expectStatsClose(got[name], want[name], 1e6, name);
      },
    ), { numRuns: 300 });
  });
});
