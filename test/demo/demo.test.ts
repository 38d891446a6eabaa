/**
 * `braid demo` as a user runs it: a child process in a temp data dir, its Console and API key
 * lines, the console in Debian's chromium (entered with the printed API key, a read key, as a
 * newcomer does) showing the fleet overview with the API's numbers and
 * numbers that move, both sides of the merged query once the first batch run is in, then Ctrl-C:
 * exit 0, no stack trace, nothing left listening. A second start reuses the data dir.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Browser } from 'playwright-core';
import { type ConsolePage, apiCall, fmtInt, fmtNum, haveChromium, launchChromium, newConsolePage, nextRender, screenshot } from '../support/browser.js';
import { eventually, requireBinary, tempDir } from '../support/gateway.js';
import { type DemoProcess, killAllDemos, listening, spawnDemo } from './support.js';

const ROOT = resolve(import.meta.dirname, '../..');
const BRAID = join(ROOT, 'bin/braid.js');
const HAVE = haveChromium();
const maybe = HAVE ? describe : describe.skip;

interface GatewayDoc {
  id: string; online: boolean; lastContactAt: string | null; outboxPending: number | null;
  health: { readings?: { accepted?: number; duplicates?: number; invalid?: number } } | null;
  dropped: { diskBudget: number; queueFull: number; invalid: number; duplicates: number };
}
interface Point { t: string; count: number; batch: number; speed: number }

/** What the console's fleet page computes from two /api/v1/gateways answers (cloud/console/static/pages/fleet.js). */
function rate(prev: GatewayDoc[], cur: GatewayDoc[]): { rate: number; readings: number; gateways: number } | null {
  let r = 0; let readings = 0; let n = 0;
  for (const g of cur) {
    const p = prev.find((x) => x.id === g.id);
    const a1 = g.health?.readings?.accepted; const a0 = p?.health?.readings?.accepted;
    const dt = (Date.parse(g.lastContactAt ?? '') - Date.parse(p?.lastContactAt ?? '')) / 1000;
    if (typeof a1 !== 'number' || typeof a0 !== 'number' || !(dt > 0) || a1 < a0) continue;
    r += (a1 - a0) / dt; readings += a1 - a0; n++;
  }
  return n ? { rate: r, readings, gateways: n } : null;
}

const accepted = (gws: GatewayDoc[]) => gws.reduce((n, g) => n + (g.health?.readings?.accepted ?? 0), 0);

let browser: Browser | undefined;
const pages: ConsolePage[] = [];
const dirs: Array<{ remove: () => void }> = [];

afterAll(async () => {
  for (const p of pages) await p.close().catch(() => undefined);
  await browser?.close();
  await killAllDemos();
  for (const d of dirs) d.remove();
}, 30_000);

/** Ctrl-C as a terminal sends it (to the process group); resolves with the exit and how long it took. */
async function ctrlC(demo: DemoProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  const t0 = Date.now();
  process.kill(-demo.proc.pid!, 'SIGINT');
  const e = await demo.exited;
  return { ...e, ms: Date.now() - t0 };
}

