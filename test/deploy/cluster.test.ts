/**
 * Cluster mode's deploy files (docs/scale-out.md): the systemd template unit braid-cloud@.service
 * with deploy/cloud-cluster.env.example and cloud-cluster.example.json, the compose stack
 * deploy/compose/cluster.yaml (PostgreSQL 15, two nodes on one shared volume, nginx, Prometheus)
 * and deploy/nginx/braid-cluster.conf.
 *
 * Docker is not run here. What is checked: the YAML parses and agrees with itself and with the
 * files it mounts; every flag a node's command passes is one `braid cloud --help` lists, every
 * BRAID_* variable names a config key, the mounted config validates with the real loader and its
 * lint; the unit's and the compose nodes' `--check-config` pass against a real PostgreSQL 15 (the
 * store's reachability and schema version); the unit keeps braid-cloud.service's hardening and
 * passes `systemd-analyze verify`; the nginx file passes `nginx -t`, and a real nginx with it sends
 * an ingest POST that a node answers 503 (its store out of reach) to the next node, and keeps every
 * ingest acknowledged while one of two real cloud processes (one data dir) is killed with SIGKILL.
 *
 * Flags and keys of the cluster contract that the code does not have yet (CONTRACT_PENDING) are
 * accepted while, and only while, the code lacks them: once a flag is in `--help` or a key in the
 * schema, it is checked like any other.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse } from 'yaml';
import { cloudConfigSchema } from '../../cloud/config.js';
import { gatewayConfigSchema } from '../../edge/config.js';
import { keyDocs } from '../../bin/gen-config-docs.js';
import { CLOUD_RULES } from '../../bin/commands/config-lint.js';
import { runCheck } from '../../bin/commands/check-config.js';
import { envName, loadConfig } from '../../shared/config.js';
import { addGatewayToken, ingestBody, makeReadings, postIngest, queryCloudDb, spawnCloud, killAllChildClouds, type ChildCloud } from '../support/cloud.js';
import { eventually, requireBinary, tempDir } from '../support/gateway.js';
import { HttpScript } from '../support/http-script.js';
import { freePort } from '../support/influx.js';
import { havePostgres, startPostgres, type TestPostgres } from '../support/postgres.js';
import { DEPLOY, ROOT, braid, envFile, parseUnit, readJson, readText, run } from './support.js';

const COMPOSE_DIR = join(ROOT, 'deploy/compose');

/** What the cluster contract names that the code may not have yet: accepted only while absent. */
const CONTRACT_PENDING = { flags: [] as string[], keys: ['store.leaseMs'] };

const KEYS = new Map(keyDocs(cloudConfigSchema).map((d) => [d.key, d]));
const ENV_NAMES = new Set([...KEYS.values()].map((d) => d.env));
const pendingKeys = CONTRACT_PENDING.keys.filter((k) => !KEYS.has(k));
const pendingEnv = new Set(pendingKeys.map((k) => envName(k.split('.'))));

/** The long flags `braid cloud --help` lists. */
let helpFlags: Set<string>;
/** A flag the code does not take yet but the contract names. */
const pendingFlag = (f: string) => CONTRACT_PENDING.flags.includes(f) && !helpFlags.has(f);
/** The flags a command may pass: the help's, and pending ones. */
const knownFlag = (f: string) => helpFlags.has(f) || pendingFlag(f);
/** `args` without the pending flags (and their values), to run them today. */
const runnable = (args: string[]) => args.filter((a, i) => !pendingFlag(a) && !(i > 0 && pendingFlag(args[i - 1])));
/** A BRAID_* variable names a config key (or a pending one). */
const knownEnv = (name: string) => ENV_NAMES.has(name) || pendingEnv.has(name);

beforeAll(async () => {
  const r = await braid(['cloud', '--help']);
  expect(r.code).toBe(0);
  helpFlags = new Set([...r.stdout.matchAll(/(?:^|[\s,])(--[a-z][a-z-]*)/gm)].map((m) => m[1]));
  expect([...helpFlags]).toEqual(expect.arrayContaining(['--config', '--data-dir', '--store', '--check-config']));
});

// ---------------------------------------------------------------------------------------------
// compose/cluster.yaml

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
const composeText = readText('deploy/compose/cluster.yaml');
const compose = parse(composeText) as { name: string; services: Record<string, Service>; volumes: Record<string, unknown> };
const { postgres, nginx, prometheus } = compose.services;
const NODES = ['cloud-1', 'cloud-2'] as const;
const nodes = NODES.map((n) => compose.services[n]);

