/**
 * Alerts at the gateway (docs/alerts.md, "At the gateway"), with a real gateway (aedes, gateway.db),
 * a real cloud (createCloud, SQLite) and MQTT.js devices: a device rule set through the REST API
 * reaches the gateway with a speed-push answer; the cloud goes away; a device subscribed to
 * devices/{id}/alerts publishes a reading over the threshold and hears the alert fire (QoS 1, from
 * the gateway alone); the gateway restarts while the cloud is still away and keeps the rules (a
 * device connecting then hears the held state, retained); the cloud comes back and its history has
 * the episode once, whoever raised it. A kill -9 once the device heard firing leaves the state and
 * the transition in gateway.db. Printed: publish to the device hearing firing; a round of 1,000 rules.
 */
import type { MqttClient } from 'mqtt';
import { connectDevice, endClient, eventually, publish, startTestGateway, tempDir, type TestGateway } from '../support/gateway.js';
import { type SpeedCloud, credentials, getJson, postSpeed, pushBody, startSpeedCloud } from '../cloud/speed-fixtures.js';
import { alertHistory, metricValue, putRules } from '../cloud/alerts-fixtures.js';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { addDevices, killAllChildGateways, queryGatewayDb, spawnGateway } from '../support/child-gateway.js';
import { openGatewayDb } from '../../edge/store/schema.js';

interface Heard { topic: string; qos: number; retain: boolean; msg: { rule: string; device: string; state: string; from: string | null; value: number | null; alerts: Array<{ rule: string; state: string }> } }

function listen(client: MqttClient): Heard[] {
  const heard: Heard[] = [];
  client.on('message', (topic, payload, packet) => heard.push({ topic, qos: packet.qos, retain: packet.retain, msg: JSON.parse(payload.toString()) }));
  return heard;
}

function subscribe(client: MqttClient, topic: string): Promise<void> {
  return new Promise((resolve, reject) => client.subscribe(topic, { qos: 1 }, (err, granted) => (err || granted?.[0]?.qos !== 1 ? reject(err ?? new Error(`not granted: ${JSON.stringify(granted)}`)) : resolve())));
}

