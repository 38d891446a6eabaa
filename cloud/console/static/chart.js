// The merged-query chart: one bar per bucket, colored by the side that holds its readings (batch
// views only, speed partials only, or both), provisional buckets hatched with a dashed outline.
import uPlot from './vendor/uPlot.esm.js';
import { h } from './dom.js';
import { int, num, time } from './format.js';

export const SIDES = [
  { key: 'batch', label: 'batch only', color: '#2f6fb3' },
  { key: 'speed', label: 'speed only', color: '#e0862b' },
  { key: 'mixed', label: 'batch + speed', color: '#7b4fb0' },
];
const PROVISIONAL = '#c62828';

/** Which side holds a point's readings. */
export function sideOf(p) {
  if (p.batch > 0 && p.speed > 0) return 'mixed';
  return p.speed > 0 ? 'speed' : 'batch';
}

/** The legend, also the key to the bucket table's colors. */
export function legend() {
  return h('div', { class: 'legend', 'data-testid': 'legend' },
    SIDES.map((s) => h('span', { class: 'legend-item' }, h('span', { class: `swatch side-${s.key}` }), s.label)),
    h('span', { class: 'legend-item' }, h('span', { class: 'swatch provisional' }), 'provisional (speed part from a gateway not heard from recently)'));
}

const pad = (n) => String(n).padStart(2, '0');

/** Time axis labels in UTC, 24 h: "06:00", with the date under the first tick of each day. */
function timeTicks(_u, splits, _axis, _space, incr) {
  let prevDay = null;
  return splits.map((s) => {
    const d = new Date(s * 1000);
    const day = `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
    const hm = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
    const first = day !== prevDay;
    prevDay = day;
    if (incr >= 86400) return day;
    return first ? `${hm}\n${day}` : hm;
  });
}

function hatch(u) {
  const c = document.createElement('canvas');
  c.width = c.height = 8;
  const g = c.getContext('2d');
  g.strokeStyle = PROVISIONAL;
  g.lineWidth = 2;
  g.beginPath();
  g.moveTo(0, 8); g.lineTo(8, 0);
  g.moveTo(-2, 2); g.lineTo(2, -2);
  g.moveTo(6, 10); g.lineTo(10, 6);
  g.stroke();
  return u.ctx.createPattern(c, 'repeat');
}

/**
 * Draw `answer` (GET /api/v1/query) over every bucket of [fromMs, toMs) at `stepMs` into `el`;
 * returns the uPlot instance. `hoverEl` shows the bucket under the cursor.
 */
export function drawChart(el, answer, { fromMs, toMs, stepMs, hoverEl }) {
  const step = stepMs / 1000;
  const first = Math.floor(fromMs / stepMs) * step;
  const end = Math.ceil(toMs / stepMs) * step;
  // Every bucket of the range, so that bars have the step's width and empty buckets show empty.
  const xs = [];
  for (let t = first; t < end; t += step) xs.push(t);
  const byT = new Map(answer.points.map((p) => [Date.parse(p.t) / 1000, p]));
  const column = (pick) => xs.map((t) => { const p = byT.get(t); return p && pick(p) ? p.value : null; });
  const data = [xs, ...SIDES.map((s) => column((p) => sideOf(p) === s.key)), column((p) => p.provisional)];

  let pattern = null;
  const bars = uPlot.paths.bars({ align: 1, size: [0.9, Infinity, 1] });
  // Axis text and grid in the page's colors (style.css: light or dark with the system's scheme).
  const css = getComputedStyle(document.documentElement);
  const ink = css.getPropertyValue('--fg').trim() || '#1d2330';
  const line = css.getPropertyValue('--line').trim() || '#d9dee5';
  const axis = { stroke: ink, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 } };
  const opts = {
    width: Math.max(320, el.clientWidth || 900),
    height: 320,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
    scales: { x: { time: true, range: () => [first, end] } },
    legend: { show: false },
    cursor: { points: { show: false }, drag: { x: true, y: false } },
    axes: [{ ...axis, values: timeTicks, label: 'UTC', labelSize: 20 }, { ...axis, label: `${answer.agg}(${answer.metric})`, size: 70 }],
    series: [
      {},
      ...SIDES.map((s) => ({ label: s.label, fill: s.color, stroke: s.color, width: 0, paths: bars, points: { show: false }, fillTo: (u) => u.scales.y.min })),
      {
        label: 'provisional', stroke: PROVISIONAL, width: 2, dash: [4, 3], paths: bars, points: { show: false },
        fill: (u) => (pattern ??= hatch(u)), fillTo: (u) => u.scales.y.min,
      },
    ],
    hooks: {
      setCursor: [(u) => {
        if (!hoverEl) return;
        const i = u.cursor.idx;
        const p = i === null || i === undefined ? null : byT.get(xs[i]);
        hoverEl.textContent = p
          ? `${time(p.t)}: ${answer.agg} ${num(p.value)}, ${int(p.count)} readings (batch ${int(p.batch)}, speed ${int(p.speed)})${p.provisional ? ', provisional' : ''}`
          : '';
      }],
    },
  };
  el.replaceChildren();
  return new uPlot(opts, data, el);
}
