/**
 * deploy/compose/: the cloud with InfluxDB 2, Prometheus and Grafana. Docker is not run here; what can be
 * checked is: the YAML parses, services, ports, volumes and mounts agree with each other and with
 * the files they name, the image's `npm ci --omit=dev` keeps every package the sources import, the
 * cloud config validates and passes the lint with the compose environment, the Grafana datasource
 * points where the cloud writes, and every measurement, field and tag the dashboard's Flux reads is
 * one the InfluxDB sink really writes (a real batch run, through the real sink, into a real
 * InfluxDB 1.6.7, whose schema is then read back). Prometheus' config passes `promtool check config`
 * (with Braid's alert rules, mounted as the container sees them) and scrapes the cloud where it
 * listens, with a read key; every metric the operations dashboard's PromQL reads is one a real
 * gateway or cloud serves, and every expression is PromQL promtool accepts.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { Registry } from 'prom-client';
import { parse, stringify } from 'yaml';
import { cloudConfigSchema } from '../../cloud/config.js';
import { VIEW_NAMES, startBatchRun } from '../../cloud/batch/index.js';
import { POINT_FIELDS, STRING_FIELDS, createInfluxSink } from '../../cloud/sinks/influx/index.js';
import { loadConfig } from '../../shared/config.js';
import { nullLogger } from '../../shared/logger.js';
import { CLOUD_RULES } from '../../bin/commands/config-lint.js';
import { runCheck } from '../../bin/commands/check-config.js';
import { requireBinary, tempDir } from '../support/gateway.js';
import { startInfluxd, type TestServer } from '../support/influx.js';
import { type LiveMetrics, liveMetrics, sampleNamesOf } from '../support/live-metrics.js';
import { GatewaySim, MasterFixture } from '../support/master-fixture.js';
import { ROOT, envFile, promqlMetricNames, readJson, readText } from './support.js';

const COMPOSE_DIR = join(ROOT, 'deploy/compose');

interface Service {
  image?: string;
  command?: string[];
  build?: { context: string; dockerfile: string };
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}
const compose = parse(readText('deploy/compose/compose.yaml')) as { services: Record<string, Service>; volumes: Record<string, unknown> };
const { cloud, influxdb, grafana, prometheus } = compose.services;

/** `${VAR:?msg}` and `${VAR:-default}` as compose reads them, from .env.example with each value filled in. */
const dotEnv = Object.fromEntries(Object.entries(envFile('deploy/compose/.env.example')).map(([k, v]) => [k, v || `value-of-${k}`]));
function interpolate(s: string): string {
  return s.replace(/\$\{([A-Z_][A-Z0-9_]*)(?::([?-])([^}]*))?\}/g, (_m, name: string, op?: string, arg?: string) => {
    const v = dotEnv[name];
    if (v !== undefined && v !== '') return v;
    if (op === '-') return arg ?? '';
    throw new Error(`compose needs ${name}, which .env.example does not name`);
  });
}

/** A service's mounts as `{source, target}`; sources of bind mounts resolved against the compose dir. */
function mounts(s: Service): Array<{ source: string; target: string; bind: boolean }> {
  return (s.volumes ?? []).map((v) => {
    const [source, target] = v.split(':');
    const bind = source.startsWith('.') || source.startsWith('/');
    return { source: bind ? join(COMPOSE_DIR, source) : source, target, bind };
  });
}

/** Container port of a `host:port` / `ip:host:port` mapping. */
const containerPort = (mapping: string) => Number(mapping.split(':').pop());

