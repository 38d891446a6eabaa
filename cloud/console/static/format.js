// How numbers, sizes and times are shown. One place, so that the tests can state the same rules.
// Times are UTC, like every time the API gives.

const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const numFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 3 });

/** A count: 12,345. A missing value: an em dash. */
export function int(n) {
  return n === null || n === undefined || Number.isNaN(n) ? '—' : intFmt.format(n);
}

/** A measured value: at most 3 decimals (21.333). */
export function num(n) {
  return n === null || n === undefined || Number.isNaN(n) ? '—' : numFmt.format(n);
}

/** Bytes in binary units: 1.5 GiB. */
export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/** Used of total: 41% of 7.8 GiB. */
export function usage(used, total) {
  if (used === null || used === undefined || !total) return '—';
  return `${Math.round((used / total) * 100)}% of ${bytes(total)}`;
}

/** An instant, from epoch ms or ISO: 2024-11-24 10:00:05Z. */
export function time(t) {
  if (t === null || t === undefined) return '—';
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return `${d.toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

/** A duration in ms: 850 ms, 12.3 s, 4m05s, 2h07m, 3d04h. */
export function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

/** How long ago `t` was, from `now` (epoch ms): "12.0 s ago". */
export function ago(t, now = Date.now()) {
  if (t === null || t === undefined) return '—';
  return `${duration(Math.max(0, now - new Date(t).getTime()))} ago`;
}
