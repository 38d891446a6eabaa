// Batch runs: the live views (manifest), the schedule, a run in progress with its progress (polled),
// the run history, and "Run now" (POST /api/v1/batch/run): a read key sees it all, but starting a
// run needs an admin key, so for a read key the button shows disabled with a note saying why.
import { api } from '../api.js';
import { errorBox, h, show, table } from '../dom.js';
import { ago, duration, int, num, time } from '../format.js';

const POLL_MS = 5000;
const POLL_RUNNING_MS = 500;

const watermarkText = (wm) => (wm && Object.keys(wm).length ? Object.entries(wm).map(([g, e]) => `${g}: ${int(e)}`).join(', ') : '—');

const HISTORY_COLUMNS = [
  { key: 'id', label: 'Run', num: true }, { key: 'kind', label: 'Kind' }, { key: 'trigger', label: 'Trigger' },
  { key: 'started', label: 'Started (UTC)' }, { key: 'duration', label: 'Duration', num: true }, { key: 'outcome', label: 'Outcome' },
  { key: 'rows', label: 'Rows read', num: true }, { key: 'days', label: 'Days', num: true }, { key: 'version', label: 'Version', num: true },
  { key: 'watermark', label: 'Watermark E' }, { key: 'sinks', label: 'Sinks' }, { key: 'error', label: 'Error' },
];

function historyRow(r) {
  const sinks = r.sinks && Object.keys(r.sinks).length ? Object.entries(r.sinks).map(([n, s]) => `${n}: ${s.outcome}${s.error ? ` (${s.error})` : ''}`).join(', ') : '—';
  return {
    attrs: { 'data-run': r.id },
    id: int(r.id), kind: r.kind, trigger: r.trigger, started: time(r.startedAt),
    duration: r.endedAt ? duration(r.endedAt - r.startedAt) : 'running',
    outcome: h('span', { class: `badge ${r.outcome === 'ok' ? 'ok' : r.outcome === 'failed' ? 'bad' : 'run'}` }, r.outcome),
    rows: int(r.rowsRead), days: int(r.partitions), version: r.version === null ? '—' : `v${r.version}`,
    watermark: watermarkText(r.watermark), sinks, error: r.error ?? '',
  };
}

function runningBox(run) {
  if (!run) return h('p', { 'data-testid': 'idle' }, 'No run in progress.');
  const head = `Run ${run.id} (${run.kind}, ${run.trigger}) running since ${time(run.startedAt)}`;
  const p = run.progress;
  if (!p) {
    return h('div', { class: 'running', 'data-testid': 'running', 'data-run': run.id },
      h('p', {}, head, ' in another process (braid batch run): no live progress.'),
      h('p', { 'data-k': 'progress' }, run.rowsRead === null ? 'No progress recorded yet.' : `${int(run.rowsRead)} rows read, ${int(run.partitions)} days built so far.`));
  }
  return h('div', { class: 'running', 'data-testid': 'running', 'data-run': run.id },
    h('p', {}, head),
    h('progress', { max: Math.max(1, p.rowsTotal), value: p.rowsRead }),
    h('p', { 'data-k': 'progress' },
      `phase ${p.phase}${p.day ? ` (${p.day})` : ''}: ${int(p.daysDone)}/${int(p.daysTotal)} days, `
      + `${int(p.rowsRead)}/${int(p.rowsTotal)} rows read, ${num(p.rowsPerSec)} rows/s, `
      + `ETA ${p.etaMs === null ? '?' : duration(p.etaMs)}, elapsed ${duration(p.elapsedMs)}`));
}

export async function render(el, ctx) {
  const status = h('div', { 'data-testid': 'batch-status' });
  const history = h('div', { 'data-testid': 'batch-history' });
  const answer = h('div', { 'data-testid': 'run-answer' });
  const updated = h('p', { class: 'muted', 'data-testid': 'updated' });
  const full = h('input', { type: 'checkbox', name: 'full', 'data-testid': 'run-full' });
  const runNow = h('button', { type: 'button', 'data-testid': 'run-now' }, 'Run now');
  // Unknown role (whoami failed): offer the button and let the API's answer say.
  const canRun = ctx.role === 'admin' || ctx.role === null;
  const note = canRun ? null : h('span', { class: 'muted', 'data-testid': 'run-note' }, `needs an admin key (this is a ${ctx.role} ${ctx.role === 'gateway' ? 'token' : 'key'})`);
  if (!canRun) {
    runNow.disabled = true;
    full.disabled = true;
    runNow.title = 'Starting a batch run needs an admin key';
  }
  const actions = h('div', { class: 'actions', hidden: true, 'data-testid': 'run-actions' },
    runNow, h('label', {}, full, ' full rebuild (every day)'), note, answer);
  show(el, h('h1', {}, 'Batch runs'), actions, status, history, updated);
  let running = false;
  let refresh = () => {};

  runNow.addEventListener('click', async () => {
    runNow.disabled = true;
    try {
      const { status: code, body: r } = await api('batch/run', { method: 'POST', body: { full: full.checked } });
      show(answer, h('p', { class: 'ok', 'data-testid': 'run-accepted', 'data-run': r.id },
        `${code} Accepted: run ${r.id} (${r.kind}, ${r.trigger}) started ${time(r.startedAt)}.`));
      running = true;
    } catch (err) {
      // Timed: the answer stays on screen after the run it speaks of has ended.
      show(answer, errorBox(err, `POST /api/v1/batch/run at ${time(Date.now())}`));
    } finally {
      runNow.disabled = false;
    }
    // Either way something is running now (ours, or the one that made it 409): show it at once.
    void refresh();
  });

  refresh = ctx.poll(async () => {
    try {
      const { body: b } = await api('batch');
      if (!ctx.alive) return;
      running = b.running !== null;
      actions.hidden = false;
      const m = b.manifest;
      show(status,
        h('dl', { class: 'summary', 'data-testid': 'manifest' },
          h('dt', {}, 'Live views'), h('dd', { 'data-k': 'version' }, m ? `manifest v${m.version}, created ${time(m.createdAt)} (${ago(m.createdAt)})` : 'none yet: no batch run has published'),
          h('dt', {}, 'Watermark E'), h('dd', { 'data-k': 'watermark' }, m ? watermarkText(m.watermark) : '—'),
          h('dt', {}, 'Schedule'), h('dd', { 'data-k': 'schedule' }, b.schedule.cron ? `${b.schedule.cron} (UTC), next ${time(b.schedule.nextRunAt)}` : 'none (runs only when started)')),
        runningBox(b.running));
      show(history, h('h2', {}, 'History'), b.runs.length ? table(HISTORY_COLUMNS, b.runs.map(historyRow), { class: 'runs', 'data-testid': 'runs-table' })
        : h('p', { 'data-testid': 'no-runs' }, 'No run yet.'));
    } catch (err) {
      if (!ctx.alive) return;
      actions.hidden = true;
      running = false;
      show(status, errorBox(err, 'GET /api/v1/batch'));
      show(history);
    }
    updated.textContent = `Updated ${time(Date.now())}.`;
  }, () => (running ? POLL_RUNNING_MS : POLL_MS));
}
