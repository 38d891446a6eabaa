// Gateway health: per gateway, from GET /api/v1/gateways (its last health snapshot and the
// registry's view of it, its clock offset and readings stamped in the cloud's future), plus its
// gap records and seq holes.
import { api } from '../api.js';
import { errorBox, h, show, table } from '../dom.js';
import { ago, bytes, duration, int, num, time, usage } from '../format.js';

const POLL_MS = 5000;

const COLUMNS = [
  { key: 'id', label: 'Gateway' },
  { key: 'state', label: 'State' },
  { key: 'lastContact', label: 'Last contact' },
  { key: 'clock', label: 'Clock', num: true },
  { key: 'cpu', label: 'CPU', num: true },
  { key: 'memory', label: 'Memory', num: true },
  { key: 'disk', label: 'Disk', num: true },
  { key: 'outbox', label: 'Outbox backlog', num: true },
  { key: 'watermark', label: 'Watermark E', num: true },
  { key: 'receivedSeq', label: 'Received seq', num: true },
  { key: 'dropped', label: 'Dropped: disk / queue', num: true },
  { key: 'rejected', label: 'Invalid / dup.', num: true },
  { key: 'future', label: 'Future readings', num: true },
  { key: 'gaps', label: 'Gap records', num: true },
];

/** The gateway's clock against the cloud's: "1m30s ahead", "12 ms behind", or an em dash before its first request. */
function clockOffset(ms) {
  if (ms === null || ms === undefined) return '—';
  return ms < 0 ? `${duration(-ms)} behind` : `${duration(ms)} ahead`;
}

function row(g) {
  const host = g.health?.host ?? {};
  const outbox = g.health?.outbox ?? {};
  return {
    attrs: { 'data-gateway': g.id },
    id: g.id,
    state: h('span', { class: `badge ${g.online ? 'ok' : 'off'}` }, g.online ? 'online' : 'offline'),
    lastContact: g.lastContactAt ? h('span', { title: time(g.lastContactAt) }, ago(g.lastContactAt)) : 'never',
    cpu: typeof host.cpuPercent === 'number' ? `${num(host.cpuPercent)}%` : '—',
    memory: h('span', { title: `${bytes(host.memUsedBytes)} used` }, usage(host.memUsedBytes, host.memTotalBytes)),
    disk: h('span', { title: `${bytes(host.diskUsedBytes)} used on ${host.diskPath ?? '?'}` }, usage(host.diskUsedBytes, host.diskTotalBytes)),
    outbox: `${int(g.outboxPending)}${typeof outbox.bytes === 'number' ? ` (${bytes(outbox.bytes)})` : ''}`,
    watermark: int(g.watermark),
    receivedSeq: int(g.receivedSeq),
    dropped: `${int(g.dropped.diskBudget)} / ${int(g.dropped.queueFull)}`,
    rejected: `${int(g.dropped.invalid)} / ${int(g.dropped.duplicates)}`,
    gaps: g.gaps.length ? `${int(g.gaps.length)} (${int(g.gaps.reduce((n, r) => n + r.count, 0))} readings)` : '0',
    clock: h('span', { title: g.clockOffsetAt ? `measured ${time(g.clockOffsetAt)}` : 'no request with sentAt yet' }, clockOffset(g.clockOffsetMs)),
    // Readings stamped past ingest.maxFutureMs: stored, but a clock (the gateway's or a device's) runs ahead.
    future: g.lastFutureReading
      ? h('span', { class: 'badge bad', title: `furthest ahead: ${g.lastFutureReading.device}/${g.lastFutureReading.metric} at ${time(g.lastFutureReading.ts)} (seen ${time(g.lastFutureReading.seenAt)})` }, int(g.futureReadings))
      : int(g.futureReadings),
  };
}

function gapDetails(g) {
  if (!g.gaps.length && !g.seqGaps.length) return null;
  return h('section', { class: 'gaps', 'data-gateway': g.id },
    h('h3', {}, `${g.id}: gap records and seq holes`),
    g.gaps.length ? table(
      [{ key: 'seqs', label: 'Seqs' }, { key: 'count', label: 'Readings', num: true }, { key: 'reason', label: 'Reason' },
        { key: 'span', label: 'Event time' }, { key: 'devices', label: 'Devices' }],
      g.gaps.map((r) => ({
        seqs: `${int(r.fromSeq)}–${int(r.toSeq)}`, count: int(r.count), reason: r.reason,
        // cloud_lost: the cloud lost readings it had acknowledged (a restore); nobody knows their times any more.
        span: r.minTs === null ? 'unknown' : `${time(r.minTs)} – ${time(r.maxTs)}`, devices: r.devices.join(', ') || (r.reason === 'cloud_lost' ? 'unknown' : '—'),
      })), { class: 'gap-records' }) : null,
    g.seqGaps.length ? h('p', { class: 'muted' }, 'Seq holes (seqs the cloud has not received): ',
      g.seqGaps.map((s) => `${int(s.fromSeq)}–${int(s.toSeq)} (seen ${time(s.seenAt)})`).join('; ')) : null);
}

export async function render(el, ctx) {
  const body = h('div');
  const updated = h('p', { class: 'muted', 'data-testid': 'updated' });
  show(el, h('h1', {}, 'Gateway health'), body, updated);
  ctx.poll(async () => {
    try {
      const { body: doc } = await api('gateways');
      if (!ctx.alive) return;
      show(body,
        doc.gateways.length ? h('div', { class: 'scroll' }, table(COLUMNS, doc.gateways.map(row), { class: 'gateways', 'data-testid': 'gateways-table' }))
          : h('p', { 'data-testid': 'empty' }, 'No gateway has contacted the cloud yet.'),
        doc.gateways.map(gapDetails));
    } catch (err) {
      if (ctx.alive) show(body, errorBox(err, 'GET /api/v1/gateways'));
    }
    updated.textContent = `Updated ${time(Date.now())}, every ${POLL_MS / 1000} s.`;
  }, POLL_MS);
}
