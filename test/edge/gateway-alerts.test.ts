/**
 * Alerts at the gateway (docs/alerts.md, "At the gateway"), with a real gateway (aedes, gateway.db),
 * a real cloud (createCloud, SQLite) and MQTT.js devices: a device rule set through the REST API
 * reaches the gateway with a speed-push answer; the cloud goes away; a device subscribed to
 * devices/{id}/alerts publishes a reading over the threshold and hears the alert fire (QoS 1, from
 * the gateway alone); the gateway restarts while the cloud is still away and keeps the rules (a
 * device connecting then hears the held state, retained); the cloud comes back and its history has
 * the episode once, whoever raised it. Printed: publish to the device hearing firing.
 */
import type { MqttClient } from 'mqtt';
import { connectDevice, endClient, eventually, publish, startTestGateway, tempDir, type TestGateway } from '../support/gateway.js';
import { type SpeedCloud, credentials, getJson, startSpeedCloud } from '../cloud/speed-fixtures.js';
import { alertHistory, metricValue, putRules } from '../cloud/alerts-fixtures.js';
import { gzipSync } from 'node:zlib';

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
    const keys = await credentials(cloudDir.path, ['gw-1']);
    const token = keys.tokens['gw-1'];
    let cloud: SpeedCloud | null = await startSpeedCloud(cloudDir.path, { alerts: { evalIntervalMs: 200 } });
    const port = cloud.port;
    cleanups.push(() => cloud?.close());
    const gwConfig = { id: 'gw-1', cloud: { url: cloud.url, token }, speed: { pushIntervalMs: 300 }, alerts: { evalIntervalMs: 200 } };
    let gw: TestGateway | null = await startTestGateway(gwConfig, gwDir.path);
    cleanups.push(() => gw?.close());
    const secret = await gw.addDevice('d-1');

    // Device rules go to the gateway; the fleet rule and the silence rule stay the cloud's.
    const hot = { name: 'hot', metric: 'temp', agg: 'max', window: '5m', op: '>', threshold: 50, for: '0s', device: 'd-1' };
    const rules = [hot, { name: 'fleet-hot', metric: 'temp', agg: 'max', window: '5m', op: '>', threshold: 500, for: '0s' }, { name: 'quiet', silentFor: '10m', device: 'd-1' }];
    expect((await putRules(cloud.url, keys.admin, { rules })).status).toBe(200);
    await eventually(() => gw!.gateway.alerts.heldRules === 1, 10_000, 50);
    const version = gw.gateway.alerts.rulesVersion();
    expect(version).not.toBe('');

    // The cloud goes away.
    await cloud.close();
    cloud = null;

    const device = await connectDevice(gw.mqttUrl, 'd-1', secret);
    cleanups.push(() => endClient(device));
    const heard = listen(device);
    await subscribe(device, 'devices/d-1/alerts');
    const t0 = Date.now();
    await publish(device, 'devices/d-1/telemetry', JSON.stringify({ ts: t0, temp: 61.5 }), 1);
    const firing = (await eventually(() => heard.find((h) => h.msg.state === 'firing'), 10_000, 10))!;
    const toHeard = Date.now() - t0;
    expect(firing).toMatchObject({ topic: 'devices/d-1/alerts', qos: 1, msg: { rule: 'hot', device: 'd-1', state: 'firing', from: null, value: 61.5 } });
    expect(firing.msg.alerts).toEqual([expect.objectContaining({ rule: 'hot', state: 'firing' })]);
    // eslint-disable-next-line no-console
    console.log(`gateway alerts: MQTT reading to the device hearing firing on devices/d-1/alerts in ${toHeard} ms with the cloud down (alerts.evalIntervalMs 200)`);
    await endClient(device);

    // A restart while the cloud is still away: the rules and the state are in gateway.db.
    await gw.close();
    gw = await startTestGateway(gwConfig, gwDir.path);
    expect(gw.gateway.alerts.heldRules).toBe(1);
    expect(gw.gateway.alerts.rulesVersion()).toBe(version);
    expect(gw.gateway.alerts.status()).toMatchObject({ firing: 1, pending: 1 });
    const again = await connectDevice(gw.mqttUrl, 'd-1', secret);
    cleanups.push(() => endClient(again));
    const heardAgain = listen(again);
    await subscribe(again, 'devices/d-1/alerts');
    const retained = await eventually(() => heardAgain.find((h) => h.msg.state === 'firing'), 5_000, 10);
    expect(retained).toMatchObject({ retain: true, msg: { rule: 'hot', state: 'firing' } });

    // The cloud comes back: the transition arrives through gateway.db's alert outbox, recorded once.
    cloud = await startSpeedCloud(cloudDir.path, { alerts: { evalIntervalMs: 200 }, http: { port } });
    await eventually(() => gw!.gateway.alerts.status().pending === 0, 20_000, 50);
    await eventually(async () => (await alertHistory(cloud!.url, keys.read, '?rule=hot')).some((h) => h.to === 'firing'), 10_000, 50);
    await new Promise((r) => setTimeout(r, 1_000)); // a few more rounds (the cloud's own evaluation of the same readings)
    const firings = (await alertHistory(cloud.url, keys.read, '?rule=hot')).filter((h) => h.to === 'firing');
    expect(firings).toEqual([expect.objectContaining({ rule: 'hot', scope: { device: 'd-1' } })]);
    const text = (await getJson(cloud.url, '/metrics', keys.read)).body.text as string;
    expect(metricValue(text, 'braid_alert_gateway_transitions_total', 'result="recorded"')).toBe(1);

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
  }, 60_000);
});
