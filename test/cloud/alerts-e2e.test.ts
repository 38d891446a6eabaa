/**
 * Alerts end to end on a real cloud (createCloud, SQLite) and a real Prometheus Alertmanager
 * (Debian prometheus-alertmanager, started on a free loopback port with a temp config and
 * storage): a rule set through the REST API fires on readings a gateway pushes (POST
 * /api/v1/speed, the readings of the current minute), reaches Alertmanager (GET /api/v2/alerts
 * shows it active, with its labels and annotations), resolves after the hysteresis, and
 * Alertmanager hears the resolution. An Alertmanager out of reach: the sends are counted as
 * failed, evaluation goes on, and the alert arrives once it is up. Printed: time from the push to
 * firing, and the round time of 1,000 rules.
 */
import { connectDevice, endClient, eventually, publish, startTestGateway, tempDir } from '../support/gateway.js';
import { type SpeedCloud, credentials, getJson, postSpeed, pushBody, startSpeedCloud } from './speed-fixtures.js';
import {
  type TestAlertmanager, alertHistory, freePort, haveAlertmanager, listAlerts, metricValue, partialOf, putRules, startAlertmanager,
} from './alerts-fixtures.js';

const have = haveAlertmanager();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

(have ? describe : describe.skip)('alerts end to end with a real Alertmanager', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function cloudWith(alerts: Record<string, unknown>): Promise<{ cloud: SpeedCloud; keys: { tokens: Record<string, string>; admin: string; read: string } }> {
    const dir = tempDir('braid-alerts-e2e-');
    cleanups.push(() => dir.remove());
    const keys = await credentials(dir.path, ['gw-1']);
    const cloud = await startSpeedCloud(dir.path, { alerts: { evalIntervalMs: 200, ...alerts } });
    cleanups.push(() => cloud.close());
    return { cloud, keys };
  }
  const metrics = async (cloud: SpeedCloud, key: string) => (await getJson(cloud.url, '/metrics', key)).body.text as string;

  test('a rule from the REST API fires on pushed readings, reaches Alertmanager, resolves, and Alertmanager hears it', async () => {
    const am = await startAlertmanager();
    cleanups.push(() => am.stop());
    const { cloud, keys } = await cloudWith({ alertmanagerUrl: am.url, resendMs: 1_000, consoleUrl: 'https://braid.example.com/' });
    const rule = { name: 'hot', metric: 'temp', agg: 'last', window: '1m', op: '>', threshold: 50, for: '1s', device: 'd-1' };
    expect((await putRules(cloud.url, keys.admin, { rules: [rule] })).status).toBe(200);
    await sleep(500); // a few rounds with no reading: nothing
    expect(await listAlerts(cloud.url, keys.read)).toEqual([]);

    const t0 = Date.now();
    expect((await postSpeed(cloud.url, keys.tokens['gw-1'], pushBody('gw-1', [partialOf('d-1', 'temp', t0, 1, [61.5])]))).status).toBe(200);
    const pending = await eventually(async () => {
      const a = await listAlerts(cloud.url, keys.read);
      if (a.length === 0) throw new Error('no alert yet');
      return a[0];
    }, 10_000, 20);
    const firing = await eventually(async () => {
      const a = await listAlerts(cloud.url, keys.read);
      if (a[0]?.state !== 'firing') throw new Error(`not firing yet: ${JSON.stringify(a)}`);
      return a[0];
    }, 10_000, 20);
    const toFiring = Date.now() - t0;
    expect(pending).toMatchObject({ rule: 'hot', scope: { device: 'd-1' }, value: 61.5 });
    expect(firing).toMatchObject({ rule: 'hot', scope: { device: 'd-1' }, state: 'firing', value: 61.5 });
    const amActive = await eventually(async () => {
      const list = (await am.alerts()).filter((x) => x.labels.alertname === 'hot');
      if (list.length !== 1 || list[0].status.state !== 'active') throw new Error(`alertmanager: ${JSON.stringify(list)}`);
      return list[0];
    }, 10_000, 50);
    const toAlertmanager = Date.now() - t0;
    expect(amActive.labels).toEqual({ alertname: 'hot', scope: 'device', device: 'd-1' });
    expect(amActive.annotations).toEqual({
      value: '61.5', threshold: 'last(temp) over 1m > 50 for 1s', console: 'https://braid.example.com/#/device?device=d-1&metric=temp',
    });
    expect(Date.parse(amActive.endsAt)).toBeGreaterThan(Date.now());
    // eslint-disable-next-line no-console
    console.log(`alerts: from the speed push of a reading to firing in the cloud ${toFiring} ms (for 1s, alerts.evalIntervalMs 200), to active at Alertmanager ${toAlertmanager} ms`);

    // Resent while firing (resendMs 1 s).
    await eventually(async () => {
      if (metricValue(await metrics(cloud, keys.read), 'braid_alert_notifications_total', 'result="sent"') < 2) throw new Error('not resent yet');
      return true;
    }, 10_000, 100);

    // The device's last reading drops under the threshold: resolved after two false rounds; Alertmanager hears it.
    const t1 = Date.now();
    expect((await postSpeed(cloud.url, keys.tokens['gw-1'], pushBody('gw-1', [partialOf('d-1', 'temp', t1, 2, [61.5, 20])]))).status).toBe(200);
    const resolved = await eventually(async () => {
      const a = await listAlerts(cloud.url, keys.read);
      if (a[0]?.state !== 'resolved') throw new Error(`not resolved yet: ${JSON.stringify(a)}`);
      return a[0];
    }, 10_000, 20);
    expect(resolved).toMatchObject({ rule: 'hot', scope: { device: 'd-1' }, value: 20 });
    expect(Date.parse(resolved.since) - t1).toBeGreaterThanOrEqual(150); // not at the first false round
    await eventually(async () => {
      const list = (await am.alerts()).filter((x) => x.labels.alertname === 'hot' && Date.parse(x.endsAt) > Date.now());
      if (list.length > 0) throw new Error(`still active at alertmanager: ${JSON.stringify(list)}`);
      return true;
    }, 10_000, 50);
    const history = await alertHistory(cloud.url, keys.read, '?rule=hot');
    expect(history.map((h) => [h.from, h.to])).toEqual([['firing', 'resolved'], ['pending', 'firing'], [null, 'pending']]);
    // The round that resolved it posts to Alertmanager before it records the send and sets its
    // gauges: wait for a round that ended after Alertmanager heard it (its count is observed last).
    const rounds = metricValue(await metrics(cloud, keys.read), 'braid_alert_evaluation_seconds_count');
    await eventually(async () => metricValue(await metrics(cloud, keys.read), 'braid_alert_evaluation_seconds_count') > rounds, 10_000, 20);
    const text = await metrics(cloud, keys.read);
    expect(metricValue(text, 'braid_alert_rules')).toBe(1);
    expect(metricValue(text, 'braid_alerts', 'state="resolved"')).toBe(1);
    expect(metricValue(text, 'braid_alerts', 'state="firing"')).toBe(0);
    expect(metricValue(text, 'braid_alert_evaluations_total', 'result="ok"')).toBeGreaterThan(5);
    expect(metricValue(text, 'braid_alert_notifications_total', 'result="failed"')).toBe(0);
  }, 60_000);

  test('a gateway\'s firing that reaches the cloud before its speed push stays firing until the push: neither the cloud nor Alertmanager sees it resolved and fired again', async () => {
    const am = await startAlertmanager();
    cleanups.push(() => am.stop());
    const { cloud, keys } = await cloudWith({ alertmanagerUrl: am.url, evalIntervalMs: 100 });
    // Pushes every 3 s; the gateway judges its own partials every 100 ms and sends a transition at once.
    const gw = await startTestGateway({ id: 'gw-1', cloud: { url: cloud.url, token: keys.tokens['gw-1'] }, speed: { pushIntervalMs: 3_000 }, alerts: { evalIntervalMs: 100 } });
    cleanups.push(() => gw.close());
    const device = await connectDevice(gw.mqttUrl, 'boiler-1', await gw.addDevice('boiler-1'));
    cleanups.push(() => endClient(device));
    await putRules(cloud.url, keys.admin, { rules: [{ name: 'boiler-hot', metric: 'temp', agg: 'last', window: '1m', op: '>', threshold: 90, for: '0s', device: 'boiler-1' }] });
    // The rules come with a push's answer; then a push has just gone, and the next is ~3 s away.
    await eventually(async () => (gw.gateway.alerts.status().rules === 1 ? true : null), 10_000, 20);

    const t0 = Date.now();
    await publish(device, 'devices/boiler-1/telemetry', JSON.stringify({ ts: t0, temp: 95.5 }), 1);
    const seen: string[] = [];
    let pushed = false;
    while (Date.now() - t0 < 5_000) {
      const alert = (await listAlerts(cloud.url, keys.read)).find((a) => a.rule === 'boiler-hot');
      if (alert && seen[seen.length - 1] !== alert.state) seen.push(alert.state);
      const answer = (await getJson(cloud.url, `/api/v1/query?device=boiler-1&metric=temp&from=${t0 - 3_600_000}&to=${t0 + 3_600_000}&step=2h`, keys.read)).body;
      pushed ||= (answer.points as Array<{ count: number }>).some((p) => p.count > 0);
      await sleep(20);
    }
    // The firing came from the gateway before the cloud had the reading, and stayed.
    expect(pushed).toBe(true);
    expect(seen).toEqual(['firing']);
    const history = await alertHistory(cloud.url, keys.read, '?rule=boiler-hot');
    expect(history.map((h) => [h.from, h.to])).toEqual([[null, 'firing']]);
    const firing = (await listAlerts(cloud.url, keys.read)).find((a) => a.rule === 'boiler-hot');
    expect(firing).toMatchObject({ state: 'firing', value: 95.5 });
    await eventually(async () => (await am.alerts()).some((x) => x.labels.alertname === 'boiler-hot' && Date.parse(x.endsAt) > Date.now()), 10_000, 20);
  }, 60_000);

  test('a real device through a real gateway: its MQTT reading fires the rule in the cloud and at Alertmanager, a lower one resolves it', async () => {
    const am = await startAlertmanager();
    cleanups.push(() => am.stop());
    const { cloud, keys } = await cloudWith({ alertmanagerUrl: am.url });
    const gw = await startTestGateway({ id: 'gw-1', cloud: { url: cloud.url, token: keys.tokens['gw-1'] } });
    cleanups.push(() => gw.close());
    const device = await connectDevice(gw.mqttUrl, 'boiler-1', await gw.addDevice('boiler-1'));
    cleanups.push(() => endClient(device));
    await putRules(cloud.url, keys.admin, { rules: [{ name: 'boiler-hot', metric: 'temp', agg: 'last', window: '1m', op: '>', threshold: 90, for: '0s', device: 'boiler-1' }] });

    const t0 = Date.now();
    await publish(device, 'devices/boiler-1/telemetry', JSON.stringify({ ts: t0, temp: 95.5 }), 1);
    const firing = await eventually(async () => (await listAlerts(cloud.url, keys.read)).find((a) => a.state === 'firing'), 20_000, 20);
    const toFiring = Date.now() - t0;
    expect(firing).toMatchObject({ rule: 'boiler-hot', scope: { device: 'boiler-1' }, value: 95.5 });
    await eventually(async () => (await am.alerts()).some((x) => x.labels.alertname === 'boiler-hot' && x.labels.device === 'boiler-1'), 10_000, 20);
    const toAlertmanager = Date.now() - t0;

    const t1 = Date.now();
    await publish(device, 'devices/boiler-1/telemetry', JSON.stringify({ ts: t1, temp: 60 }), 1);
    await eventually(async () => (await listAlerts(cloud.url, keys.read)).find((a) => a.state === 'resolved'), 20_000, 20);
    const toResolved = Date.now() - t1;
    await eventually(async () => !(await am.alerts()).some((x) => x.labels.alertname === 'boiler-hot' && Date.parse(x.endsAt) > Date.now()), 10_000, 50);
    // eslint-disable-next-line no-console
    console.log(`alerts: MQTT reading -> gateway -> speed push -> cloud: firing ${toFiring} ms after the publish, active at Alertmanager ${toAlertmanager} ms; `
      + `the lower reading resolved it ${toResolved} ms after its publish (two false rounds; speed.pushIntervalMs 1 s, alerts.evalIntervalMs 200 ms)`);
  }, 60_000);

  test('a rule removed from the set: its firing alert resolves after the hysteresis and Alertmanager hears it; the rule kept goes on', async () => {
    const am = await startAlertmanager();
    cleanups.push(() => am.stop());
    const { cloud, keys } = await cloudWith({ alertmanagerUrl: am.url });
    const keep = { name: 'kept', metric: 'temp', agg: 'count', window: '1m', op: '>=', threshold: 1, for: '0s' };
    const drop = { name: 'dropped', metric: 'temp', agg: 'max', window: '1m', op: '>', threshold: 10, for: '0s', gateway: 'gw-1' };
    await putRules(cloud.url, keys.admin, { rules: [keep, drop] });
    await postSpeed(cloud.url, keys.tokens['gw-1'], pushBody('gw-1', [partialOf('d-3', 'temp', Date.now(), 1, [42])]));
    await eventually(async () => (await listAlerts(cloud.url, keys.read)).filter((a) => a.state === 'firing').length === 2, 10_000, 20);
    await eventually(async () => (await am.alerts()).filter((x) => x.status.state === 'active').length === 2, 10_000, 50);
    await putRules(cloud.url, keys.admin, { rules: [keep] });
    const after = await eventually(async () => {
      const a = await listAlerts(cloud.url, keys.read);
      return a.find((x) => x.rule === 'dropped')?.state === 'resolved' ? a : null;
    }, 10_000, 20);
    expect(after!.map((a) => [a.rule, a.state])).toEqual([['kept', 'firing'], ['dropped', 'resolved']]);
    await eventually(async () => {
      const active = (await am.alerts()).filter((x) => Date.parse(x.endsAt) > Date.now());
      return active.length === 1 && active[0].labels.alertname === 'kept';
    }, 10_000, 50);
    expect((await alertHistory(cloud.url, keys.read, '?rule=dropped')).map((h) => [h.from, h.to, h.scope])).toEqual([
      ['firing', 'resolved', { gateway: 'gw-1' }], [null, 'firing', { gateway: 'gw-1' }],
    ]);
  }, 60_000);

  test('Alertmanager out of reach: sends counted as failed, evaluation goes on, the alert arrives once it is up', async () => {
    const port = await freePort();
    const { cloud, keys } = await cloudWith({ alertmanagerUrl: `http://127.0.0.1:${port}`, notifyTimeoutMs: 500 });
    await putRules(cloud.url, keys.admin, { rules: [{ name: 'fleet-hot', metric: 'temp', agg: 'max', window: '1m', op: '>=', threshold: 30, for: '0s' }] });
    await postSpeed(cloud.url, keys.tokens['gw-1'], pushBody('gw-1', [partialOf('d-7', 'temp', Date.now(), 1, [30])]));
    await eventually(async () => {
      const a = await listAlerts(cloud.url, keys.read);
      if (a[0]?.state !== 'firing') throw new Error('not firing');
      return true;
    }, 10_000, 20);
    await eventually(async () => {
      if (metricValue(await metrics(cloud, keys.read), 'braid_alert_notifications_total', 'result="failed"') < 3) throw new Error('not failed thrice');
      return true;
    }, 10_000, 50);
    const rounds = metricValue(await metrics(cloud, keys.read), 'braid_alert_evaluation_seconds_count');
    let am: TestAlertmanager | null = null;
    try {
      am = await startAlertmanager({ port });
      const got = await eventually(async () => {
        const list = (await am!.alerts()).filter((x) => x.labels.alertname === 'fleet-hot');
        if (list.length !== 1) throw new Error('not at alertmanager yet');
        return list[0];
      }, 10_000, 50);
      expect(got.labels).toEqual({ alertname: 'fleet-hot', scope: 'fleet' });
      expect(got.annotations).toEqual({ value: '30', threshold: 'max(temp) over 1m >= 30 for 0s' });
    } finally {
      await am?.stop();
    }
    const text = await metrics(cloud, keys.read);
    expect(metricValue(text, 'braid_alert_evaluation_seconds_count')).toBeGreaterThan(rounds);
    expect(metricValue(text, 'braid_alert_notifications_total', 'result="sent"')).toBeGreaterThanOrEqual(1);
  }, 60_000);

  test('1,000 rules: every round evaluates them all; the round time is printed', async () => {
    const am = await startAlertmanager();
    cleanups.push(() => am.stop());
    const { cloud, keys } = await cloudWith({ alertmanagerUrl: am.url, evalIntervalMs: 100 });
    const now = Date.now();
    const partials: unknown[] = [];
    for (let d = 0; d < 100; d++) for (let m = 0; m < 10; m++) partials.push(partialOf(`dev-${d}`, `m${m}`, now, 1, [d + m]));
    expect((await postSpeed(cloud.url, keys.tokens['gw-1'], pushBody('gw-1', partials))).status).toBe(200);
    // Device rules over 100 devices x 10 metrics; those of devices 90+ fire (value d + m > 98 for some).
    const rules = [];
    for (let d = 0; d < 100; d++) for (let m = 0; m < 10; m++) rules.push({ name: `r-${d}-${m}`, metric: `m${m}`, agg: 'avg', window: '5m', op: '>', threshold: 98, for: '0s', device: `dev-${d}` });
    expect((await putRules(cloud.url, keys.admin, { rules })).status).toBe(200);
    const before = await metrics(cloud, keys.read);
    const [count0, sum0, ok0] = [metricValue(before, 'braid_alert_evaluation_seconds_count'), metricValue(before, 'braid_alert_evaluation_seconds_sum'), metricValue(before, 'braid_alert_evaluations_total', 'result="ok"')];
    await eventually(async () => {
      const t = await metrics(cloud, keys.read);
      if (metricValue(t, 'braid_alert_evaluation_seconds_count') < count0 + 4) throw new Error('fewer than 4 rounds yet');
      return true;
    }, 120_000, 200);
    const after = await metrics(cloud, keys.read);
    const rounds = metricValue(after, 'braid_alert_evaluation_seconds_count') - count0;
    const seconds = metricValue(after, 'braid_alert_evaluation_seconds_sum') - sum0;
    const firing = (await listAlerts(cloud.url, keys.read)).filter((a) => a.state === 'firing');
    // d + m > 98: (90, 9), (91, 8..9), ..., (99, 0..9): 1 + 2 + ... + 10 = 55 alerts.
    expect(firing).toHaveLength(55);
    expect(metricValue(after, 'braid_alert_evaluations_total', 'result="ok"') - ok0).toBeGreaterThanOrEqual(1_000 * (rounds - 1));
    expect(metricValue(after, 'braid_alert_evaluations_total', 'result="failed"')).toBe(0);
    // eslint-disable-next-line no-console
    console.log(`alerts: a round of 1,000 device rules (one merged query each, 8 at a time, SQLite store) took ${(seconds / rounds * 1000).toFixed(0)} ms on average over ${rounds} rounds`);
  }, 180_000);
});
