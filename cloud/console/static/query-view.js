// What the device view and the fleet chart share: the range/agg/step form, the call to
// GET /api/v1/query, and its answer as a chart, a summary and a bucket table.
import { api } from './api.js';
import { drawChart, legend, sideOf } from './chart.js';
import { errorBox, h, show, table } from './dom.js';
import { int, num, time } from './format.js';

export const AGGS = ['avg', 'min', 'max', 'sum', 'count', 'first', 'last', 'stddev'];
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
export const RANGE_MS = { '1h': HOUR, '6h': 6 * HOUR, '24h': DAY, '7d': 7 * DAY, '30d': 30 * DAY };
const STEPS = [['1m', MINUTE], ['5m', 5 * MINUTE], ['15m', 15 * MINUTE], ['1h', HOUR], ['6h', 6 * HOUR], ['1d', DAY]];
/** Most rows in the bucket table (the chart shows them all). */
const MAX_ROWS = 500;
/**
 * Most buckets an automatic step aims for: 60 to 300 bars, each a few pixels wide or more
 * (1h -> 1m, 6h -> 5m, 24h -> 5m, 7d -> 1h, 30d -> 6h).
 */
const AUTO_BUCKETS = 300;
/** The answer of a query whose minute view the live manifest, of an earlier version, lacks. */
const VIEW_NOT_PUBLISHED = 'BRAID_ERR_VIEW_NOT_PUBLISHED';

export const stepMs = (step) => {
  const m = /^(\d+)(m|h|d)$/.exec(step);
  return m ? Number(m[1]) * { m: MINUTE, h: HOUR, d: DAY }[m[2]] : null;
};

/** `2024-11-24T10:00` (a datetime-local value, taken as UTC) or ISO or epoch ms -> epoch ms. */
function parseTime(text) {
  if (!text) return NaN;
  if (/^\d+$/.test(text)) return Number(text);
  return Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(text) ? text : `${text}Z`);
}

const toLocalInput = (ms) => new Date(ms).toISOString().slice(0, 16);

/**
 * The query the form's params ask for: { fromMs, toMs, step, stepMs } or { error }.
 * Relative ranges end now; the step is the chosen one or the smallest of at least `minStepMs`
 * giving at most AUTO_BUCKETS buckets.
 */
export function resolveQuery(params, { defaultRange, minStepMs, now = Date.now() }) {
  const range = params.get('range') || defaultRange;
  let fromMs;
  let toMs;
  if (range === 'custom') {
    fromMs = parseTime(params.get('from'));
    toMs = parseTime(params.get('to'));
    if (!(fromMs < toMs)) return { error: 'custom range: give a start before the end' };
  } else {
    toMs = now;
    fromMs = now - (RANGE_MS[range] ?? RANGE_MS[defaultRange]);
  }
  let step = params.get('step') || 'auto';
  if (step === 'auto') {
    const pick = STEPS.find(([, ms]) => ms >= minStepMs && (toMs - fromMs) / ms <= AUTO_BUCKETS) ?? STEPS[STEPS.length - 1];
    step = pick[0];
  }
  return { range, fromMs, toMs, step, stepMs: stepMs(step) };
}

export function field(label, control) {
  return h('label', { class: 'field' }, h('span', {}, label), control);
}

export function select(name, options, value) {
  return h('select', { name, 'data-testid': `select-${name}` },
    options.map((o) => {
      const [v, text] = Array.isArray(o) ? o : [o, o];
      return h('option', { value: v, selected: v === value }, text);
    }));
}

/** Range, custom start/end (UTC), agg and step controls for `params`. */
export function rangeControls(params, { ranges, defaultRange, minStepMs }) {
  const q = resolveQuery(params, { defaultRange, minStepMs });
  const range = params.get('range') || defaultRange;
  const custom = h('span', { class: 'custom', hidden: range !== 'custom' },
    // As the query read them (a link may give epoch ms, which a datetime-local input would show blank).
    field('From (UTC)', h('input', { type: 'datetime-local', name: 'from', value: q.error ? params.get('from') || toLocalInput(Date.now() - DAY) : toLocalInput(q.fromMs) })),
    field('To (UTC)', h('input', { type: 'datetime-local', name: 'to', value: q.error ? params.get('to') || toLocalInput(Date.now()) : toLocalInput(q.toMs) })));
  const rangeSel = select('range', [...ranges.map((r) => [r, `last ${r}`]), ['custom', 'custom']], range);
  rangeSel.addEventListener('change', () => { custom.hidden = rangeSel.value !== 'custom'; });
  const steps = STEPS.filter(([, ms]) => ms >= minStepMs).map(([s]) => s);
  return [
    field('Range', rangeSel), custom,
    field('Aggregate', select('agg', AGGS, params.get('agg') || 'avg')),
    field('Step', select('step', [['auto', 'auto'], ...steps], params.get('step') || 'auto')),
  ];
}

