/**
 * The speed push after an outage (issue 9, "a new reading visible within 5 s of the cloud's
 * return"), against a scripted real HTTP server with the partials of a real gateway fed by MQTT.js:
 * a backlog goes newest first and a reading published meanwhile rides the next push; while the
 * cloud does not answer the pusher probes on its own short cap with small pages, yet honours a
 * Retry-After and backs off a refusal up to the long cap; and the backlog read itself
 * (page.ts readBacklogPage) pages down without loss or repeat.
 */
import { join } from 'node:path';
import fc from 'fast-check';
import { gunzipSync } from 'node:zlib';
import type { MqttClient } from 'mqtt';
import { Registry } from 'prom-client';
import { CURSOR_KEY, PROBE_MAX_PARTIALS, type SpeedPushBody, SpeedPusher, type SpeedPushOptions } from '../../edge/speedpush/index.js';
import { type Backlog, type PartialRow, partialKey, readBacklogPage } from '../../edge/speedpush/page.js';
import { getMeta, openGatewayDb, openGatewayReader } from '../../edge/store/schema.js';
import { nullLogger } from '../../shared/logger.js';
import { WriteQueue } from '../../shared/sqlite.js';
import { gatewayDbEach } from '../support/gateway-db.js';
import { HttpScript, answer } from '../support/http-script.js';
import { type TestGateway, connectDevice, endClient, eventually, publish, startTestGateway, tempDir, gatewayDbGet } from '../support/gateway.js';