describe('compose.yaml', () => {
  it('has the cloud, InfluxDB 2, Prometheus and Grafana, every variable it needs named in .env.example', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['cloud', 'grafana', 'influxdb', 'prometheus']);
    expect(prometheus.image).toMatch(/^prom\/prometheus:v\d+\.\d+\.\d+$/);
    expect(influxdb.image).toMatch(/^influxdb:2(\.\d+)*$/);
    expect(grafana.image).toMatch(/^grafana\/grafana(-oss)?:\d+/);
    for (const s of Object.values(compose.services)) for (const v of Object.values(s.environment ?? {})) interpolate(String(v));
  });

  it('declares every named volume it uses, and every bind mount names a file or dir that exists', () => {
    const used = Object.values(compose.services).flatMap((s) => mounts(s)).filter((m) => !m.bind).map((m) => m.source);
    expect([...new Set(used)].sort()).toEqual(Object.keys(compose.volumes).sort());
    for (const m of Object.values(compose.services).flatMap((s) => mounts(s)).filter((x) => x.bind)) expect([m.source, existsSync(m.source)]).toEqual([m.source, true]);
  });

  it('starts the cloud once InfluxDB answers, and Grafana once InfluxDB and Prometheus do', () => {
    expect(influxdb.healthcheck?.test).toEqual(['CMD', 'influx', 'ping']);
    expect(prometheus.healthcheck?.test).toEqual(['CMD', 'wget', '-q', '-O', '/dev/null', 'http://127.0.0.1:9090/-/ready']);
    expect(cloud.depends_on).toEqual({ influxdb: { condition: 'service_healthy' } });
    expect(grafana.depends_on).toEqual({ influxdb: { condition: 'service_healthy' }, prometheus: { condition: 'service_healthy' } });
  });
});

describe('the cloud image (compose/Dockerfile)', () => {
  const dockerfile = readText('deploy/compose/Dockerfile');
  const contextDir = join(COMPOSE_DIR, cloud.build!.context);
  const cloudJson = readJson<{ http: { port: number } }>('deploy/compose/cloud.json');

  it('builds from the repository root, node 20 bookworm, slim at run time, production dependencies only', () => {
    expect(contextDir).toBe(ROOT);
    expect(join(contextDir, cloud.build!.dockerfile)).toBe(join(COMPOSE_DIR, 'Dockerfile'));
    const froms = [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
    expect(froms).toEqual(['node:20-bookworm', 'node:20-bookworm-slim']);
    expect(dockerfile).toMatch(/^RUN npm ci --omit=dev/m);
  });

  it('copies only paths that exist and that its .dockerignore lets through', () => {
    const ignore = readText('deploy/compose/Dockerfile.dockerignore').split('\n').filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/\*\*$/, ''));
    const copied = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1].split(' '));
    expect(copied.length).toBeGreaterThan(4);
    for (const c of copied) {
      expect([c, existsSync(join(ROOT, c))]).toEqual([c, true]);
      expect(ignore).toContain(c);
    }
  });

  it('with --omit=dev still has every package the copied sources import', () => {
    const pkg = readJson<{ dependencies: Record<string, string> }>('package.json');
    const copiedDirs = [...dockerfile.matchAll(/^COPY (\w+) \.\/\w+$/gm)].map((m) => m[1]);
    expect(copiedDirs.sort()).toEqual(['bin', 'cloud', 'edge', 'shared']);
    const files = (dir: string): string[] => readdirSync(dir).flatMap((f) => {
      const p = join(dir, f);
      return statSync(p).isDirectory() ? files(p) : /\.(ts|js|mjs)$/.test(f) ? [p] : [];
    });
    const missing = new Set<string>();
    for (const f of copiedDirs.flatMap((d) => files(join(ROOT, d)))) {
      const text = readFileSync(f, 'utf8');
      // Static imports and re-exports (`import ... from 'x'`, also over several lines) and dynamic `import('x')`.
      const specs = [...text.matchAll(/^\s*(?:import|export)\s[^;]*?\sfrom\s+'([^']+)'/gms), ...text.matchAll(/\bimport\('([^']+)'\)/g)].map((m) => m[1]);
      for (const spec of specs) {
        if (spec.startsWith('.') || spec.startsWith('/') || spec.startsWith('node:') || builtinModules.includes(spec)) continue;
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
        if (!pkg.dependencies[name]) missing.add(`${name} (${relative(ROOT, f)})`);
      }
    }
    expect([...missing]).toEqual([]);
  });

  it('serves, is health-checked and published on the port of its config', () => {
    const port = cloudJson.http.port;
    expect(dockerfile).toMatch(new RegExp(`^EXPOSE ${port}$`, 'm'));
    expect(dockerfile).toContain(`http://127.0.0.1:${port}/healthz`);
    expect(cloud.ports?.map(containerPort)).toEqual([port]);
    const cmd = JSON.parse(/^CMD (.+)$/m.exec(dockerfile)![1]) as string[];
    const configPath = cmd[cmd.indexOf('--config') + 1];
    expect(mounts(cloud)).toContainEqual({ source: join(COMPOSE_DIR, 'cloud.json'), target: configPath, bind: true });
  });

  it('keeps its data dir on a named volume owned by the user it runs as', () => {
    const { dataDir } = readJson<{ dataDir: string }>('deploy/compose/cloud.json');
    expect(mounts(cloud)).toContainEqual({ source: 'cloud-data', target: dataDir, bind: false });
    expect(dockerfile).toContain(`chown node:node ${dataDir}`);
    expect(dockerfile).toMatch(/^USER node$/m);
  });
});

