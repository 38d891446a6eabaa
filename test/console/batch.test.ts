/**
 * The batch runs page in Debian's chromium against a real cloud (world.ts) with an admin key: the
 * history and the live views as GET /api/v1/batch gives them, "Run now" while another process
 * holds the batch (409), "Run now" accepted (202) with the run's live progress polled until it
 * ends in the history, and a second "Run now" during it (409).
 */
import type { Browser } from 'playwright-core';
import { type BatchStatus, type BatchStores, batchOptionsFrom, openSqliteBatchStores, startBatchRun } from '../../cloud/batch/index.js';
import {
  type ConsolePage, apiCall, fmtDuration, fmtInt, fmtNum, fmtTime, haveChromium, launchChromium, newConsolePage, nextRender, screenshot, tableRows,
} from '../support/browser.js';
import { type World, closeSteps, makeWorld } from './world.js';

const HAVE = haveChromium();
const maybe = HAVE ? describe : describe.skip;

type Status = Omit<BatchStatus, 'runs'> & { runs: Array<BatchStatus['runs'][number]> };

let world: World;
let browser: Browser;
let cp: ConsolePage;

const wmText = (wm: Record<string, number> | null) => (wm && Object.keys(wm).length ? Object.entries(wm).map(([g, e]) => `${g}: ${fmtInt(e)}`).join(', ') : '—');