const dotEnv = Object.fromEntries(Object.entries(envFile('deploy/compose/.env.example')).map(([k, v]) => [k, v || `value-of-${k}`]));
/** `${VAR:?msg}` and `${VAR:-default}` as compose reads them, from .env.example with each value filled in. */
function interpolate(s: string, env: Record<string, string> = dotEnv): string {
  return s.replace(/\$\{([A-Z_][A-Z0-9_]*)(?::([?-])([^}]*))?\}/g, (_m, name: string, op?: string, arg?: string) => {
    const v = env[name];
    if (v !== undefined && v !== '') return v;
    if (op === '-') return arg ?? '';
    throw new Error(`cluster.yaml needs ${name}, which .env.example does not name`);
  });
}
function mounts(s: Service): Array<{ source: string; target: string; bind: boolean }> {
  return (s.volumes ?? []).map((v) => {
    const [source, target] = v.split(':');
    const bind = source.startsWith('.') || source.startsWith('/');
    return { source: bind ? join(COMPOSE_DIR, source) : source, target, bind };
  });
}
const containerPort = (mapping: string) => Number(mapping.split(':').pop());
/** The value after `flag` in a command. */
const flagValue = (cmd: string[], flag: string) => cmd[cmd.indexOf(flag) + 1];

const clusterJson = readJson<{ dataDir: string; http: { port: number }; ingest: { maxBodyBytes: number } }>('deploy/compose/cluster-cloud.json');

describe('compose/cluster.yaml', () => {
  it('has PostgreSQL 15, two cloud nodes, nginx and Prometheus; every variable it needs is in .env.example', () => {
    expect(compose.name).toBe('braid-cluster'); // not `braid`: its volumes are not the one-node stack's
    expect(Object.keys(compose.services).sort()).toEqual(['cloud-1', 'cloud-2', 'nginx', 'postgres', 'prometheus']);
    expect(postgres.image).toMatch(/^postgres:15(\.\d+)?(-bookworm)?$/);
    expect(nginx.image).toMatch(/^nginx:1\.\d+/);
    expect(prometheus.image).toMatch(/^prom\/prometheus:v\d+\.\d+\.\d+$/);
    for (const s of Object.values(compose.services)) for (const v of Object.values(s.environment ?? {})) interpolate(String(v));
  });

  it('the nodes are identical: one image built from the repository with compose/Dockerfile, the same command, config and store', () => {
    const [a, b] = nodes;
    expect(join(COMPOSE_DIR, a.build!.context)).toBe(ROOT);
    expect(join(COMPOSE_DIR, a.build!.context, a.build!.dockerfile)).toBe(join(COMPOSE_DIR, 'Dockerfile'));
    expect(b.build).toBeUndefined();
    expect(b.image).toBe(a.image);
    expect(b.depends_on?.['cloud-1']).toEqual({ condition: 'service_started' });
    expect(b.command).toEqual(a.command);
    expect(b.environment).toEqual(a.environment);
    for (const n of nodes) {
      expect(n.depends_on?.postgres).toEqual({ condition: 'service_healthy' });
      expect(n.ports).toBeUndefined(); // reached through nginx only
    }
  });

  it('declares every named volume it uses; bind mounts name files that exist', () => {
    const used = Object.values(compose.services).flatMap((s) => mounts(s)).filter((m) => !m.bind).map((m) => m.source);
    expect([...new Set(used)].sort()).toEqual(Object.keys(compose.volumes).sort());
    for (const m of Object.values(compose.services).flatMap((s) => mounts(s)).filter((x) => x.bind)) expect([m.source, existsSync(m.source)]).toEqual([m.source, true]);
  });

  it('both nodes mount one shared volume at the config\'s dataDir, and a cache volume of their own at --cache-dir, outside it', () => {
    const configPath = flagValue(nodes[0].command!, '--config');
    const cacheDir = flagValue(nodes[0].command!, '--cache-dir');
    expect(cacheDir.startsWith(`${clusterJson.dataDir}/`)).toBe(false);
    const shared = nodes.map((n) => mounts(n).find((m) => m.target === clusterJson.dataDir));
    expect(shared[0]).toMatchObject({ bind: false });
    expect(shared[1]).toEqual(shared[0]);
    const caches = nodes.map((n) => mounts(n).find((m) => m.target === cacheDir));
    expect(caches.map((c) => c?.bind)).toEqual([false, false]);
    expect(caches[0]!.source).not.toBe(caches[1]!.source);
    // No other service mounts a node's cache; only the nodes mount the shared volume.
    for (const [name, s] of Object.entries(compose.services)) {
      for (const m of mounts(s)) {
        if (caches.some((c) => c!.source === m.source)) expect(NODES.indexOf(name as never)).toBe(caches.findIndex((c) => c!.source === m.source));
        if (m.source === shared[0]!.source) expect(NODES).toContain(name);
      }
    }
    for (const n of nodes) expect(mounts(n)).toContainEqual({ source: join(COMPOSE_DIR, 'cluster-cloud.json'), target: configPath, bind: true });
    // A new named volume takes the ownership of the image's directory: the image makes both for its user.
    const dockerfile = readText('deploy/compose/Dockerfile');
    const chown = /^RUN mkdir -p .* && chown node:node (.+)$/m.exec(dockerfile)?.[1].split(' ');
    expect(chown).toEqual(expect.arrayContaining([clusterJson.dataDir, cacheDir]));
  });

  it('the nodes\' store is the postgres service, as its user, database and password', () => {
    const url = new URL(interpolate(nodes[0].environment!.BRAID_STORE_URL));
    expect(url.protocol).toBe('postgres:');
    expect(url.hostname).toBe('postgres');
    expect(url.port).toBe('5432');
    expect(url.username).toBe(postgres.environment!.POSTGRES_USER);
    expect(url.pathname).toBe(`/${postgres.environment!.POSTGRES_DB}`);
    expect(decodeURIComponent(url.password)).toBe(interpolate(postgres.environment!.POSTGRES_PASSWORD));
    expect(postgres.healthcheck?.test).toEqual(['CMD', 'pg_isready', '-U', postgres.environment!.POSTGRES_USER, '-d', postgres.environment!.POSTGRES_DB]);
    expect(mounts(postgres)).toContainEqual({ source: 'postgres-data', target: '/var/lib/postgresql/data', bind: false });
  });

  it('the nodes\' commands use flags braid cloud --help lists, their environment names config keys', () => {
    for (const n of nodes) {
      const [sub, ...args] = n.command!;
      expect(sub).toBe('cloud');
      const flags = args.filter((a) => a.startsWith('--'));
      expect(flags.length).toBeGreaterThan(1);
      expect(flags.filter((f) => !knownFlag(f))).toEqual([]);
      expect(Object.keys(n.environment!).filter((e) => e.startsWith('BRAID_') && !knownEnv(e))).toEqual([]);
    }
  });

  it('the mounted config validates and passes the lint with the nodes\' environment', () => {
    const env = Object.fromEntries(Object.entries(nodes[0].environment!).map(([k, v]) => [k, interpolate(v)]));
    const file = join(COMPOSE_DIR, 'cluster-cloud.json');
    const dir = tempDir('braid-cluster-compose-');
    try {
      // As the node runs it: its --cache-dir flag (the lint checks it is not under the shared dataDir).
      const flags = { dataDir: dir.path, cacheDir: flagValue(nodes[0].command!, '--cache-dir') };
      const r = runCheck(cloudConfigSchema, CLOUD_RULES, () => loadConfig(cloudConfigSchema, { file, env, flags }), { file, flags, env });
      expect(r.error).toBeUndefined();
      expect(r.findings.filter((f) => !(f.key && pendingEnv.has(f.key)))).toEqual([]);
      const config = loadConfig(cloudConfigSchema, { file, env, flags });
      expect(config.store.url).toBe(env.BRAID_STORE_URL);
      expect(config.http.host).toBe('0.0.0.0'); // nginx and Prometheus reach it over the compose network
      expect(config.batch.cron).not.toBeNull(); // on every node: one run per slot (batch_slots)
    } finally { dir.remove(); }
  });
});

