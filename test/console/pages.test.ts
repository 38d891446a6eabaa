/**
 * The console's pages in Debian's chromium against a real cloud, gateway and batch (world.ts),
 * with an admin key: every figure a page shows is compared with the API's answer (fetched again by
 * the test, or the very answer the page rendered where the figure moves with time), and every
 * page is saved to test-artifacts/console/<page>.png.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import {
  type ConsolePage, apiCall, fmtBytes, fmtDuration, fmtInt, fmtNum, fmtTime, haveChromium, launchChromium, newConsolePage, nextRender, screenshot, tableRows,
} from '../support/browser.js';
import { eventually } from '../support/gateway.js';
import { type World, closeSteps, expectOverviewEqualsApi, makeWorld } from './world.js';

const HAVE = haveChromium();
const maybe = HAVE ? describe : describe.skip;

interface Point { t: string; value: number | null; count: number; batch: number; speed: number; provisional: boolean }
interface QueryAnswer { metric: string; scope: Record<string, unknown>; step: string; agg: string; manifest: { version: number; watermark: Record<string, number> }; points: Point[] }
interface GatewayDoc {
  id: string; lastContactAt: string | null; online: boolean; watermark: number; receivedSeq: number; outboxPending: number | null;
  health: { readings?: { accepted?: number }; outbox?: { bytes?: number }; host?: { cpuPercent?: number | null } } | null;
  gaps: Array<{ count: number }>; seqGaps: unknown[];
  dropped: { diskBudget: number; queueFull: number; invalid: number; duplicates: number };
  clockOffsetMs: number | null; clockOffsetAt: string | null; futureReadings: number;
  lastFutureReading: { device: string; metric: string; ts: string; seenAt: string } | null;
}

let world: World;
let browser: Browser;
let cp: ConsolePage;

maybe('console pages (admin key)', () => {
  beforeAll(async () => {
    [world, browser] = await Promise.all([makeWorld(), launchChromium()]);
    cp = await newConsolePage(browser, world.url, { key: world.admin });
  }, 45_000);

  afterAll(() => closeSteps('console test', [
    ['page', async () => cp?.close()],
    ['chromium', async () => browser?.close()],
    // The world's own steps have 15 s each and name the one that hangs; this outer limit only
    // backs them up, so it spans them (on a loaded machine the cloud's close seals staging).
    ['world', async () => world?.close()],
  ], 45_000), 50_000);

  afterEach(async () => {
    await cp.flush();
    expect(cp.errors).toEqual([]);
    // Every API call of the page carried the key.
    expect(cp.responses.filter((r) => r.auth !== `Bearer ${world.admin}`).map((r) => r.url.pathname)).toEqual([]);
  });

  const text = (sel: string) => cp.page.locator(sel).innerText();
  const go = (hash: string) => nextRender(cp.page, () => cp.page.evaluate((h) => { location.hash = h; }, hash));

  it('fleet overview: gateways, online devices, readings/s, drops, gaps and the watermark age are the API\'s', async () => {
    const { page } = cp;
    await page.goto('/#/fleet');
    await page.waitForSelector('[data-testid=stat-gateways]');
    // Readings flow while the page measures: two gateway snapshots give readings/s.
    let publishing = true;
    const flow = (async () => { while (publishing) await world.publishNow('dev-3', 5, 'hum'); })();
    try {
      let shown = '—';
      for (let i = 0; i < 4 && shown === '—'; i++) {
        await nextRender(page);
        shown = await text('[data-testid=stat-rate]');
      }
      // The rate is the one the page's gateway answers give: sum of accepted growth / snapshot interval.
      await cp.flush();
      const docs = cp.responses.filter((r) => r.url.pathname === '/api/v1/gateways' && r.status === 200).map((r) => r.body as { gateways: GatewayDoc[] });
      let prev: { gateways: GatewayDoc[] } | null = null;
      let want: { rate: number; readings: number; gateways: number } | null = null;
      for (const doc of docs) {
        want = null;
        if (prev) {
          let rate = 0; let readings = 0; let n = 0;
          for (const g of doc.gateways) {
            const p = prev.gateways.find((x) => x.id === g.id);
            const a1 = g.health?.readings?.accepted; const a0 = p?.health?.readings?.accepted;
            const dt = (Date.parse(g.lastContactAt ?? '') - Date.parse(p?.lastContactAt ?? '')) / 1000;
            if (typeof a1 !== 'number' || typeof a0 !== 'number' || !(dt > 0) || a1 < a0) continue;
            rate += (a1 - a0) / dt; readings += a1 - a0; n++;
          }
          if (n) want = { rate, readings, gateways: n };
        }
        if (want || !prev) prev = doc;
      }
      expect(want).not.toBeNull();
      expect(want!.readings).toBeGreaterThan(0);
      expect(shown).toBe(fmtNum(want!.rate));
      expect(await text('[data-testid=note-rate]')).toBe(`${fmtInt(want!.readings)} readings accepted at ${fmtInt(want!.gateways)} gateway${want!.gateways === 1 ? '' : 's'} since the previous snapshot`);
    } finally {
      publishing = false;
      await flow;
    }

    // Once the readings are in, the rest against the test's own calls.
    await world.settle();
    await nextRender(page);
    const { gateways: gw, batch } = await expectOverviewEqualsApi(cp.page, world.url, world.admin);
    // The age: now - createdAt, as "12.3 s" or "1m05s".
    const age = await text('[data-testid=stat-watermark-age]');
    const m = /^(?:(\d+)m(\d+)s|([\d.]+) s)$/.exec(age);
    expect(m).not.toBeNull();
    const ageS = m![3] !== undefined ? Number(m![3]) : Number(m![1]) * 60 + Number(m![2]);
    expect(Math.abs(ageS - (Date.now() - Date.parse(batch.manifest.createdAt)) / 1000)).toBeLessThan(10);
    // The figures the fixture put there, so the comparison is not of zeros.
    expect(gw.map((g) => g.id)).toEqual(['gw-gone', 'gw-hist', 'gw-live']);
    expect(await text('[data-testid=stat-gaps]')).toBe('2');
    expect(await text('[data-testid=stat-devices-online]')).toBe('2');
    await screenshot(page, 'fleet');
  });

  it('gateway health: one row per gateway with its health snapshot, drops and gap records', async () => {
    const { page } = cp;
    await go('#/gateways');
    await cp.flush();
    // CPU, memory and the last contact move: compare with the answer the page rendered...
    const rendered = (cp.responses.filter((r) => r.url.pathname === '/api/v1/gateways').at(-1)!.body as { gateways: GatewayDoc[] }).gateways;
    const rows = await tableRows(page, '[data-testid=gateways-table]');
    expect(rows.map((r) => r.data.gateway)).toEqual(rendered.map((g) => g.id));
    for (const [i, g] of rendered.entries()) {
      const c = rows[i].cells;
      const host = (g.health as { host?: Record<string, number | null> } | null)?.host ?? {};
      const usage = (u: number | null | undefined, t: number | null | undefined) => (u === null || u === undefined || !t ? '—' : `${Math.round((u / t) * 100)}% of ${fmtBytes(t)}`);
      expect(c.state).toBe(g.online ? 'online' : 'offline');
      expect(c.cpu).toBe(typeof host.cpuPercent === 'number' ? `${fmtNum(host.cpuPercent)}%` : '—');
      expect(c.memory).toBe(usage(host.memUsedBytes, host.memTotalBytes));
      expect(c.disk).toBe(usage(host.diskUsedBytes, host.diskTotalBytes));
      const title = await page.$eval(`tr[data-gateway="${g.id}"] td[data-k=lastContact]`, (td) => td.querySelector('span')?.title ?? null);
      expect(title).toBe(g.lastContactAt ? fmtTime(g.lastContactAt) : null);
      if (!g.lastContactAt) expect(c.lastContact).toBe('never');
      // The clock moves with every push too: as rendered.
      const ms = g.clockOffsetMs;
      expect(c.clock).toBe(ms === null ? '—' : ms < 0 ? `${fmtDuration(-ms)} behind` : `${fmtDuration(ms)} ahead`);
      const clockTitle = await page.$eval(`tr[data-gateway="${g.id}"] td[data-k=clock]`, (td) => td.querySelector('span')?.title ?? null);
      expect(clockTitle).toBe(g.clockOffsetAt ? `measured ${fmtTime(g.clockOffsetAt)}` : 'no request with sentAt yet');
    }
    // ...and the settled figures with the test's own call.
    const gw = (await apiCall<{ gateways: GatewayDoc[] }>(world.url, '/api/v1/gateways', world.admin)).body.gateways;
    for (const [i, g] of gw.entries()) {
      const c = rows[i].cells;
      expect(c.id).toBe(g.id);
      expect(c.outbox.split(' ')[0]).toBe(fmtInt(g.outboxPending));
      expect(c.watermark).toBe(fmtInt(g.watermark));
      expect(c.receivedSeq).toBe(fmtInt(g.receivedSeq));
      expect(c.dropped).toBe(`${fmtInt(g.dropped.diskBudget)} / ${fmtInt(g.dropped.queueFull)}`);
      expect(c.rejected).toBe(`${fmtInt(g.dropped.invalid)} / ${fmtInt(g.dropped.duplicates)}`);
      expect(c.gaps).toBe(g.gaps.length ? `${fmtInt(g.gaps.length)} (${fmtInt(g.gaps.reduce((n, r) => n + r.count, 0))} readings)` : '0');
      expect(c.future).toBe(fmtInt(g.futureReadings));
      const futureTitle = await page.$eval(`tr[data-gateway="${g.id}"] td[data-k=future]`, (td) => td.querySelector('span')?.title ?? null);
      const f = g.lastFutureReading;
      expect(futureTitle).toBe(f ? `furthest ahead: ${f.device}/${f.metric} at ${fmtTime(f.ts)} (seen ${fmtTime(f.seenAt)})` : null);
    }
    // gw-gone's clock ran 90 s ahead when it pushed; gw-hist sent readings stamped in the future; gw-live is in step.
    const byId = Object.fromEntries(rows.map((r) => [r.cells.id, r.cells]));
    expect(byId['gw-gone'].clock).toMatch(/^1m(29|30)s ahead$/);
    expect(byId['gw-hist']).toMatchObject({ clock: '—', future: '3' });
    expect(byId['gw-live'].clock).toMatch(/^\d+ ms (ahead|behind)$/);
    expect(rows.map((r) => [r.cells.id, r.cells.state])).toEqual([['gw-gone', 'offline'], ['gw-hist', 'offline'], ['gw-live', 'online']]);
    expect(rows.find((r) => r.cells.id === 'gw-live')!.cells.cpu).toMatch(/%$/);
    // gw-hist's gap records, in detail: a disk-budget drop, and seqs a restored cloud lost (times and devices unknown).
    const gaps = await tableRows(page, 'section.gaps[data-gateway="gw-hist"] table');
    expect(gaps.map((r) => r.cells)).toEqual([{
      seqs: '9,001–9,042', count: '42', reason: 'disk_budget', devices: 'dev-2',
      span: `${fmtTime(world.h0 - 7 * 3600_000)} – ${fmtTime(world.h0 - 7 * 3600_000 + 410_000)}`,
    }, { seqs: '9,501–9,600', count: '100', reason: 'cloud_lost', devices: 'unknown', span: 'unknown' }]);
    await screenshot(page, 'gateways');
  });

  /** The bucket table against `answer`, row by row (newest first). */
  async function expectPoints(answer: QueryAnswer): Promise<void> {
    const rows = await tableRows(cp.page, '[data-testid=points-table]');
    const side = (p: Point) => (p.batch > 0 && p.speed > 0 ? 'batch + speed' : p.speed > 0 ? 'speed' : 'batch');
    expect(rows.map((r) => r.data.t)).toEqual(answer.points.map((p) => p.t).reverse());
    expect(rows.map((r) => r.cells)).toEqual([...answer.points].reverse().map((p) => ({
      t: fmtTime(p.t), value: fmtNum(p.value), count: fmtInt(p.count), batch: fmtInt(p.batch), speed: fmtInt(p.speed), side: side(p), provisional: p.provisional ? 'yes' : '',
    })));
    const total = (k: 'count' | 'batch' | 'speed') => answer.points.reduce((n, p) => n + p[k], 0);
    expect(await text('[data-testid=query-summary] [data-k=readings]')).toBe(`${fmtInt(total('count'))}: ${fmtInt(total('batch'))} from batch views, ${fmtInt(total('speed'))} from speed`);
    expect(await text('[data-testid=query-summary] [data-k=buckets]'))
      .toBe(`${fmtInt(answer.points.length)} with readings, ${fmtInt(answer.points.filter((p) => p.provisional).length)} provisional`);
    const wm = Object.entries(answer.manifest.watermark).map(([g, e]) => `${g}: ${fmtInt(e)}`).join(', ');
    expect(await text('[data-testid=query-summary] [data-k=manifest]')).toBe(`manifest v${answer.manifest.version}, watermark ${wm}`);
  }

  /** The query the page made last, and the same URL fetched again by the test. */
  async function lastQuery(): Promise<{ params: URLSearchParams; page: QueryAnswer; api: QueryAnswer }> {
    await cp.flush();
    const r = cp.responses.filter((x) => x.url.pathname === '/api/v1/query').at(-1)!;
    expect(r.status).toBe(200);
    const again = await apiCall<QueryAnswer>(world.url, r.url.pathname + r.url.search, world.admin);
    expect(again.status).toBe(200);
    return { params: r.url.searchParams, page: r.body as QueryAnswer, api: again.body };
  }

  /** Pixels of each bar color on the chart's canvas: the batch/speed boundary must be drawn. */
  async function chartColors(): Promise<Record<string, number>> {
    return cp.page.evaluate(() => {
      const canvas = document.querySelector('[data-testid=chart] canvas') as HTMLCanvasElement;
      const px = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
      const want: Record<string, [number, number, number]> = {
        batch: [0x2f, 0x6f, 0xb3], speed: [0xe0, 0x86, 0x2b], mixed: [0x7b, 0x4f, 0xb0], provisional: [0xc6, 0x28, 0x28],
      };
      const out: Record<string, number> = { batch: 0, speed: 0, mixed: 0, provisional: 0 };
      for (let i = 0; i < px.length; i += 4) {
        for (const [k, [r, g, b]] of Object.entries(want)) {
          if (Math.abs(px[i] - r) < 12 && Math.abs(px[i + 1] - g) < 12 && Math.abs(px[i + 2] - b) < 12) out[k]++;
        }
      }
      return out;
    });
  }

  it('device view: the merged answer as a chart colored by batch/speed side, provisional buckets marked, and a table', async () => {
    const { page } = cp;
    await go('#/device?device=dev-1&metric=temp&range=24h&step=1h&agg=avg');
    const q = await lastQuery();
    expect(Object.fromEntries(q.params)).toMatchObject({ device: 'dev-1', metric: 'temp', step: '1h', agg: 'avg' });
    expect(Number(q.params.get('to')) - Number(q.params.get('from'))).toBe(24 * 3600_000);
    expect(q.page).toEqual(q.api);
    await expectPoints(q.api);
    // The world made every kind of bucket: batch only, speed only, both, and a provisional one.
    const kinds = new Set(q.api.points.map((p) => (p.batch > 0 && p.speed > 0 ? 'mixed' : p.speed > 0 ? 'speed' : 'batch')));
    expect([...kinds].sort()).toEqual(['batch', 'mixed', 'speed']);
    expect(q.api.points.filter((p) => p.provisional).map((p) => Date.parse(p.t))).toEqual([world.h0 - 3 * 3600_000]);
    const colors = await chartColors();
    for (const k of ['batch', 'speed', 'mixed', 'provisional']) expect({ [k]: colors[k] > 50 }).toEqual({ [k]: true });
    expect(await text('[data-testid=legend]')).toContain('provisional');
    // Hovering the provisional bar names its bucket with the API's figures.
    const from = Math.floor(Number(q.params.get('from')) / 3600_000) * 3600_000;
    const end = Math.ceil(Number(q.params.get('to')) / 3600_000) * 3600_000;
    const prov = q.api.points.find((p) => p.provisional)!;
    const box = (await page.locator('[data-testid=chart] .u-over').boundingBox())!;
    await page.mouse.move(box.x + (box.width * (Date.parse(prov.t) + 1800_000 - from)) / (end - from), box.y + box.height - 5);
    expect(await text('[data-testid=hover]')).toBe(`${fmtTime(prov.t)}: avg ${fmtNum(prov.value)}, ${fmtInt(prov.count)} readings `
      + `(batch ${fmtInt(prov.batch)}, speed ${fmtInt(prov.speed)}), provisional`);
    await screenshot(page, 'device');
    await page.mouse.move(0, 0);

    // The form: another aggregate and a custom range (UTC) ask the API for exactly that.
    await page.selectOption('[data-testid=select-agg]', 'max');
    await page.selectOption('[data-testid=select-range]', 'custom');
    await page.selectOption('[data-testid=select-step]', '15m');
    await page.fill('input[name=from]', new Date(world.h0 - 6 * 3600_000).toISOString().slice(0, 16));
    await page.fill('input[name=to]', new Date(world.h0).toISOString().slice(0, 16));
    await nextRender(page, () => page.click('[data-testid=show]'));
    const q2 = await lastQuery();
    expect(Object.fromEntries(q2.params)).toEqual({ device: 'dev-1', metric: 'temp', from: String(world.h0 - 6 * 3600_000), to: String(world.h0), step: '15m', agg: 'max' });
    expect(q2.page).toEqual(q2.api);
    expect(q2.api.points.length).toBeGreaterThan(10);
    await expectPoints(q2.api);
  });

  it('fleet chart: one metric over the fleet or a gateway, in minutes for short ranges (gateway_1m, fleet_1m), in hours for a week', async () => {
    const { page } = cp;
    await go('#/fleet-chart?metric=temp&range=7d');
    const q = await lastQuery();
    expect(Object.fromEntries(q.params)).toMatchObject({ metric: 'temp', step: '1h', agg: 'avg' });
    expect(q.params.has('device') || q.params.has('gateway')).toBe(false);
    expect(q.page).toEqual(q.api);
    expect(q.api.scope).toEqual({ fleet: true });
    await expectPoints(q.api);
    // Daily readings from a week of history, and today's hours.
    expect(q.api.points.length).toBeGreaterThanOrEqual(12);
    await screenshot(page, 'fleet-chart');
    // Every step of whole minutes is offered, and short ranges.
    const options = (sel: string) => page.$$eval(`${sel} option`, (os) => os.map((o) => (o as HTMLOptionElement).value));
    expect(await options('[data-testid=select-step]')).toEqual(['auto', '1m', '5m', '15m', '1h', '6h', '1d']);
    expect(await options('[data-testid=select-range]')).toEqual(['1h', '6h', '24h', '7d', '30d', 'custom']);

    // The automatic step gives 60 to 300 bars: minutes for the last hour, five for 6 h and 24 h, hours for a week.
    for (const [range, step, ms] of [['1h', '1m', 3600_000], ['6h', '5m', 6 * 3600_000], ['24h', '5m', 24 * 3600_000], ['30d', '6h', 30 * 24 * 3600_000]] as const) {
      await go(`#/fleet-chart?metric=temp&range=${range}`);
      const r = await lastQuery();
      expect({ range, step: r.params.get('step'), span: Number(r.params.get('to')) - Number(r.params.get('from')) }).toEqual({ range, step, span: ms });
      expect(r.page).toEqual(r.api);
    }

    // An hour of gw-hist's history (dev-1 and dev-2 every 10 minutes) at 1m: six bars, not one.
    const H = 3600_000;
    await go(`#/fleet-chart?metric=temp&range=custom&from=${world.h0 - 3 * H}&to=${world.h0 - 2 * H}`);
    const hour = await lastQuery();
    expect(hour.params.get('step')).toBe('1m');
    expect(hour.page).toEqual(hour.api);
    expect(hour.api.points.map((p) => [Date.parse(p.t) - (world.h0 - 3 * H), p.batch])).toEqual([0, 10, 20, 30, 40, 50].map((m) => [m * 60_000, 2]));
    // gw-gone's partial at H-3:30 merges into its minute, provisional.
    expect(hour.api.points.filter((p) => p.speed > 0).map((p) => [Date.parse(p.t) - (world.h0 - 3 * H), p.provisional])).toEqual([[30 * 60_000, true]]);
    await expectPoints(hour.api);
    await screenshot(page, 'fleet-chart-hour');

    // The custom range's inputs show the range the link gave in epoch ms.
    expect(await page.locator('input[name=from]').inputValue()).toBe(new Date(world.h0 - 3 * H).toISOString().slice(0, 16));
    // One gateway's scope, by the form: its six hours at 5m.
    await page.selectOption('[data-testid=select-gateway]', 'gw-hist');
    await page.fill('input[name=from]', new Date(world.h0 - 6 * H).toISOString().slice(0, 16));
    await page.fill('input[name=to]', new Date(world.h0).toISOString().slice(0, 16));
    await nextRender(page, () => page.click('[data-testid=show]'));
    const q2 = await lastQuery();
    expect(q2.params.get('gateway')).toBe('gw-hist');
    expect(q2.params.get('step')).toBe('5m');
    expect(q2.api.scope).toEqual({ gateway: 'gw-hist' });
    expect(q2.api.points.length).toBe(36);
    await expectPoints(q2.api);
    await eventually(async () => (await page.locator('[data-testid=select-gateway]').inputValue()) === 'gw-hist');
  });

  it('fleet chart under a manifest of an earlier version (no gateway_1m, fleet_1m): the minute step is refused, the chart shows hours and says why', async () => {
    const { page } = cp;
    const file = join(world.dir, 'views', 'manifest.json');
    const original = await readFile(file, 'utf8');
    const doc = JSON.parse(original) as { views: Record<string, string[]> };
    delete doc.views.gateway_1m;
    delete doc.views.fleet_1m;
    const replace = async (text: string) => {
      await writeFile(`${file}.tmp`, text);
      await rename(`${file}.tmp`, file);
    };
    await replace(JSON.stringify(doc));
    try {
      const H = 3600_000;
      await go(`#/fleet-chart?metric=temp&range=custom&from=${world.h0 - 3 * H}&to=${world.h0 - 2 * H}`);
      await cp.flush();
      const asked = cp.responses.filter((r) => r.url.pathname === '/api/v1/query').slice(-2);
      expect(asked.map((r) => [r.url.searchParams.get('step'), r.status, (r.body as { code?: string }).code ?? null]))
        .toEqual([['1m', 409, 'BRAID_ERR_VIEW_NOT_PUBLISHED'], ['1h', 200, null]]);
      const q = await lastQuery();
      expect(q.page).toEqual(q.api);
      expect(q.api.points.map((p) => [p.t, p.batch])).toEqual([[new Date(world.h0 - 3 * H).toISOString(), 12]]);
      await expectPoints(q.api);
      expect(await text('[data-testid=step-note]'))
        .toBe('Shown at 1h: 1m buckets of this scope come with the next batch run (the live views were published by an earlier version).');
    } finally {
      await replace(original);
    }
  });
});
