/**
 * Alerts in cluster mode: two in-process clouds (createCloud) on one PostgreSQL 15 database and
 * one data dir, both running the evaluation loop every 100 ms, and a real Alertmanager. Only the
 * holder of the store's alerts lock evaluates a round, so every transition is recorded once and
 * every notification sent once, though both nodes take turns evaluating. A silence rule on a
 * gateway never heard from fires once its silentFor has passed since the rule set was replaced; one
 * naming neither fires for each device the registry knows that has been silent that long.
 */
import { type CloudApp, createCloud } from '../../cloud/app.js';
import { addApiKey, addGateway } from '../../cloud/store/credentials.js';
import { PgCredentialStore } from '../../cloud/store/pg/index.js';
import { testCloudConfig } from '../support/cloud.js';
import { eventually, tempDir } from '../support/gateway.js';
import { type TestPostgres, havePostgres, migratedDatabase, startPostgres } from '../support/postgres.js';
import { getJson, postSpeed, pushBody } from './speed-fixtures.js';
import { alertHistory, haveAlertmanager, listAlerts, metricValue, partialOf, putRules, startAlertmanager } from './alerts-fixtures.js';

const have = havePostgres() && haveAlertmanager();

(have ? describe : describe.skip)('alerts on two nodes of one PostgreSQL store', () => {
  let server: TestPostgres;
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  /** A fresh migrated database with gateway gw-1's token, an admin key and a read key. */
  const cloudDatabase = async (name: string) => {
    const db = await migratedDatabase(server, name, 2);
    cleanups.push(db.close);
    const creds = new PgCredentialStore(db.first);
    const token = await addGateway(creds, 'gw-1');
    return { url: db.url, token, adminKey: await addApiKey(creds, 'ops', 'admin'), readKey: await addApiKey(creds, 'app', 'read') };
  };
  afterAll(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    await server?.stop();
  }, 60_000);

  test('both nodes evaluate in turn; each transition is recorded once and each alert sent once; a silence rule fires once', async () => {
    const { url, token, adminKey, readKey } = await cloudDatabase('alerts_cluster');
    const am = await startAlertmanager();
    cleanups.push(() => am.stop());
    const data = tempDir('braid-alerts-cluster-');
    cleanups.push(() => data.remove());
    const nodes: Array<{ app: CloudApp; url: string }> = [];
    for (let i = 0; i < 2; i++) {
      const cache = tempDir(`braid-alerts-cluster-cache${i}-`);
      cleanups.push(() => cache.remove());
      const app = createCloud(testCloudConfig(data.path, {
        store: { url }, cacheDir: cache.path, alerts: { evalIntervalMs: 100, alertmanagerUrl: am.url, resendMs: 600_000 },
      }));
      const a = await app.server.start();
      cleanups.push(() => app.server.close());
      nodes.push({ app, url: a.url });
    }
    const [A, B] = nodes;
    const put = await putRules(A.url, adminKey, { rules: [
      { name: 'fleet-hot', metric: 'temp', agg: 'max', window: '1m', op: '>', threshold: 50, for: '0s' },
      { name: 'ghost-quiet', silentFor: '30s', gateway: 'gw-ghost' },
      { name: 'any-quiet', silentFor: '30s' },
    ] });
    expect(put.status).toBe(200);
    const putAt = Date.now();
    expect((await getJson(B.url, '/api/v1/alerts/rules', readKey)).body).toEqual(put.body);
    expect((await postSpeed(B.url, token, pushBody('gw-1', [partialOf('d-1', 'temp', Date.now(), 1, [70])]))).status).toBe(200);
    await eventually(async () => (await listAlerts(B.url, readKey)).some((a) => a.rule === 'fleet-hot' && a.state === 'firing'), 10_000, 20);

    const text = async (n: { url: string }) => (await getJson(n.url, '/metrics', readKey)).body.text as string;
    // Both nodes take rounds (each a turn when the other does not hold the lock).
    await eventually(async () => {
      for (const n of nodes) if (metricValue(await text(n), 'braid_alert_evaluation_seconds_count') < 3) return false;
      return true;
    }, 20_000, 100);
    const ghost = (await eventually(async () => (await listAlerts(A.url, readKey)).find((a) => a.rule === 'ghost-quiet' && a.state === 'firing'), 60_000, 100))!;
    expect(ghost.scope).toEqual({ gateway: 'gw-ghost' });
    expect(Date.parse(ghost.since) - putAt).toBeGreaterThanOrEqual(29_000);
    expect(ghost.value).toBeGreaterThanOrEqual(30);
    await eventually(async () => (await am.alerts()).some((x) => x.labels.alertname === 'ghost-quiet' && x.labels.gateway === 'gw-ghost'), 10_000, 50);
    // A silence rule naming neither: every device the registry knows, d-1 here, silent since its push.
    const anyQuiet = (await eventually(async () => (await listAlerts(B.url, readKey)).find((a) => a.rule === 'any-quiet' && a.state === 'firing'), 20_000, 100))!;
    expect(anyQuiet.scope).toEqual({ device: 'd-1' });
    // More rounds on both nodes: three each that ended after any-quiet was seen firing, so the
    // round that fired it has also sent it and counted the send (after Alertmanager's answer: a
    // fixed second left that to the machine's load).
    const roundsAt = await Promise.all(nodes.map(async (n) => metricValue(await text(n), 'braid_alert_evaluation_seconds_count')));
    await eventually(async () => {
      for (const [i, n] of nodes.entries()) if (metricValue(await text(n), 'braid_alert_evaluation_seconds_count') < roundsAt[i] + 3) return false;
      return true;
    }, 20_000, 100);

    expect((await alertHistory(A.url, readKey, '?rule=fleet-hot')).map((h) => [h.from, h.to, h.scope])).toEqual([[null, 'firing', { fleet: true }]]);
    expect((await alertHistory(B.url, readKey, '?rule=ghost-quiet')).map((h) => [h.from, h.to, h.scope])).toEqual([[null, 'firing', { gateway: 'gw-ghost' }]]);
    const sent = (await Promise.all(nodes.map(async (n) => metricValue(await text(n), 'braid_alert_notifications_total', 'result="sent"')))).reduce((a, b) => a + b, 0);
    expect((await alertHistory(A.url, readKey, '?rule=any-quiet')).map((h) => [h.from, h.to, h.scope])).toEqual([[null, 'firing', { device: 'd-1' }]]);
    expect(sent).toBe(3); // fleet-hot, ghost-quiet and any-quiet, once each, by whichever node evaluated
    const rounds = await Promise.all(nodes.map(async (n) => metricValue(await text(n), 'braid_alert_evaluation_seconds_count')));
    // eslint-disable-next-line no-console
    console.log(`alerts cluster: rounds evaluated per node ${rounds.join(', ')}; notifications sent in all ${sent}`);
  }, 120_000);

  test('1,000 device rules on the PostgreSQL store: every round evaluates them all; the round time is printed', async () => {
    const { url, token, adminKey, readKey } = await cloudDatabase('alerts_thousand');
    const data = tempDir('braid-alerts-pg1000-');
    cleanups.push(() => data.remove());
    const app = createCloud(testCloudConfig(data.path, { store: { url }, alerts: { evalIntervalMs: 100 } }));
    const node = await app.server.start();
    cleanups.push(() => app.server.close());
    const now = Date.now();
    const partials: unknown[] = [];
    for (let d = 0; d < 100; d++) for (let m = 0; m < 10; m++) partials.push(partialOf(`dev-${d}`, `m${m}`, now, 1, [d + m]));
    expect((await postSpeed(node.url, token, pushBody('gw-1', partials))).status).toBe(200);
    const rules = [];
    for (let d = 0; d < 100; d++) for (let m = 0; m < 10; m++) rules.push({ name: `r-${d}-${m}`, metric: `m${m}`, agg: 'avg', window: '5m', op: '>', threshold: 98, for: '0s', device: `dev-${d}` });
    expect((await putRules(node.url, adminKey, { rules })).status).toBe(200);
    const text = async () => (await getJson(node.url, '/metrics', readKey)).body.text as string;
    // The first round after the PUT fires the 55 alerts (d + m > 98); the rounds after it are steady state.
    await eventually(async () => (await listAlerts(node.url, readKey)).filter((a) => a.state === 'firing').length === 55, 60_000, 100);
    const before = await text();
    const [count0, sum0] = [metricValue(before, 'braid_alert_evaluation_seconds_count'), metricValue(before, 'braid_alert_evaluation_seconds_sum')];
    await eventually(async () => metricValue(await text(), 'braid_alert_evaluation_seconds_count') >= count0 + 4, 120_000, 200);
    const after = await text();
    const rounds = metricValue(after, 'braid_alert_evaluation_seconds_count') - count0;
    const seconds = metricValue(after, 'braid_alert_evaluation_seconds_sum') - sum0;
    expect(metricValue(after, 'braid_alert_evaluations_total', 'result="failed"')).toBe(0);
    // eslint-disable-next-line no-console
    console.log(`alerts: a round of 1,000 device rules on the PostgreSQL store (one merged query each, 8 at a time) took ${(seconds / rounds * 1000).toFixed(0)} ms on average over ${rounds} rounds`);
  }, 180_000);
});
