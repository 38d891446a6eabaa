// Fleet overview: gateways, online devices, readings/s, the batch watermark's age, drops and gaps.
// Each figure says which API answer it comes from; an API error shows in place of its figures.
import { firingAlerts } from '../alerts.js';
import { api } from '../api.js';
import { errorBox, h, show, stat } from '../dom.js';
import { duration, int, num, time } from '../format.js';

const POLL_MS = 5000;

/**
 * Readings per second over the fleet: the growth of each gateway's `health.readings.accepted`
 * between two snapshots, over the time between them (`lastContactAt`, when the snapshot came).
 * Exported for the tests, which apply it to the same two answers the page received.
 */
export function readingsPerSecond(prev, cur) {
  if (!prev) return null;
  const before = new Map(prev.gateways.map((g) => [g.id, g]));
  let readings = 0;
  let rate = 0;
  let measured = 0;
  for (const g of cur.gateways) {
    const p = before.get(g.id);
    const a1 = g.health?.readings?.accepted;
    const a0 = p?.health?.readings?.accepted;
    const dt = (Date.parse(g.lastContactAt) - Date.parse(p?.lastContactAt)) / 1000;
    if (typeof a1 !== 'number' || typeof a0 !== 'number' || !(dt > 0) || a1 < a0) continue;
    readings += a1 - a0;
    rate += (a1 - a0) / dt;
    measured++;
  }
  return measured ? { rate, readings, gateways: measured } : null;
}

/** Sums over /api/v1/gateways: drops by reason, gap records and the readings they lost, seq holes. */
export function fleetSums(doc) {
  const s = { gateways: doc.gateways.length, online: 0, diskBudget: 0, queueFull: 0, invalid: 0, duplicates: 0, gapRecords: 0, gapReadings: 0, seqGaps: 0, outbox: 0 };
  for (const g of doc.gateways) {
    if (g.online) s.online++;
    s.diskBudget += g.dropped.diskBudget;
    s.queueFull += g.dropped.queueFull;
    s.invalid += g.dropped.invalid;
    s.duplicates += g.dropped.duplicates;
    s.gapRecords += g.gaps.length;
    s.gapReadings += g.gaps.reduce((n, r) => n + r.count, 0);
    s.seqGaps += g.seqGaps.length;
    s.outbox += g.outboxPending ?? 0;
  }
  return s;
}

export async function render(el, ctx) {
  const gwBox = h('section', { class: 'stats', 'data-testid': 'fleet-gateways' });
  const devBox = h('section', { class: 'stats', 'data-testid': 'fleet-devices' });
  const batchBox = h('section', { class: 'stats', 'data-testid': 'fleet-batch' });
  // Firing alerts: shown once the cloud has an alerts API (GET /api/v1/alerts answers 200; 404 hides it).
  const alertsBox = h('section', { class: 'stats', 'data-testid': 'fleet-alerts', hidden: true });
  const updated = h('p', { class: 'muted', 'data-testid': 'updated' });
  show(el, h('h1', {}, 'Fleet overview'), alertsBox, gwBox, devBox, batchBox, updated);
  let prev = null;

  ctx.poll(async () => {
    // Device counts only (limit 1: the answers' totals), so a fleet of thousands costs two small answers.
    const [gw, dev, online, batch, alerts] = await Promise.allSettled([
      api('gateways'), api('devices', { params: { limit: 1 } }), api('devices', { params: { status: 'online', limit: 1 } }), api('batch'), firingAlerts(),
    ]);
    if (!ctx.alive) return;

    if (gw.status === 'fulfilled') {
      const doc = gw.value.body;
      const s = fleetSums(doc);
      const r = readingsPerSecond(prev, doc);
      // Until a gateway sends a newer snapshot, keep measuring from the older one.
      if (r || !prev) prev = doc;
      show(gwBox,
        stat('gateways', 'Gateways', int(s.gateways), `${int(s.online)} online`),
        stat('rate', 'Readings/s', r ? num(r.rate) : '—',
          r ? `${int(r.readings)} readings accepted at ${int(r.gateways)} gateway${r.gateways === 1 ? '' : 's'} since the previous snapshot` : 'measuring: needs two gateway snapshots'),
        stat('outbox', 'Outbox backlog', int(s.outbox), 'readings not yet acknowledged by the cloud'),
        stat('dropped', 'Dropped', int(s.diskBudget + s.queueFull),
          `disk budget ${int(s.diskBudget)}, queue full ${int(s.queueFull)}; invalid ${int(s.invalid)}, duplicates ${int(s.duplicates)}`),
        stat('gaps', 'Gap records', int(s.gapRecords), `${int(s.gapReadings)} readings lost; ${int(s.seqGaps)} seq holes`));
    } else {
      show(gwBox, errorBox(gw.reason, 'GET /api/v1/gateways'));
    }

    if (dev.status === 'fulfilled' && online.status === 'fulfilled') {
      show(devBox, h('a', { class: 'stat-link', href: '#/devices?status=online', 'data-testid': 'devices-link' },
        stat('devices-online', 'Devices online', int(online.value.body.total), `of ${int(dev.value.body.total)} known`)));
    } else {
      show(devBox, errorBox(dev.status === 'rejected' ? dev.reason : online.reason, 'GET /api/v1/devices'));
    }

    if (alerts.status === 'fulfilled') {
      alertsBox.hidden = !alerts.value.available;
      if (alerts.value.available) {
        show(alertsBox, h('a', { class: 'stat-link', href: '#/alerts', 'data-testid': 'alerts-link' },
          stat('alerts-firing', 'Firing alerts', int(alerts.value.firing), `${int(alerts.value.alerts.length)} alerts listed`)));
      }
    } else {
      alertsBox.hidden = false;
      show(alertsBox, errorBox(alerts.reason, 'GET /api/v1/alerts'));
    }

    if (batch.status === 'fulfilled') {
      const b = batch.value.body;
      const m = b.manifest;
      show(batchBox,
        stat('watermark-age', 'Batch watermark age', m ? duration(Date.now() - Date.parse(m.createdAt)) : 'no batch run yet',
          m ? `manifest v${m.version}, created ${time(m.createdAt)}` : null),
        stat('batch-running', 'Batch run', b.running ? `run ${b.running.id} running` : 'idle',
          b.schedule.nextRunAt ? `next scheduled ${time(b.schedule.nextRunAt)}` : 'no schedule'));
    } else {
      show(batchBox, errorBox(batch.reason, 'GET /api/v1/batch'));
    }
    updated.textContent = `Updated ${time(Date.now())}, every ${POLL_MS / 1000} s.`;
  }, POLL_MS);
}
