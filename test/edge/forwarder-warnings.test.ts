/**
 * Warnings in ingest's answers (BRAID_WARN_FUTURE_TS: readings stamped past ingest.maxFutureMs):
 * the forwarder counts every one by code and logs each code at most once a minute (of its clock),
 * with how many came unlogged since. A real cloud gives the warnings; the forwarder's wall clock is
 * injected so the minute passes at once.
 */
import { Registry } from 'prom-client';
import { Forwarder } from '../../edge/forwarder/index.js';
import { type TestCloud, addGatewayToken, startTestCloud } from '../support/cloud.js';
import { type GatewayFixture, captureLogger, insertReadings, metricValue, openGatewayFixture, outboxSeqs, until } from '../support/forwarder-fixtures.js';
import { tempDir } from '../support/gateway.js';

let fx: GatewayFixture;
let dir: { path: string; remove: () => void };
let cloud: TestCloud;
let token: string;
let fwd: Forwarder | null = null;

beforeEach(async () => {
  fx = await openGatewayFixture();
  dir = tempDir('braid-fwd-warn-');
  token = await addGatewayToken(dir.path, 'gw-1');
  // maxFutureMs 1: the readings the first test stamps an hour ahead are flagged.
  cloud = await startTestCloud(dir.path, { ingest: { maxFutureMs: 1 } });
});

afterEach(async () => {
  await fwd?.close();
  fwd = null;
  await cloud.close();
  dir.remove();
  await fx.close();
});

test('BRAID_WARN_FUTURE_TS answers: every one counted by code, one log line per code per minute', async () => {
  // A clock of the forwarder's own, moved by the test.
  let now = Date.now();
  const { logger, lines } = captureLogger();
  const registry = new Registry();
  fwd = new Forwarder({ reader: fx.reader, writes: fx.writes, logger, registry, gatewayId: 'gw-1', now: () => now },
    { url: cloud.url, token, lingerMs: 0, idlePollMs: 20, retryInitialMs: 20 });
  await fwd.start();
  const warnLines = () => lines.filter((l) => l.code === 'BRAID_WARN_FUTURE_TS');
  const batch = async (from: number) => {
    // Stamped an hour ahead of the cloud's clock, which it flags (maxFutureMs 1).
    await fx.writes.tx(async (db) => {
      for (let seq = from; seq < from + 5; seq++) {
        await db.run('INSERT INTO outbox (seq, epoch, device, metric, ts, value) VALUES (?, 1, ?, ?, ?, ?)', [seq, 'dev-1', 'temp', Date.now() + 3_600_000, seq]);
      }
    });
    fwd!.notify();
    await until(async () => (await outboxSeqs(fx)).length === 0 && fwd!.status().ackedSeq === from + 4, 5000, `seqs ${from}.. acknowledged`);
  };

  await batch(1);
  expect(await metricValue(registry, 'braid_forward_cloud_warnings_total', { code: 'BRAID_WARN_FUTURE_TS' })).toBe(1);
  expect(warnLines()).toHaveLength(1);
  expect(warnLines()[0]).toMatchObject({ level: 40, count: 5, firstSeq: 1, lastSeq: 5, unloggedSinceLast: 0 });
  expect(String(warnLines()[0].msg)).toMatch(/^ingest stored the batch with a warning: 5 reading\(s\) stamped more than 1 ms after the cloud's clock/);

  // Within the minute: counted, not logged.
  now += 30_000;
  await batch(6);
  await batch(11);
  expect(await metricValue(registry, 'braid_forward_cloud_warnings_total', { code: 'BRAID_WARN_FUTURE_TS' })).toBe(3);
  expect(warnLines()).toHaveLength(1);

  // A minute after the last line: logged again, naming the two left unlogged.
  now += 30_000;
  await batch(16);
  expect(await metricValue(registry, 'braid_forward_cloud_warnings_total', { code: 'BRAID_WARN_FUTURE_TS' })).toBe(4);
  expect(warnLines()).toHaveLength(2);
  expect(warnLines()[1]).toMatchObject({ firstSeq: 16, unloggedSinceLast: 2 });
});

test('answers without warnings count and log nothing', async () => {
  await cloud.close();
  cloud = await startTestCloud(dir.path);
  const { logger, lines } = captureLogger();
  const registry = new Registry();
  fwd = new Forwarder({ reader: fx.reader, writes: fx.writes, logger, registry, gatewayId: 'gw-1' }, { url: cloud.url, token, lingerMs: 0, idlePollMs: 20 });
  await insertReadings(fx, 1, 20);
  await fwd.start();
  await until(async () => (await outboxSeqs(fx)).length === 0, 5000, 'the outbox to drain');
  expect((await registry.getSingleMetric('braid_forward_cloud_warnings_total')!.get()).values).toEqual([]);
  expect(lines).toEqual([]);
});
