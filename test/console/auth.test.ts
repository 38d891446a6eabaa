/**
 * The console and its keys, in Debian's chromium against a real cloud (world.ts): static files need
 * no key, the key prompt on a first visit, a wrong key and a key revoked under a running console
 * (401: the prompt comes back with the API's code and message), "Change key", and a read key (every
 * page shows the fleet, as GET /api/v1/whoami names the key; Run now shows disabled and is refused).
 */
import { request } from 'node:http';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { addApiKey, removeApiKey } from '../../cloud/store/credentials.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { type ConsolePage, apiCall, fmtInt, fmtTime, haveChromium, launchChromium, newConsolePage, nextRender, screenshot, tableRows } from '../support/browser.js';
import { type World, closeSteps, expectOverviewEqualsApi, makeWorld } from './world.js';

const HAVE = haveChromium();
const maybe = HAVE ? describe : describe.skip;

let world: World;
let browser: Browser;
const pages: ConsolePage[] = [];

async function open(key?: string): Promise<ConsolePage> {
  const cp = await newConsolePage(browser, world.url, { key });
  pages.push(cp);
  return cp;
}

async function withDb<T>(fn: (db: Awaited<ReturnType<typeof openCloudDb>>) => Promise<T>): Promise<T> {
  const db = await openCloudDb(join(world.dir, 'cloud.db'));
  try { return await fn(db); } finally { await db.close(); }
}

