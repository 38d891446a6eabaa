/**
 * Test support for the console: Debian's chromium driven by playwright-core (no downloaded
 * browser), pages with their errors collected, screenshots under test-artifacts/console/, and
 * the API called as the page calls it.
 *
 * A missing /usr/bin/chromium skips with a message, but fails under CI=true (requireBinary).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, type BrowserContext, type Page, type Response, chromium } from 'playwright-core';
import { requireBinary } from './gateway.js';

export const CHROMIUM_PATH = '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run',
];
export const ARTIFACTS = join(process.cwd(), 'test-artifacts', 'console');

/** Whether Debian's chromium is there (skip with a message otherwise; under CI=true, throw). */
export function haveChromium(): boolean {
  if (!requireBinary('chromium', 'chromium')) return false;
  if (existsSync(CHROMIUM_PATH)) return true;
  const msg = `${CHROMIUM_PATH} is missing (apt-get install chromium)`;
  if (process.env.CI === 'true') throw new Error(`${msg}: required under CI`);
  // eslint-disable-next-line no-console
  console.warn(`SKIPPED: ${msg}`);
  return false;
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
}

export interface ConsolePage {
  context: BrowserContext;
  page: Page;
  /** Uncaught exceptions, console errors and failed requests of the page (a test expects none). */
  errors: string[];
  /** Every /api/v1 response the page got, in order, with its JSON body (null when not JSON). */
  responses: Array<{ url: URL; method: string; status: number; body: unknown; auth: string | null }>;
  /** Wait until every response seen so far is in `responses` with its body. */
  flush: () => Promise<void>;
  close: () => Promise<void>;
}

/**
 * A fresh browser context (its own localStorage) on `baseUrl`; with `key`, the console finds it
 * stored as if entered before. Nothing is loaded until the test navigates.
 */
export async function newConsolePage(browser: Browser, baseUrl: string, o: { key?: string; width?: number } = {}): Promise<ConsolePage> {
  const context = await browser.newContext({ baseURL: baseUrl, viewport: { width: o.width ?? 1360, height: 900 }, timezoneId: 'UTC' });
  if (o.key) await context.addInitScript((k) => { if (!localStorage.getItem('braid.apiKey')) localStorage.setItem('braid.apiKey', k); }, o.key);
  const page = await context.newPage();
  const errors: string[] = [];
  const responses: ConsolePage['responses'] = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  // Chromium logs every 4xx answer as a console error; the console shows those itself (tests check how).
  page.on('console', (m) => { if (m.type() === 'error' && !/the server responded with a status of 4\d\d/.test(m.text())) errors.push(`console: ${m.text()}`); });
  page.on('requestfailed', (r) => errors.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
  const pending = new Map<Promise<void>, string>();
  page.on('response', (r) => {
    const url = new URL(r.url());
    if (!url.pathname.startsWith('/api/v1/')) return;
    // In arrival order; headers and body come in asynchronously.
    const entry = { url, method: r.request().method(), status: r.status(), body: null as unknown, auth: null as string | null };
    responses.push(entry);
    const done = (async () => {
      // A response that arrives as the test closes its context has no headers or body to give any
      // more: its entry keeps nulls (an assertion on it fails as such), and no rejection is left
      // unhandled to fail whichever test runs next.
      try { entry.auth = (await r.request().allHeaders()).authorization ?? null; } catch { return; }
      try { entry.body = await r.json(); } catch { /* not JSON, or the context closed */ }
    })();
    pending.set(done, `${entry.method} ${url.pathname}${url.search}`);
    void done.finally(() => pending.delete(done));
  });
  const flush = async (limitMs = 10_000) => {
    const until = Date.now() + limitMs;
    while (pending.size) {
      const left = until - Date.now();
      if (left <= 0) throw new Error(`responses still without a body after ${limitMs} ms: ${[...pending.values()].join(', ')}`);
      await Promise.race([Promise.all([...pending.keys()]), new Promise((r) => setTimeout(r, Math.min(left, 250)))]);
    }
  };
  return { context, page, errors, responses, flush, close: () => context.close() };
}

/** Save a full-page screenshot to test-artifacts/console/<name>.png. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** Wait for the page's next answer from `path` (under /api/v1, without the query), and its body. */
export async function nextAnswer<T = Record<string, unknown>>(page: Page, path: string, o: { method?: string; timeoutMs?: number } = {}): Promise<{ response: Response; body: T }> {
  const response = await page.waitForResponse(
    (r) => new URL(r.url()).pathname === `/api/v1/${path}` && r.request().method() === (o.method ?? 'GET'),
    { timeout: o.timeoutMs ?? 15_000 });
  const body = (await response.json()) as T;
  // The page renders in the same task that reads the body; let it.
  await page.waitForTimeout(150);
  return { response, body };
}

/** GET (or POST) an API path with a key, as the page does. */
export async function apiCall<T = Record<string, unknown>>(baseUrl: string, path: string, key: string | null, o: { method?: string; body?: unknown } = {}): Promise<{ status: number; body: T }> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (key) headers.authorization = `Bearer ${key}`;
  if (o.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(new URL(path, baseUrl), { method: o.method ?? 'GET', headers, body: o.body === undefined ? undefined : JSON.stringify(o.body) });
  return { status: res.status, body: (await res.json()) as T };
}

// The console's display rules (cloud/console/static/format.js), stated again for the tests.
const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const numFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 3 });
export const fmtInt = (n: number | null | undefined): string => (n === null || n === undefined ? '—' : intFmt.format(n));
export const fmtNum = (n: number | null | undefined): string => (n === null || n === undefined ? '—' : numFmt.format(n));
export const fmtBytes = (n: number): string => {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
};
export const fmtDuration = (ms: number | null): string => {
  if (ms === null) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
};
export const fmtTime = (t: string | number): string => `${new Date(t).toISOString().slice(0, 19).replace('T', ' ')}Z`;

/** The rows of a console table: each row's data attributes and its cells' text by column key (data-k). */
export async function tableRows(page: Page, selector: string): Promise<Array<{ data: Record<string, string>; cells: Record<string, string> }>> {
  return page.$$eval(`${selector} tbody tr`, (rows) => rows.map((r) => ({
    data: { ...(r as HTMLElement).dataset } as Record<string, string>,
    cells: Object.fromEntries([...(r as HTMLTableRowElement).cells].map((c) => [c.dataset.k ?? '', (c.textContent ?? '').trim()])),
  })));
}

/** Run `action` (or nothing), then wait until the page has finished a new poll (<main data-polls> grew). */
export async function nextRender(page: Page, action?: () => Promise<unknown>, timeoutMs = 15_000): Promise<void> {
  const before = Number(await page.getAttribute('#page', 'data-polls').catch(() => null) ?? 0);
  await action?.();
  await page.waitForFunction((b) => Number(document.getElementById('page')?.dataset.polls ?? 0) > b, before, { timeout: timeoutMs });
}