// ---------------------------------------------------------------------------------------------
// The braid commands the deploy docs run in a container, both stacks

describe('`docker compose exec ... bin/braid.js` commands in deploy/ (both stacks)', () => {
  const stacks: Record<string, { services: Record<string, Service> }> = {
    'compose.yaml': parse(readText('deploy/compose/compose.yaml')) as { services: Record<string, Service> },
    'cluster.yaml': compose,
  };
  const pages = ['deploy/README.md', 'deploy/compose/compose.yaml', 'deploy/compose/cluster.yaml', 'deploy/compose/prometheus/prometheus.yml', 'deploy/compose/prometheus/cluster.yml'];

  it('pass --config with the file the service mounts: the image\'s working dir is not its data dir', () => {
    const found: string[] = [];
    for (const page of pages) {
      for (const m of readText(page).matchAll(/docker compose (?:-f (\S+) )?exec (?:-T )?(\S+) node bin\/braid\.js ([^\n`#|\\]+)/g)) {
        const stack = stacks[m[1] ?? 'compose.yaml'];
        const service = stack.services[m[2]];
        expect({ page, service: m[2], exists: service !== undefined }).toEqual({ page, service: m[2], exists: true });
        const args = m[3].trim().split(/\s+/);
        const config = args[args.indexOf('--config') + 1];
        const mounted = mounts(service).find((x) => x.target === (args.includes('--config') ? config : undefined));
        expect({ page, command: m[0], config: mounted?.source.endsWith('.json') ?? false }).toEqual({ page, command: m[0], config: true });
        found.push(`${page}: ${args.slice(0, 2).join(' ')}`);
      }
    }
    expect(found.length).toBeGreaterThanOrEqual(12);
  });
});

// ---------------------------------------------------------------------------------------------
// nginx/braid-cluster.conf

const nginxConf = readText('deploy/nginx/braid-cluster.conf');
const directive = (text: string, name: string): string[] => [...text.matchAll(new RegExp(`^\\s*${name}\\s+([^;\\n]+);?$`, 'gm'))].map((m) => m[1].trim());
const nginxBytes = (s: string) => Number(s.slice(0, -1)) * 1024 ** ('km'.indexOf(s.slice(-1).toLowerCase()) + 1);
const upstreamBlock = /upstream braid_cluster \{([^}]+)\}/.exec(nginxConf)?.[1] ?? '';
const retryLocation = /location ~ \^\/api\/v1\/\(ingest\|speed\)\$ \{([^}]+)\}/.exec(nginxConf)?.[1] ?? '';
const gatewayDefaults = loadConfig(gatewayConfigSchema, { file: join(DEPLOY, 'gateway.example.json'), env: {} });

describe('nginx/braid-cluster.conf', () => {
  it('balances over both compose nodes at their port, each with passive health checks', () => {
    const servers = directive(upstreamBlock, 'server');
    expect(servers).toEqual(NODES.map((n) => `${n}:${clusterJson.http.port} max_fails=3 fail_timeout=10s`));
    expect(directive(upstreamBlock, 'keepalive')).toEqual(['32']);
  });

  it('is the compose nginx\'s site, in front of both nodes once they are healthy', () => {
    expect(mounts(nginx)).toEqual([{ source: join(DEPLOY, 'nginx/braid-cluster.conf'), target: '/etc/nginx/conf.d/default.conf', bind: true }]);
    expect(nginx.depends_on).toEqual(Object.fromEntries(NODES.map((n) => [n, { condition: 'service_healthy' }])));
    expect(directive(nginxConf, 'listen')).toEqual(['80', '[::]:80']);
    expect(nginx.ports?.map(containerPort)).toEqual([80]);
  });

  it('retries an ingest or speed POST on the next node on error, timeout or 503, saying why that is safe', () => {
    expect(directive(retryLocation, 'proxy_next_upstream')).toEqual(['error timeout http_503 non_idempotent']);
    expect(directive(retryLocation, 'proxy_next_upstream_tries')).toEqual([String(NODES.length)]);
    expect(Number.parseInt(directive(retryLocation, 'proxy_next_upstream_timeout')[0], 10) * 1000).toBeLessThan(gatewayDefaults.cloud.requestTimeoutMs);
    expect(directive(retryLocation, 'proxy_pass')).toEqual(['http://braid_cluster']);
    // The comment before it says why a POST may be sent twice.
    const before = nginxConf.slice(0, nginxConf.indexOf('location ~ ^/api/v1/(ingest|speed)$'));
    expect(before.slice(before.lastIndexOf('\n\n'))).toMatch(/idempotent on \(gateway, seq\)[\s\S]*upsert/);
  });

  it('lets batches through up to ingest.maxBodyBytes, outwaits the gateway, keeps /metrics to the per-node scrapes', () => {
    expect(nginxBytes(directive(nginxConf, 'client_max_body_size')[0])).toBe(clusterJson.ingest.maxBodyBytes);
    expect(Number.parseInt(directive(nginxConf, 'proxy_read_timeout')[0], 10) * 1000).toBeGreaterThan(gatewayDefaults.cloud.requestTimeoutMs);
    expect(/location = \/metrics \{([^}]+)\}/.exec(nginxConf)?.[1].trim()).toBe('deny all;');
  });
});

// ---------------------------------------------------------------------------------------------
// prometheus/cluster.yml

describe('prometheus/cluster.yml', () => {
  const config = parse(readText('deploy/compose/prometheus/cluster.yml')) as {
    rule_files: string[]; scrape_configs: Array<{ job_name: string; authorization?: { type: string; credentials_file: string }; static_configs?: Array<{ targets: string[] }>; file_sd_configs?: Array<{ files: string[] }> }>;
  };
  const configPath = prometheus.command!.find((c) => c.startsWith('--config.file='))!.split('=')[1];
  const havePromtool = requireBinary('promtool', 'prometheus');

  it('scrapes every node on its own address with a read key, and the gateways, with Braid\'s alert rules', () => {
    expect(mounts(prometheus).find((m) => m.target === configPath)?.source).toBe(join(COMPOSE_DIR, 'prometheus/cluster.yml'));
    expect(config.scrape_configs.map((j) => j.job_name).sort()).toEqual(['braid-cloud', 'braid-gateway']);
    const cloud = config.scrape_configs.find((j) => j.job_name === 'braid-cloud')!;
    expect(cloud.static_configs!.flatMap((c) => c.targets)).toEqual(NODES.map((n) => `${n}:${clusterJson.http.port}`));
    expect(cloud.authorization?.type).toBe('Bearer');
    expect(mounts(prometheus).find((m) => cloud.authorization!.credentials_file.startsWith(`${m.target}/`))?.bind).toBe(true);
    expect(config.rule_files).toEqual(['alerts.yml']);
    expect(mounts(prometheus).find((m) => m.target === join(dirname(configPath), 'alerts.yml'))?.source).toBe(join(DEPLOY, 'prometheus/alerts.yml'));
    for (const file of config.scrape_configs.find((j) => j.job_name === 'braid-gateway')!.file_sd_configs!.flatMap((f) => f.files)) {
      expect(mounts(prometheus).find((m) => m.target === file)?.bind).toBe(true);
    }
  });

  (havePromtool ? it : it.skip)('passes promtool check config with the files as the container sees them', () => {
    const dir = tempDir('braid-prom-cluster-');
    try {
      const etc = dirname(configPath);
      for (const m of mounts(prometheus).filter((x) => x.bind && x.target.startsWith(`${etc}/`))) {
        cpSync(m.source, join(dir.path, m.target.slice(etc.length + 1)), { recursive: true });
      }
      writeFileSync(join(dir.path, 'secrets', 'braid-read-key'), 'brk_example\n');
      writeFileSync(join(dir.path, 'prometheus.yml'), readText('deploy/compose/prometheus/cluster.yml').replaceAll(`${etc}/`, `${dir.path}/`));
      const r = spawnSync('promtool', ['check', 'config', join(dir.path, 'prometheus.yml')], { encoding: 'utf8' });
      expect({ status: r.status, out: r.stdout + r.stderr }).toEqual({ status: 0, out: expect.stringMatching(/SUCCESS: \d+ rules found/) });
    } finally { dir.remove(); }
  });
});

// ---------------------------------------------------------------------------------------------
// braid-cloud@.service

const unitText = readText('deploy/braid-cloud@.service');
const unit = parseUnit(unitText);
const single = parseUnit(readText('deploy/braid-cloud.service'));
const exampleJson = readJson<{ dataDir: string; http: { port: number } }>('deploy/cloud-cluster.example.json');
const nodeEnv = envFile('deploy/cloud-cluster.env.example');
/** A unit's command line with systemd's specifiers and `$$` resolved for instance `node`. */
const resolved = (line: string, node: string) => line.replaceAll('%i', node).replaceAll('$$', '$');

describe('braid-cloud@.service', () => {
  const svc = unit.Service;
  /** The [Service] keys in which a node differs from the one-node unit (each asserted below). */
  const NODE_KEYS = ['SyslogIdentifier', 'Environment', 'CacheDirectory', 'CacheDirectoryMode', 'EnvironmentFile', 'ExecStartPre', 'ReadWritePaths', 'StateDirectory', 'StateDirectoryMode', 'RestartSec'];

  it('is braid-cloud.service with the same command, exit-2 rule, limits and hardening, but for the node\'s files', () => {
    const keys = new Set([...Object.keys(svc), ...Object.keys(single.Service)].filter((k) => !NODE_KEYS.includes(k)));
    expect(keys.size).toBeGreaterThan(30);
    for (const k of keys) expect({ k, v: svc[k] }).toEqual({ k, v: single.Service[k] });
    expect(unit.Install).toEqual(single.Install);
    for (const k of ['After', 'Wants']) expect({ k, v: unit.Unit[k] }).toEqual({ k, v: single.Unit[k] });
    // Everything the one-node unit's environment sets, and the cache dir.
    expect(svc.Environment).toEqual([...single.Service.Environment, 'BRAID_CACHE_DIR=/var/cache/braid/%i']);
  });

  it('keeps trying to start while PostgreSQL is out of reach: no start limit, a restart every few seconds', () => {
    // The one-node unit gives up after a burst; a node must come back by itself after a site outage
    // in which the database returns last (its --check-config exits 1 until then).
    expect(Number(single.Unit.StartLimitBurst[0])).toBeGreaterThan(1);
    expect(unit.Unit.StartLimitIntervalSec).toEqual(['0']);
    expect(unit.Unit.StartLimitBurst).toBeUndefined();
    expect(svc.Restart).toEqual(['on-failure']);
    expect(svc.RestartSec).toEqual(['5s']);
  });

  it('writes only the shared data dir of the example config and a cache dir of its own, after the mount is up', () => {
    expect(svc.ReadWritePaths).toEqual([exampleJson.dataDir]);
    expect(unit.Unit.RequiresMountsFor).toEqual([exampleJson.dataDir]);
    expect(svc.StateDirectory).toBeUndefined(); // nothing of a node's lives in /var/lib
    // The cache dir systemd creates (CacheDirectory= is under /var/cache) is the one the node is told.
    expect(`/var/cache/${svc.CacheDirectory[0]}`).toBe('/var/cache/braid/%i');
    const cacheEnv = svc.Environment.find((e) => e.startsWith('BRAID_CACHE_DIR='))!;
    expect(knownEnv(cacheEnv.split('=')[0])).toBe(true);
    expect(cacheEnv.startsWith(`BRAID_CACHE_DIR=${exampleJson.dataDir}`)).toBe(false);
    expect(svc.SyslogIdentifier).toEqual(['braid-cloud@%i']);
  });

  it('reads the host\'s shared secrets, then the node\'s own file, whose example names only config keys', () => {
    expect(svc.EnvironmentFile).toEqual(['-/etc/braid/cloud.env', '/etc/braid/cloud-%i.env']);
    expect(Object.keys(nodeEnv).sort()).toEqual(['BRAID_HTTP_HOST', 'BRAID_HTTP_PORT', 'BRAID_STORE_URL']);
    const commented = [...readText('deploy/cloud-cluster.env.example').matchAll(/^#(BRAID_[A-Z_]+)=/gm)].map((m) => m[1]);
    for (const n of [...Object.keys(nodeEnv), ...commented]) expect({ n, known: knownEnv(n) }).toEqual({ n, known: true });
    expect(nodeEnv.BRAID_STORE_URL).toMatch(/^postgres:\/\//);
    expect(KEYS.get('store.url')?.env).toBe('BRAID_STORE_URL');
  });

  it('refuses to start without a postgres:// store (SQLite on shared storage), naming the node\'s file', async () => {
    const [guard, check] = svc.ExecStartPre;
    expect(check).toBe(`${svc.ExecStart[0]} --check-config`);
    const argv = /^\/bin\/sh -c '(.*)'$/.exec(guard)?.[1];
    expect(argv).toBeDefined();
    const sh = (env: Record<string, string>) => run('/bin/sh', ['-c', resolved(argv!, 'node-1')], env);
    for (const env of [{}, { BRAID_STORE_URL: 'sqlite' }, { BRAID_STORE_URL: '' }] as Array<Record<string, string>>) {
      const r = await sh(env);
      expect({ code: r.code, err: r.stderr.trim() }).toEqual({ code: 2, err: 'BRAID_STORE_URL in /etc/braid/cloud-node-1.env must be a postgres:// URL (cluster mode)' });
    }
    for (const url of [nodeEnv.BRAID_STORE_URL, 'postgresql://braid@db/braid']) expect((await sh({ BRAID_STORE_URL: url })).code).toBe(0);
  });

  const haveSystemd = requireBinary('systemd-analyze', 'systemd');
  (haveSystemd ? it : it.skip)('an instance passes systemd-analyze verify, and security rates it below 2 of 10', async () => {
    const tmp = tempDir('braid-verify-node-');
    try {
      const target = join(tmp.path, 'braid-cloud@node-1.service');
      writeFileSync(target, existsSync('/usr/bin/node') ? unitText : unitText.replaceAll('/usr/bin/node', process.execPath));
      const verify = await run('systemd-analyze', ['verify', target]);
      expect({ code: verify.code, out: verify.stdout + verify.stderr }).toEqual({ code: 0, out: '' });
      const security = await run('systemd-analyze', ['security', '--offline=yes', '--threshold=20', target]);
      expect(security.stdout).toMatch(/Overall exposure level for braid-cloud@node-1\.service: 1\.\d OK/);
      expect(security.code).toBe(0);
    } finally { tmp.remove(); }
  });
});

// ---------------------------------------------------------------------------------------------
// --check-config of a unit instance and of a compose node against a real PostgreSQL 15

(havePostgres() ? describe : describe.skip)('--check-config of a node against a real PostgreSQL 15', () => {
  let pg: TestPostgres;
  let n = 0;
  beforeAll(async () => { pg = await startPostgres(); }, 60_000);
  afterAll(async () => { await pg?.stop(); });

  /** The unit's ExecStartPre check for instance node-1, the example files installed, BRAID_STORE_URL = `url`. */
  async function unitCheck(url: string) {
    const data = tempDir('braid-node-data-');
    try {
      const argv = resolved(unit.Service.ExecStartPre[1], 'node-1').split(' ')
        .map((a) => a.replace('/opt/braid', ROOT).replace('/etc/braid/cloud.json', join(DEPLOY, 'cloud-cluster.example.json')));
      expect(argv[0]).toBe('/usr/bin/node');
      const unitEnv = Object.fromEntries(unit.Service.Environment.map((e) => resolved(e, 'node-1').split('=', 2) as [string, string]));
      // The shared dir stands in for /srv/braid (ReadWritePaths): the example's dataDir, moved to a temp dir.
      return await run(process.execPath, argv.slice(1), { ...unitEnv, ...nodeEnv, BRAID_STORE_URL: url, BRAID_DATA_DIR: data.path });
    } finally { data.remove(); }
  }

  it('the unit\'s ExecStartPre passes with the example files on a fresh database (to be migrated at start), the password never printed', async () => {
    const url = (await pg.createDatabase(`unit_${++n}`)).replace('postgres://braid@', 'postgres://braid:s3cret-pw@');
    const r = await unitCheck(url);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^config OK/m);
    expect(r.stderr).toMatch(/^store: PostgreSQL .* schema 0, will be migrated to \d+ at start/m);
    expect(r.stdout + r.stderr).not.toContain('s3cret-pw');
    // Warnings only for what the contract names and the code does not have yet.
    const warnings = [...r.stderr.matchAll(/^warning \[[\w-]+\] (\S+):/gm)].map((m) => m[1]);
    expect(warnings.filter((w) => !pendingEnv.has(w))).toEqual([]);
  });

  it('fails it, exit 1 naming the server, while PostgreSQL is out of reach', async () => {
    const r = await unitCheck(`postgres://braid@127.0.0.1:${await freePort()}/braid`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/store: PostgreSQL postgres:\/\/braid@127\.0\.0\.1:\d+\/braid unreachable/);
  });

  it('a compose node\'s command with --check-config passes on a fresh database', async () => {
    const node = compose.services['cloud-1'];
    const url = await pg.createDatabase(`compose_${++n}`);
    const data = tempDir('braid-compose-node-');
    try {
      const args = runnable(node.command!).map((a) => (a === flagValue(node.command!, '--config') ? join(COMPOSE_DIR, 'cluster-cloud.json') : a));
      const r = await braid([...args, '--data-dir', data.path, '--check-config'], { BRAID_STORE_URL: url });
      expect({ code: r.code, err: r.stderr }).toEqual({ code: 0, err: expect.stringMatching(/^config OK/m) });
      expect(r.stderr).toMatch(/^store: PostgreSQL .* will be migrated/m);
    } finally { data.remove(); }
  });
  it('the header\'s gateway and key commands, run as a node runs them, land in PostgreSQL for every node', async () => {
    const node = compose.services['cloud-1'];
    const url = await pg.createDatabase(`creds_${++n}`);
    const configPath = flagValue(node.command!, '--config');
    const cmds = [...composeText.matchAll(/^#\s+docker compose -f cluster\.yaml exec (?:-T )?(cloud-\d) node bin\/braid\.js (.+?)(?:\s+\\)?(?:\s+#.*)?$/gm)]
      .map((m) => ({ service: m[1], args: m[2].trim().split(/\s+/) }));
    expect(cmds.map((c) => c.args.slice(0, 3).join(' '))).toEqual(['cloud gateway add', 'cloud key add', 'cloud key add']);
    const env = { ...Object.fromEntries(Object.entries(node.environment!).map(([k, v]) => [k, interpolate(v)])), BRAID_STORE_URL: url };
    const data = tempDir('braid-compose-creds-');
    try {
      let last = '';
      for (const c of cmds) {
        expect(c.service).toBe('cloud-1');
        // Each flag is one that subcommand's --help lists.
        const help = await braid([...c.args.slice(0, 3), '--help']);
        const subFlags = new Set([...help.stdout.matchAll(/(?:^|[\s,])(--[a-z][a-z-]*)/gm)].map((f) => f[1]));
        expect(c.args.filter((a) => a.startsWith('--') && !subFlags.has(a) && !pendingFlag(a))).toEqual([]);
        // The data dir is the shared volume in the container; a temp dir stands in for it here.
        const r = await braid(c.args.map((a) => (a === configPath ? join(COMPOSE_DIR, 'cluster-cloud.json') : a)), { ...env, BRAID_DATA_DIR: data.path });
        expect({ args: c.args.join(' '), code: r.code, err: r.stderr }).toEqual({ args: c.args.join(' '), code: 0, err: '' });
        last = r.stdout.trim().split('\n').pop() ?? '';
      }
      expect(last).toMatch(/^\S{20,}$/); // `| tail -n 1`: the read key alone, for Prometheus' file
      // Another node (any process on that store) sees them.
      const gateways = await braid(['cloud', 'gateway', 'list', '--store', url, '--data-dir', data.path]);
      expect(gateways.stdout).toContain('gw-site-01');
      const keys = await braid(['cloud', 'key', 'list', '--store', url, '--data-dir', data.path]);
      expect(keys.stdout).toMatch(/ops[\s\S]*admin|admin[\s\S]*ops/);
      expect(keys.stdout).toContain('prometheus');
    } finally { data.remove(); }
  });
});

// ---------------------------------------------------------------------------------------------
// A real nginx with braid-cluster.conf

const haveNginx = requireBinary('nginx', 'nginx-light');

(haveNginx ? describe : describe.skip)('a real nginx with braid-cluster.conf in front of two nodes', () => {
  let dir: { path: string; remove: () => void };
  let proc: ChildProcess | undefined;
  let out = '';
  let port = 0;

  /** Start nginx with the shipped file, only its listen port and upstream addresses changed. */
  async function startNginx(upstreams: string[]): Promise<string> {
    port = await freePort();
    let site = nginxConf.replace(/listen \[::\]:\d+;\n/g, '').replace('listen 80;', `listen 127.0.0.1:${port};`);
    NODES.forEach((n, i) => { site = site.replace(`server ${n}:${clusterJson.http.port} `, `server ${upstreams[i]} `); });
    expect(site).not.toMatch(/cloud-\d:/);
    writeFileSync(join(dir.path, 'site.conf'), site);
    const tmp = join(dir.path, 'tmp');
    mkdirSync(tmp, { recursive: true });
    chmodSync(tmp, 0o777); // workers run as nobody when the test runs as root; bodies may spill here
    chmodSync(dir.path, 0o755);
    const conf = join(dir.path, 'nginx.conf');
    writeFileSync(conf, [
      'daemon off;', `pid ${dir.path}/nginx.pid;`, `error_log ${dir.path}/error.log warn;`, 'worker_processes 1;', 'events {}',
      'http {', '  access_log off;', `  client_body_temp_path ${tmp}/body;`, `  proxy_temp_path ${tmp}/proxy;`,
      `  fastcgi_temp_path ${tmp}/f;`, `  uwsgi_temp_path ${tmp}/u;`, `  scgi_temp_path ${tmp}/s;`,
      `  include ${dir.path}/site.conf;`, '}', '',
    ].join('\n'));
    execFileSync('nginx', ['-t', '-q', '-p', dir.path, '-e', join(dir.path, 'error.log'), '-c', conf]);
    proc = spawn('nginx', ['-p', dir.path, '-e', join(dir.path, 'error.log'), '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout!.on('data', (d: Buffer) => { out += d; });
    proc.stderr!.on('data', (d: Buffer) => { out += d; });
    const url = `http://127.0.0.1:${port}`;
    await eventually(async () => (await fetch(`${url}/healthz`).then((r) => r.status, () => 0)) === 200, 10_000);
    return url;
  }

  beforeEach(() => { dir = tempDir('braid-nginx-cluster-'); out = ''; });
  afterEach(async () => {
    if (proc && proc.exitCode === null) {
      const exited = new Promise((res) => proc!.once('exit', res));
      proc.kill('SIGQUIT');
      await exited;
    }
    proc = undefined;
    await killAllChildClouds();
    dir.remove();
  });

  it('an ingest POST that a node answers 503 (its store out of reach) is stored by the next node', async () => {
    const data = join(dir.path, 'cloud');
    const cloud = await spawnCloud(data);
    const token = await addGatewayToken(data, 'gw-1');
    // The first node: every request answered as a node whose PostgreSQL is down answers it.
    const down = await HttpScript.start((_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ code: 'BRAID_ERR_STORE_UNAVAILABLE', message: 'store unavailable' }));
    });
    try {
      const url = await startNginx([down.url.replace('http://', ''), cloud.url.replace('http://', '')]);
      // Round robin starts anywhere: several batches, so that some go to the 503 node first.
      let seq = 0;
      for (let i = 0; i < 6; i++) {
        const r = await postIngest(url, token, ingestBody('gw-1', makeReadings(seq + 1, seq + 50)));
        seq += 50;
        expect({ status: r.status, body: r.body }).toEqual({ status: 200, body: { ackSeq: seq, stored: 50, duplicates: 0 } });
      }
      const posts = down.requests.filter((q) => q.method === 'POST' && q.url === '/api/v1/ingest');
      expect(posts.length).toBeGreaterThan(0); // those were retried on the live node
      const rows = await queryCloudDb<{ n: number }>(data, 'SELECT count(*) AS n FROM received WHERE gateway = ?', ['gw-1']);
      expect(rows[0].n).toBeGreaterThan(0);
    } finally { await down.close(); }
  }, 60_000);

  it('every ingest is acknowledged while one of two nodes is killed with SIGKILL, each seq stored once', async () => {
    const data = join(dir.path, 'cloud');
    const nodes: ChildCloud[] = [await spawnCloud(data), await spawnCloud(data)];
    const token = await addGatewayToken(data, 'gw-k');
    const url = await startNginx(nodes.map((c) => c.url.replace('http://', '')));
    const per = 200;
    const total = 20;
    let stored = 0;
    for (let i = 0; i < total; i++) {
      if (i === total / 2) {
        await nodes[0].stop('SIGKILL');
      }
      const r = await postIngest(url, token, ingestBody('gw-k', makeReadings(i * per + 1, (i + 1) * per)));
      expect({ i, status: r.status, ackSeq: r.body.ackSeq }).toEqual({ i, status: 200, ackSeq: (i + 1) * per });
      stored += Number(r.body.stored);
    }
    expect(stored).toBe(total * per);
    // The same batches again, through nginx: all duplicates, nothing stored twice [INV-2].
    for (let i = 0; i < total; i += 5) {
      const r = await postIngest(url, token, ingestBody('gw-k', makeReadings(i * per + 1, (i + 1) * per)));
      expect({ status: r.status, body: r.body }).toEqual({ status: 200, body: { ackSeq: (i + 1) * per, stored: 0, duplicates: per } });
    }
    const [held] = await queryCloudDb<{ seqs: number; lo: number; hi: number }>(data,
      'SELECT sum(to_seq - from_seq + 1) AS seqs, min(from_seq) AS lo, max(to_seq) AS hi FROM received WHERE gateway = ?', ['gw-k']);
    expect(held).toEqual({ seqs: total * per, lo: 1, hi: total * per });
    expect(out).toBe('');
  }, 90_000);
});