/** A raw GET, path as given (fetch would normalise `..`). */
function rawGet(path: string): Promise<{ status: number; body: string }> {
  const u = new URL(world.url);
  return new Promise((resolve, reject) => {
    request({ host: u.hostname, port: u.port, path, method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject).end();
  });
}

maybe('console keys', () => {
  beforeAll(async () => {
    [world, browser] = await Promise.all([makeWorld(), launchChromium()]);
  }, 45_000);

  afterAll(() => closeSteps('console test', [
    ['pages', () => Promise.all(pages.map((p) => p.close()))],
    ['chromium', async () => browser?.close()],
    // The world's own steps have 15 s each and name the one that hangs; this outer limit only
    // backs them up, so it spans them (on a loaded machine the cloud's close seals staging).
    ['world', async () => world?.close()],
  ], 45_000), 50_000);

  afterEach(async () => {
    for (const p of pages.splice(0)) {
      await p.flush();
      expect(p.errors).toEqual([]);
      await p.close();
    }
  });

  it('static files need no key, are served with their type and a CSP; every /api/v1 call does need one', async () => {
    const index = await fetch(`${world.url}/`);
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(index.headers.get('content-security-policy')).toContain("default-src 'self'");
    const html = await index.text();
    const assets = [...html.matchAll(/(?:src|href)="(\/console\/[^"]+)"/g)].map((m) => m[1]);
    expect(assets).toEqual(['/console/vendor/uPlot.min.css', '/console/style.css', '/console/app.js']);
    for (const [path, type] of [
      ...assets.map((a) => [a, a.endsWith('.css') ? 'text/css; charset=utf-8' : 'text/javascript; charset=utf-8']),
      ['/console/vendor/uPlot.esm.js', 'text/javascript; charset=utf-8'], ['/console/pages/device.js', 'text/javascript; charset=utf-8'],
    ]) {
      const res = await fetch(`${world.url}${path}`);
      expect({ path, status: res.status, type: res.headers.get('content-type') }).toEqual({ path, status: 200, type });
    }
    // uPlot is served from node_modules, not fetched from a CDN.
    expect(await (await fetch(`${world.url}/console/vendor/uPlot.esm.js`)).text()).toContain('export { uPlot as default }');
    // Only the listed files: nothing else of the disk is reachable.
    for (const path of ['/console/../index.ts', '/console/%2e%2e/index.ts', '/console/', '/console/pages/']) {
      expect((await rawGet(path)).status).toBe(404);
    }
    // The API is another matter.
    for (const path of ['/api/v1/gateways', '/api/v1/devices', '/api/v1/metrics', '/api/v1/batch', '/api/v1/query?metric=temp&from=0&to=3600000', '/api/v1/whoami']) {
      const r = await apiCall(world.url, path, null);
      expect({ path, status: r.status, code: r.body.code }).toEqual({ path, status: 401, code: 'BRAID_ERR_UNAUTHORIZED' });
    }
    // The console's routes are not part of the API's OpenAPI document.
    const doc = await apiCall<{ paths: Record<string, unknown> }>(world.url, '/api/v1/openapi.json', null);
    expect(Object.keys(doc.body.paths).filter((p) => p === '/' || p.startsWith('/console'))).toEqual([]);
  });

  it('a first visit asks for a key; a wrong one brings the prompt back with the 401\'s code and message; a good one is kept', async () => {
    const cp = await open();
    const { page } = cp;
    await page.goto('/');
    await page.waitForSelector('dialog#key-dialog[open]');
    expect(await page.isVisible('[data-testid=key-message]')).toBe(false);
    // No key yet: the prompt cannot be cancelled, and no API call was made without one.
    expect(await page.isVisible('[data-testid=key-cancel]')).toBe(false);
    expect(cp.responses).toEqual([]);

    const wrong = 'brk_this-key-does-not-exist';
    const refusal = await apiCall<{ code: string; message: string }>(world.url, '/api/v1/batch', wrong);
    expect(refusal.status).toBe(401);
    await page.fill('[data-testid=key-input]', wrong);
    await page.click('[data-testid=key-save]');
    await page.waitForSelector('[data-testid=key-message]:visible');
    expect(await page.innerText('[data-testid=key-message]')).toBe(`The cloud refused the key: 401 ${refusal.body.code}: ${refusal.body.message}`);
    expect(await page.isVisible('dialog#key-dialog[open]')).toBe(true);
    await screenshot(page, 'key-prompt');

    await page.fill('[data-testid=key-input]', world.admin);
    await nextRender(page, () => page.click('[data-testid=key-save]'));
    expect(await page.isVisible('dialog#key-dialog[open]')).toBe(false);
    expect(await page.innerText('[data-testid=key-info]')).toBe(`key ${world.admin.slice(0, 8)}…${world.admin.slice(-4)} · admin`);
    expect(await page.evaluate(() => localStorage.getItem('braid.apiKey'))).toBe(world.admin);
    expect(await page.innerText('[data-testid=stat-gateways]')).toBe('3');

    // Kept: a reload goes straight to the page.
    await page.reload();
    await page.waitForSelector('[data-testid=stat-gateways]');
    expect(await page.isVisible('dialog#key-dialog[open]')).toBe(false);
    await cp.flush();
    // Every call sent the key it had at the time: the wrong one once (the role probe), then the admin key.
    expect(cp.responses.map((r) => r.auth)).toEqual(cp.responses.map((_, i) => (i === 0 ? `Bearer ${wrong}` : `Bearer ${world.admin}`)));
    expect(cp.responses[0]).toMatchObject({ status: 401 });
  });

  it('a key revoked while the console runs: the next call\'s 401 brings the prompt back with its message', async () => {
    const temp = await withDb((db) => addApiKey(db, 'temp', 'admin'));
    const cp = await open(temp);
    const { page } = cp;
    await page.goto('/#/gateways');
    await page.waitForSelector('[data-testid=gateways-table]');
    await withDb((db) => removeApiKey(db, 'temp'));
    // Within the auth cache's 5 s and the page's 5 s poll.
    await page.waitForSelector('dialog#key-dialog[open] [data-testid=key-message]:visible', { timeout: 20_000 });
    const refusal = await apiCall<{ code: string; message: string }>(world.url, '/api/v1/gateways', temp);
    expect(refusal.status).toBe(401);
    expect(await page.innerText('[data-testid=key-message]')).toBe(`The cloud refused the key: 401 ${refusal.body.code}: ${refusal.body.message}`);
    // A refused key cannot be kept by cancelling.
    expect(await page.isVisible('[data-testid=key-cancel]')).toBe(false);
    await screenshot(page, 'key-revoked');
    await page.fill('[data-testid=key-input]', world.admin);
    await nextRender(page, () => page.click('[data-testid=key-save]'));
    expect(await page.isVisible('[data-testid=gateways-table]')).toBe(true);
  });

  it('a read key (what `braid demo` prints as "API key"): every page shows the fleet with the API\'s numbers; Run now shows disabled', async () => {
    const cp = await open(world.read);
    const { page } = cp;
    await world.settle();
    await page.goto('/#/fleet');
    await page.waitForSelector('[data-testid=stat-gateways]');
    await nextRender(page);
    const text = (sel: string) => page.locator(sel).innerText();
    // Who the key is comes from GET /api/v1/whoami: the key's name and role, not a probe of an admin route.
    expect(await text('[data-testid=key-info]')).toBe(`key ${world.read.slice(0, 8)}…${world.read.slice(-4)} · read`);
    await cp.flush();
    expect(cp.responses[0]).toMatchObject({ method: 'GET', status: 200, body: { kind: 'key', name: 'app', role: 'read' } });
    expect(cp.responses[0].url.pathname).toBe('/api/v1/whoami');
    expect(await page.$$('[data-testid=error]')).toEqual([]);

    // Fleet overview: the figures are the API's, read with the same read key.
    const { gateways: gw } = await expectOverviewEqualsApi(page, world.url, world.read);
    const devices = (await apiCall<{ devices: Array<{ id: string; metrics: string[] }> }>(world.url, '/api/v1/devices', world.read)).body.devices;
    // What the world put there, so the comparison is not of zeros.
    expect([await text('[data-testid=stat-gateways]'), await text('[data-testid=stat-gaps]'), await text('[data-testid=stat-devices-online]')]).toEqual(['3', '2', '2']);
    await screenshot(page, 'fleet-read-key');

    // Gateways: one row per gateway of the API's answer.
    await nextRender(page, () => page.evaluate(() => { location.hash = '#/gateways'; }));
    const gwRows = await tableRows(page, '[data-testid=gateways-table]');
    expect(gwRows.map((r) => [r.cells.id, r.cells.state])).toEqual(gw.map((g) => [g.id, g.online ? 'online' : 'offline']));
    expect(gwRows.map((r) => r.cells.gaps)).toEqual(gw.map((g) => (g.gaps.length ? `${fmtInt(g.gaps.length)} (${fmtInt(g.gaps.reduce((n, r) => n + r.count, 0))} readings)` : '0')));

    // The device view: the device list to pick from (the API's devices), and the merged answer.
    await nextRender(page, () => page.evaluate(() => { location.hash = '#/device?device=dev-1&metric=temp&range=24h&step=1h'; }));
    expect(await page.$$('[data-testid=error]')).toEqual([]);
    expect(await page.$$eval('[data-testid=select-device] option', (os) => os.map((o) => (o as HTMLOptionElement).value))).toEqual(devices.map((d) => d.id));
    expect(await page.$$eval('[data-testid=select-metric] option', (os) => os.map((o) => (o as HTMLOptionElement).value))).toEqual(devices.find((d) => d.id === 'dev-1')!.metrics);
    await cp.flush();
    const q = cp.responses.filter((r) => r.url.pathname === '/api/v1/query').at(-1)!;
    const again = await apiCall<{ points: Array<{ t: string; count: number }> }>(world.url, q.url.pathname + q.url.search, world.read);
    expect(again.status).toBe(200);
    const rows = await tableRows(page, '[data-testid=points-table]');
    expect(rows.map((r) => [r.data.t, r.cells.count])).toEqual([...again.body.points].reverse().map((p) => [p.t, fmtInt(p.count)]));
    expect(rows.length).toBe(8);
    await screenshot(page, 'device-read-key');

    // A query the API refuses: its 400 code and message, as the API gives them.
    await nextRender(page, () => page.evaluate(() => { location.hash = '#/device?device=dev-1&metric=temp&range=1h&step=90s'; }));
    await cp.flush();
    const bad = cp.responses.filter((r) => r.url.pathname === '/api/v1/query').at(-1)!;
    const badAgain = await apiCall<{ code: string; message: string }>(world.url, bad.url.pathname + bad.url.search, world.read);
    expect(badAgain.status).toBe(400);
    expect(await page.innerText('[data-testid=result] [data-testid=error]')).toBe(`GET /api/v1/query: 400 ${badAgain.body.code} ${badAgain.body.message}`);

    // The fleet chart: the gateways to scope by and the metrics to pick from come from the registry
    // (the metrics from GET /api/v1/metrics: every device's metrics, each once, without listing the devices).
    await nextRender(page, () => page.evaluate(() => { location.hash = '#/fleet-chart?metric=temp&range=7d'; }));
    expect(await page.$$eval('[data-testid=select-gateway] option', (os) => os.map((o) => (o as HTMLOptionElement).value))).toEqual(['', ...gw.map((g) => g.id)]);
    const fleetMetrics = [...new Set(devices.flatMap((d) => d.metrics))].sort();
    expect(fleetMetrics.length).toBeGreaterThan(0);
    expect(await page.$$eval('[data-testid=select-metric] option', (os) => os.map((o) => (o as HTMLOptionElement).value))).toEqual(fleetMetrics);
    const counts = (await apiCall<{ metrics: Array<{ name: string; devices: number }> }>(world.url, '/api/v1/metrics', world.read)).body.metrics;
    expect(counts).toEqual(fleetMetrics.map((name) => ({ name, devices: devices.filter((d) => d.metrics.includes(name)).length })));
    await cp.flush();
    const fq = cp.responses.filter((r) => r.url.pathname === '/api/v1/query').at(-1)!;
    expect(fq.status).toBe(200);
    expect((await apiCall(world.url, fq.url.pathname + fq.url.search, world.read)).body).toEqual(fq.body);

    // Alerts: no rule set, no Alertmanager configured (the silences route says so; nothing refused).
    await nextRender(page, () => page.evaluate(() => { location.hash = '#/alerts'; }));
    expect(await text('[data-testid=alerts-summary]')).toBe('No alert rule is set (PUT /api/v1/alerts/rules).');
    expect(await text('[data-testid=silences-none]')).toMatch(/^No Alertmanager configured \(alerts\.alertmanagerUrl\)/);
    expect((await apiCall(world.url, '/api/v1/alerts/silences', world.read)).body).toEqual({ configured: false, silences: [], silenced: [] });
    expect(await page.$$('[data-testid=error]')).toEqual([]);

    // Batch runs: the history as the API gives it; Run now is there, disabled, saying it needs an admin key.
    await nextRender(page, () => page.evaluate(() => { location.hash = '#/batch'; }));
    const runs = (await apiCall<{ runs: Array<{ id: number }> }>(world.url, '/api/v1/batch', world.read)).body.runs;
    expect((await tableRows(page, '[data-testid=runs-table]')).map((r) => r.cells.id)).toEqual(runs.map((r) => fmtInt(r.id)));
    expect(await page.isVisible('[data-testid=run-now]')).toBe(true);
    expect(await page.isDisabled('[data-testid=run-now]')).toBe(true);
    expect(await page.isDisabled('[data-testid=run-full]')).toBe(true);
    expect(await page.getAttribute('[data-testid=run-now]', 'title')).toBe('Starting a batch run needs an admin key');
    expect(await text('[data-testid=run-note]')).toBe('needs an admin key (this is a read key)');
    // The API refuses the run as well.
    const run = await apiCall<{ code: string }>(world.url, '/api/v1/batch/run', world.read, { method: 'POST', body: {} });
    expect({ status: run.status, code: run.body.code }).toEqual({ status: 403, code: 'BRAID_ERR_FORBIDDEN' });
    await screenshot(page, 'batch-read-key');
    await cp.flush();
    // No call of the console was refused.
    expect(cp.responses.filter((r) => r.status !== 200 && r.url.pathname !== '/api/v1/query').map((r) => `${r.status} ${r.url.pathname}`)).toEqual([]);

    // "Change key": cancel keeps the read key; an admin key enables Run now.
    await page.click('[data-testid=change-key]');
    await page.waitForSelector('dialog#key-dialog[open]');
    expect(await page.isVisible('[data-testid=key-cancel]')).toBe(true);
    await page.click('[data-testid=key-cancel]');
    expect(await page.isVisible('dialog#key-dialog[open]')).toBe(false);
    expect(await page.evaluate(() => localStorage.getItem('braid.apiKey'))).toBe(world.read);
    await page.click('[data-testid=change-key]');
    await page.fill('[data-testid=key-input]', world.admin);
    await nextRender(page, () => page.click('[data-testid=key-save]'));
    expect(await text('[data-testid=key-info]')).toContain('· admin');
    expect(await page.isVisible('[data-testid=run-now]')).toBe(true);
    expect(await page.isEnabled('[data-testid=run-now]')).toBe(true);
    expect(await page.getAttribute('[data-testid=run-now]', 'title')).toBeNull();
    expect(await page.$$('[data-testid=run-note]')).toEqual([]);
    await cp.flush();
    // Until the change every call carried the read key; after it, the admin key.
    const switchAt = cp.responses.findIndex((r) => r.auth === `Bearer ${world.admin}`);
    expect(switchAt).toBeGreaterThan(0);
    expect(cp.responses.slice(0, switchAt).every((r) => r.auth === `Bearer ${world.read}`)).toBe(true);
    expect(cp.responses.slice(switchAt).every((r) => r.auth === `Bearer ${world.admin}`)).toBe(true);
  });
});
