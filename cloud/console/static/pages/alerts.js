// Alerts: what is wrong now and what was. From GET /api/v1/alerts (firing first, then pending,
// then resolved in the last hour), each with its rule's condition from GET /api/v1/alerts/rules;
// the silences Alertmanager holds and the alerts they cover (GET /api/v1/alerts/silences: shown
// when alerts.alertmanagerUrl is set, its failure shown in place); and the history of transitions
// (GET /api/v1/alerts/history, newest first, bounded: 100, then more on demand, by rule and device).
// The history's filters live in the hash (#/alerts?rule=hot&device=d-1&limit=200).
import { api } from '../api.js';
import { errorBox, h, show, table } from '../dom.js';
import { ago, duration, int, num, time } from '../format.js';
import { field } from '../query-view.js';

const POLL_MS = 10_000;
const HISTORY_PAGE = 100;
/** The API's bound on one history answer. */
const HISTORY_MAX = 10_000;
const ORDER = { firing: 0, pending: 1, resolved: 2 };
/**
 * Most current alerts drawn (firing first): a fleet silence rule is one alert per silent device,
 * thousands on a bad day; the Devices page's "has firing alerts" filter pages through those.
 */
const MAX_ROWS = 500;

const COLUMNS = [
  { key: 'state', label: 'State' },
  { key: 'rule', label: 'Rule' },
  { key: 'scope', label: 'Scope' },
  { key: 'value', label: 'Value', num: true },
  { key: 'condition', label: 'Condition' },
  { key: 'since', label: 'Since' },
  { key: 'silenced', label: 'Silenced' },
];

const HISTORY_COLUMNS = [
  { key: 'at', label: 'At' },
  { key: 'rule', label: 'Rule' },
  { key: 'scope', label: 'Scope' },
  { key: 'change', label: 'Change' },
  { key: 'value', label: 'Value', num: true },
];

const SILENCE_COLUMNS = [
  { key: 'state', label: 'State' },
  { key: 'matchers', label: 'Matchers' },
  { key: 'ends', label: 'Ends' },
  { key: 'createdBy', label: 'Created by' },
  { key: 'comment', label: 'Comment' },
];

const BADGE = { firing: 'bad', pending: 'warn', resolved: 'ok' };

/** `device:d-1`, `gateway:g`, `fleet`: the key the tests and the silences list compare. */
export const scopeKey = (s) => (s.device !== undefined ? `device:${s.device}` : s.gateway !== undefined ? `gateway:${s.gateway}` : 'fleet');

/** The scope as a link: a device to its chart (on the rule's metric), a gateway to its devices, the fleet to its chart. */
function scopeLink(s, rule) {
  if (s.device !== undefined) {
    const q = { device: s.device, ...(rule?.metric ? { metric: rule.metric } : {}) };
    return h('a', { href: `#/device?${new URLSearchParams(q)}`, 'data-testid': 'scope-link' }, `device ${s.device}`);
  }
  if (s.gateway !== undefined) return h('a', { href: `#/devices?${new URLSearchParams({ gateway: s.gateway })}`, 'data-testid': 'scope-link' }, `gateway ${s.gateway}`);
  return h('a', { href: `#/fleet-chart?${new URLSearchParams(rule?.metric ? { metric: rule.metric } : {})}`, 'data-testid': 'scope-link' }, 'fleet');
}

/** A rule's condition as text: `max(temp) over 5m > 50 for 1m`, `silent for 10m`; a removed rule says so. */
export function condition(rule) {
  if (!rule) return 'rule removed';
  if (rule.silentFor !== undefined) return `silent for ${rule.silentFor}`;
  return `${rule.agg}(${rule.metric}) over ${rule.window} ${rule.op} ${num(rule.threshold)}${rule.for && rule.for !== '0s' ? ` for ${rule.for}` : ''}`;
}

/** The value evaluated: the aggregate, or for a silence rule how long without a report. */
function valueText(a, rule) {
  if (a.value === null || a.value === undefined) return '—';
  return rule?.silentFor !== undefined ? `silent ${duration(a.value * 1000)}` : num(a.value);
}

function matcherText(m) {
  const op = m.isRegex ? (m.isEqual === false ? '!~' : '=~') : (m.isEqual === false ? '!=' : '=');
  return `${m.name}${op}"${m.value}"`;
}

