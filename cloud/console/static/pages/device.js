// Device view: pick a device, metric, range and aggregate; the merged answer of GET /api/v1/query
// as a chart whose bars show which side (batch views, speed partials, both) holds each bucket.
import { api } from '../api.js';
import { errorBox, h, show } from '../dom.js';
import { field, formParams, rangeControls, resolveQuery, select, showAnswer } from '../query-view.js';

const LIVE_MS = 15_000;
const MINUTE = 60_000;
/** Most devices offered in the device list; a larger fleet types the id (found on the Devices page). */
const LIST_MAX = 500;

export async function render(el, ctx) {
  const p = ctx.params;
  // The device list (GET /api/v1/devices, a read key's); if it fails, the device and metric are typed in.
  // A fleet larger than one list (LIST_MAX) is searched on the Devices page instead: the device is
  // typed (or comes from there) and only its own row is fetched, for its metrics.
  let devices = null;
  let listError = null;
  let fleetSize = 0;
  let big = null;
  try {
    const doc = (await api('devices', { params: { limit: LIST_MAX } })).body;
    fleetSize = doc.total;
    devices = doc.total <= LIST_MAX ? doc.devices : null;
    if (!devices && p.get('device')) {
      const found = (await api('devices', { params: { q: p.get('device'), limit: 50 } })).body.devices.find((d) => d.id === p.get('device'));
      if (found) big = found;
    }
  } catch (err) {
    if (err.status === 401) return;
    listError = err;
  }
  if (!ctx.alive) return;

  const deviceId = p.get('device') || devices?.[0]?.id || '';
  const dev = devices?.find((d) => d.id === deviceId) ?? big;
  const metric = p.get('metric') || dev?.metrics[0] || '';
  const deviceControl = devices
    ? select('device', devices.map((d) => [d.id, `${d.id} (${d.gateway}${d.online ? ', online' : ''})`]), deviceId)
    : h('input', { name: 'device', value: deviceId, required: true, placeholder: 'device id', 'data-testid': 'input-device' });
  const metricControl = dev
    ? select('metric', dev.metrics, metric)
    : h('input', { name: 'metric', value: metric, required: true, placeholder: 'metric', 'data-testid': 'input-metric' });
  // Another device: its own metrics.
  if (devices) deviceControl.addEventListener('change', () => ctx.go({ ...formParams(form), device: deviceControl.value, metric: '' }));

  const opts = { ranges: ['1h', '24h', '7d'], defaultRange: '1h', minStepMs: MINUTE };
  const form = h('form', { class: 'controls', 'data-testid': 'query-form' },
    field('Device', deviceControl), field('Metric', metricControl), ...rangeControls(p, opts),
    h('button', { type: 'submit', 'data-testid': 'show' }, 'Show'));
  const result = h('div', { 'data-testid': 'result' });
  const finder = !devices && fleetSize > LIST_MAX
    ? h('p', { class: 'muted', 'data-testid': 'find-device' }, `${fleetSize.toLocaleString('en-US')} devices: `, h('a', { href: '#/devices' }, 'find one on the Devices page'), ', or type its id.')
    : null;
  // A typed device: its metrics once it is found.
  if (!devices && dev) deviceControl.addEventListener('change', () => ctx.go({ ...formParams(form), device: deviceControl.value, metric: '' }));
  show(el, h('h1', {}, 'Device'), listError ? errorBox(listError, 'GET /api/v1/devices (type the device and metric instead)') : null, finder, form, result);

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    ctx.go(formParams(form));
  });
  if (!deviceId || !metric) {
    show(result, h('p', { 'data-testid': 'empty' }, devices?.length === 0 ? 'No device has sent readings yet.' : 'Pick a device and a metric.'));
    return;
  }
  const first = resolveQuery(p, opts);
  if (first.error) return show(result, h('p', { class: 'error' }, first.error));
  const agg = p.get('agg') || 'avg';
  const draw = () => showAnswer(result, ctx, { device: deviceId }, metric, agg, resolveQuery(p, opts));
  // A relative range follows the clock; a custom one is drawn once.
  ctx.poll(draw, first.range === 'custom' ? null : LIVE_MS);
}
