/**
 * Gateway tokens and API keys: issued by `braid cloud gateway|key add` (printed as the last line),
 * stored as SHA-256 only, checked by requireRole (401 / 403, admin implies read), named by
 * GET /api/v1/whoami, never cached: a removed key or a rotated token stops working with the CLI's
 * commit, in every cloud process, on kept-alive connections too. A read key reads every route;
 * admin is for actions (POST /api/v1/batch/run).
 */
import { spawn } from 'node:child_process';
import { Agent, request } from 'node:http';
import { gzipSync } from 'node:zlib';
import { join, resolve } from 'node:path';
import { hashSecret } from '../../cloud/store/credentials.js';
import type { CloudPlugin } from '../../cloud/server.js';
import { type TestCloud, ingestBody, killAllChildClouds, makeReadings, queryCloudDb, spawnCloud, startTestCloud } from '../support/cloud.js';
import { tempDir } from '../support/gateway.js';
import { pushBody, startSpeedCloud } from './speed-fixtures.js';

const ROOT = resolve(import.meta.dirname, '../..');

interface Run { code: number | null; stdout: string; stderr: string }

function braid(args: string[]): Promise<Run> {
  return new Promise((res, rej) => {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BRAID_') && k !== 'NODE_OPTIONS') env[k] = v;
    const p = spawn(process.execPath, [join(ROOT, 'bin/braid.js'), ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    p.once('error', rej);
    p.once('close', (code) => res({ code, stdout, stderr }));
  });
}
const lastLine = (s: string) => s.trimEnd().split('\n').pop()!;

let dir: { path: string; remove: () => void };
let cloud: TestCloud | null = null;
beforeEach(() => { dir = tempDir('braid-auth-'); });
let closeApp: (() => Promise<void>) | null = null;

afterEach(async () => {
  await cloud?.close();
  cloud = null;
  await closeApp?.();
  closeApp = null;
  await killAllChildClouds();
  dir.remove();
});

/** Routes that need each role, for the matrix. */
const probes: CloudPlugin = (app, ctx) => {
  for (const role of ['read', 'admin', 'gateway'] as const) {
    app.get(`/test/${role}`, { preHandler: ctx.auth.requireRole(role) }, async (req) => ({ principal: req.principal }));
  }
};

async function get(path: string, secret?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${cloud!.url}${path}`, { headers: secret ? { authorization: `Bearer ${secret}` } : {} });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

test('CLI: gateway add/list/rotate/remove and key add/list/remove; secrets printed last, stored hashed', async () => {
  const added = await braid(['cloud', 'gateway', 'add', 'gw-1', '--data-dir', dir.path]);
  expect(added.code).toBe(0);
  const token = lastLine(added.stdout);
  expect(token).toMatch(/^bgt_[A-Za-z0-9_-]{43}$/);
  const key = lastLine((await braid(['cloud', 'key', 'add', 'ops', '--role', 'admin', '--data-dir', dir.path])).stdout);
  expect(key).toMatch(/^brk_[A-Za-z0-9_-]{43}$/);

  const gws = await queryCloudDb<{ id: string; token_hash: string }>(dir.path, 'SELECT id, token_hash FROM gateways');
  expect(gws).toEqual([{ id: 'gw-1', token_hash: hashSecret(token) }]);
  expect(JSON.stringify(await queryCloudDb(dir.path, 'SELECT * FROM api_keys'))).not.toContain(key);

  expect(JSON.parse(lastLine((await braid(['cloud', 'gateway', 'list', '--json', '--data-dir', dir.path])).stdout))).toEqual([{ id: 'gw-1', createdAt: expect.any(Number) }]);
  expect((await braid(['cloud', 'key', 'list', '--data-dir', dir.path])).stdout).toMatch(/^ops\tadmin\tcreated /);

  const dup = await braid(['cloud', 'gateway', 'add', 'gw-1', '--data-dir', dir.path]);
  expect({ code: dup.code, err: dup.stderr }).toEqual({ code: 1, err: expect.stringContaining('BRAID_ERR_CONFLICT') });
  const badRole = await braid(['cloud', 'key', 'add', 'x', '--role', 'root', '--data-dir', dir.path]);
  expect({ code: badRole.code, err: badRole.stderr }).toEqual({ code: 2, err: expect.stringContaining('role "root"') });
  const badId = await braid(['cloud', 'gateway', 'add', '../etc', '--data-dir', dir.path]);
  expect(badId.code).toBe(2);

  const rotated = lastLine((await braid(['cloud', 'gateway', 'rotate', 'gw-1', '--data-dir', dir.path])).stdout);
  expect(rotated).not.toBe(token);
  expect((await braid(['cloud', 'key', 'remove', 'ops', '--data-dir', dir.path])).code).toBe(0);
  expect((await braid(['cloud', 'gateway', 'remove', 'gw-1', '--data-dir', dir.path])).code).toBe(0);
  const gone = await braid(['cloud', 'key', 'remove', 'ops', '--data-dir', dir.path]);
  expect({ code: gone.code, err: gone.stderr }).toEqual({ code: 1, err: expect.stringContaining('BRAID_ERR_NOT_FOUND') });
  expect(await queryCloudDb(dir.path, 'SELECT * FROM gateways')).toEqual([]);
}, 60_000);

test('requireRole: 401 without a known bearer, 403 for the wrong role, admin implies read', async () => {
  const tok = lastLine((await braid(['cloud', 'gateway', 'add', 'gw-1', '--data-dir', dir.path])).stdout);
  const read = lastLine((await braid(['cloud', 'key', 'add', 'reader', '--role', 'read', '--data-dir', dir.path])).stdout);
  const admin = lastLine((await braid(['cloud', 'key', 'add', 'boss', '--role', 'admin', '--data-dir', dir.path])).stdout);
  cloud = await startTestCloud(dir.path, {}, { plugins: [probes] });

  const matrix: Array<[string | undefined, string, number, string | null]> = [
    [undefined, 'read', 401, 'BRAID_ERR_UNAUTHORIZED'],
    ['brk_nonsense', 'read', 401, 'BRAID_ERR_UNAUTHORIZED'],
    [read, 'read', 200, null], [read, 'admin', 403, 'BRAID_ERR_FORBIDDEN'], [read, 'gateway', 403, 'BRAID_ERR_FORBIDDEN'],
    [admin, 'read', 200, null], [admin, 'admin', 200, null], [admin, 'gateway', 403, 'BRAID_ERR_FORBIDDEN'],
    [tok, 'read', 403, 'BRAID_ERR_FORBIDDEN'], [tok, 'admin', 403, 'BRAID_ERR_FORBIDDEN'], [tok, 'gateway', 200, null],
  ];
  for (const [secret, role, status, code] of matrix) {
    const a = await get(`/test/${role}`, secret);
    expect({ role, status: a.status, code: a.body.code ?? null }).toEqual({ role, status, code });
  }
  expect((await get('/test/admin', admin)).body.principal).toEqual({ kind: 'key', name: 'boss', role: 'admin' });
  expect((await get('/test/gateway', tok)).body.principal).toEqual({ kind: 'gateway', gateway: 'gw-1' });

  // GET /api/v1/whoami: any known secret, answered with its owner (never the secret); 401 otherwise.
  expect(await get('/api/v1/whoami', read)).toEqual({ status: 200, body: { kind: 'key', name: 'reader', role: 'read' } });
  expect(await get('/api/v1/whoami', admin)).toEqual({ status: 200, body: { kind: 'key', name: 'boss', role: 'admin' } });
  expect(await get('/api/v1/whoami', tok)).toEqual({ status: 200, body: { kind: 'gateway', gateway: 'gw-1' } });
  for (const secret of [undefined, 'brk_nonsense', 'bgt_nonsense']) {
    const w = await get('/api/v1/whoami', secret);
    expect({ status: w.status, code: w.body.code }).toEqual({ status: 401, code: 'BRAID_ERR_UNAUTHORIZED' });
  }
  const malformed = await fetch(`${cloud.url}/api/v1/whoami`, { headers: { authorization: `Basic ${read}` } });
  expect({ status: malformed.status, www: malformed.headers.get('www-authenticate'), body: await malformed.json() })
    .toEqual({ status: 401, www: 'Bearer realm="braid"', body: { code: 'BRAID_ERR_UNAUTHORIZED', message: 'Authorization must be "Bearer <token>"' } });
}, 60_000);

test('every route takes a key but /healthz and the console\'s static files: a read key reads everything, admin is for actions', async () => {
  const read = lastLine((await braid(['cloud', 'key', 'add', 'scraper', '--role', 'read', '--data-dir', dir.path])).stdout);
  const tok = lastLine((await braid(['cloud', 'gateway', 'add', 'gw-1', '--data-dir', dir.path])).stdout);
  const admin = lastLine((await braid(['cloud', 'key', 'add', 'boss', '--role', 'admin', '--data-dir', dir.path])).stdout);
  const app = await startSpeedCloud(dir.path); // the whole cloud of `braid cloud`: console, query, batch routes
  closeApp = app.close;
  const status = async (path: string, secret?: string) => {
    const res = await fetch(`${app.url}${path}`, { headers: secret ? { authorization: `Bearer ${secret}` } : {} });
    return { path, status: res.status, type: res.headers.get('content-type')?.split(';')[0] ?? null, text: await res.text() };
  };
  expect(await status('/metrics')).toMatchObject({ status: 401, text: expect.stringContaining('BRAID_ERR_UNAUTHORIZED') });
  expect(await status('/metrics', tok)).toMatchObject({ status: 403 });
  const scraped = await status('/metrics', read);
  expect(scraped).toMatchObject({ status: 200, type: 'text/plain' });
  expect(scraped.text).toMatch(/^braid_ingest_requests_total|^# HELP braid_/m);
  expect(await status('/healthz')).toMatchObject({ status: 200 });
  expect(await status('/')).toMatchObject({ status: 200, type: 'text/html' });
  expect(await status('/api/v1/openapi.json')).toMatchObject({ status: 200 });
  const reads = ['/api/v1/devices', '/api/v1/gateways', '/api/v1/batch', `/api/v1/query?metric=temp&from=0&to=${3600_000}`, '/api/v1/whoami'];
  for (const path of [...reads, '/api/v1/query?metric=temp']) {
    expect(await status(path)).toMatchObject({ path, status: 401 });
  }
  // Every read route answers a read key and an admin key; a gateway token reads nothing but whoami.
  for (const path of reads) {
    for (const [who, secret] of [['read', read], ['admin', admin]]) expect({ who, ...(await status(path, secret)) }).toMatchObject({ who, path, status: 200 });
    expect(await status(path, tok)).toMatchObject({ path, status: path === '/api/v1/whoami' ? 200 : 403 });
  }
  // Starting a batch run is an action: admin only (the read key's 403 names the role it needs).
  const run = async (secret: string) => {
    const res = await fetch(`${app.url}/api/v1/batch/run`, { method: 'POST', headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' }, body: '{}' });
    return { status: res.status, body: await res.json() as Record<string, unknown> };
  };
  expect(await run(read)).toEqual({ status: 403, body: { code: 'BRAID_ERR_FORBIDDEN', message: 'this route needs an API key with role admin; the request has a read key' } });
  expect(await run(tok)).toMatchObject({ status: 403, body: { code: 'BRAID_ERR_FORBIDDEN' } });
  expect(await run(admin)).toMatchObject({ status: 202, body: { trigger: 'api' } });
}, 60_000);

/** One request on `agent` (keep-alive, one socket): its status and whether it went on a socket used before. */
function onAgent(agent: Agent, base: string, method: 'GET' | 'POST', path: string, secret: string, body?: unknown): Promise<{ status: number; reused: boolean }> {
  return new Promise((res, rej) => {
    const bytes = body === undefined ? undefined : gzipSync(JSON.stringify(body));
    const req = request(`${base}${path}`, {
      method, agent,
      headers: { authorization: `Bearer ${secret}`, ...(bytes ? { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': String(bytes.length) } : {}) },
    }, (r) => {
      r.resume();
      r.once('end', () => res({ status: r.statusCode ?? 0, reused: req.reusedSocket }));
    });
    req.once('error', rej);
    req.end(bytes);
  });
}

test('[INV-7] a removed key, a rotated and a removed token stop working at once: on a kept-alive connection, in this and in another cloud process', async () => {
  const tok = lastLine((await braid(['cloud', 'gateway', 'add', 'gw-1', '--data-dir', dir.path])).stdout);
  const key = lastLine((await braid(['cloud', 'key', 'add', 'temp', '--role', 'read', '--data-dir', dir.path])).stdout);
  // Two cloud processes on one data dir: this one (the whole cloud) and a real `braid cloud` child.
  const here = await startSpeedCloud(dir.path);
  closeApp = here.close;
  const child = await spawnCloud(dir.path);
  const clouds = [here.url, child.url];
  const agents = clouds.map(() => new Agent({ keepAlive: true, maxSockets: 1 }));
  try {
    let next = 1;
    const ingest = async (i: number, secret: string) => {
      const a = await onAgent(agents[i], clouds[i], 'POST', '/api/v1/ingest', secret, ingestBody('gw-1', makeReadings(next, next)));
      if (a.status === 200) next++;
      return a;
    };
    const whoami = (i: number, secret: string) => onAgent(agents[i], clouds[i], 'GET', '/api/v1/whoami', secret);
    const speed = (i: number, secret: string) => onAgent(agents[i], clouds[i], 'POST', '/api/v1/speed', secret, pushBody('gw-1', []));
    for (const i of [0, 1]) {
      expect(await whoami(i, key)).toMatchObject({ status: 200 });
      expect(await ingest(i, tok)).toMatchObject({ status: 200 });
      expect(await speed(i, tok)).toMatchObject({ status: 200, reused: true });
    }

    // Each change is made by another process; the very next request, on the same kept-alive socket, is refused.
    expect((await braid(['cloud', 'key', 'remove', 'temp', '--data-dir', dir.path])).code).toBe(0);
    let t0 = Date.now();
    for (const i of [0, 1]) expect(await whoami(i, key)).toEqual({ status: 401, reused: true });
    expect(Date.now() - t0).toBeLessThan(1000);

    const fresh = lastLine((await braid(['cloud', 'gateway', 'rotate', 'gw-1', '--data-dir', dir.path])).stdout);
    t0 = Date.now();
    for (const i of [0, 1]) {
      expect(await ingest(i, tok)).toEqual({ status: 401, reused: true });
      expect(await speed(i, tok)).toEqual({ status: 401, reused: true });
      expect(await ingest(i, fresh)).toEqual({ status: 200, reused: true });
    }
    expect(Date.now() - t0).toBeLessThan(1000);

    expect((await braid(['cloud', 'gateway', 'remove', 'gw-1', '--data-dir', dir.path])).code).toBe(0);
    t0 = Date.now();
    for (const i of [0, 1]) {
      expect(await ingest(i, fresh)).toEqual({ status: 401, reused: true });
      expect(await speed(i, fresh)).toEqual({ status: 401, reused: true });
    }
    expect(Date.now() - t0).toBeLessThan(1000);
  } finally {
    for (const a of agents) a.destroy();
    await child.stop('SIGTERM');
  }
}, 60_000);

test('braid cloud --check-config prints the resolved config; a bad key exits 2 naming it', async () => {
  const ok = await braid(['cloud', '--data-dir', dir.path, '--http-port', '0', '--check-config']);
  expect(ok.code).toBe(0);
  expect(JSON.parse(ok.stdout)).toMatchObject({ dataDir: dir.path, http: { port: 0 }, ingest: { groupCommitMs: 2 } });
  const bad = await braid(['cloud', '--data-dir', dir.path, '--http-port', '70000', '--check-config']);
  expect({ code: bad.code, err: bad.stderr }).toEqual({ code: 2, err: expect.stringContaining('config key "http.port"') });
}, 30_000);
