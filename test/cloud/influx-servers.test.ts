/**
 * The InfluxDB sink against real servers: InfluxDB 1.6.7 (Debian influxdb; the 1.x /write path)
 * and VictoriaMetrics (Debian victoria-metrics; the v2 /api/v2/write path through influxdb-client).
 * Both run the shared view-sink conformance suite.
 */
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { cloudConfigSchema } from '../../cloud/config.js';
import { createInfluxSink, type InfluxConfig } from '../../cloud/sinks/influx/index.js';
import { loadConfig } from '../../shared/config.js';
import { createLogger, nullLogger } from '../../shared/logger.js';
import { requireBinary, tempDir } from '../support/gateway.js';
import { freePort, readInfluxd, readVictoriaMetrics, startInfluxd, startVictoriaMetrics, type TestServer } from '../support/influx.js';
import { viewSinkConformance, writeFixtureViews } from '../support/view-sink-conformance.js';

/** The influx section as the config loader gives it, defaults filled in. */
function influxConfig(influx: Partial<InfluxConfig>): InfluxConfig {
  return loadConfig(cloudConfigSchema, { env: {}, flags: { influx } }).influx;
}

/** Retries in milliseconds, not seconds: the down-server test must not take a minute. */
const QUICK = { retryInitialMs: 5, retryMaxMs: 20, jitter: 0.5 };

let deadPort = 0;
beforeAll(async () => { deadPort = await freePort(); });
const downSink = (api: 'v1' | 'v2') => createInfluxSink(influxConfig({ url: `http://127.0.0.1:${deadPort}`, api, maxRetries: 2, timeoutMs: 2000 }), nullLogger(), new Registry(), QUICK);

const haveInfluxd = requireBinary('influxd', 'influxdb');
const haveVm = requireBinary('victoria-metrics', 'victoria-metrics');

viewSinkConformance('InfluxDB 1.6.7 (v1 /write)', {
  skip: !haveInfluxd,
  start: async () => {
    const server = await startInfluxd();
    return {
      harness: () => ({
        sink: createInfluxSink(influxConfig({ url: server.url, api: 'v1', batchSize: 7 }), nullLogger(), new Registry(), QUICK),
        readBack: (view) => readInfluxd(server.url, 'braid', view),
      }),
      stop: server.stop,
    };
  },
  downSink: () => downSink('v1'),
});

viewSinkConformance('VictoriaMetrics (v2 /api/v2/write)', {
  skip: !haveVm,
  start: async () => {
    const server = await startVictoriaMetrics();
    return {
      harness: () => ({
        sink: createInfluxSink(influxConfig({ url: server.url, api: 'v2', batchSize: 7 }), nullLogger(), new Registry(), QUICK),
        readBack: (view) => readVictoriaMetrics(server.url, view),
      }),
      stop: server.stop,
    };
  },
  downSink: () => downSink('v2'),
  // VM keeps about 12 significant decimal digits (0.30000000000000004 comes back as 0.3)
  tolerance: 1e-11,
  // VM's dedup keeps one sample per series and ms; which one, when values differ, is version-dependent
  replacesValues: false,
});

/** A logger whose lines the test reads. */
function capturingLogger(): { logger: ReturnType<typeof createLogger>; lines: () => Record<string, unknown>[] } {
  const out: string[] = [];
  const stream = new Writable({ write(chunk, _enc, cb) { out.push(String(chunk)); cb(); } });
  return { logger: createLogger({ level: 'info' }, stream), lines: () => out.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe.each([
  ['influxd 1.6.7', haveInfluxd, startInfluxd, 'v1', '1.6.7~rc0'],
  ['victoria-metrics', haveVm, startVictoriaMetrics, 'v2', null],
] as const)('api auto on %s', (_name, have, start, api, version) => {
  let server: TestServer;
  const dir = tempDir('braid-views-');
  beforeAll(async () => { if (have) server = await start(); }, 60_000);
  afterAll(async () => {
    await server?.stop();
    dir.remove();
  });

  (have ? it : it.skip)(`reads /ping's X-Influxdb-Version and writes with ${api}`, async () => {
    const { logger, lines } = capturingLogger();
    const sink = createInfluxSink(influxConfig({ url: server.url }), logger, new Registry(), QUICK);
    try {
      const { changes, rows } = await writeFixtureViews(join(dir.path, 'a'));
      await sink.write(changes);
      expect(lines().find((l) => l.msg === 'influx: write API chosen')).toMatchObject({ api, serverVersion: version, configured: 'auto' });
      const stored = api === 'v1' ? await readInfluxd(server.url, 'braid', 'fleet_1d') : await readVictoriaMetrics(server.url, 'fleet_1d');
      expect(stored).toHaveLength(rows.fleet_1d.length);
    } finally {
      await sink.close();
    }
  });
});
