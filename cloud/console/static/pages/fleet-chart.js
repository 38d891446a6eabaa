// Fleet chart: one metric over the whole fleet (or one gateway), at any step of whole minutes
// (gateway_1m and fleet_1m): the last hour in minutes, a week in hours.
import { api } from '../api.js';
import { errorBox, h, show } from '../dom.js';
import { field, formParams, rangeControls, resolveQuery, select, showAnswer } from '../query-view.js';

const LIVE_MS = 30_000;
const MINUTE = 60_000;

export async function render(el, ctx) {
  const p = ctx.params;
  // Metrics and gateways to pick from come from the registry (a read key's): the fleet's metric
  // names, not every device (a fleet of 10,000 lists them in one small answer); if it fails, they are typed in.
  let metrics = null;
  let gateways = null;
  let listError = null;
  try {
    [metrics, gateways] = await Promise.all([
      api('metrics').then((r) => r.body.metrics.map((m) => m.name)),
      api('gateways').then((r) => r.body.gateways),
    ]);
  } catch (err) {
    if (err.status === 401) return;
    listError = err;
  }
  if (!ctx.alive) return;

  const metric = p.get('metric') || metrics?.[0] || '';
  const gateway = p.get('gateway') || '';
  const metricControl = metrics
    ? select('metric', metrics, metric)
    : h('input', { name: 'metric', value: metric, required: true, placeholder: 'metric', 'data-testid': 'input-metric' });
  const scopeControl = gateways
    ? select('gateway', [['', 'whole fleet'], ...gateways.map((g) => [g.id, `gateway ${g.id}`])], gateway)
    : h('input', { name: 'gateway', value: gateway, placeholder: 'whole fleet', 'data-testid': 'input-gateway' });

  const opts = { ranges: ['1h', '6h', '24h', '7d', '30d'], defaultRange: '7d', minStepMs: MINUTE };
  const form = h('form', { class: 'controls', 'data-testid': 'query-form' },
    field('Metric', metricControl), field('Scope', scopeControl), ...rangeControls(p, opts),
    h('button', { type: 'submit', 'data-testid': 'show' }, 'Show'));
  const result = h('div', { 'data-testid': 'result' });
  show(el, h('h1', {}, 'Fleet chart'), listError ? errorBox(listError, 'the metric and gateway lists (type them instead)') : null, form, result);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    ctx.go(formParams(form));
  });
  if (!metric) return show(result, h('p', { 'data-testid': 'empty' }, 'No metric known yet.'));
  const first = resolveQuery(p, opts);
  if (first.error) return show(result, h('p', { class: 'error' }, first.error));
  const scope = gateway ? { gateway } : {};
  const draw = () => showAnswer(result, ctx, scope, metric, p.get('agg') || 'avg', resolveQuery(p, opts));
  ctx.poll(draw, first.range === 'custom' ? null : LIVE_MS);
}
