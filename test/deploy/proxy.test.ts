/**
 * deploy/nginx/braid-cloud.conf and deploy/caddy/Caddyfile: TLS in front of the cloud. Parsed and
 * held to the cloud's config (upstream = http.host:http.port of the example, body limit just above
 * ingest.maxBodyBytes, /metrics kept private, the name the gateway example points at); where nginx
 * is installed, `nginx -t` checks the file and a real nginx (the file with only ports and certificate
 * paths changed) proxies HTTP/2 and gzip ingest to a real cloud, with the cloud answering the 413s.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { get as httpGet, type IncomingMessage } from 'node:http';
import { request } from 'node:https';
import { connect } from 'node:http2';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { cloudConfigSchema } from '../../cloud/config.js';
import { gatewayConfigSchema } from '../../edge/config.js';
import { addApiKey } from '../../cloud/store/credentials.js';
import { openCloudDb } from '../../cloud/store/schema.js';
import { loadConfig } from '../../shared/config.js';
import { addGatewayToken, ingestBody, makeReadings, testCloudConfig, type TestCloud } from '../support/cloud.js';
import { createCloud } from '../../cloud/app.js';
import { nullLogger } from '../../shared/logger.js';
import { eventually, requireBinary, tempDir } from '../support/gateway.js';
import { freePort } from '../support/influx.js';
import { DEPLOY, readText } from './support.js';

const cloudExample = loadConfig(cloudConfigSchema, { file: join(DEPLOY, 'cloud.example.json'), env: {} });
const gatewayExample = loadConfig(gatewayConfigSchema, { file: join(DEPLOY, 'gateway.example.json'), env: {} });
const publicHost = new URL(gatewayExample.cloud.url!).hostname;
const upstream = `${cloudExample.http.host}:${cloudExample.http.port}`;
const nginxConf = readText('deploy/nginx/braid-cloud.conf');
const caddyfile = readText('deploy/caddy/Caddyfile');

/** nginx sizes: k and m are 1024-based. */
const nginxBytes = (s: string) => Number(s.slice(0, -1)) * 1024 ** ('km'.indexOf(s.slice(-1).toLowerCase()) + 1);
/** Caddy sizes (go-humanize): MB = 1000^2, MiB = 1024^2. */
const caddyBytes = (s: string) => {
  const m = /^(\d+)([KMG])(i?)B$/.exec(s)!;
  return Number(m[1]) * (m[3] ? 1024 : 1000) ** ('KMG'.indexOf(m[2]) + 1);
};
const directive = (text: string, name: string): string[] => [...text.matchAll(new RegExp(`^\\s*${name}\\s+([^;\\n]+);?$`, 'gm'))].map((m) => m[1].trim());

