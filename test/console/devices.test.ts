/**
 * The console at fleet scale, in Debian's chromium against a real cloud, gateway and batch
 * (world.ts) plus a gateway reporting 10,000 devices:
 * - the devices page finds one device among 10,000 in one search, filters, sorts and pages on the
 *   server (each page the API's own answer), and a device's row opens its chart;
 * - the fleet overview has no firing-alerts tile while the cloud has no GET /api/v1/alerts;
 * - every page at 390 px and at desktop width, light and dark: no horizontal scroll, the
 *   background follows prefers-color-scheme; screenshots in a temp dir (printed).
 */
import { existsSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Browser } from 'playwright-core';
import { addGateway } from '../../cloud/store/credentials.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { type ConsolePage, apiCall, fmtInt, haveChromium, launchChromium, newConsolePage, nextRender, tableRows } from '../support/browser.js';
import { type World, closeSteps, makeWorld } from './world.js';

const HAVE = haveChromium();
const maybe = HAVE ? describe : describe.skip;

const FLEET = 10_000;
const fleetId = (i: number) => `fleet-${String(i).padStart(5, '0')}`;
type DeviceDoc = { id: string; gateway: string; online: boolean; lastSeenAt: string; metrics: string[] };
type Page = { devices: DeviceDoc[]; total: number; offset: number; limit: number | null };

let world: World;
let browser: Browser;
const pages: ConsolePage[] = [];

/** gw-fleet: a gateway token added to the running cloud's cloud.db, and one speed push naming 10,000 devices (every 4th connected). */
async function addFleet(): Promise<void> {
  const db = await openCloudDb(join(world.dir, 'cloud.db'));
  let token: string;
  try { token = await addGateway(db, 'gw-fleet'); } finally { await db.close(); }
  const devices = Array.from({ length: FLEET }, (_, i) => ({ id: fleetId(i), connected: i % 4 === 0 }));
  const body = { v: 1, gateway: 'gw-fleet', sentAt: Date.now(), partials: [], health: { status: 'ok', gatewayId: 'gw-fleet' }, devices };
  const res = await fetch(`${world.url}/api/v1/speed`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-encoding': 'gzip' },
    body: new Uint8Array(gzipSync(JSON.stringify(body))),
  });
  if (res.status !== 200) throw new Error(`speed push: ${res.status} ${await res.text()}`);
}

