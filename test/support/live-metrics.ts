/**
 * Test support: the metrics a real gateway and a real cloud serve on GET /metrics, for the checks
 * that what names a metric (docs/operations.md, deploy/prometheus/alerts.yml, the Grafana
 * dashboards) names one that exists. The cloud is createCloud (what `braid cloud` runs), with an
 * InfluxDB URL so the sink's metrics exist (nothing is written without a batch run).
 */
import { join } from 'node:path';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { type MetricFamily, registryFamilies } from '../../bin/gen-metrics-docs.js';
import { createCloud } from '../../cloud/app.js';
import { addApiKey } from '../../cloud/store/credentials.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { testCloudConfig } from './cloud.js';
import { exposedMetrics, sampleNames } from './docs.js';
import { startTestGateway, tempDir } from './gateway.js';

export interface LiveMetrics {
  /** Family name -> its type, as served on GET /metrics (`# TYPE` lines). */
  gateway: Map<string, string>;
  cloud: Map<string, string>;
  /** Both, from the processes' registries: type, declared label names, help. */
  families: Map<string, MetricFamily>;
}

async function scrape(url: string, key?: string): Promise<string> {
  const res = await fetch(`${url}/metrics`, key ? { headers: { authorization: `Bearer ${key}` } } : {});
  if (res.status !== 200) throw new Error(`GET ${url}/metrics answered ${res.status}`);
  return res.text();
}

/** Start a gateway and a cloud, scrape both (the cloud with a read key, as Prometheus does), stop them. */
export async function liveMetrics(): Promise<LiveMetrics> {
  const dir = tempDir('braid-live-metrics-');
  const gateway = await startTestGateway({}, join(dir.path, 'gateway'));
  const cloud = createCloud(testCloudConfig(join(dir.path, 'cloud'), { influx: { url: 'http://127.0.0.1:9' } }));
  try {
    const { url } = await cloud.server.start();
    const db = await openCloudDb(join(dir.path, 'cloud', 'cloud.db'));
    const key = await addApiKey(db, 'prometheus', 'read').finally(() => db.close());
    const gw = exposedMetrics(await scrape(gateway.httpUrl));
    const cl = exposedMetrics(await scrape(url, key));
    const families = await registryFamilies(cloud.server.registry, await registryFamilies(gateway.gateway.registry));
    return { gateway: gw, cloud: cl, families };
  } finally {
    await cloud.server.close();
    await gateway.close();
    dir.remove();
  }
}

/** The names of prom-client's default metrics (process_*, nodejs_*), as a fresh registry has them. */
export async function defaultMetricNames(): Promise<Set<string>> {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return new Set((await registry.getMetricsAsJSON()).map((m) => m.name));
}

/** Every sample name the families serve (a histogram's _bucket, _sum and _count too). */
export function sampleNamesOf(families: Map<string, string>): Set<string> {
  return new Set([...families].flatMap(([name, type]) => sampleNames(name, type)));
}