describe('alerts at the gateway', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  test('a device rule fires at a gateway whose cloud is down, the device hears it, the rules survive a restart, the cloud records the episode once', async () => {
    const cloudDir = tempDir('braid-gw-alerts-cloud-');
    const gwDir = tempDir('braid-gw-alerts-gw-');
    cleanups.push(() => cloudDir.remove(), () => gwDir.remove());
    const keys = await credentials(cloudDir.path, ['gw-1', 'gw-2']);
    const token = keys.tokens['gw-1'];
    let cloud: SpeedCloud | null = await startSpeedCloud(cloudDir.path, { alerts: { evalIntervalMs: 200 } });
    const port = cloud.port;
    cleanups.push(() => cloud?.close());
    const gwConfig = { id: 'gw-1', cloud: { url: cloud.url, token }, speed: { pushIntervalMs: 300 }, alerts: { evalIntervalMs: 200 } };
    let gw: TestGateway | null = await startTestGateway(gwConfig, gwDir.path);
    cleanups.push(() => gw?.close());
    const secret = await gw.addDevice('d-1');

    // Device rules go to the gateway; the fleet rule and the silence rule stay the cloud's.
    // hot: max over 5m, still firing when the cloud is back (which may raise it from the same readings too);
    // now: the last reading, fired and resolved at the gateway while the cloud is away.
    const hot = { name: 'hot', metric: 'temp', agg: 'max', window: '5m', op: '>', threshold: 50, for: '0s', device: 'd-1' };
    const now = { name: 'now', metric: 'temp', agg: 'last', window: '1m', op: '>', threshold: 50, for: '0s', device: 'd-1' };
    const rules = [hot, now, { name: 'fleet-hot', metric: 'temp', agg: 'max', window: '5m', op: '>', threshold: 500, for: '0s' }, { name: 'quiet', silentFor: '10m', device: 'd-1' }];
    expect((await putRules(cloud.url, keys.admin, { rules })).status).toBe(200);
    await eventually(() => gw!.gateway.alerts.heldRules === 2, 10_000, 50);
    const version = gw.gateway.alerts.rulesVersion();
    expect(version).not.toBe('');
    // The answer's field: the rules for a gateway holding none or another version, the version only
    // for one holding it, nothing for a push that does not ask (an older gateway).
    const answer = async (extra: Record<string, unknown>) => (await postSpeed(cloud!.url, keys.tokens['gw-2'], pushBody('gw-2', [], extra))).body;
    expect((await answer({ alertRules: '' })).alertRules).toEqual({ version, rules: [hot, now] });
    expect((await answer({ alertRules: version })).alertRules).toEqual({ version });
    expect(await answer({})).not.toHaveProperty('alertRules');
    expect((await answer({ alertRules: 7 })).message).toMatch(/^alertRules: /);

    // The cloud goes away.
    await cloud.close();
    cloud = null;

    const device = await connectDevice(gw.mqttUrl, 'd-1', secret);
    cleanups.push(() => endClient(device));
    const heard = listen(device);
    await subscribe(device, 'devices/d-1/alerts');
    const t0 = Date.now();
    await publish(device, 'devices/d-1/telemetry', JSON.stringify({ ts: t0, temp: 61.5 }), 1);
    const firing = (await eventually(() => heard.find((h) => h.msg.state === 'firing' && h.msg.rule === 'hot'), 10_000, 10))!;
    const toHeard = Date.now() - t0;
    expect(firing).toMatchObject({ topic: 'devices/d-1/alerts', qos: 1, msg: { rule: 'hot', device: 'd-1', state: 'firing', from: null, value: 61.5 } });
    expect(firing.msg.alerts).toEqual(expect.arrayContaining([expect.objectContaining({ rule: 'hot', state: 'firing' })]));
    // eslint-disable-next-line no-console
    console.log(`gateway alerts: MQTT reading to the device hearing firing on devices/d-1/alerts in ${toHeard} ms with the cloud down (alerts.evalIntervalMs 200)`);
    // A lower reading: `now` resolves after two false rounds, `hot` (max over 5m) keeps firing.
    const t1 = Date.now();
    await publish(device, 'devices/d-1/telemetry', JSON.stringify({ ts: t1, temp: 20 }), 1);
    const resolved = (await eventually(() => heard.find((h) => h.msg.state === 'resolved'), 10_000, 10))!;
    expect(resolved.msg).toMatchObject({ rule: 'now', from: 'firing', state: 'resolved' });
    expect(resolved.msg.alerts).toEqual(expect.arrayContaining([expect.objectContaining({ rule: 'hot', state: 'firing' }), expect.objectContaining({ rule: 'now', state: 'resolved' })]));
    await endClient(device);

    // A restart while the cloud is still away: the rules and the state are in gateway.db.
    await gw.close();
    gw = await startTestGateway(gwConfig, gwDir.path);
    expect(gw.gateway.alerts.heldRules).toBe(2);
    expect(gw.gateway.alerts.rulesVersion()).toBe(version);
    expect(gw.gateway.alerts.status()).toMatchObject({ firing: 1, unsent: 3 });
    const again = await connectDevice(gw.mqttUrl, 'd-1', secret);
    cleanups.push(() => endClient(again));
    const heardAgain = listen(again);
    await subscribe(again, 'devices/d-1/alerts');
    // Retained: the latest transition of the device, with every alert it has.
    const retained = (await eventually(() => heardAgain[0], 5_000, 10))!;
    expect(retained).toMatchObject({ retain: true, msg: { rule: 'now', state: 'resolved' } });
    expect(retained.msg.alerts).toEqual(expect.arrayContaining([expect.objectContaining({ rule: 'hot', state: 'firing' })]));

    // The cloud comes back: the transition arrives through gateway.db's alert outbox, recorded once.
    cloud = await startSpeedCloud(cloudDir.path, { alerts: { evalIntervalMs: 200 }, http: { port } });
    await eventually(() => gw!.gateway.alerts.status().unsent === 0, 20_000, 50);
    await eventually(async () => (await alertHistory(cloud!.url, keys.read, '?rule=hot')).some((h) => h.to === 'firing'), 10_000, 50);
    // A few more rounds (the cloud's own evaluation of the same readings, and the merge of what the
    // gateway sent, which a round does only after the ingest recorded it): three that ended after
    // now, counted, rather than a fixed second a loaded machine may not give them.
    const roundsText = async () => (await getJson(cloud!.url, '/metrics', keys.read)).body.text as string;
    const rounds0 = metricValue(await roundsText(), 'braid_alert_evaluation_seconds_count');
    await eventually(async () => metricValue(await roundsText(), 'braid_alert_evaluation_seconds_count') >= rounds0 + 3, 20_000, 50);
    const firings = (await alertHistory(cloud.url, keys.read, '?rule=hot')).filter((h) => h.to === 'firing');
    expect(firings).toEqual([expect.objectContaining({ rule: 'hot', scope: { device: 'd-1' } })]);
    const text = (await getJson(cloud.url, '/metrics', keys.read)).body.text as string;
    expect(metricValue(text, 'braid_alert_gateway_transitions_total', 'result="recorded"')).toBe(3);
    // hot's firing merged into the cloud's alert, or the cloud had raised it from the same readings first: one or the other.
    expect(metricValue(text, 'braid_alert_gateway_transitions_total', 'result="merged"')
      + metricValue(text, 'braid_alert_gateway_transitions_total', 'result="same_episode"')).toBe(3);
    // now's episode happened while the cloud was away, and its last reading is under the threshold: the gateway's, once.
    expect((await alertHistory(cloud.url, keys.read, '?rule=now')).map((h) => [h.from, h.to, Date.parse(h.at) >= t1])).toEqual([['firing', 'resolved', true], [null, 'firing', false]]);

    // A re-send of the same transition is recorded once; a malformed one is refused naming its field.
    const post = (body: unknown) => fetch(`${cloud!.url}/api/v1/ingest/alerts`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: gzipSync(JSON.stringify(body)),
    });
    const tr = { id: 'x:1', rule: 'hot', device: 'd-1', from: null, to: 'firing', at: t0, value: 61.5 };
    expect(await (await post({ v: 1, gateway: 'gw-1', transitions: [tr] })).json()).toEqual({ recorded: 1, duplicates: 0 });
    expect(await (await post({ v: 1, gateway: 'gw-1', transitions: [tr] })).json()).toEqual({ recorded: 0, duplicates: 1 });
    const refused = await post({ v: 1, gateway: 'gw-1', transitions: [{ ...tr, id: 'x:2', to: 'hot' }] });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { message: string }).message).toMatch(/^transitions\[0\]\.to: /);
    expect((await post({ v: 1, gateway: 'gw-2', transitions: [tr] })).status).toBe(403);
    await new Promise((r) => setTimeout(r, 600));
    // The re-sent firing is the same episode: still one firing in the history.
    expect((await alertHistory(cloud.url, keys.read, '?rule=hot')).filter((h) => h.to === 'firing')).toHaveLength(1);

    // A new rule set reaches the gateway with the next pushes; hot, removed, resolves there (two false rounds).
    expect((await putRules(cloud.url, keys.admin, { rules: [now] })).status).toBe(200);
    await eventually(() => gw!.gateway.alerts.heldRules === 1 && gw!.gateway.alerts.rulesVersion() !== version, 10_000, 50);
    await eventually(() => gw!.gateway.alerts.status().firing === 0, 10_000, 50);
  }, 60_000);

  test('1,000 device rules at a gateway: one round\'s time (100 devices x 10 metrics, 100 of them with readings); unsent transitions bounded', async () => {
    const gw = await startTestGateway({ id: 'gw-1', alerts: { evalIntervalMs: 60_000, maxPendingTransitions: 40 } });
    cleanups.push(() => gw.close());
    const metrics = Array.from({ length: 10 }, (_, i) => `m${i}`);
    const now = Date.now();
    for (let d = 0; d < 10; d++) {
      const device = await connectDevice(gw.mqttUrl, `d-${d}`, await gw.addDevice(`d-${d}`));
      await publish(device, `devices/d-${d}/telemetry`, JSON.stringify({ ts: now, ...Object.fromEntries(metrics.map((m) => [m, d < 5 ? 99 : 1])) }), 1);
      await endClient(device);
    }
    const rules = [];
    for (let d = 0; d < 100; d++) for (const m of metrics) rules.push({ name: `r-${d}-${m}`, metric: m, agg: 'max', window: '5m', op: '>', threshold: 50, for: '0s', device: `d-${d}` });
    await gw.gateway.alerts.received('v-1000', rules);
    expect(gw.gateway.alerts.heldRules).toBe(1000);
    const times: number[] = [];
    let firing = 0;
    for (let i = 0; i < 5; i++) {
      const r = await gw.gateway.alerts.evaluate();
      times.push(r.ms);
      if (i === 0) firing = r.transitions.filter((t) => t.to === 'firing').length;
    }
    expect(firing).toBe(50); // 5 devices x 10 metrics over the threshold, the first round
    // No cloud: 50 transitions wait, 40 at most; the 10 oldest are dropped, counted [INV-6].
    expect(gw.gateway.alerts.status()).toMatchObject({ rules: 1000, firing: 50, unsent: 40 });
    const text = await (await fetch(`${gw.httpUrl}/metrics`)).text();
    expect(metricValue(text, 'braid_gateway_alert_transitions_dropped_total')).toBe(10);
    expect(metricValue(text, 'braid_gateway_alert_pending')).toBe(40);
    expect(metricValue(text, 'braid_gateway_alert_rules')).toBe(1000);
    expect(metricValue(text, 'braid_gateway_alert_published_total', 'result="ok"')).toBe(50);
    times.sort((a, b) => a - b);
    // eslint-disable-next-line no-console
    console.log(`gateway alerts: a round of 1,000 device rules ${times[0].toFixed(0)}-${times[4].toFixed(0)} ms, median ${times[2].toFixed(0)} ms of 5 (the first with 50 transitions committed and published)`);
  }, 60_000);

  test('kill -9 once the device heard firing: the state and the transition are in gateway.db, and the restarted gateway tells the device again', async () => {
    const dir = tempDir('braid-gw-alerts-kill-');
    cleanups.push(() => dir.remove(), () => killAllChildGateways());
    // Rules as a speed-push answer left them (this gateway has no cloud).
    const db = await openGatewayDb(join(dir.path, 'gateway.db'));
    const hot = { name: 'hot', metric: 'temp', agg: 'last', window: '1m', op: '>', threshold: 50, for: '0s', device: 'd-1' };
    await db.run('INSERT INTO alert_rules (id, version, rules, received_at) VALUES (1, ?, ?, ?)', ['v-1', JSON.stringify([hot]), Date.now()]);
    await db.close();
    const secret = 'k1ll-9-s3cret-0123456789abcdef';
    await addDevices(dir.path, [['d-1', secret]]);
    const env = { BRAID_ALERTS_EVAL_INTERVAL_MS: '100' };
    const child = await spawnGateway({ dataDir: dir.path, id: 'gw-k', env });
    const device = await connectDevice(child.mqttUrl, 'd-1', secret);
    const heard = listen(device);
    await subscribe(device, 'devices/d-1/alerts');
    await publish(device, 'devices/d-1/telemetry', JSON.stringify({ temp: 77 }), 1);
    await eventually(() => heard.some((h) => h.msg.state === 'firing'), 10_000, 5);
    await child.stop('SIGKILL');
    await endClient(device);
    expect(await queryGatewayDb(dir.path, 'SELECT rule, device, state, value FROM alert_states')).toEqual([{ rule: 'hot', device: 'd-1', state: 'firing', value: 77 }]);
    expect(await queryGatewayDb(dir.path, 'SELECT rule, device, from_state, to_state, value FROM alert_outbox'))
      .toEqual([{ rule: 'hot', device: 'd-1', from_state: null, to_state: 'firing', value: 77 }]);

    const again = await spawnGateway({ dataDir: dir.path, id: 'gw-k', env });
    const device2 = await connectDevice(again.mqttUrl, 'd-1', secret);
    cleanups.push(() => endClient(device2));
    const heard2 = listen(device2);
    await subscribe(device2, 'devices/d-1/alerts');
    expect(await eventually(() => heard2.find((h) => h.msg.state === 'firing'), 5_000, 10)).toMatchObject({ retain: true, msg: { rule: 'hot', value: 77 } });
    // Still firing, no second transition: one row waits for the cloud.
    await new Promise((r) => setTimeout(r, 300));
    expect(await queryGatewayDb(dir.path, 'SELECT count(*) AS n FROM alert_outbox')).toEqual([{ n: 1 }]);
    expect((await again.stop('SIGTERM')).code).toBe(0);
  }, 60_000);
});