maybe('the console at fleet scale', () => {
  beforeAll(async () => {
    [world, browser] = await Promise.all([makeWorld(), launchChromium()]);
    await addFleet();
  }, 60_000);

  afterAll(() => closeSteps('devices test', [
    ['pages', async () => Promise.all(pages.map((p) => p.close()))],
    ['chromium', async () => browser?.close()],
    ['world', async () => world?.close()],
  ], 45_000), 50_000);

  const open = async (o: { width?: number } = {}) => {
    const cp = await newConsolePage(browser, world.url, { key: world.read, ...o });
    pages.push(cp);
    return cp;
  };
  const api = async (qs: string) => (await apiCall<Page>(world.url, `/api/v1/devices${qs}`, world.read)).body;
  /** The page's rows: id, state, gateway (the columns an answer fixes). */
  const rowsOf = async (cp: ConsolePage) => (await tableRows(cp.page, '[data-testid=devices-table]'))
    .map((r) => ({ id: r.cells.id, state: r.cells.state, gateway: r.cells.gateway }));
  const rowsFrom = (p: Page) => p.devices.map((d) => ({ id: d.id, state: d.online ? 'online' : 'offline', gateway: d.gateway }));
  /** Wait until the page shows `want` (the summary line). */
  const summaryIs = (cp: ConsolePage, want: string) => cp.page.waitForFunction(
    (w) => document.querySelector('[data-testid=devices-summary]')?.textContent === w, want, { timeout: 15_000 });

  it('devices page: one search finds one device among 10,000; filters, sort and pages are the API\'s; a row opens the device\'s chart', async () => {
    const cp = await open();
    const { page } = cp;
    await page.goto('/#/devices');
    const all = await api('?limit=50');
    expect(all.total).toBe(FLEET + 2); // and dev-1, dev-3 of gw-live (dev-2 is only in the batch history)
    await summaryIs(cp, `1–50 of ${fmtInt(all.total)} devices`);
    expect(await rowsOf(cp)).toEqual(rowsFrom(all));
    expect(await page.innerText('[data-testid=page-info]')).toBe(`page 1 of ${fmtInt(Math.ceil(all.total / 50))}`);
    // The alerts filter stays hidden: the devices search cannot filter by firing alerts yet.
    expect(await page.isVisible('[data-testid=filter-alerts-field]')).toBe(false);

    // One search: typed as an operator would (other case, part of the id), one answer, one row.
    const t0 = Date.now();
    await page.fill('[data-testid=device-search]', 'FLEET-0421');
    await summaryIs(cp, '1–10 of 10 devices matching “FLEET-0421”');
    const typedMs = Date.now() - t0;
    await page.fill('[data-testid=device-search]', 'eet-04217');
    await summaryIs(cp, '1–1 of 1 device matching “eet-04217”');
    const oneMs = Date.now() - t0 - typedMs;
    expect(await rowsOf(cp)).toEqual([{ id: 'fleet-04217', state: 'offline', gateway: 'gw-fleet' }]);
    await cp.flush();
    const asked = cp.responses.filter((r) => r.url.pathname === '/api/v1/devices').at(-1)!;
    expect(Object.fromEntries(asked.url.searchParams)).toEqual({ q: 'eet-04217', limit: '50' });
    expect(await page.evaluate(() => location.hash)).toBe('#/devices?q=eet-04217');
    // eslint-disable-next-line no-console
    console.log(`devices page, 10,002 devices: typed search to rows shown ${typedMs} ms (includes the 250 ms typing pause), a second search ${oneMs} ms`);

    // Filters and sort: the page asks the server and shows its answer.
    await page.fill('[data-testid=device-search]', '');
    await page.selectOption('[data-testid=select-status]', 'online');
    const online = await api('?status=online&limit=50');
    await summaryIs(cp, `1–${online.devices.length} of ${fmtInt(online.total)} device${online.total === 1 ? '' : 's'}`);
    expect(await rowsOf(cp)).toEqual(rowsFrom(online));
    expect(online.devices.every((d) => d.online)).toBe(true);
    await page.selectOption('[data-testid=select-status]', '');
    await page.selectOption('[data-testid=select-gateway]', 'gw-fleet');
    await page.selectOption('[data-testid=select-sort]', 'id');
    await page.selectOption('[data-testid=select-order]', 'desc');
    const desc = await api('?gateway=gw-fleet&order=desc&limit=50');
    await summaryIs(cp, `1–50 of ${fmtInt(FLEET)} devices`);
    expect(await rowsOf(cp)).toEqual(rowsFrom(desc));
    expect(desc.devices[0].id).toBe(fleetId(FLEET - 1));
    // Paging: next twice, back once; each page the API's at its offset.
    await page.click('[data-testid=page-next]');
    await summaryIs(cp, `51–100 of ${fmtInt(FLEET)} devices`);
    await page.click('[data-testid=page-next]');
    await summaryIs(cp, `101–150 of ${fmtInt(FLEET)} devices`);
    expect(await rowsOf(cp)).toEqual(rowsFrom(await api('?gateway=gw-fleet&order=desc&limit=50&offset=100')));
    await page.click('[data-testid=page-prev]');
    await summaryIs(cp, `51–100 of ${fmtInt(FLEET)} devices`);
    expect(await rowsOf(cp)).toEqual(rowsFrom(await api('?gateway=gw-fleet&order=desc&limit=50&offset=50')));
    expect(await page.innerText('[data-testid=page-info]')).toBe(`page 2 of ${fmtInt(FLEET / 50)}`);
    // A reload keeps the page.
    await page.reload();
    await summaryIs(cp, `51–100 of ${fmtInt(FLEET)} devices`);

    // Last seen, newest first: the world's devices (reported since) before gw-fleet's.
    await page.goto('/#/devices?sort=lastSeen&order=desc');
    const bySeen = await api('?sort=lastSeen&order=desc&limit=50');
    await summaryIs(cp, `1–50 of ${fmtInt(all.total)} devices`);
    expect(await rowsOf(cp)).toEqual(rowsFrom(bySeen));

    // A row opens the device's chart.
    await page.goto('/#/devices?q=dev-1');
    await summaryIs(cp, '1–1 of 1 device matching “dev-1”');
    await nextRender(page, () => page.click('tr[data-id="dev-1"] td[data-k=gateway]'));
    expect(await page.evaluate(() => location.hash)).toBe('#/device?device=dev-1');
    await page.waitForSelector('[data-testid=chart] canvas');
    await cp.flush();
    const query = cp.responses.filter((r) => r.url.pathname === '/api/v1/query').at(-1)!;
    expect(query.url.searchParams.get('device')).toBe('dev-1');
    expect(query.status).toBe(200);
    expect(cp.errors).toEqual([]);
  }, 60_000);

  it('paging: an older request\'s answer that lands after the newer page is drawn does not replace it', async () => {
    const cp = await open();
    const { page } = cp;
    await page.goto('/#/devices?gateway=gw-fleet&order=desc');
    await summaryIs(cp, `1–50 of ${fmtInt(FLEET)} devices`);
    // The answer for offset 50 is held until the page shows offset 100 (a Next click's request
    // must not wait behind it), then delivered: the page must go on showing offset 100.
    let delivered!: () => void;
    const late = new Promise<void>((resolve) => { delivered = resolve; });
    await page.route((u) => u.pathname === '/api/v1/devices' && u.searchParams.get('offset') === '50', async (route) => {
      await summaryIs(cp, `101–150 of ${fmtInt(FLEET)} devices`).catch(() => undefined);
      await route.fulfill({ response: await route.fetch() });
      delivered();
    });
    await page.click('[data-testid=page-next]');
    await page.click('[data-testid=page-next]');
    await summaryIs(cp, `101–150 of ${fmtInt(FLEET)} devices`);
    await late;
    await cp.flush();
    await page.waitForTimeout(150);
    expect(cp.responses.filter((r) => r.url.pathname === '/api/v1/devices').map((r) => r.url.searchParams.get('offset')).slice(-2)).toEqual(['100', '50']);
    expect(await page.innerText('[data-testid=devices-summary]')).toBe(`101–150 of ${fmtInt(FLEET)} devices`);
    expect(await rowsOf(cp)).toEqual(rowsFrom(await api('?gateway=gw-fleet&order=desc&limit=50&offset=100')));
    expect(await page.evaluate(() => location.hash)).toBe('#/devices?gateway=gw-fleet&order=desc&offset=100');
    expect(cp.errors).toEqual([]);
  });

  it('fleet overview: device counts from the answers\' totals; the firing-alerts tile from GET /api/v1/alerts', async () => {
    const cp = await open();
    const { page } = cp;
    await page.goto('/#/fleet');
    await page.waitForSelector('[data-testid=stat-devices-online]');
    await nextRender(page);
    await cp.flush();
    // The console read the API document, which lists the alerts route, then asked it: the tile shows
    // the firing count of its answer (this world has no rules: 0 of 0).
    const doc = await apiCall<{ paths: Record<string, unknown> }>(world.url, '/api/v1/openapi.json', world.read);
    expect(doc.body.paths['/api/v1/alerts']).toBeDefined();
    const alerts = await apiCall<{ alerts: Array<{ state: string }> }>(world.url, '/api/v1/alerts', world.read);
    expect(alerts.status).toBe(200);
    expect(cp.responses.filter((r) => r.url.pathname === '/api/v1/openapi.json').map((r) => r.status)).toEqual([200]);
    expect(cp.responses.filter((r) => r.url.pathname === '/api/v1/alerts').map((r) => r.status)).toContain(200);
    expect(await page.isVisible('[data-testid=fleet-alerts]')).toBe(true);
    expect(await page.innerText('[data-testid=stat-alerts-firing]')).toBe(fmtInt(alerts.body.alerts.filter((a) => a.state === 'firing').length));
    const online = await api('?status=online&limit=1');
    const known = await api('?limit=1');
    expect(await page.innerText('[data-testid=stat-devices-online]')).toBe(fmtInt(online.total));
    expect(await page.innerText('[data-testid=note-devices-online]')).toBe(`of ${fmtInt(known.total)} known`);
    // The tile leads to the devices page, online ones.
    await nextRender(page, () => page.click('[data-testid=devices-link]'));
    expect(await page.evaluate(() => location.hash)).toBe('#/devices?status=online');
    expect(cp.errors).toEqual([]);
  });

  it('every page at 390 px and 1360 px, light and dark: no horizontal scroll, the background follows the scheme; screenshots', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'braid-console-shots-'));
    const routes: Array<[string, string]> = [
      ['fleet', '#/fleet'], ['gateways', '#/gateways'], ['devices', '#/devices'], ['device', '#/device?device=dev-1&metric=temp&range=24h&step=1h&agg=avg'],
      ['fleet-chart', '#/fleet-chart?metric=temp&range=24h'], ['batch', '#/batch'],
    ];
    const ready: Record<string, string> = {
      fleet: '[data-testid=stat-gateways]', gateways: '[data-testid=gateways-table]', devices: '[data-testid=devices-table]',
      device: '[data-testid=chart] canvas', 'fleet-chart': '[data-testid=chart] canvas', batch: '[data-testid=runs-table]',
    };
    const results: string[] = [];
    for (const width of [390, 1360]) {
      for (const scheme of ['light', 'dark'] as const) {
        const cp = await open({ width });
        await cp.page.emulateMedia({ colorScheme: scheme });
        for (const [name, hash] of routes) {
          await cp.page.goto(`/${hash}`);
          await cp.page.waitForSelector(ready[name], { timeout: 15_000 });
          await cp.page.waitForTimeout(200);
          const m = await cp.page.evaluate(() => {
            const bg = getComputedStyle(document.body).backgroundColor === 'rgba(0, 0, 0, 0)'
              ? getComputedStyle(document.documentElement).backgroundColor : getComputedStyle(document.body).backgroundColor;
            const [r, g, b] = (bg.match(/\d+/g) ?? ['255', '255', '255']).map(Number);
            return {
              scrollWidth: document.documentElement.scrollWidth, bodyScrollWidth: document.body.scrollWidth, viewport: window.innerWidth,
              luminance: (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255,
              text: getComputedStyle(document.querySelector('h1')!).color,
            };
          });
          const file = join(dir, `${name}-${width}-${scheme}.png`);
          await cp.page.screenshot({ path: file, fullPage: true });
          expect(existsSync(file) && statSync(file).size > 1000).toBe(true);
          const where = `${name} at ${width} px, ${scheme}`;
          expect({ where, fits: m.scrollWidth <= m.viewport && m.bodyScrollWidth <= m.viewport, scrollWidth: m.scrollWidth })
            .toEqual({ where, fits: true, scrollWidth: m.scrollWidth });
          expect({ where, dark: m.luminance < 0.25 }).toEqual({ where, dark: scheme === 'dark' });
          results.push(`${where}: scrollWidth ${m.scrollWidth}/${m.viewport}, background luminance ${m.luminance.toFixed(2)}`);
        }
        await cp.flush();
        expect(cp.errors).toEqual([]);
      }
    }
    // eslint-disable-next-line no-console
    console.log(`screenshots in ${dir}\n  ${results.join('\n  ')}`);
  }, 120_000);
});