describe('the cloud config of the compose file', () => {
  const env = Object.fromEntries(Object.entries(cloud.environment ?? {}).map(([k, v]) => [k, interpolate(String(v))]));
  const file = join(COMPOSE_DIR, 'cloud.json');
  const config = loadConfig(cloudConfigSchema, { file, env });

  it('validates and passes the lint with the compose environment', () => {
    const dir = tempDir('braid-compose-');
    try {
      // The data dir is a volume in the container; a temp dir stands in for it here.
      const flags = { dataDir: dir.path };
      const r = runCheck(cloudConfigSchema, CLOUD_RULES, () => loadConfig(cloudConfigSchema, { file, env, flags }), { file, flags, env });
      expect(r.findings).toEqual([]);
    } finally { dir.remove(); }
  });

  it('writes its views to the InfluxDB 2 service, with the org, bucket and token InfluxDB is set up with', () => {
    const url = new URL(config.influx.url!);
    expect(url.hostname).toBe('influxdb');
    expect(url.port).toBe('8086');
    expect(influxdb.ports?.map(containerPort)).toEqual([8086]);
    expect(config.influx.api).toBe('v2');
    expect(config.influx.org).toBe(influxdb.environment!.DOCKER_INFLUXDB_INIT_ORG);
    expect(config.influx.bucket).toBe(influxdb.environment!.DOCKER_INFLUXDB_INIT_BUCKET);
    expect(config.influx.token).toBe(interpolate(influxdb.environment!.DOCKER_INFLUXDB_INIT_ADMIN_TOKEN));
    expect(influxdb.environment!.DOCKER_INFLUXDB_INIT_MODE).toBe('setup');
  });
});

interface Panel { type: string; title: string; datasource: { type: string; uid: string }; targets: Array<{ query: string; expr: string; datasource: { uid: string } }> }
interface Variable { name: string; type: string; query: string | { query: string }; datasource?: { uid: string } }
interface Dashboard { uid: string; title: string; panels: Panel[]; templating: { list: Variable[] } }

const dashboardFiles = readdirSync(join(COMPOSE_DIR, 'grafana/dashboards')).filter((f) => f.endsWith('.json'));
const allDashboards = dashboardFiles.map((f) => readJson<Dashboard>(`deploy/compose/grafana/dashboards/${f}`));
/** A dashboard reads one datasource type: every panel but rows (which hold no query) says which. */
const panelsOf = (d: Dashboard) => d.panels.filter((p) => p.type !== 'row');
const dashboardsOf = (type: string) => allDashboards.filter((d) => panelsOf(d).every((p) => p.datasource.type === type));