const OK = answer.status(200, { watermark: 0, manifestVersion: null, stored: 1 });
const DOWN = answer.status(503, { code: 'BRAID_ERR_UNAVAILABLE', message: 'down' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the pusher', () => {
  let gw: TestGateway;
  let server: HttpScript;
  let client: MqttClient;
  let pusher: SpeedPusher | null = null;

  beforeEach(async () => {
    gw = await startTestGateway({ id: 'gw-rec', outbox: { epochIdleMs: 60_000, epochMs: 3_600_000 } });
    client = await connectDevice(gw.mqttUrl, 'dev-1', await gw.addDevice('dev-1'));
    server = await HttpScript.start(OK);
  });
  afterEach(async () => {
    await pusher?.close();
    pusher = null;
    await endClient(client);
    await gw.close();
    await server.close();
  });

  function start(o: Partial<SpeedPushOptions> = {}): SpeedPusher {
    pusher = new SpeedPusher({
      reader: gw.gateway.outbox.reader, writes: gw.gateway.outbox.writes, logger: nullLogger(), registry: new Registry(), gatewayId: 'gw-rec',
      applied: () => gw.gateway.outbox.applied(),
      health: async () => ({}), connectedDevices: () => [],
    }, { url: server.url, token: 'bgt_test', pushIntervalMs: 5_000, retryInitialMs: 20, retryMaxMs: 100, retryAfterMaxMs: 5_000, jitter: 0, ...o });
    return pusher;
  }

  const body = (n: number) => JSON.parse(gunzipSync(server.requests[n].body).toString('utf8')) as SpeedPushBody;
  const minutes = (n: number) => body(n).partials.map((t) => t[2]);
  const gap = (i: number) => server.requests[i].at - server.requests[i - 1].at;

  /** One reading per minute for `n` minutes ending `endMinute` (oldest first, one commit each: increasing updated_at). */
  async function readings(n: number, endMinute: number, metrics = ['temp']): Promise<number[]> {
    const out: number[] = [];
    for (let i = n - 1; i >= 0; i--) {
      const ts = (endMinute - i) * 60_000 + 1_000;
      await publish(client, 'devices/dev-1/telemetry', JSON.stringify(Object.fromEntries([['ts', ts], ...metrics.map((m) => [m, i])])), 1);
      out.push((endMinute - i) * 60_000);
      // The next commit in a later millisecond: a commit can take less than one, and two rows
      // stamped alike would go in key order, not commit order.
      const at = Date.now();
      while (Date.now() === at) await new Promise((r) => setTimeout(r, 1));
    }
    return out;
  }

  test('a backlog goes newest first; a reading published meanwhile rides the next push; nothing is lost and the cursor lands on top', async () => {
    const nowMinute = Math.floor(Date.now() / 60_000);
    const all = await readings(40, nowMinute - 5);
    const newest = all[all.length - 1];
    const late = nowMinute * 60_000;
    server.script(
      DOWN, DOWN,
      // The first push the cloud takes: a device publishes while the backlog is still going.
      answer.checking(async () => {
        await publish(client, 'devices/dev-1/telemetry', JSON.stringify({ ts: late + 2_000, temp: 99 }), 1);
      }, OK),
    );
    const p = start({ pushMaxPartials: 8 });
    await p.start();
    await eventually(async () => !p.catchingUp && (await getMeta(gw.gateway.outbox.reader, CURSOR_KEY)) !== undefined && server.requests.length >= 7, 5_000);

    // Every attempt, failed or not, led with the newest partials of the backlog.
    for (const i of [0, 1, 2]) {
      expect(minutes(i)).toHaveLength(8);
      expect(minutes(i)[0]).toBe(newest);
    }
    // The reading published during the catch-up went in the very next push, ahead of the backlog.
    expect(minutes(3)[0]).toBe(late);
    // The backlog went down the minutes, page after page.
    const down = [2, 3, 4, 5, 6].flatMap((i) => minutes(i).filter((m) => m !== late));
    expect(down).toEqual([...all].reverse().slice(0, down.length));
    // Nothing lost, nothing sent twice by the pushes the cloud took.
    const taken = server.requests.slice(2).flatMap((_, k) => minutes(k + 2));
    expect(new Set(taken)).toEqual(new Set([...all, late]));
    expect(taken).toHaveLength(all.length + 1);
    const top = await gatewayDbGet<{ at: number }>(gw.gateway.outbox, 'SELECT MAX(updated_at) AS at FROM partials');
    expect(Number(await getMeta(gw.gateway.outbox.reader, CURSOR_KEY))).toBe(top!.at);
    expect(p.status().cursor).toBe(top!.at);
  });

  test('while the cloud does not answer, pushes probe with at most PROBE_MAX_PARTIALS partials, every retryMaxMs at most; the first success lifts the limit', async () => {
    // 8 metrics x 160 minutes: 1,280 partials, more than one probe.
    const nowMinute = Math.floor(Date.now() / 60_000);
    await readings(160, nowMinute, ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8']);
    server.script(...Array.from({ length: 7 }, () => DOWN));
    const p = start({ pushMaxPartials: 5_000 });
    await p.start();
    await server.waitForRequests(9);
    expect(body(0).partials).toHaveLength(1_280); // not failing yet: the whole page
    for (let i = 1; i <= 7; i++) expect(body(i).partials).toHaveLength(PROBE_MAX_PARTIALS);
    // 20, 40, 80, then capped at 100 ms (no jitter): the 7th failure does not wait 1.28 s.
    for (let i = 5; i <= 7; i++) expect(gap(i)).toBeLessThan(1_000);
    // The probe that succeeded carried the newest 1,000; the rest follows at once, in one page.
    expect(body(8).partials).toHaveLength(1_280 - PROBE_MAX_PARTIALS);
    expect(gap(8)).toBeLessThan(1_000);
    const keys = new Set([...body(7).partials, ...body(8).partials].map((t) => `${t[1]}@${t[2]}`));
    expect(keys.size).toBe(1_280);
  });

  test('a Retry-After and a refusal still wait past retryMaxMs (up to retryAfterMaxMs): the cloud that answers is not hammered', async () => {
    await readings(2, Math.floor(Date.now() / 60_000));
    const refused = answer.status(401, { code: 'BRAID_ERR_UNAUTHORIZED', message: 'no' });
    server.script(answer.status(429, { code: 'BRAID_ERR_LIMIT', message: 'busy' }, { 'retry-after': '1' }), refused, refused, refused, refused, refused);
    const p = start({ retryMaxMs: 50 });
    await p.start();
    await server.waitForRequests(7, 10_000);
    expect(gap(1)).toBeGreaterThanOrEqual(900); // Retry-After: 1 s, not retryMaxMs (50 ms)
    // Refusals back off 40, 80, 160, 320, 640 ms: past the 50 ms cap of a cloud that does not answer.
    expect(gap(5)).toBeGreaterThanOrEqual(300);
    expect(gap(6)).toBeGreaterThanOrEqual(600);
    await eventually(() => p.status().consecutiveFailures === 0, 10_000);
  }, 20_000);

  test('the other sender\'s success ends a backoff after no answer or a bare 5xx, not one the cloud asked for (429, Retry-After) nor a refusal', async () => {
    await readings(1, Math.floor(Date.now() / 60_000));
    const cases = [
      { step: answer.destroy(), wakes: true },
      { step: answer.status(502, 'bad gateway'), wakes: true },
      { step: answer.status(503, { code: 'BRAID_ERR_UNAVAILABLE', message: 'busy' }, { 'retry-after': '30' }), wakes: false },
      { step: answer.status(429, { code: 'BRAID_ERR_LIMIT', message: 'busy' }), wakes: false },
      { step: answer.status(403, { code: 'BRAID_ERR_FORBIDDEN', message: 'no' }), wakes: false },
    ];
    for (const [k, c] of cases.entries()) {
      // A long backoff from the first failure on, so only cloudReachable() can end it.
      const before = server.requests.length;
      server.script(c.step);
      const p = start({ retryInitialMs: 60_000, retryMaxMs: 60_000, retryAfterMaxMs: 60_000 });
      await p.start();
      await server.waitForRequests(before + 1);
      await eventually(() => p.status().consecutiveFailures === 1, 10_000);
      p.cloudReachable();
      // A retry that is due comes at once, but its read, gzip and request are real work a loaded run
      // may take longer than 300 ms over: wait for it up to 10 s. One that is not due is looked for
      // over 300 ms (the backoff it must not cut short is 30 s or more).
      const until = Date.now() + (c.wakes ? 10_000 : 300);
      while (server.requests.length <= before + 1 && Date.now() < until) await sleep(10);
      expect({ k, retried: server.requests.length > before + 1 }).toEqual({ k, retried: c.wakes });
      await p.close();
      pusher = null;
    }
  });
});

describe('readBacklogPage', () => {
  const gdb = gatewayDbEach('braid-sp-backlog-');

  async function put(device: string, epoch: number, count: number, at: number): Promise<void> {
    await gdb.db.run(`INSERT OR REPLACE INTO partials (device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts, updated_at)
      VALUES (?, 'temp', 60000, ?, ?, ?, 1, 1, 0, 1, 60000, 1, 60000, ?)`, [device, epoch, count, count, at]);
  }
  const key = (device: string, epoch = 1) => partialKey({ device, metric: 'temp', minute: 60_000, epoch });

  test('pages down by (epoch, rowid), cut inside one ms, without loss or repeat; rows of open epochs at or above hi, ties at the low cursor and epochs at or below the watermark are left out', async () => {
    await put('pushed', 1, 1, 100); // at the low cursor, already pushed
    await put('grown', 1, 2, 100); // at the low cursor, grew since (count 2 > 1 pushed)
    for (const d of ['a', 'b', 'c', 'd']) await put(d, 1, 1, 150);
    await put('old-epoch', 1, 1, 160);
    await put('e', 2, 1, 170);
    await put('top', 2, 1, 200); // at hi: the upper part's
    const start: Backlog = { low: { cursor: 100, ties: new Map([[key('pushed'), 1], [key('grown'), 1]]), done: 0 }, closed: 0, hi: 200, below: null };
    const seen: string[] = [];
    let b = start;
    for (let i = 0; i < 10; i++) {
      const page = await readBacklogPage(gdb.reader, b, 0, 2);
      seen.push(...page.rows.map((r: PartialRow) => r.device));
      b = page.next;
      if (page.done) break;
    }
    expect(seen).toEqual(['e', 'old-epoch', 'd', 'c', 'b', 'a', 'grown']);
    // With a watermark of 1, only epoch 2 below hi remains.
    const w = await readBacklogPage(gdb.reader, start, 1, 10);
    expect(w.rows.map((r) => r.device)).toEqual(['e']);
    expect(w.done).toBe(true);
    // A row of the backlog updated again moves above hi: the backlog no longer has it.
    await put('c', 1, 2, 210);
    const again = await readBacklogPage(gdb.reader, start, 0, 100);
    expect(again.rows.map((r) => r.device)).toEqual(['e', 'old-epoch', 'd', 'b', 'a', 'grown']);
    // The rows of an epoch closed when the backlog was found are all the backlog's (they cannot change).
    const closed = await readBacklogPage(gdb.reader, { ...start, closed: 1 }, 0, 100);
    expect(closed.rows.map((r) => r.device)).toEqual(['e', 'c', 'old-epoch', 'd', 'b', 'a', 'grown']);
  });
});

describe('the pusher, randomized', () => {
  test('commits during pushes, failures, backlogs newest first and pages of any size never lose an update [INV-3]', async () => {
    await fc.assert(fc.asyncProperty(
      fc.record({
        initial: fc.integer({ min: 0, max: 25 }),
        page: fc.integer({ min: 1, max: 6 }),
        // Per answer: commits made while the push is in flight (keys 0..11), whether the open epoch
        // closes first, and whether the cloud takes it.
        answers: fc.array(fc.record({ keys: fc.array(fc.nat(11), { maxLength: 5 }), tick: fc.boolean(), close: fc.boolean(), ok: fc.boolean() }), { maxLength: 25 }),
      }),
      async ({ initial, page, answers }) => {
        const dir = tempDir('braid-sp-rand-');
        const db = await openGatewayDb(join(dir.path, 'gateway.db'));
        const reader = await openGatewayReader(join(dir.path, 'gateway.db'));
        const writes = new WriteQueue(db);
        // Counts by `device@epoch`.
        const counts = new Map<string, number>();
        let clock = 1;
        let epoch = 1;
        await writes.run((d) => d.run('INSERT INTO epochs (epoch, first_seq, last_seq, opened_at) VALUES (1, 1, 1, 0)'));
        // A coarse clock: several commits share a ms unless it ticks, and a commit is never stamped below one already visible.
        // Upserts as the group commit's (a row keeps its rowid), into the open epoch.
        const commit = async (k: number, tick: boolean) => {
          if (tick) clock++;
          const n = (counts.get(`d${k}@${epoch}`) ?? 0) + 1;
          counts.set(`d${k}@${epoch}`, n);
          await writes.run((d) => d.run(`INSERT INTO partials (device, metric, minute, epoch, count, sum, min, max, m2, first, first_ts, last, last_ts, updated_at)
            VALUES (?, 'temp', 60000, ?, ?, ?, 1, 1, 0, 1, 60000, 1, 60000, ?)
            ON CONFLICT (device, minute, metric, epoch) DO UPDATE SET count = excluded.count, sum = excluded.sum, updated_at = excluded.updated_at`, [`d${k}`, epoch, n, n, clock]));
        };
        // The open epoch closes and the next opens, in one transaction, as a group commit does it.
        const close = async () => {
          epoch++;
          await writes.tx(async (d) => {
            await d.run('UPDATE epochs SET closed_at = ? WHERE epoch = ?', [clock, epoch - 1]);
            await d.run('INSERT INTO epochs (epoch, first_seq, last_seq, opened_at) VALUES (?, ?, ?, ?)', [epoch, epoch, epoch, clock]);
          });
        };
        for (let i = 0; i < initial; i++) {
          if (i % 7 === 6) await close();
          await commit(i % 12, i % 3 === 0);
        }
        const taken = new Map<string, number>();
        let i = 0;
        const server = await HttpScript.start(async (req, res) => {
          const a = answers[i++];
          if (a?.close) await close();
          if (a) for (const k of a.keys) await commit(k, a.tick);
          if (a && !a.ok) return answer.status(503, { code: 'BRAID_ERR_UNAVAILABLE', message: 'down' })(req, res);
          for (const t of (JSON.parse(gunzipSync(req.body).toString('utf8')) as SpeedPushBody).partials) {
            taken.set(`${t[0]}@${t[3]}`, Math.max(taken.get(`${t[0]}@${t[3]}`) ?? 0, t[4]));
          }
          return OK(req, res);
        });
        const p = new SpeedPusher({
          reader, writes, logger: nullLogger(), registry: new Registry(), gatewayId: 'gw-rand', health: async () => ({}), connectedDevices: () => [],
        }, { url: server.url, token: 'bgt_test', pushIntervalMs: 10, pushMaxPartials: page, retryInitialMs: 1, retryMaxMs: 2, jitter: 0 });
        try {
          await p.start();
          await eventually(() => i > answers.length && !p.catchingUp && [...counts].every(([k, n]) => taken.get(k) === n), 10_000, 5);
        } finally {
          await p.close();
          await server.close();
          await reader.close();
          await db.close();
          dir.remove();
        }
      },
    ), { numRuns: 40 });
  }, 120_000);
});
