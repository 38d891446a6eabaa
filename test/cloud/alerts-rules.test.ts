/**
 * Alert rules through the REST API of a real cloud (createCloud on SQLite): PUT replaces the set
 * (admin key), GET returns it (read key); every bad rule set is a 400 whose message names the
 * field, counted in braid_alert_requests_rejected_total, and changes nothing. The state machine
 * (cloud/alerts/state.ts) step by step.
 */
import { stepAlert } from '../../cloud/alerts/index.js';
import { tempDir } from '../support/gateway.js';
import { type SpeedCloud, credentials, getJson, startSpeedCloud } from './speed-fixtures.js';
import { putRules } from './alerts-fixtures.js';

const hot = { name: 'hot', metric: 'temp', agg: 'max', window: '1m', op: '>', threshold: 50, for: '2m', device: 'd-1' };
const quiet = { name: 'quiet', silentFor: '10m', gateway: 'gw-1' };
const fleetLow = { name: 'fleet-low', metric: 'battery', agg: 'avg', window: '5m', op: '<=', threshold: 3.3, for: '0s' };

describe('alert rules API', () => {
  let dir: ReturnType<typeof tempDir>;
  let cloud: SpeedCloud;
  let keys: { admin: string; read: string };

  beforeAll(async () => {
    dir = tempDir('braid-alert-rules-');
    keys = await credentials(dir.path, ['gw-1']);
    cloud = await startSpeedCloud(dir.path, { alerts: { evalIntervalMs: 60_000, maxRules: 5 } });
  });
  afterAll(async () => {
    await cloud?.close();
    dir?.remove();
  });

  test('PUT replaces the set (admin key), GET returns it in order (read key); a read key cannot PUT', async () => {
    expect((await getJson(cloud.url, '/api/v1/alerts/rules', keys.read)).body).toEqual({ rules: [] });
    const put = await putRules(cloud.url, keys.admin, { rules: [hot, quiet, fleetLow] });
    expect(put.status).toBe(200);
    expect(put.body).toEqual({ rules: [hot, quiet, fleetLow] });
    expect((await getJson(cloud.url, '/api/v1/alerts/rules', keys.read)).body).toEqual({ rules: [hot, quiet, fleetLow] });
    expect((await putRules(cloud.url, keys.read, { rules: [] })).status).toBe(403);
    expect((await putRules(cloud.url, null, { rules: [] })).status).toBe(401);
    await putRules(cloud.url, keys.admin, { rules: [quiet] });
    expect((await getJson(cloud.url, '/api/v1/alerts/rules', keys.read)).body).toEqual({ rules: [quiet] });
    expect((await getJson(cloud.url, '/api/v1/alerts', keys.read)).body).toEqual({ alerts: [] });
    expect((await getJson(cloud.url, '/api/v1/alerts/history?limit=5', keys.read)).body).toEqual({ history: [] });
    const rejected = async (code: string) => {
      const text = (await getJson(cloud.url, '/metrics', keys.read)).body.text as string;
      return Number(new RegExp(`braid_alert_requests_rejected_total\\{code="${code}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
    };
    const [bad0, forbidden0] = [await rejected('BRAID_ERR_BAD_REQUEST'), await rejected('BRAID_ERR_FORBIDDEN')];
    const q = await getJson(cloud.url, '/api/v1/alerts/history?limit=0', keys.read);
    expect(q.status).toBe(400);
    expect(q.body.message).toContain('limit');
    expect(await rejected('BRAID_ERR_BAD_REQUEST')).toBe(bad0 + 1);
    expect(await rejected('BRAID_ERR_FORBIDDEN')).toBe(forbidden0); // the read key's PUT above was counted before
    expect((await putRules(cloud.url, keys.read, { rules: [] })).status).toBe(403);
    expect(await rejected('BRAID_ERR_FORBIDDEN')).toBe(forbidden0 + 1);
  });

  test.each([
    [{ rules: [hot, { ...hot, device: 'd-2' }] }, "rules[1].name: 'hot' is already the name of rules[0]"],
    [{ rules: [quiet, { ...hot, window: '30s' }] }, "rules[1].window: '30s' must be a whole number of minutes"],
    [{ rules: [{ ...hot, window: '2d' }] }, "rules[0].window: '2d' must be from 1m to 1d"],
    [{ rules: [{ ...hot, window: 'soon' }] }, "rules[0].window: 'soon' is not a duration"],
    [{ rules: [{ ...hot, op: '==' }] }, "rules[0].op: '==' is not one of > >= < <="],
    [{ rules: [{ ...hot, agg: 'median' }] }, "rules[0].agg: 'median' is not one of"],
    [{ rules: [{ ...hot, threshold: '50' }] }, 'rules[0].threshold: must be a finite number, got "50"'],
    [{ rules: [{ ...hot, for: undefined }] }, 'rules[0].for: required'],
    [{ rules: [{ ...hot, for: '2d' }] }, "rules[0].for: '2d' must be from 0s to 1d"],
    [{ rules: [{ ...hot, gateway: 'gw-1' }] }, 'rules[0].gateway: give device or gateway'],
    [{ rules: [{ ...hot, colour: 'red' }] }, 'rules[0].colour: not a field of a threshold rule'],
    [{ rules: [{ ...quiet, metric: 'temp' }] }, 'rules[0].metric: not a field of a silence rule'],
    [{ rules: [{ ...quiet, silentFor: '5s' }] }, "rules[0].silentFor: '5s' must be from 30s to 30d"],
    [{ rules: [{ ...quiet, name: '' }] }, 'rules[0].name: must be 1 to 256 characters'],
    [{ rules: [{ ...quiet, name: undefined }] }, 'rules[0].name: required'],
    [{ rules: [42] }, 'rules[0]: must be an object'],
    [{ rules: 'all' }, 'rules: required, an array'],
    [{ rules: [], extra: 1 }, 'extra: unknown field'],
    [{ rules: Array.from({ length: 6 }, (_, i) => ({ ...quiet, name: `q${i}` })) }, 'rules: 6 rules, more than alerts.maxRules (5)'],
  ])('a bad rule set is a 400 naming the field, counted, and changes nothing: %#', async (body, message) => {
    const before = (await getJson(cloud.url, '/api/v1/alerts/rules', keys.read)).body;
    const counted = async () => {
      const text = (await getJson(cloud.url, '/metrics', keys.read)).body.text as string;
      return Number(/braid_alert_requests_rejected_total\{code="BRAID_ERR_BAD_REQUEST"\} (\d+)/.exec(text)?.[1] ?? 0);
    };
    const n = await counted();
    const r = await putRules(cloud.url, keys.admin, JSON.parse(JSON.stringify(body)));
    expect(r.status).toBe(400);
    expect(r.body.code).toBe('BRAID_ERR_BAD_REQUEST');
    expect(r.body.message).toContain(message);
    expect(await counted()).toBe(n + 1);
    expect((await getJson(cloud.url, '/api/v1/alerts/rules', keys.read)).body).toEqual(before);
  });
});

describe('the state machine of one alert', () => {
  const T = 1_000_000;
  test('pending after the condition holds, firing after `for`, resolved after two false evaluations in a row', () => {
    let s = stepAlert('r', 'fleet', undefined, false, 1, T, 60_000);
    expect(s).toEqual({ next: null, changed: false, transition: null });
    s = stepAlert('r', 'fleet', undefined, true, 60, T, 60_000);
    expect(s.next).toMatchObject({ state: 'pending', since: T, activeSince: T, value: 60 });
    expect(s.transition).toEqual({ rule: 'r', scope: 'fleet', from: null, to: 'pending', at: T, value: 60 });
    s = stepAlert('r', 'fleet', s.next!, true, 61, T + 30_000, 60_000);
    expect(s.next).toMatchObject({ state: 'pending', since: T, value: 61 });
    expect(s.transition).toBeNull();
    s = stepAlert('r', 'fleet', s.next!, true, 62, T + 60_000, 60_000);
    expect(s.next).toMatchObject({ state: 'firing', since: T + 60_000, activeSince: T });
    expect(s.transition).toMatchObject({ from: 'pending', to: 'firing' });
    // One false evaluation: still firing (clearing); true again: clearing forgotten.
    s = stepAlert('r', 'fleet', s.next!, false, 10, T + 75_000, 60_000);
    expect(s.next).toMatchObject({ state: 'firing', clearingSince: T + 75_000 });
    expect(s.transition).toBeNull();
    s = stepAlert('r', 'fleet', s.next!, true, 70, T + 90_000, 60_000);
    expect(s.next).toMatchObject({ state: 'firing', clearingSince: null, since: T + 60_000 });
    s = stepAlert('r', 'fleet', s.next!, false, 10, T + 105_000, 60_000);
    s = stepAlert('r', 'fleet', s.next!, false, 9, T + 120_000, 60_000);
    expect(s.next).toMatchObject({ state: 'resolved', since: T + 120_000, activeSince: T });
    expect(s.transition).toMatchObject({ from: 'firing', to: 'resolved', value: 9 });
    // Resolved and false: nothing; true: a new episode.
    expect(stepAlert('r', 'fleet', s.next!, false, 1, T + 130_000, 60_000).changed).toBe(false);
    const again = stepAlert('r', 'fleet', s.next!, true, 80, T + 140_000, 60_000);
    expect(again.next).toMatchObject({ state: 'pending', activeSince: T + 140_000 });
    expect(again.transition).toMatchObject({ from: 'resolved', to: 'pending' });
  });

  test('`for` 0 fires at once; a pending alert whose condition fails resolves without firing', () => {
    expect(stepAlert('r', 'fleet', undefined, true, 1, T, 0).next).toMatchObject({ state: 'firing' });
    const p = stepAlert('r', 'fleet', undefined, true, 1, T, 60_000).next!;
    const r = stepAlert('r', 'fleet', p, false, 0, T + 15_000, 60_000);
    expect(r.next).toMatchObject({ state: 'resolved', sentState: null });
    expect(r.transition).toMatchObject({ from: 'pending', to: 'resolved' });
  });
});
