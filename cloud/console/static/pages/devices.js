// Devices: the fleet's devices searched, filtered, sorted and paged by the cloud (GET
// /api/v1/devices with q, status, gateway, alerts, sort, order, limit, offset), so it stays quick with
// thousands of devices. The state lives in the hash (#/devices?q=...&offset=50): a link or a reload
// shows the same page. A device's row opens its chart (#/device?device=ID).
import { api } from '../api.js';
import { errorBox, h, show, table } from '../dom.js';
import { ago, int, time } from '../format.js';
import { field, select } from '../query-view.js';

const POLL_MS = 10_000;
const PAGE = 50;
const TYPING_MS = 250;

const COLUMNS = [
  { key: 'id', label: 'Device' },
  { key: 'state', label: 'State' },
  { key: 'gateway', label: 'Gateway' },
  { key: 'alerts', label: 'Alerts' },
  { key: 'lastSeen', label: 'Last seen' },
  { key: 'metrics', label: 'Metrics' },
];

const SORTS = [['id', 'Id'], ['lastSeen', 'Last seen'], ['gateway', 'Gateway']];

/** The API's parameters from the hash's (only those it takes; defaults left out). */
export function queryOf(p) {
  const out = {};
  for (const k of ['q', 'status', 'gateway', 'sort', 'order', 'alerts']) if (p.get(k)) out[k] = p.get(k);
  const offset = Number(p.get('offset'));
  if (Number.isInteger(offset) && offset > 0) out.offset = offset;
  out.limit = PAGE;
  return out;
}

function row(d) {
  const chart = `#/device?${new URLSearchParams({ device: d.id })}`;
  return {
    attrs: { 'data-id': d.id, 'data-online': String(d.online), class: 'link-row', tabindex: '0' },
    id: h('a', { href: chart, 'data-testid': 'device-link' }, d.id),
    state: h('span', { class: `badge ${d.online ? 'ok' : 'off'}` }, d.online ? 'online' : 'offline'),
    gateway: d.gateway,
    // Firing alerts of the device's own scope (a gateway's or the fleet's are on the Alerts page).
    alerts: d.firingAlerts ? h('a', { href: `#/alerts?${new URLSearchParams({ device: d.id })}`, class: 'badge bad', 'data-testid': 'device-alerts' }, `${int(d.firingAlerts)} firing`) : '',
    lastSeen: h('span', { title: time(d.lastSeenAt) }, ago(d.lastSeenAt)),
    metrics: d.metrics.join(', ') || '—',
  };
}

