// Building DOM from data. Text from the API only ever goes in as text nodes, never as HTML.

/** h('td', { class: 'n', 'data-k': 'count' }, '12') */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An API error as shown everywhere: the HTTP status, the stable code, the message. */
export function errorBox(err, what) {
  return h('div', { class: 'error', role: 'alert', 'data-testid': 'error', 'data-code': err.code ?? '' },
    what ? `${what}: ` : '',
    h('strong', {}, `${err.status ? `${err.status} ` : ''}${err.code ?? 'ERROR'}`), ' ',
    h('span', { class: 'error-message' }, err.message));
}

/** A label/value card of the overview: `k` names it for tests (data-k). */
export function stat(k, label, value, note) {
  return h('div', { class: 'stat', 'data-k': k },
    h('div', { class: 'stat-label' }, label),
    h('div', { class: 'stat-value', 'data-testid': `stat-${k}` }, value),
    note ? h('div', { class: 'stat-note', 'data-testid': `note-${k}` }, note) : null);
}

/** A table from column specs `{ key, label, num? }` and rows of cells (text or nodes) keyed like the columns. */
export function table(columns, rows, attrs = {}) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'n' : null }, c.label)))),
    h('tbody', {}, rows.map((r) => h('tr', r.attrs ?? {}, columns.map((c) => h('td', { class: c.num ? 'n' : null, 'data-k': c.key }, r[c.key]))))));
}

/** Replace the children of `el`. */
export function show(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}
