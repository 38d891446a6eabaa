// The console shell: the key prompt, who the key is (GET /api/v1/whoami), hash routing and page lifetimes.
import { ApiError, api, getKey, onUnauthorized, setKey } from './api.js';
import { errorBox, show } from './dom.js';
import * as alerts from './pages/alerts.js';
import * as batch from './pages/batch.js';
import * as device from './pages/device.js';
import * as devices from './pages/devices.js';
import * as fleetChart from './pages/fleet-chart.js';
import * as fleet from './pages/fleet.js';
import * as gateways from './pages/gateways.js';

const PAGES = { fleet, gateways, devices, device, 'fleet-chart': fleetChart, alerts, batch };

const $ = (id) => document.getElementById(id);
const main = $('page');
const dialog = $('key-dialog');

/**
 * Who the key is, from GET /api/v1/whoami: `role` 'admin' or 'read' for an API key, 'gateway' for
 * a gateway token, null when unknown; `name` the key's name or the token's gateway.
 */
const session = { role: null, name: null };
/** The page shown: { alive, timers } (its pending poll timers, cleared when it goes). */
let current = null;

/** Parse `#/device?device=d1&metric=temp` into { name, params }. */
function route() {
  const [path, query] = location.hash.replace(/^#\/?/, '').split('?');
  return { name: PAGES[path] ? path : 'fleet', params: new URLSearchParams(query ?? '') };
}

function keyHint(key) {
  return key.length > 12 ? `${key.slice(0, 8)}…${key.slice(-4)}` : '…';
}

function showKeyInfo() {
  const key = getKey();
  $('key-info').textContent = key ? `key ${keyHint(key)}${session.role ? ` · ${session.role}` : ''}` : 'no key';
  $('key-info').title = session.name ? `${session.role === 'gateway' ? 'gateway token of' : 'API key'} ${session.name}` : '';
  $('key-info').dataset.role = session.role ?? '';
}

/** Open the key prompt; `err` (an ApiError) says why it came back. */
function promptKey(err) {
  const msg = $('key-message');
  if (err) {
    msg.textContent = `The cloud refused the key: ${err.status} ${err.code}: ${err.message}`;
    msg.hidden = false;
  } else {
    msg.hidden = true;
  }
  $('key-cancel').hidden = !getKey() || Boolean(err);
  $('key-input').value = '';
  if (!dialog.open) dialog.showModal();
  $('key-input').focus();
}

/**
 * Who the key is (GET /api/v1/whoami): a read key sees every page, an admin key may also start
 * batch runs. A 401 reopens the prompt (through the api's handler) and returns false; any other
 * failure leaves the role unknown and the pages show their own errors.
 */
async function probeRole() {
  try {
    const { body: who } = await api('whoami');
    session.role = who.kind === 'gateway' ? 'gateway' : who.role;
    session.name = who.kind === 'gateway' ? who.gateway : who.name;
  } catch (err) {
    session.role = null;
    session.name = null;
    if (err instanceof ApiError && err.status === 401) return false;
  }
  showKeyInfo();
  return true;
}

function stopPage() {
  if (!current) return;
  for (const t of current.timers) clearTimeout(t);
  current.alive = false;
  current = null;
}

/** Render the page the hash names; its polling stops when another page (or key) takes over. */
async function render() {
  stopPage();
  const { name, params } = route();
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === name);
  const page = { alive: true, timers: new Set() };
  current = page;
  const ctx = {
    params,
    /** The key's role ('admin', 'read', 'gateway') or null when unknown: what the page may offer. */
    role: session.role,
    /**
     * Run `fn` now and again `ms` after each run ends, while the page is shown; `ms` may be a
     * function, or null for once. Returns `refresh()`: run it again as soon as the current run
     * (if any) ends. Runs never overlap, and refreshes asked for during one run are one run after
     * it (each used to start its own run once it ended, each re-arming the timer: the poll loops
     * multiplied and `busy` named whichever run started last).
     */
    poll(fn, ms) {
      let timer = null;
      let busy = null;
      let queued = null;
      const tick = async () => {
        clearTimeout(timer);
        page.timers.delete(timer);
        if (!page.alive) return;
        busy = (async () => { try { await fn(); } catch (err) { console.error(err); } })();
        await busy;
        busy = null;
        // Each finished poll is counted on <main data-polls>: a test waits for fresh data by it.
        if (page.alive) main.dataset.polls = String(Number(main.dataset.polls ?? 0) + 1);
        if (page.alive && ms !== null) page.timers.add(timer = setTimeout(tick, typeof ms === 'function' ? ms() : ms));
      };
      void tick();
      return () => {
        if (!busy) return tick();
        queued ??= busy.then(() => { queued = null; return tick(); });
        return queued;
      };
    },
    get alive() { return page.alive; },
    /** Navigate within the page: new params in the hash (re-renders). */
    go(newParams) {
      const hash = `#/${name}?${new URLSearchParams(newParams)}`;
      if (location.hash === hash) void render();
      else location.hash = hash;
    },
  };
  main.dataset.page = name;
  show(main);
  try {
    await PAGES[name].render(main, ctx);
  } catch (err) {
    show(main, errorBox(err));
  }
}

async function start() {
  onUnauthorized((err) => {
    stopPage();
    session.role = null;
    session.name = null;
    showKeyInfo();
    promptKey(err);
  });
  $('key-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const key = $('key-input').value.trim();
    if (!key) return;
    setKey(key);
    dialog.close();
    showKeyInfo();
    if (await probeRole()) await render();
  });
  $('key-cancel').addEventListener('click', () => dialog.close());
  // Escape must not leave the console without a key.
  dialog.addEventListener('cancel', (ev) => { if ($('key-cancel').hidden) ev.preventDefault(); });
  $('change-key').addEventListener('click', () => promptKey(null));
  window.addEventListener('hashchange', () => { if (getKey() && !dialog.open) void render(); });

  showKeyInfo();
  if (!getKey()) return promptKey(null);
  if (await probeRole()) await render();
}

void start();