describe('Grafana provisioning', () => {
  const datasources = parse(readText('deploy/compose/grafana/provisioning/datasources/influxdb.yaml')) as { datasources: Array<Record<string, unknown> & { jsonData: Record<string, string>; secureJsonData: Record<string, string> }> };
  const providers = parse(readText('deploy/compose/grafana/provisioning/dashboards/braid.yaml')) as { providers: Array<{ type: string; options: { path: string } }> };
  const cloudConfig = loadConfig(cloudConfigSchema, { file: join(COMPOSE_DIR, 'cloud.json'), env: {} });
  const ds = datasources.datasources[0];
  const dashboards = dashboardsOf('influxdb');

  it('mounts the provisioning dir where Grafana reads it, and the dashboards where the provider looks', () => {
    expect(mounts(grafana)).toContainEqual({ source: join(COMPOSE_DIR, 'grafana/provisioning'), target: '/etc/grafana/provisioning', bind: true });
    expect(providers.providers).toHaveLength(1);
    expect(providers.providers[0].type).toBe('file');
    expect(mounts(grafana)).toContainEqual({ source: join(COMPOSE_DIR, 'grafana/dashboards'), target: providers.providers[0].options.path, bind: true });
  });

  it('the datasource is InfluxDB 2 with Flux, at the URL, org and bucket the cloud writes to, its token from the environment', () => {
    expect(datasources.datasources).toHaveLength(1);
    expect(ds).toMatchObject({ type: 'influxdb', url: cloudConfig.influx.url, access: 'proxy' });
    expect(ds.jsonData).toMatchObject({ version: 'Flux', organization: cloudConfig.influx.org, defaultBucket: cloudConfig.influx.bucket });
    const token = /^\$\{(\w+)\}$/.exec(ds.secureJsonData.token)?.[1];
    expect(token).toBeDefined();
    expect(grafana.environment![token!]).toBe(influxdb.environment!.DOCKER_INFLUXDB_INIT_ADMIN_TOKEN);
  });

  it('has the views dashboard on InfluxDB and the operations dashboard on Prometheus, each on one datasource, unique uids', () => {
    expect(dashboards.map((d) => d.uid)).toEqual(['braid-batch-views']);
    expect(dashboardsOf('prometheus').map((d) => d.uid)).toEqual(['braid-operations']);
    expect(dashboards.length + dashboardsOf('prometheus').length).toBe(allDashboards.length);
    expect(new Set(allDashboards.map((d) => d.uid)).size).toBe(allDashboards.length);
  });

  it('every panel, query and variable of the dashboard uses that datasource; the bucket variable is the cloud\'s bucket', () => {
    expect(dashboards.length).toBeGreaterThan(0);
    for (const d of dashboards) {
      for (const p of d.panels) {
        expect(p.datasource.uid).toBe(ds.uid);
        for (const t of p.targets) expect(t.datasource.uid).toBe(ds.uid);
      }
      for (const v of d.templating.list.filter((x) => x.type === 'query')) expect(v.datasource?.uid).toBe(ds.uid);
      expect(d.templating.list.find((v) => v.name === 'bucket')).toMatchObject({ type: 'constant', query: cloudConfig.influx.bucket });
    }
  });

  describe('the dashboard reads what the InfluxDB sink writes', () => {
    const haveInfluxd = requireBinary('influxd', 'influxdb');
    let server: TestServer | undefined;
    const dir = tempDir('braid-dash-');
    /** measurement -> its tag keys and field keys, as InfluxDB holds them after a real batch run. */
    const written = new Map<string, { tags: Set<string>; fields: Set<string> }>();

    const influxql = async (q: string): Promise<string[]> => {
      const res = await fetch(`${server!.url}/query?${new URLSearchParams({ db: cloudConfig.influx.database, q })}`);
      const body = await res.json() as { results: Array<{ series?: Array<{ values: string[][] }> }> };
      return (body.results[0].series ?? []).flatMap((s) => s.values.map((v) => v[0]));
    };

    beforeAll(async () => {
      if (!haveInfluxd) return;
      server = await startInfluxd();
      const fx = await MasterFixture.open(dir.path);
      const gw = new GatewaySim('gw-1');
      const t0 = Date.UTC(2024, 10, 24, 10);
      const rows = [
        gw.reading('dev-1', 'temp', t0, 21.5), gw.reading('dev-2', 'temp', t0 + 60_000, 22.5),
        gw.reading('dev-1', 'hum', t0 + 120_000, 40), gw.reading('dev-2', 'hum', t0 + 3_600_000, 41),
      ];
      gw.closeEpoch();
      await fx.seal(rows);
      await gw.report(fx);
      await fx.close();
      // The sink as the compose cloud configures it, pointed at the test server (the 1.x write API: influxd 1.6.7).
      const influx = { ...cloudConfig.influx, url: server.url, api: 'v1' as const };
      const sink = createInfluxSink(influx, nullLogger(), new Registry());
      try {
        const r = await (await startBatchRun({ dataDir: dir.path, memoryLimit: '256MB', threads: 1, retainVersionsMs: 3600_000 }, { trigger: 'cli' }, { sinks: [sink] })).done;
        expect(Object.values(r.sinks).map((s) => s.outcome)).toEqual(['ok']);
      } finally { await sink.close(); }
      for (const m of await influxql('SHOW MEASUREMENTS')) {
        written.set(m, {
          tags: new Set(await influxql(`SHOW TAG KEYS FROM "${m}"`)),
          fields: new Set(await influxql(`SHOW FIELD KEYS FROM "${m}"`)),
        });
      }
    }, 120_000);
    afterAll(async () => {
      await server?.stop();
      dir.remove();
    });

    /** Every Flux text of a dashboard with where it is. */
    const queries = dashboards.flatMap((d) => [
      ...d.panels.flatMap((p) => p.targets.map((t) => ({ where: `panel "${p.title}"`, flux: t.query }))),
      ...d.templating.list.filter((v) => v.type === 'query').map((v) => ({ where: `variable ${v.name}`, flux: String(v.query) })),
    ]);

    (haveInfluxd ? it : it.skip)('the sink wrote every view, with its fields (mean/stddev derived) and tags', () => {
      expect([...written.keys()].sort()).toEqual([...VIEW_NAMES].sort());
      for (const [, w] of written) for (const f of POINT_FIELDS) expect(w.fields).toContain(f);
    });

    (haveInfluxd ? it : it.skip)('every measurement, field and tag a Flux query names exists as written', () => {
      expect(queries.length).toBeGreaterThanOrEqual(6);
      const problems: string[] = [];
      for (const { where, flux } of queries) {
        const measurements = [...flux.matchAll(/r\._measurement == "([^"]+)"/g)].map((m) => m[1]);
        expect({ where, measurements: measurements.length }).toEqual({ where, measurements: 1 });
        const w = written.get(measurements[0]);
        if (!w) { problems.push(`${where}: no measurement ${measurements[0]}`); continue; }
        for (const [, f] of flux.matchAll(/r\._field == "([^"]+)"/g)) {
          if (!w.fields.has(f) || ![...POINT_FIELDS, ...STRING_FIELDS].includes(f as never)) problems.push(`${where}: ${measurements[0]} has no field ${f}`);
        }
        const tags = [...flux.matchAll(/\br\.([A-Za-z][A-Za-z0-9_]*)\s*(?:==|=~|!=)/g), ...flux.matchAll(/\btag: "([^"]+)"/g), ...flux.matchAll(/group\(columns: \["([^"]+)"\]\)/g)]
          .map((m) => m[1]);
        for (const t of tags) if (!w.tags.has(t)) problems.push(`${where}: ${measurements[0]} has no tag ${t}`);
      }
      expect(problems).toEqual([]);
    });
  });
});