/** The form's fields as hash params (empty ones left out). */
export function formParams(form) {
  const out = {};
  for (const [k, v] of new FormData(form)) if (v !== '') out[k] = String(v);
  if (out.range !== 'custom') { delete out.from; delete out.to; }
  return out;
}

function summary(answer, q) {
  const totals = answer.points.reduce((t, p) => ({ count: t.count + p.count, batch: t.batch + p.batch, speed: t.speed + p.speed, prov: t.prov + (p.provisional ? 1 : 0) }),
    { count: 0, batch: 0, speed: 0, prov: 0 });
  const wm = Object.entries(answer.manifest.watermark).map(([g, e]) => `${g}: ${int(e)}`).join(', ') || 'none';
  return h('dl', { class: 'summary', 'data-testid': 'query-summary' },
    h('dt', {}, 'Range'), h('dd', { 'data-k': 'range' }, `${time(q.fromMs)} – ${time(q.toMs)}, step ${answer.step}, ${answer.agg}`),
    h('dt', {}, 'Buckets'), h('dd', { 'data-k': 'buckets' }, `${int(answer.points.length)} with readings, ${int(totals.prov)} provisional`),
    h('dt', {}, 'Readings'), h('dd', { 'data-k': 'readings' }, `${int(totals.count)}: ${int(totals.batch)} from batch views, ${int(totals.speed)} from speed`),
    h('dt', {}, 'Batch views'), h('dd', { 'data-k': 'manifest' }, `manifest v${answer.manifest.version}, watermark ${wm}`));
}

const POINT_COLUMNS = [
  { key: 't', label: 'Bucket (UTC)' }, { key: 'value', label: 'Value', num: true }, { key: 'count', label: 'Readings', num: true },
  { key: 'batch', label: 'Batch', num: true }, { key: 'speed', label: 'Speed', num: true }, { key: 'side', label: 'Side' },
  { key: 'provisional', label: 'Provisional' },
];

function pointTable(points) {
  const shown = points.slice(-MAX_ROWS).reverse();
  return [
    points.length > MAX_ROWS ? h('p', { class: 'muted' }, `The newest ${int(MAX_ROWS)} of ${int(points.length)} buckets:`) : null,
    table(POINT_COLUMNS, shown.map((p) => {
      const side = sideOf(p);
      return {
        attrs: { 'data-t': p.t, class: p.provisional ? 'provisional' : null },
        t: time(p.t), value: num(p.value), count: int(p.count), batch: int(p.batch), speed: int(p.speed),
        side: h('span', { class: `side side-${side}` }, side === 'mixed' ? 'batch + speed' : side),
        provisional: p.provisional ? 'yes' : '',
      };
    }), { class: 'points', 'data-testid': 'points-table' }),
  ];
}

/**
 * The query's answer; when its step needs a minute view the live manifest lacks (views published by
 * an earlier version, until the next batch run), the same range at the smallest whole-hour step
 * of at most AUTO_BUCKETS buckets, with a note saying why.
 */
async function ask(scope, metric, agg, q) {
  const params = { ...scope, metric, from: q.fromMs, to: q.toMs, agg };
  try {
    return { answer: (await api('query', { params: { ...params, step: q.step } })).body, q, note: null };
  } catch (err) {
    if (err.code !== VIEW_NOT_PUBLISHED) throw err;
    const [step, ms] = STEPS.find(([, m]) => m >= HOUR && (q.toMs - q.fromMs) / m <= AUTO_BUCKETS) ?? STEPS[STEPS.length - 1];
    const answer = (await api('query', { params: { ...params, step } })).body;
    const note = h('p', { class: 'muted', 'data-testid': 'step-note' },
      `Shown at ${step}: ${q.step} buckets of this scope come with the next batch run (the live views were published by an earlier version).`);
    return { answer, q: { ...q, step, stepMs: ms }, note };
  }
}

/** GET /api/v1/query for `scope` ({device} | {gateway} | {}) and `q`; draws everything into `el`. */
export async function showAnswer(el, ctx, scope, metric, agg, asked) {
  const chartEl = h('div', { class: 'chart', 'data-testid': 'chart' });
  const hover = h('p', { class: 'hover muted', 'data-testid': 'hover' });
  try {
    const { answer, q, note } = await ask(scope, metric, agg, asked);
    if (!ctx.alive) return;
    show(el, note, summary(answer, q), legend(), chartEl, hover,
      answer.points.length ? null : h('p', { 'data-testid': 'empty' }, 'No readings in this range.'),
      pointTable(answer.points));
    drawChart(chartEl, answer, { fromMs: q.fromMs, toMs: q.toMs, stepMs: q.stepMs, hoverEl: hover });
  } catch (err) {
    if (ctx.alive) show(el, errorBox(err, 'GET /api/v1/query'));
  }
}