describe('nginx/braid-cloud.conf', () => {
  it('proxies to the example cloud\'s address, for the name the example gateway uses', () => {
    expect(/upstream braid_cloud \{\s*server ([^;]+);/.exec(nginxConf)?.[1]).toBe(upstream);
    expect(cloudExample.http.host).toBe('127.0.0.1'); // only the proxy reaches the cloud
    expect(new Set(directive(nginxConf, 'server_name'))).toEqual(new Set([publicHost]));
    expect(gatewayExample.cloud.url!.startsWith('https://')).toBe(true);
  });

  it('terminates TLS with HTTP/2 and sends plain HTTP to HTTPS', () => {
    expect(directive(nginxConf, 'listen')).toEqual(['80', '[::]:80', '443 ssl http2', '[::]:443 ssl http2']);
    expect(directive(nginxConf, 'ssl_protocols')).toEqual(['TLSv1.2 TLSv1.3']);
    expect(nginxConf).toContain('return 301 https://$host$request_uri;');
  });

  it('lets ingest batches through up to exactly ingest.maxBodyBytes (the gateway halves a batch on any 413)', () => {
    expect(nginxBytes(directive(nginxConf, 'client_max_body_size')[0])).toBe(cloudExample.ingest.maxBodyBytes);
    // Above the gateway's request timeout: nginx must not cut a slow ingest the gateway still waits for.
    expect(Number.parseInt(directive(nginxConf, 'proxy_read_timeout')[0], 10) * 1000).toBeGreaterThan(gatewayExample.cloud.requestTimeoutMs);
  });

  it('serves /metrics to private networks only', () => {
    const metrics = /location = \/metrics \{([^}]+)\}/.exec(nginxConf)?.[1] ?? '';
    expect(metrics).toContain('deny all;');
    expect(directive(metrics, 'allow')).toEqual(['127.0.0.1', '::1', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16']);
  });
});

describe('caddy/Caddyfile', () => {
  it('serves the example gateway\'s cloud name, proxies to the example cloud, body limit = ingest.maxBodyBytes, /metrics private', () => {
    expect(/^(\S+) \{$/m.exec(caddyfile)?.[1]).toBe(publicHost);
    expect(directive(caddyfile, 'reverse_proxy')).toEqual([upstream]);
    expect(caddyBytes(directive(caddyfile, 'max_size')[0])).toBe(cloudExample.ingest.maxBodyBytes);
    expect(caddyfile).toMatch(/@metrics_outside \{\s*path \/metrics\s*not remote_ip private_ranges\s*\}\s*respond @metrics_outside 403/);
  });
});

const haveNginx = requireBinary('nginx', 'nginx-light');
const haveOpenssl = haveNginx && requireBinary('openssl', 'openssl');

(haveOpenssl ? describe : describe.skip)('a real nginx with this file in front of a real cloud', () => {
  const dir = tempDir('braid-nginx-');
  let cloud: TestCloud;
  let nginx: ChildProcess | undefined;
  let nginxOut = '';
  let httpsPort = 0;
  let httpPort = 0;
  let ca: Buffer;
  let token = '';
  let readKey = '';

  /** The shipped file with only the listen ports, the upstream port and the certificate paths changed. */
  function testConfig(cloudPort: number): string {
    const site = nginxConf
      .replace(/listen \[::\]:\d+[^;]*;\n/g, '')
      .replace('listen 80;', `listen 127.0.0.1:${httpPort};`)
      .replace('listen 443 ssl http2;', `listen 127.0.0.1:${httpsPort} ssl http2;`)
      .replace(`server ${upstream};`, `server 127.0.0.1:${cloudPort};`)
      .replaceAll(`/etc/letsencrypt/live/${publicHost}/`, `${dir.path}/`);
    expect(site).not.toContain('/etc/letsencrypt');
    writeFileSync(join(dir.path, 'site.conf'), site);
    const tmp = join(dir.path, 'tmp');
    mkdirSync(tmp);
    chmodSync(tmp, 0o777); // workers run as nobody when the test runs as root; large bodies spill here
    writeFileSync(join(dir.path, 'nginx.conf'), [
      'daemon off;', `pid ${dir.path}/nginx.pid;`, `error_log ${dir.path}/error.log warn;`, 'worker_processes 1;', 'events {}',
      'http {', '  access_log off;', `  client_body_temp_path ${tmp}/body;`, `  proxy_temp_path ${tmp}/proxy;`,
      `  fastcgi_temp_path ${tmp}/f;`, `  uwsgi_temp_path ${tmp}/u;`, `  scgi_temp_path ${tmp}/s;`,
      `  include ${dir.path}/site.conf;`, '}', '',
    ].join('\n'));
    return join(dir.path, 'nginx.conf');
  }

  beforeAll(async () => {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', `/CN=${publicHost}`, '-addext', `subjectAltName=DNS:${publicHost}`,
      '-keyout', join(dir.path, 'privkey.pem'), '-out', join(dir.path, 'fullchain.pem')], { stdio: 'ignore' });
    chmodSync(dir.path, 0o755);
    ca = readFileSync(join(dir.path, 'fullchain.pem'));
    // The whole cloud as `braid cloud` builds it (API, OpenAPI, console), on a free loopback port.
    const cloudDir = join(dir.path, 'cloud');
    const app = createCloud(testCloudConfig(cloudDir), { logger: nullLogger() });
    const started = await app.server.start();
    cloud = { server: app.server, dir: cloudDir, url: started.url, port: started.port, close: () => app.server.close() };
    token = await addGatewayToken(cloud.dir, 'gw-tls');
    const db = await openCloudDb(join(cloud.dir, 'cloud.db'));
    try { readKey = await addApiKey(db, 'prometheus', 'read'); } finally { await db.close(); }
    [httpsPort, httpPort] = [await freePort(), await freePort()];
    const conf = testConfig(cloud.port);
    execFileSync('nginx', ['-t', '-q', '-p', dir.path, '-e', join(dir.path, 'error.log'), '-c', conf]);
    nginx = spawn('nginx', ['-p', dir.path, '-e', join(dir.path, 'error.log'), '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    nginx.stdout!.on('data', (d: Buffer) => { nginxOut += d; });
    nginx.stderr!.on('data', (d: Buffer) => { nginxOut += d; });
    await eventually(async () => (await get('/healthz').catch(() => ({ status: 0 }))).status === 200, 10_000);
  }, 60_000);

  afterAll(async () => {
    if (nginx && nginx.exitCode === null) {
      const exited = new Promise((res) => nginx!.once('exit', res));
      nginx.kill('SIGQUIT'); // graceful stop; the workers go with the master
      await exited;
    }
    await cloud?.close();
    dir.remove();
  });

  /** HTTPS/1.1 through nginx, verifying its certificate for the public name. */
  function send(method: string, path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, unknown>; text: string }> {
    return new Promise((res, rej) => {
      const req = request({ host: '127.0.0.1', port: httpsPort, servername: publicHost, ca, method, path, headers: { host: publicHost, ...headers } }, (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => res({ status: r.statusCode!, headers: r.headers, text: Buffer.concat(chunks).toString('utf8') }));
      });
      req.on('error', rej);
      req.end(body);
    });
  }
  const get = (path: string) => send('GET', path);

  it('answers over HTTP/2 with a certificate for the public name', async () => {
    const session = connect(`https://127.0.0.1:${httpsPort}`, { ca, servername: publicHost });
    try {
      const { status, text } = await new Promise<{ status: number; text: string }>((res, rej) => {
        const s = session.request({ ':path': '/healthz', ':authority': publicHost });
        let status = 0;
        let text = '';
        s.on('response', (h) => { status = Number(h[':status']); });
        s.on('data', (d: Buffer) => { text += d; });
        s.on('end', () => res({ status, text }));
        s.on('error', rej);
      });
      expect(session.alpnProtocol).toBe('h2');
      expect({ status, body: JSON.parse(text) }).toEqual({ status: 200, body: { status: 'ok', store: 'up' } });
    } finally { session.close(); }
  });

  it('passes a gzip ingest batch through to the cloud, which stores it', async () => {
    const body = gzipSync(JSON.stringify(ingestBody('gw-tls', makeReadings(1, 500))));
    const r = await send('POST', '/api/v1/ingest', body, { 'content-type': 'application/json', 'content-encoding': 'gzip', authorization: `Bearer ${token}` });
    expect({ status: r.status, body: JSON.parse(r.text) }).toEqual({ status: 200, body: { ackSeq: 500, stored: 500, duplicates: 0 } });
  });

  it('a batch of ingest.maxBodyBytes reaches the cloud; one byte more gets a 413 from nginx, never a 502', async () => {
    const auth = { 'content-type': 'application/json', 'content-encoding': 'gzip', authorization: `Bearer ${token}` };
    // At the limit: a gzip body of exactly maxBodyBytes (stored blocks, so its size is exact) that
    // is no JSON: nginx passes it, the cloud reads and inflates it whole and answers its own 400.
    const max = cloudExample.ingest.maxBodyBytes;
    const junk = (n: number) => gzipSync(Buffer.alloc(n, 'x'), { level: 0 });
    const body = junk(max - 4096 + (max - junk(max - 4096).length));
    expect(body.length).toBe(max);
    const atLimit = await send('POST', '/api/v1/ingest', body, auth);
    expect(atLimit.status).toBe(400);
    expect(JSON.parse(atLimit.text)).toMatchObject({ code: expect.stringMatching(/^BRAID_ERR_/) });
    for (let i = 0; i < 3; i++) {
      const over = await send('POST', '/api/v1/ingest', Buffer.alloc(cloudExample.ingest.maxBodyBytes + 1, 1), auth);
      expect(over.status).toBe(413);
    }
  });

  it('compresses JSON answers and serves /metrics to loopback; plain HTTP is redirected', async () => {
    const json = await send('GET', '/api/v1/openapi.json', undefined, { 'accept-encoding': 'gzip' });
    expect({ status: json.status, encoding: json.headers['content-encoding'] }).toEqual({ status: 200, encoding: 'gzip' });
    const metrics = await send('GET', '/metrics', undefined, { authorization: `Bearer ${readKey}` });
    expect(metrics.status).toBe(200);
    expect(metrics.text).toContain('# TYPE');
    // node:http, not fetch: fetch will not send another Host header.
    const plain = await new Promise<IncomingMessage>((res, rej) => {
      httpGet({ host: '127.0.0.1', port: httpPort, path: '/api/v1/devices', headers: { host: publicHost } }, (r) => { r.resume(); res(r); }).on('error', rej);
    });
    expect({ status: plain.statusCode, location: plain.headers.location }).toEqual({ status: 301, location: `https://${publicHost}/api/v1/devices` });
    expect(nginxOut).toBe('');
  });
});