describe('Prometheus in the stack', () => {
  const config = parse(readText('deploy/compose/prometheus/prometheus.yml')) as {
    rule_files: string[];
    scrape_configs: Array<{ job_name: string; authorization?: { type: string; credentials_file: string }; static_configs?: Array<{ targets: string[] }>; file_sd_configs?: Array<{ files: string[] }> }>;
  };
  const configPath = prometheus.command!.find((c) => c.startsWith('--config.file='))!.split('=')[1];
  const mountOf = (target: string) => mounts(prometheus).find((m) => m.target === target);
  const cloudJson = readJson<{ http: { port: number } }>('deploy/compose/cloud.json');
  const job = (name: string) => config.scrape_configs.find((j) => j.job_name === name);
  const havePromtool = requireBinary('promtool', 'prometheus');

  it('reads its config, Braid\'s alert rules and the gateways list where compose mounts them', () => {
    expect(mountOf(configPath)).toEqual({ source: join(COMPOSE_DIR, 'prometheus/prometheus.yml'), target: configPath, bind: true });
    expect(config.rule_files).toEqual(['alerts.yml']);
    // Relative to the config file's dir in the container: the shipped rules, not a copy.
    expect(mountOf(join(dirname(configPath), 'alerts.yml'))?.source).toBe(join(ROOT, 'deploy/prometheus/alerts.yml'));
    for (const file of job('braid-gateway')!.file_sd_configs!.flatMap((f) => f.files)) expect(mountOf(file)?.bind).toBe(true);
    expect(mounts(prometheus)).toContainEqual({ source: 'prometheus-data', target: '/prometheus', bind: false });
    expect(prometheus.command).toContain('--storage.tsdb.path=/prometheus');
  });

  it('scrapes the cloud where it listens, with a read key from a mounted file kept out of git', () => {
    const cloudJob = job('braid-cloud')!;
    expect(cloudJob.static_configs!.flatMap((c) => c.targets)).toEqual([`cloud:${cloudJson.http.port}`]);
    expect(cloudJob.authorization?.type).toBe('Bearer');
    const keyFile = cloudJob.authorization!.credentials_file;
    const secrets = mounts(prometheus).find((m) => keyFile.startsWith(`${m.target}/`));
    expect(secrets?.bind).toBe(true);
    expect(readText(relative(ROOT, join(secrets!.source, '.gitignore'))).split('\n')).toEqual(expect.arrayContaining(['*', '!.gitignore']));
    // The compose file's header says how to make that key, into that file.
    expect(readText('deploy/compose/compose.yaml')).toContain(`> ${relative(COMPOSE_DIR, join(secrets!.source, keyFile.slice(secrets!.target.length + 1)))}`);
    // The job names the alert rules (up{job=~"braid-.*"}) and the operations dashboard select on.
    expect(config.scrape_configs.map((j) => j.job_name).sort()).toEqual(['braid-cloud', 'braid-gateway']);
  });

  (havePromtool ? it : it.skip)('passes promtool check config with the files as the container sees them', () => {
    // A copy of /etc/prometheus as mounted in the container, with a key file in place.
    const dir = tempDir('braid-prom-config-');
    try {
      const etc = dirname(configPath);
      for (const m of mounts(prometheus).filter((x) => x.bind && x.target.startsWith(`${etc}/`))) {
        cpSync(m.source, join(dir.path, m.target.slice(etc.length + 1)), { recursive: true });
      }
      writeFileSync(join(dir.path, 'secrets', 'braid-read-key'), 'brk_example\n');
      const text = readText('deploy/compose/prometheus/prometheus.yml').replaceAll(`${etc}/`, `${dir.path}/`);
      writeFileSync(join(dir.path, 'prometheus.yml'), text);
      const r = spawnSync('promtool', ['check', 'config', join(dir.path, 'prometheus.yml')], { encoding: 'utf8' });
      expect({ status: r.status, out: r.stdout + r.stderr }).toEqual({ status: 0, out: expect.stringContaining('SUCCESS') });
      expect(r.stdout).toMatch(/SUCCESS: \d+ rules found/);
    } finally { dir.remove(); }
  });

  describe('the operations dashboard', () => {
    const ds = (parse(readText('deploy/compose/grafana/provisioning/datasources/prometheus.yaml')) as { datasources: Array<{ uid: string; type: string; url: string; isDefault: boolean }> }).datasources;
    const [dashboard] = dashboardsOf('prometheus');
    /** Every PromQL text of the dashboard with where it is; a label_values() variable by its metric selector. */
    const exprs = [
      ...panelsOf(dashboard).flatMap((p) => p.targets.map((t) => ({ where: `panel "${p.title}"`, expr: t.expr }))),
      ...dashboard.templating.list.filter((v) => v.type === 'query').map((v) => {
        const q = typeof v.query === 'string' ? v.query : v.query.query;
        return { where: `variable ${v.name}`, expr: /^label_values\((.+),\s*\w+\)$/.exec(q)?.[1] ?? q };
      }),
    ];

    it('reads the stack\'s Prometheus through the provisioned datasource (InfluxDB stays the default)', () => {
      expect(ds).toHaveLength(1);
      expect(ds[0]).toMatchObject({ type: 'prometheus', isDefault: false });
      const url = new URL(ds[0].url);
      expect(url.hostname).toBe('prometheus');
      expect(prometheus.ports?.map(containerPort)).toEqual([Number(url.port)]);
      for (const p of panelsOf(dashboard)) {
        expect(p.datasource.uid).toBe(ds[0].uid);
        for (const t of p.targets) expect(t.datasource.uid).toBe(ds[0].uid);
      }
      for (const v of dashboard.templating.list.filter((x) => x.type === 'query')) expect(v.datasource?.uid).toBe(ds[0].uid);
      expect(exprs.length).toBeGreaterThanOrEqual(20);
    });

    (havePromtool ? it : it.skip)('every expression is PromQL that promtool accepts (Grafana\'s variables filled in)', () => {
      const dir = tempDir('braid-dash-promql-');
      try {
        const rules = exprs.map((e, i) => ({ record: `braid_dashboard:expr_${i}`, expr: e.expr.replaceAll('$__rate_interval', '1m').replaceAll('$gateway', '.*') }));
        writeFileSync(join(dir.path, 'rules.yml'), stringify({ groups: [{ name: 'dashboard', rules }] }));
        const r = spawnSync('promtool', ['check', 'rules', join(dir.path, 'rules.yml')], { encoding: 'utf8' });
        expect({ status: r.status, out: r.stdout + r.stderr }).toEqual({ status: 0, out: expect.stringContaining(`SUCCESS: ${rules.length} rules found`) });
      } finally { dir.remove(); }
    });

    describe('against a running gateway and cloud', () => {
      let live: LiveMetrics;
      beforeAll(async () => { live = await liveMetrics(); }, 30_000);

      it('every metric its PromQL reads is one they serve', () => {
        const known = sampleNamesOf(new Map([...live.families].map(([n, f]) => [n, f.type])));
        const unknown = exprs.flatMap(({ where, expr }) => {
          const names = promqlMetricNames(expr);
          return names.length === 0 ? [`${where}: reads no metric`] : names.filter((n) => !known.has(n)).map((n) => `${where}: ${n}`);
        });
        expect(unknown).toEqual([]);
      });

      it('shows the backlog, the link to the cloud, ingest, batch runs, views, contact age, processes and hosts', () => {
        const read = new Set(exprs.flatMap((e) => promqlMetricNames(e.expr)));
        const wanted = [
          'braid_outbox_pending_readings', 'braid_forward_last_success_timestamp_seconds', 'braid_speedpush_last_success_timestamp_seconds',
          'braid_ingest_readings_total', 'braid_ingest_rejected_total', 'braid_batch_runs_total', 'braid_views_age_seconds',
          'braid_gateway_last_contact_age_seconds', 'process_cpu_seconds_total', 'process_resident_memory_bytes',
          ...[...live.gateway.keys()].filter((n) => n.startsWith('braid_host_')),
        ];
        expect(wanted.filter((n) => !read.has(n))).toEqual([]);
      });
    });
  });
});