export async function render(el, ctx) {
  const p = ctx.params;
  const query = queryOf(p);

  const q = h('input', { type: 'search', name: 'q', value: query.q ?? '', placeholder: 'id or part of it', autocomplete: 'off', spellcheck: 'false', 'data-testid': 'device-search' });
  const status = select('status', [['', 'all'], ['online', 'online'], ['offline', 'offline']], query.status ?? '');
  const gateway = select('gateway', [['', 'all']], query.gateway ?? '');
  const sort = select('sort', SORTS, query.sort ?? 'id');
  const order = select('order', [['asc', 'ascending'], ['desc', 'descending']], query.order ?? 'asc');
  const alerting = h('input', { type: 'checkbox', name: 'alerts', value: 'firing', checked: query.alerts === 'firing', 'data-testid': 'filter-alerts' });
  // GET /api/v1/devices?alerts=firing: devices with a firing alert of their own scope.
  const alertingField = h('label', { class: 'field check', 'data-testid': 'filter-alerts-field' }, alerting, h('span', {}, 'has firing alerts'));
  const form = h('form', { class: 'controls', role: 'search', 'data-testid': 'devices-form' },
    field('Search', q), field('State', status), field('Gateway', gateway), field('Sort by', sort), field('Order', order), alertingField);
  const summary = h('p', { class: 'muted', 'data-testid': 'devices-summary' });
  const result = h('div', { 'data-testid': 'devices-result' });
  const prev = h('button', { type: 'button', 'data-testid': 'page-prev' }, '‹ Previous');
  const next = h('button', { type: 'button', 'data-testid': 'page-next' }, 'Next ›');
  const pageInfo = h('span', { 'data-testid': 'page-info' });
  const pager = h('div', { class: 'actions pager' }, prev, pageInfo, next);
  show(el, h('h1', {}, 'Devices'), form, summary, result, pager);

  /** The form's state as hash params (offset back to the first page unless kept). */
  const params = (offset = 0) => {
    const out = {};
    if (q.value.trim()) out.q = q.value.trim();
    for (const c of [status, gateway]) if (c.value) out[c.name] = c.value;
    if (sort.value !== 'id') out.sort = sort.value;
    if (order.value !== 'asc') out.order = order.value;
    if (alerting.checked) out.alerts = 'firing';
    if (offset > 0) out.offset = String(offset);
    return out;
  };
  // A change of filter shows its first page; typing waits for a pause. The hash is replaced, not
  // pushed per keystroke, and the page redraws in place (the search box keeps its focus).
  let current = query;
  let typing = null;
  const apply = (offset = 0) => {
    // Whatever applies reads the whole form, the search typed so far included: a pending search
    // would only repeat it later, and take a Next clicked meanwhile back to the first page.
    clearTimeout(typing);
    const next = params(offset);
    history.replaceState(null, '', `#/devices?${new URLSearchParams(next)}`);
    current = queryOf(new URLSearchParams(next));
    // At once, not queued behind a poll in flight (which asked for the page before this one).
    void load();
  };
  q.addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(() => apply(), TYPING_MS); });
  form.addEventListener('submit', (ev) => { ev.preventDefault(); clearTimeout(typing); apply(); });
  for (const c of [status, gateway, sort, order, alerting]) c.addEventListener('change', () => apply());
  prev.addEventListener('click', () => apply(Math.max(0, (current.offset ?? 0) - PAGE)));
  next.addEventListener('click', () => apply((current.offset ?? 0) + PAGE));
  // The whole row opens the chart, not only its link.
  result.addEventListener('click', (ev) => {
    const tr = ev.target.closest('tr[data-id]');
    if (tr && !ev.target.closest('a')) location.hash = `#/device?${new URLSearchParams({ device: tr.dataset.id })}`;
  });
  result.addEventListener('keydown', (ev) => {
    const tr = ev.target.closest('tr[data-id]');
    if (tr && ev.key === 'Enter') location.hash = `#/device?${new URLSearchParams({ device: tr.dataset.id })}`;
  });

  // The gateway choices, once per page view (it does not block the table).
  void (async () => {
    try {
      const ids = (await api('gateways')).body.gateways.map((g) => g.id);
      if (query.gateway && !ids.includes(query.gateway)) ids.push(query.gateway);
      gateway.append(...ids.map((id) => h('option', { value: id, selected: id === query.gateway }, id)));
    } catch (err) {
      if (err.status !== 401) console.warn('GET /api/v1/gateways', err);
    }
  })();

  // Every answer, the periodic poll's and a click's alike, is drawn only if no newer request has
  // been drawn and it answers what the page asks for now: answers come back in any order (a poll
  // in flight when Next is clicked may land after the Next page's answer), and an older request's
  // failure must not wipe a newer page either (devices.test.ts: "an older request's answer").
  let asked = 0;
  let drawn = 0;
  const key = (qy) => JSON.stringify(qy);
  const load = async () => {
    const seq = ++asked;
    const want = current;
    const fresh = () => ctx.alive && seq > drawn && key(want) === key(current);
    let doc;
    try {
      doc = (await api('devices', { params: want })).body;
    } catch (err) {
      if (err.status === 401 || !fresh()) return;
      drawn = seq;
      show(result, errorBox(err, 'GET /api/v1/devices'));
      summary.textContent = '';
      return;
    }
    if (!fresh()) return;
    drawn = seq;
    const from = doc.devices.length ? doc.offset + 1 : 0;
    const to = doc.offset + doc.devices.length;
    summary.textContent = doc.total === 0
      ? (want.q || want.status || want.gateway || want.alerts ? 'No device matches.' : 'No device has reported yet.')
      : `${int(from)}–${int(to)} of ${int(doc.total)} device${doc.total === 1 ? '' : 's'}${want.q ? ` matching “${want.q}”` : ''}`;
    show(result, doc.devices.length ? table(COLUMNS, doc.devices.map(row), { class: 'devices', 'data-testid': 'devices-table' }) : null);
    pageInfo.textContent = doc.total ? `page ${int(Math.floor(doc.offset / PAGE) + 1)} of ${int(Math.ceil(doc.total / PAGE))}` : '';
    prev.disabled = doc.offset === 0;
    next.disabled = to >= doc.total;
    el.dataset.total = String(doc.total);
  };
  ctx.poll(load, POLL_MS);
}