export async function render(el, ctx) {
  const p = ctx.params;
  const limit = Math.min(HISTORY_MAX, Math.max(HISTORY_PAGE, Number(p.get('limit')) || HISTORY_PAGE));
  const filter = { rule: p.get('rule') ?? '', device: p.get('device') ?? '' };

  const summary = h('p', { class: 'muted', 'data-testid': 'alerts-summary' });
  const current = h('div', { 'data-testid': 'alerts-current' });
  const silences = h('div', { 'data-testid': 'alerts-silences' });
  const ruleInput = h('input', { type: 'search', name: 'rule', value: filter.rule, placeholder: 'any rule', autocomplete: 'off', list: 'alert-rule-names', 'data-testid': 'history-rule' });
  const ruleNames = h('datalist', { id: 'alert-rule-names' });
  const deviceInput = h('input', { type: 'search', name: 'device', value: filter.device, placeholder: 'any device', autocomplete: 'off', spellcheck: 'false', 'data-testid': 'history-device' });
  const form = h('form', { class: 'controls', 'data-testid': 'history-form' },
    field('Rule', ruleInput), ruleNames, field('Device', deviceInput), h('button', { type: 'submit', 'data-testid': 'history-apply' }, 'Show'));
  const history = h('div', { 'data-testid': 'alerts-history' });
  const more = h('button', { type: 'button', hidden: true, 'data-testid': 'history-more' }, 'Show more');
  const historyNote = h('span', { class: 'muted', 'data-testid': 'history-note' });
  show(el, h('h1', {}, 'Alerts'), summary, current,
    h('h2', {}, 'Silences'), silences,
    h('h2', {}, 'History'), form, history, h('div', { class: 'actions pager' }, more, historyNote));

  const go = (o) => {
    const out = {};
    for (const k of ['rule', 'device']) if (o[k]) out[k] = o[k];
    if (o.limit > HISTORY_PAGE) out.limit = String(o.limit);
    ctx.go(out);
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    go({ rule: ruleInput.value.trim(), device: deviceInput.value.trim() });
  });
  more.addEventListener('click', () => go({ ...filter, limit: Math.min(HISTORY_MAX, limit * 2) }));

  // The silences come from Alertmanager through the cloud (up to alerts.notifyTimeoutMs when it
  // is slow): the alerts are drawn as soon as they are here, with the silences last known, and
  // drawn again when the silences come.
  let cover = new Map();
  let byName = new Map();
  let list = null;

  const drawCurrent = () => {
    if (!list) return;
    const count = (st) => list.filter((a) => a.state === st).length;
    summary.textContent = list.length
      ? `${int(count('firing'))} firing, ${int(count('pending'))} pending, ${int(count('resolved'))} resolved in the last hour`
      : (byName.size ? `No alert: ${int(byName.size)} rule${byName.size === 1 ? '' : 's'}, none pending or firing.` : 'No alert rule is set (PUT /api/v1/alerts/rules).');
    const cut = list.length > MAX_ROWS
      ? h('p', { class: 'muted', 'data-testid': 'alerts-cut' }, `The first ${int(MAX_ROWS)} of ${int(list.length)} alerts, firing first; `,
        h('a', { href: '#/devices?alerts=firing' }, 'devices with firing alerts'), ' lists every device alerting.')
      : null;
    show(current, cut, list.length ? table(COLUMNS, list.slice(0, MAX_ROWS).map((a) => {
      const rule = byName.get(a.rule);
      const by = cover.get(`${a.rule}\u0000${scopeKey(a.scope)}`);
      return {
        attrs: { 'data-rule': a.rule, 'data-scope': scopeKey(a.scope), 'data-state': a.state, 'data-silenced': by ? 'true' : 'false' },
        state: h('span', { class: `badge ${BADGE[a.state]}` }, a.state),
        rule: a.rule,
        scope: scopeLink(a.scope, rule),
        value: valueText(a, rule),
        condition: condition(rule),
        since: h('span', { title: time(a.since) }, ago(a.since)),
        silenced: by ? h('span', { class: 'badge muted-badge', title: by.map((x) => `${x.id}${x.comment ? `: ${x.comment}` : ''}`).join('\n'), 'data-testid': 'silenced' }, `silenced${by[0].createdBy ? ` by ${by[0].createdBy}` : ''}`) : '',
      };
    }), { class: 'alerts', 'data-testid': 'alerts-table' }) : null);
  };

  const drawSilences = (silenced) => {
    if (silenced.status === 'rejected') {
      // Unknown, not "none": the marks stay as last known.
      show(silences, errorBox(silenced.reason, 'GET /api/v1/alerts/silences'));
      return;
    }
    const doc = silenced.value.body;
    if (!doc.configured) {
      cover = new Map();
      show(silences, h('p', { class: 'muted', 'data-testid': 'silences-none' }, 'No Alertmanager configured (alerts.alertmanagerUrl): alerts are evaluated and listed here, not sent, and there are no silences.'));
      return;
    }
    const byId = new Map(doc.silences.map((x) => [x.id, x]));
    cover = new Map(doc.silenced.map((a) => [`${a.rule}\u0000${scopeKey(a.scope)}`, a.silencedBy.map((id) => byId.get(id) ?? { id })]));
    show(silences, doc.silences.length
      ? table(SILENCE_COLUMNS, doc.silences.map((x) => ({
        attrs: { 'data-id': x.id, 'data-state': x.state },
        state: h('span', { class: `badge ${x.state === 'active' ? 'run' : 'warn'}` }, x.state),
        matchers: h('code', {}, x.matchers.map(matcherText).join(', ')),
        ends: h('span', { title: time(x.endsAt) }, x.state === 'pending' ? `starts ${time(x.startsAt)}` : time(x.endsAt)),
        createdBy: x.createdBy || '—',
        comment: x.comment || '—',
      })), { class: 'silences', 'data-testid': 'silences-table' })
      : h('p', { class: 'muted', 'data-testid': 'silences-none' }, 'Alertmanager holds no active or pending silence.'));
  };

  const drawHistory = (past) => {
    if (past.status === 'rejected') {
      show(history, errorBox(past.reason, 'GET /api/v1/alerts/history'));
      more.hidden = true;
      historyNote.textContent = '';
      return;
    }
    const rows = past.value.body.history;
    show(history, rows.length ? table(HISTORY_COLUMNS, rows.map((t) => ({
      attrs: { 'data-rule': t.rule, 'data-scope': scopeKey(t.scope), 'data-to': t.to },
      at: time(t.at),
      rule: t.rule,
      scope: scopeLink(t.scope, byName.get(t.rule)),
      change: h('span', {}, t.from ? `${t.from} → ` : 'new → ', h('span', { class: `badge ${BADGE[t.to]}` }, t.to)),
      value: valueText(t, byName.get(t.rule)),
    })), { class: 'history', 'data-testid': 'history-table' })
      : h('p', { class: 'muted' }, filter.rule || filter.device ? 'No transition matches.' : 'No transition recorded yet.'));
    // A full answer may have more behind it: offer the next bound (the API keeps alerts.historyPerRule a rule).
    more.hidden = rows.length < limit || limit >= HISTORY_MAX;
    historyNote.textContent = `${int(rows.length)} transition${rows.length === 1 ? '' : 's'}, newest first${rows.length >= limit ? ` (the newest ${int(limit)})` : ''}`;
  };

  const settled = (p) => p.then((value) => ({ status: 'fulfilled', value }), (reason) => ({ status: 'rejected', reason }));
  ctx.poll(async () => {
    const historyParams = { limit, ...(filter.rule ? { rule: filter.rule } : {}), ...(filter.device ? { device: filter.device } : {}) };
    const silenced = settled(api('alerts/silences'));
    const [alerts, rules, past] = await Promise.all([settled(api('alerts')), settled(api('alerts/rules')), settled(api('alerts/history', { params: historyParams }))]);
    if (!ctx.alive) return;
    if (rules.status === 'fulfilled') {
      byName = new Map(rules.value.body.rules.map((r) => [r.name, r]));
      show(ruleNames, [...byName.keys()].map((n) => h('option', { value: n })));
    }
    if (alerts.status === 'rejected') {
      list = null;
      show(current, errorBox(alerts.reason, 'GET /api/v1/alerts'));
      summary.textContent = '';
    } else {
      list = [...alerts.value.body.alerts].sort((a, b) => ORDER[a.state] - ORDER[b.state] || Date.parse(b.since) - Date.parse(a.since));
      drawCurrent();
    }
    drawHistory(past);
    const sil = await silenced;
    if (!ctx.alive) return;
    drawSilences(sil);
    drawCurrent();
  }, POLL_MS);
}