maybe('braid demo', () => {
  it('the console shows the fleet with the API\'s numbers, and they move; Ctrl-C stops everything cleanly', async () => {
    const tmp = tempDir('braid-demo-');
    dirs.push(tmp);
    const dataDir = join(tmp.path, 'demo');
    browser = await launchChromium();
    const demo = spawnDemo(process.execPath, [BRAID, 'demo', '--data-dir', dataDir, '--first-batch-after', '40'], ROOT);
    const l = await demo.lines(['Console', 'API key', 'Admin key'], 60_000);
    const url = l.Console;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(l['API key']).toMatch(/^brk_/);
    // The guide is one write; wait for its end.
    await eventually(() => /\nDevices:\n[^]*\n\n$/.test(demo.output().stdout), 10_000);
    const { stdout } = demo.output();
    // The guide: MQTT of both gateways, a device's credentials and the mosquitto_pub line for it.
    expect(stdout).toMatch(/^MQTT: +gw-north mqtt:\/\/127\.0\.0\.1:\d+, gw-south mqtt:\/\/127\.0\.0\.1:\d+/m);
    expect(stdout).toMatch(/^Try: +mosquitto_pub -h 127\.0\.0\.1 -p \d+ -i my-device -u my-device -P \S+ -q 1 -t devices\/my-device\/telemetry -m '\{"temp":21\.5,"hum":40\}'$/m);
    const fleetLines = stdout.split('\n').filter((s) => /^ {2}(north|south)-\d\d /.test(s));
    expect(fleetLines.length).toBeGreaterThanOrEqual(12);
    expect(fleetLines.filter((s) => /QoS 0/.test(s)).length).toBeGreaterThanOrEqual(2);
    for (const role of [/malformed/, /late/, /offline/]) expect(fleetLines.filter((s) => role.test(s))).toHaveLength(1);

    // The printed mosquitto_pub line works as it stands: the reading reaches the gateway's speed layer.
    if (requireBinary('mosquitto_pub', 'mosquitto-clients')) {
      const tryLine = /^Try: +(mosquitto_pub .*)$/m.exec(stdout)![1];
      execFileSync('sh', ['-c', tryLine], { timeout: 10_000 });
      const windows = /^Gateway: +(http:\/\/127\.0\.0\.1:\d+)\//m.exec(stdout)![1];
      await eventually(async () => {
        const w = await (await fetch(`${windows}/api/v1/windows?device=my-device&metric=hum`)).json() as { windows: { '1m': { count: number; last: number } } };
        return w.windows['1m'].count === 1 && w.windows['1m'].last === 40;
      }, 10_000);
    }

    // The guide says which key does what, and it is true: the API key (a read key) reads everything,
    // the admin key can also start batch runs.
    expect(stdout).toMatch(/^Open the console and enter the API key \(it reads everything: fleet, gateways, charts, batch runs\); the admin key can also start batch runs:$/m);
    expect(await apiCall(url, '/api/v1/whoami', l['API key'])).toEqual({ status: 200, body: { kind: 'key', name: 'demo-read', role: 'read' } });
    expect(await apiCall(url, '/api/v1/whoami', l['Admin key'])).toEqual({ status: 200, body: { kind: 'key', name: 'demo-admin', role: 'admin' } });
    for (const path of ['/api/v1/gateways', '/api/v1/devices', '/api/v1/batch']) expect({ path, status: (await apiCall(url, path, l['API key'])).status }).toEqual({ path, status: 200 });
    expect((await apiCall(url, '/api/v1/batch/run', l['API key'], { method: 'POST', body: {} })).status).toBe(403);

    // The console: a first visit asks for the key; the printed API key (what a newcomer enters) opens the fleet overview.
    const cp = await newConsolePage(browser, url);
    pages.push(cp);
    const { page } = cp;
    await page.goto('/#/fleet');
    await page.waitForSelector('dialog#key-dialog[open]');
    await page.fill('[data-testid=key-input]', l['API key']);
    await nextRender(page, () => page.click('[data-testid=key-save]'));
    expect(await page.locator('[data-testid=key-info]').innerText()).toMatch(/ · read$/);
    const text = (sel: string) => page.locator(sel).innerText();

    // Within seconds of start there is a readings/s figure (it needs two gateway snapshots).
    let shown = '—';
    for (let i = 0; i < 6 && shown === '—'; i++) {
      await nextRender(page);
      shown = await text('[data-testid=stat-rate]');
    }
    expect(shown).not.toBe('—');

    // Several polls: each figure is the one the page's own answers give, and they move.
    const seen: Array<{ rate: string; note: string; accepted: number; from: number }> = [];
    for (let i = 0; i < 3; i++) {
      await nextRender(page);
      await cp.flush();
      const docs = cp.responses.filter((r) => r.url.pathname === '/api/v1/gateways' && r.status === 200).map((r) => (r.body as { gateways: GatewayDoc[] }).gateways);
      // The page measures from the last answer that gave a rate (or the first); replay its rule.
      let prev: GatewayDoc[] | null = null;
      let want: ReturnType<typeof rate> = null;
      let from = 0;
      for (const doc of docs) {
        if (prev) from = accepted(prev);
        want = prev ? rate(prev, doc) : null;
        if (want || !prev) prev = doc;
      }
      const cur = docs.at(-1)!;
      expect(want).not.toBeNull();
      const r = { rate: await text('[data-testid=stat-rate]'), note: await text('[data-testid=note-rate]'), accepted: accepted(cur), from };
      expect(r.rate).toBe(fmtNum(want!.rate));
      expect(r.note).toBe(`${fmtInt(want!.readings)} readings accepted at ${fmtInt(want!.gateways)} gateways since the previous snapshot`);
      expect(await text('[data-testid=stat-gateways]')).toBe('2');
      expect(await text('[data-testid=note-gateways]')).toBe(`${fmtInt(cur.filter((g) => g.online).length)} online`);
      const sum = (f: (g: GatewayDoc) => number) => cur.reduce((n, g) => n + f(g), 0);
      expect(await text('[data-testid=note-dropped]')).toBe(`disk budget ${fmtInt(sum((g) => g.dropped.diskBudget))}, queue full ${fmtInt(sum((g) => g.dropped.queueFull))}; `
        + `invalid ${fmtInt(sum((g) => g.dropped.invalid))}, duplicates ${fmtInt(sum((g) => g.dropped.duplicates))}`);
      seen.push(r);
    }
    // Readings keep arriving: the gateways' accepted counts grow from poll to poll, and the shown rate is a real one.
    expect(seen[1].accepted).toBeGreaterThan(seen[0].accepted);
    expect(seen[2].accepted).toBeGreaterThan(seen[1].accepted);
    // Each poll's rate is measured again, from a newer snapshot than the last poll's (a steady
    // fleet may accept the same count in each interval, so the note's text alone need not change).
    expect(seen[1].from).toBeGreaterThan(seen[0].from);
    expect(seen[2].from).toBeGreaterThan(seen[1].from);
    for (const s of seen) expect(Number(s.rate.replace(/,/g, ''))).toBeGreaterThan(10);

    // The devices the page shows online are the API's; the fleet's misbehaving devices show in the counters.
    // (The offline device comes and goes: compare with the answer the page rendered.)
    await nextRender(page);
    await cp.flush();
    // The page asks for counts (limit=1: the answer's total), online and all, in the same render.
    const counted = (online: boolean) => (cp.responses.filter((r) => r.url.pathname === '/api/v1/devices' && r.status === 200
      && (r.url.searchParams.get('status') === 'online') === online && r.url.searchParams.get('limit') === '1').at(-1)!.body as { total: number }).total;
    expect(await text('[data-testid=stat-devices-online]')).toBe(fmtInt(counted(true)));
    expect(await text('[data-testid=note-devices-online]')).toBe(`of ${fmtInt(counted(false))} known`);
    const devices = (await apiCall<{ devices: Array<{ id: string; online: boolean }> }>(url, '/api/v1/devices', l['API key'])).body.devices;
    expect(devices.filter((d) => /^(north|south)-\d\d$/.test(d.id)).length).toBe(fleetLines.length);
    const gws = (await apiCall<{ gateways: GatewayDoc[] }>(url, '/api/v1/gateways', l['API key'])).body.gateways;
    expect(gws.map((g) => g.id)).toEqual(['gw-north', 'gw-south']);
    expect(gws.every((g) => g.online)).toBe(true);
    expect(gws.reduce((n, g) => n + g.dropped.invalid, 0)).toBeGreaterThan(0);
    await screenshot(page, 'demo-fleet');

    // After the first batch run (40 s here: the first epochs closed, forwarded and sealed into master/), the merged query has both sides for a device.
    const q = /^Query: +curl -H 'Authorization: Bearer (\S+)' '(\S+)'$/m.exec(stdout);
    expect(q).not.toBeNull();
    expect(q![1]).toBe(l['API key']);
    await eventually(() => /^Batch: +run \d+ published views v\d+/m.test(demo.output().stdout), 60_000, 500);
    const both = await eventually(async () => {
      const a = await apiCall<{ points: Point[] }>(q![2], '', l['API key']);
      const pts = a.body.points ?? [];
      if (pts.some((p) => p.batch > 0) && pts.some((p) => p.speed > 0)) return pts;
      // On a slow machine the first run may have come before any epoch was sealed into master/:
      // "Run now", as the console's batch page does (409 while one runs).
      const run = await apiCall(url, '/api/v1/batch/run', l['Admin key'], { method: 'POST', body: {} });
      expect([202, 409]).toContain(run.status);
      return null;
    }, 60_000, 3000);
    expect(both!.reduce((n, p) => n + p.count, 0)).toBeGreaterThan(0);

    // Ctrl-C: exit 0 within a few seconds, no stack trace, every port closed.
    const ports = demo.ports();
    expect(ports.length).toBeGreaterThanOrEqual(5); // cloud, 2 x MQTT, 2 x gateway REST
    const e = await ctrlC(demo);
    expect({ code: e.code, signal: e.signal }).toEqual({ code: 0, signal: null });
    expect(e.ms).toBeLessThan(10_000);
    const out = demo.output();
    expect(out.stdout).toMatch(/Demo stopped\.\n$/);
    expect(out.stderr).not.toMatch(/\n\s+at /);
    expect(out.stderr).not.toMatch(/"level":(50|60)/);
    for (const p of ports) expect({ ...p, listening: await listening(p.host, p.port) }).toEqual({ ...p, listening: false });
  }, 180_000);

  it('a second start reuses the data dir with new credentials; --fresh wipes it; a foreign dir is refused', async () => {
    const tmp = tempDir('braid-demo-');
    dirs.push(tmp);
    const dataDir = join(tmp.path, 'demo');
    const keys: string[] = [];
    for (const run of [1, 2]) {
      const demo = spawnDemo(process.execPath, [BRAID, 'demo', '--data-dir', dataDir], ROOT);
      const l = await demo.lines(['Console', 'API key'], 60_000);
      keys.push(l['API key']);
      expect(/reusing an earlier run's data/.test(demo.output().stdout)).toBe(run === 2);
      // The read key works at once.
      const a = await apiCall<{ points: unknown[] }>(l.Console, `/api/v1/query?metric=temp&device=north-01&from=${Date.now() - 3600_000}&to=${Date.now() + 60_000}`, l['API key']);
      expect(a.status).toBe(200);
      expect((await ctrlC(demo)).code).toBe(0);
    }
    expect(keys[0]).not.toBe(keys[1]);
    const second = spawnDemo(process.execPath, [BRAID, 'demo', '--data-dir', dataDir, '--fresh'], ROOT);
    await second.lines(['Console'], 60_000);
    expect(second.output().stdout).not.toMatch(/reusing/);
    expect((await ctrlC(second)).code).toBe(0);

    // A folder of someone else's files is not wiped by --fresh, nor written into.
    const other = join(tmp.path, 'other');
    mkdirSync(other);
    writeFileSync(join(other, 'notes.txt'), 'mine');
    const foreign = spawnDemo(process.execPath, [BRAID, 'demo', '--data-dir', other, '--fresh'], ROOT);
    const e = await foreign.exited;
    expect(e.code).toBe(2);
    expect(foreign.output().stderr).toMatch(/--data-dir .* holds files the demo did not make \(notes\.txt\)/);
    expect(readdirSync(other)).toEqual(['notes.txt']);
  }, 120_000);
});
