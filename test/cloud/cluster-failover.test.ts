/**
 * The gateway's failover between two cluster nodes on PostgreSQL (issue 10; e2e-failover.test.ts is
 * the same on a shared cloud.db): two `braid cloud --store postgres://...` processes on one data dir
 * (test/support/cluster.ts), a real `braid gateway --cloud-url A,B` fed by MQTT.js devices
 * publishing QoS 1 all along. A is killed with SIGKILL: forwarding goes on through B (the time is
 * printed), B's merged query counts the readings; A comes back on its port and the gateway returns
 * to it. In the end every reading acknowledged to a device is in master/ exactly once, each
 * (gateway, seq) once, nothing left in staging or in PostgreSQL's `staged`.
 */
import { performance } from 'node:perf_hooks';
import type { MqttClient } from 'mqtt';
import { type Cluster, startCluster } from '../support/cluster.js';
import { readMaster } from '../support/cloud.js';
import { type ChildGateway, addDevices, killAllChildGateways, spawnGateway } from '../support/child-gateway.js';
import { connectDevice, endClient, eventually, publish, tempDir } from '../support/gateway.js';
import { type TestPostgres, havePostgres, startPostgres } from '../support/postgres.js';

const GW = 'gw-failover';
const DEVICES = ['dev-1', 'dev-2', 'dev-3'];
const SECRET = 'device-secret-failover-1';

interface Health {
  cloud: { nodes: string[]; current: string; currentIndex: number; failovers: number };
  forwarder: { cloudUrl: string };
  speedPush: { cloudUrl: string };
  outbox: { pending: number; ackedSeq: number; lastSeq: number };
}
const health = async (gw: ChildGateway): Promise<Health> => (await fetch(`${gw.httpUrl}/api/v1/health`)).json() as Promise<Health>;

async function mergedCount(node: string, key: string): Promise<number> {
  const to = Date.now() + 60_000;
  const res = await fetch(`${node}/api/v1/query?metric=temp&from=${to - 3_600_000}&to=${to}&step=1h&agg=count`, { headers: { authorization: `Bearer ${key}` } });
  if (res.status !== 200) throw new Error(`query on ${node}: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { points: Array<{ count: number }> }).points.reduce((a, p) => a + p.count, 0);
}

const have = havePostgres();

(have ? describe : describe.skip)('gateway failover between two nodes on PostgreSQL', () => {
  let server: TestPostgres;
  let cluster: Cluster | null = null;
  const clients: MqttClient[] = [];
  const dirs: Array<{ remove: () => void }> = [];
  beforeAll(async () => { server = await startPostgres(); }, 60_000);
  afterEach(async () => {
    for (const c of clients.splice(0)) await endClient(c);
    await killAllChildGateways();
    await cluster?.close();
    cluster = null;
    for (const d of dirs.splice(0)) d.remove();
  }, 60_000);
  afterAll(async () => { await server?.stop(); }, 30_000);

  test('[INV-1] [INV-2] kill -9 of node A: the gateway forwards through B, comes back to A; every acknowledged reading in master once', async () => {
    cluster = await startCluster(server, 'failover', { nodes: 2, gateways: [GW], config: { ingest: { sealMaxAgeMs: 500 } } });
    const c = cluster;
    const [a, b] = c.nodes;
    const gwDir = tempDir('braid-cluster-failover-gw-');
    dirs.push(gwDir);
    await addDevices(gwDir.path, DEVICES.map((d) => [d, SECRET]));
    const gw = await spawnGateway({
      dataDir: gwDir.path, id: GW, args: ['--cloud-url', `${a.url},${b.url}`],
      env: {
        BRAID_CLOUD_TOKEN: c.tokens[GW], BRAID_CLOUD_PROBE_INTERVAL_MS: '1000', BRAID_OUTBOX_EPOCH_IDLE_MS: '300', BRAID_SPEED_PUSH_INTERVAL_MS: '200',
        BRAID_CLOUD_LINGER_MS: '0', BRAID_MQTT_RATE_PER_DEVICE: '10000', BRAID_MQTT_RATE_BURST: '10000',
      },
    });
    for (const d of DEVICES) clients.push(await connectDevice(gw.mqttUrl, d, SECRET));
    const acked: string[] = [];
    let publishing = true;
    const t0 = Date.now() - 30_000;
    let i = 0;
    const publisher = Promise.all(clients.map(async (client, k) => {
      while (publishing) {
        const ts = t0 + i++;
        try {
          await publish(client, `devices/${DEVICES[k]}/telemetry`, JSON.stringify({ ts, temp: i % 50 }), 1);
          acked.push(`${DEVICES[k]}|${ts}`);
        } catch { /* not acknowledged: not counted */ }
      }
    }));
    try {
      await eventually(async () => {
        const h = await health(gw);
        return h.forwarder.cloudUrl === a.url && h.outbox.ackedSeq > 300;
      }, 20_000, 50);
      const ackedAtKill = (await health(gw)).outbox.ackedSeq;
      const killedAt = performance.now();
      expect(await c.stop(0, 'SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
      const onB = await eventually(async () => {
        const h = await health(gw);
        return h.forwarder.cloudUrl === b.url && h.outbox.ackedSeq > ackedAtKill + 20 ? h : undefined;
      }, 15_000, 20);
      const failoverMs = Math.round(performance.now() - killedAt);
      // eslint-disable-next-line no-console
      console.log(`failover on PostgreSQL nodes: forwarding acknowledged by node B ${failoverMs} ms after node A was killed (ackedSeq ${ackedAtKill} -> ${onB!.outbox.ackedSeq})`);
      expect(onB!.cloud).toMatchObject({ current: b.url, currentIndex: 1 });
      const soFar = acked.length;
      await eventually(async () => (await mergedCount(b.url, c.readKey)) >= soFar, 15_000, 100);

      // A comes back on its port (it adopts what its first life staged); the probe takes the gateway back.
      await c.start(0);
      const backAt = performance.now();
      await eventually(async () => (await health(gw)).forwarder.cloudUrl === a.url, 15_000, 50);
      // eslint-disable-next-line no-console
      console.log(`failback: forwarding to node A again ${Math.round(performance.now() - backAt)} ms after it was ready (probe every 1000 ms)`);
    } finally {
      publishing = false;
      await publisher;
    }
    await eventually(async () => (await health(gw)).outbox.pending === 0, 20_000, 50);
    const last = await health(gw);
    expect(last.outbox.ackedSeq).toBe(last.outbox.lastSeq);
    // Both nodes' merged query counts each acknowledged reading once.
    for (const node of c.nodes) await eventually(async () => (await mergedCount(node.url, c.readKey)) === acked.length, 15_000, 100);
    expect(await gw.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    await c.sealAll();
    const rows = (await readMaster(c.dataDir)).filter((r) => r.gateway === GW);
    expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: last.outbox.lastSeq }, (_, k) => k + 1));
    expect(rows.map((r) => `${r.device}|${r.ts}`).sort()).toEqual([...acked].sort());
    expect((await c.admin.query('SELECT * FROM staged')).rows).toEqual([]);
    // eslint-disable-next-line no-console
    console.log(`failover run on PostgreSQL: ${acked.length} readings acknowledged to the devices, ${rows.length} in master/`);
  }, 120_000);
});