maybe('console: batch runs (admin key)', () => {
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
    expect(cp.responses.filter((r) => r.auth !== `Bearer ${world.admin}`)).toEqual([]);
  });

  const text = (sel: string) => cp.page.innerText(sel);
  /** The Run now answer without the time it came at ("POST /api/v1/batch/run at <time>: ..."). */
  const runAnswer = async () => {
    const t = await text('[data-testid=run-answer] [data-testid=error]');
    expect(t).toMatch(/^POST \/api\/v1\/batch\/run at \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ: /);
    return t.replace(/ at [^Z]+Z:/, ':');
  };
  const status = async () => (await apiCall<Status>(world.url, '/api/v1/batch', world.admin)).body;

  /** The history table against the API's runs, cell by cell. */
  async function expectHistory(runs: Status['runs']): Promise<void> {
    const rows = await tableRows(cp.page, '[data-testid=runs-table]');
    expect(rows.map((r) => r.cells)).toEqual(runs.map((r) => ({
      id: fmtInt(r.id), kind: r.kind, trigger: r.trigger, started: fmtTime(r.startedAt),
      duration: r.endedAt ? fmtDuration(r.endedAt - r.startedAt) : 'running', outcome: r.outcome,
      rows: fmtInt(r.rowsRead), days: fmtInt(r.partitions), version: r.version === null ? '—' : `v${r.version}`,
      watermark: wmText(r.watermark),
      sinks: r.sinks && Object.keys(r.sinks).length ? Object.entries(r.sinks).map(([n, s]) => `${n}: ${s.outcome}${s.error ? ` (${s.error})` : ''}`).join(', ') : '—',
      error: r.error ?? '',
    })));
  }

  it('the history, the live views and the schedule are the API\'s', async () => {
    const { page } = cp;
    await page.goto('/#/batch');
    await page.waitForSelector('[data-testid=runs-table]');
    const b = await status();
    expect(b.runs.map((r) => [r.id, r.trigger, r.outcome])).toEqual([[1, 'cli', 'ok']]);
    await expectHistory(b.runs);
    expect(await text('[data-testid=manifest] [data-k=version]')).toMatch(new RegExp(`^manifest v${b.manifest!.version}, created ${fmtTime(b.manifest!.createdAt)} \\(.+ ago\\)$`));
    expect(await text('[data-testid=manifest] [data-k=watermark]')).toBe(wmText(b.manifest!.watermark));
    expect(await text('[data-testid=manifest] [data-k=schedule]')).toBe('none (runs only when started)');
    expect(await text('[data-testid=idle]')).toBe('No run in progress.');
    // An admin key may act: Run now is enabled, with no "needs an admin key" note.
    expect(await page.isVisible('[data-testid=run-now]')).toBe(true);
    expect(await page.isEnabled('[data-testid=run-now]')).toBe(true);
    expect(await page.$$('[data-testid=run-note]')).toEqual([]);
    await screenshot(page, 'batch');
  });

  it('Run now while another process runs the batch: the 409 with its code and message, and that run shown', async () => {
    const { page } = cp;
    // `braid batch run` as another process would: it holds batch.lock and its batch_runs row says
    // running. It is held before it reads the catalog until the page has shown it (it would
    // otherwise often end before the page's next poll).
    const opts = batchOptionsFrom(world.cloud.server.config);
    const stores = await openSqliteBatchStores(opts.dataDir);
    let release = () => {};
    const gate = new Promise<void>((resolve) => { release = resolve; });
    const held: BatchStores = {
      views: stores.views,
      batch: new Proxy(stores.batch, {
        get(target, key) {
          if (key === 'snapshot') return async (prev: Record<string, number> | null) => { await gate; return target.snapshot(prev); };
          const v = Reflect.get(target, key) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      }),
    };
    const other = await startBatchRun(opts, { trigger: 'cli', full: true }, { store: held });
    try {
      await page.click('[data-testid=run-now]');
      await page.waitForSelector('[data-testid=run-answer] [data-testid=error]');
      await cp.flush();
      const post = cp.responses.filter((r) => r.method === 'POST' && r.url.pathname === '/api/v1/batch/run').at(-1)!;
      const body = post.body as { code: string; message: string };
      expect(post.status).toBe(409);
      expect(body.code).toBe('BRAID_ERR_BATCH_RUNNING');
      expect(await runAnswer()).toBe(`POST /api/v1/batch/run: 409 ${body.code} ${body.message}`);
      await page.waitForSelector(`[data-testid=running][data-run="${other.id}"]`);
      // No live progress from another process: what batch_runs holds, as the poll the page rendered gave it.
      await nextRender(page);
      const shown = await text('[data-testid=running] [data-k=progress]');
      await cp.flush();
      const last = cp.responses.filter((r) => r.method === 'GET' && r.url.pathname === '/api/v1/batch').at(-1)!.body as Status;
      expect(last.running).toMatchObject({ id: other.id, progress: null });
      expect(shown).toBe(last.running!.rowsRead === null ? 'No progress recorded yet.'
        : `${fmtInt(last.running!.rowsRead)} rows read, ${fmtInt(last.running!.partitions)} days built so far.`);
    } finally {
      release();
      await other.done.finally(() => stores.close());
    }
    await page.waitForSelector('[data-testid=idle]');
    await expectHistory((await status()).runs);
  });

  it('Run now: 202 with the run, its live progress while it runs, a second Run now refused, then the run in the history', async () => {
    const { page } = cp;
    await page.check('[data-testid=run-full]');
    await page.click('[data-testid=run-now]');
    await page.waitForSelector('[data-testid=run-accepted]');
    await cp.flush();
    const post = cp.responses.filter((r) => r.method === 'POST' && r.url.pathname === '/api/v1/batch/run').at(-1)!;
    const accepted = post.body as { id: number; kind: string; trigger: string; startedAt: string };
    expect(post.status).toBe(202);
    expect(accepted).toMatchObject({ kind: 'full', trigger: 'api' });
    expect(await text('[data-testid=run-accepted]')).toBe(`202 Accepted: run ${accepted.id} (full, api) started ${fmtTime(accepted.startedAt)}.`);

    // Live progress: right after the 202 the page polls the run (every 500 ms while it goes on).
    await page.waitForSelector(`[data-testid=running][data-run="${accepted.id}"]`);
    const { shown, bar } = await page.$eval('[data-testid=running]', (el) => ({
      shown: (el.querySelector('[data-k=progress]')?.textContent ?? '').trim(), bar: el.querySelector('progress')?.getAttribute('value') ?? null,
    }));
    // The same button again while it runs: this process's run answers 409.
    await page.click('[data-testid=run-now]');
    await page.waitForSelector('[data-testid=run-answer] [data-testid=error]');
    await screenshot(page, 'batch-running');
    // What the page showed is one of the answers GET /api/v1/batch gave it during the run.
    await cp.flush();
    const during = cp.responses
      .filter((r) => r.method === 'GET' && r.url.pathname === '/api/v1/batch')
      .map((r) => (r.body as Status).running)
      .filter((r): r is NonNullable<Status['running']> => r?.id === accepted.id && r.progress !== null)
      .map(({ progress: p }) => ({
        shown: `phase ${p!.phase}${p!.day ? ` (${p!.day})` : ''}: ${fmtInt(p!.daysDone)}/${fmtInt(p!.daysTotal)} days, `
          + `${fmtInt(p!.rowsRead)}/${fmtInt(p!.rowsTotal)} rows read, ${fmtNum(p!.rowsPerSec)} rows/s, `
          + `ETA ${p!.etaMs === null ? '?' : fmtDuration(p!.etaMs)}, elapsed ${fmtDuration(p!.elapsedMs)}`,
        bar: String(p!.rowsRead),
      }));
    expect(during).toContainEqual({ shown, bar });
    const again = cp.responses.filter((r) => r.method === 'POST' && r.url.pathname === '/api/v1/batch/run').at(-1)!;
    expect(again.status).toBe(409);
    const refusal = again.body as { code: string; message: string };
    expect(await runAnswer()).toBe(`POST /api/v1/batch/run: 409 ${refusal.code} ${refusal.message}`);

    // Done: the page goes back to idle and lists the run as the API does.
    await page.waitForSelector('[data-testid=idle]', { timeout: 30_000 });
    await nextRender(page);
    const b = await status();
    expect(b.runs[0]).toMatchObject({ id: accepted.id, outcome: 'ok', kind: 'full', trigger: 'api' });
    await expectHistory(b.runs);
    expect(await text('[data-testid=manifest] [data-k=watermark]')).toBe(wmText(b.manifest!.watermark));
    await screenshot(page, 'batch-after-run');
  }, 45_000);
});
