/**
 * `braid gateway|cloud|batch run --check-config`: loads the config exactly as the run would, prints
 * it with secrets redacted and `config OK`, exits 0; a bad value or a lint error exits 2 naming the
 * key; nothing is started and the data dir is not touched.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cloudConfigSchema } from '../../cloud/config.js';
import { gatewayConfigSchema } from '../../edge/config.js';
import { loadConfig } from '../../shared/config.js';
import { CLOUD_RULES, GATEWAY_RULES, type Finding } from '../../bin/commands/config-lint.js';
import { runCheck, type CheckResult } from '../../bin/commands/check-config.js';
import { requireBinary } from '../support/gateway.js';
import { braid } from './support.js';

let dir = '';
beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'braid-check-')); });
afterEach(() => { rmSync(dir, { recursive: true, force: true }); });

function file(name: string, content: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

/** The lint in-process, the config loaded from `flags` (as key paths) and `env` only. */
function gatewayCheck(flags: Record<string, unknown>, env: Record<string, string> = {}): CheckResult {
  const f = { dataDir: join(dir, 'gw'), ...flags };
  return runCheck(gatewayConfigSchema, GATEWAY_RULES, () => loadConfig(gatewayConfigSchema, { env, flags: f }), { flags: f, env });
}
function cloudCheck(flags: Record<string, unknown>, env: Record<string, string> = {}): CheckResult {
  const f = { dataDir: join(dir, 'cloud'), ...flags };
  return runCheck(cloudConfigSchema, CLOUD_RULES, () => loadConfig(cloudConfigSchema, { env, flags: f }), { flags: f, env });
}
const rules = (r: CheckResult) => r.findings.map((f: Finding) => `${f.level} ${f.rule} ${f.key}`);

describe('braid gateway --check-config (as operators and ExecStartPre run it)', () => {
  it('prints the effective config from file < env < flags with the token redacted, says config OK, exits 0, creates nothing', async () => {
    const data = join(dir, 'data');
    const cfg = file('gw.json', { id: 'gw-file', dataDir: data, cloud: { url: 'https://cloud.example.com' } });
    const r = await braid(['gateway', '--config', cfg, '--check-config', '--mqtt-port', '1999'], { BRAID_CLOUD_TOKEN: 'tok-very-secret', BRAID_HTTP_PORT: '8181' });
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.stdout) as { id: string; mqtt: { port: number }; http: { port: number }; cloud: { token: string } };
    expect(printed).toMatchObject({ id: 'gw-file', dataDir: data, mqtt: { port: 1999 }, http: { port: 8181 }, cloud: { url: 'https://cloud.example.com', token: '[set]' } });
    expect(r.stdout + r.stderr).not.toContain('tok-very-secret');
    expect(r.stderr).toContain(`file ${cfg}`);
    expect(r.stderr).toContain('environment BRAID_CLOUD_TOKEN, BRAID_HTTP_PORT');
    expect(r.stderr).toContain('flags for mqtt.port');
    expect(r.stderr.trim().split('\n').pop()).toBe('config OK');
    expect(existsSync(data)).toBe(false); // never touches the data dir
  });

  it('exits 2 listing every lint error with its rule and key; warnings alone still pass', async () => {
    const bad = await braid(['gateway', '--check-config', '--data-dir', join(dir, 'd'), '--ws-port', '8080', '--cloud-url', 'http://10.1.2.3:8000']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('error [port-clash] http.port: port 8080 is also mqtt.wsPort');
    expect(bad.stderr).toContain('error [cloud-token] cloud.token:');
    expect(bad.stderr).toContain('warning [cloud-plaintext] cloud.url:');
    expect(bad.stderr).toMatch(/config has 2 errors and 1 warning \(exit 2\)\n$/);

    const warned = await braid(['gateway', '--check-config', '--data-dir', join(dir, 'd'), '--token', 't'], { BRAID_MQTT_PROT: '1884' });
    expect(warned.code).toBe(0);
    expect(warned.stderr).toContain('warning [unknown-env] BRAID_MQTT_PROT');
    expect(warned.stderr).toContain('warning [cloud-token-unused] cloud.url');
    expect(warned.stderr).toMatch(/config OK \(2 warnings\)\n$/);
  });

  it('`--check-config json` prints one object: ok, the redacted config, findings and sources', async () => {
    const r = await braid(['gateway', '--check-config', 'json', '--data-dir', join(dir, 'd'), '--mqtt-port', '8080'], { BRAID_CLOUD_TOKEN: 's3cret' });
    expect(r.code).toBe(2);
    const out = JSON.parse(r.stdout) as CheckResult;
    expect(out).toMatchObject({
      ok: false,
      config: { mqtt: { port: 8080 }, cloud: { token: '[set]' } },
      findings: [
        { level: 'error', rule: 'port-clash', key: 'http.port', message: 'port 8080 is also mqtt.port' },
        { level: 'warning', rule: 'cloud-token-unused', key: 'cloud.url' },
      ],
      sources: { file: null, env: ['BRAID_CLOUD_TOKEN'], flags: ['dataDir', 'mqtt.port'] },
    });
    expect(r.stdout).not.toContain('s3cret');
  });

  it('a bad value exits 2 naming the key and its source, in text and in JSON', async () => {
    const [text, json] = await Promise.all([
      braid(['gateway', '--check-config'], { BRAID_SPEED_RETENTION_MINUTES: '60' }),
      braid(['gateway', '--check-config', 'json'], { BRAID_SPEED_RETENTION_MINUTES: '60' }),
    ]);
    expect(text).toMatchObject({ code: 2, stdout: '' });
    expect(text.stderr).toContain('config key "speed.retentionMinutes"');
    expect(text.stderr).toContain('environment BRAID_SPEED_RETENTION_MINUTES');
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, config: null, error: expect.stringContaining('"speed.retentionMinutes"') });
  });

  it('refuses an unknown format', async () => {
    const r = await braid(['gateway', '--check-config', 'yaml']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Allowed choices are text, json');
  });
});

describe('braid cloud --check-config and braid batch run --check-config', () => {
  it('cloud: an invalid batch.cron is an error naming it; influx secrets and a URL password are redacted', async () => {
    const cfg = file('cloud.json', { dataDir: join(dir, 'c'), influx: { url: 'http://writer:pw-in-url@influx.local:8086', api: 'v1', username: 'writer' } });
    const ok = await braid(['cloud', '--config', cfg, '--check-config'], { BRAID_INFLUX_PASSWORD: 'pw-in-env', BRAID_INFLUX_TOKEN: 'tok-in-env' });
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ influx: { url: 'http://writer:%5Bset%5D@influx.local:8086/', password: '[set]', token: '[set]', username: 'writer' } });
    expect(ok.stdout + ok.stderr).not.toMatch(/pw-in-url|pw-in-env|tok-in-env/);

    const bad = await braid(['cloud', '--config', cfg, '--check-config'], { BRAID_BATCH_CRON: '61 2 * * *' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('error [cron] batch.cron: "61 2 * * *" is not a cron expression: 61 is a invalid expression for minute');
    expect(existsSync(join(dir, 'c'))).toBe(false);

    // `json` is the option's value, not a subcommand of `braid cloud`.
    const json = await braid(['cloud', '--check-config', 'json', '--config', cfg]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, sources: { file: cfg }, findings: [] });
  });

  it('batch run: checks instead of running (no cloud.db, no lock), --json works as for the result', async () => {
    const data = join(dir, 'c');
    const r = await braid(['batch', 'run', '--data-dir', data, '--check-config', '--json', '--memory-limit', '1GB']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, config: { dataDir: data, batch: { memoryLimit: '1GB' } }, findings: [] });
    expect(existsSync(data)).toBe(false);
    const viewStore = await braid(['batch', 'run', '--data-dir', data, '--check-config'], { BRAID_QUERY_VIEW_STORE: 'influx' });
    expect(viewStore.code).toBe(2);
    expect(viewStore.stderr).toContain('error [view-store] query.viewStore');
  });
});

describe('the lint rules', () => {
  it('port clashes: only where the hosts overlap, never for port 0', () => {
    expect(rules(gatewayCheck({ mqtt: { wsPort: 1883 } }))).toEqual(['error port-clash mqtt.wsPort']);
    expect(rules(gatewayCheck({ mqtt: { port: 0, wsPort: 0 }, http: { port: 0 } }))).toEqual([]);
    // 127.0.0.1 and 10.0.0.1 are different sockets; 0.0.0.0 covers both.
    expect(rules(gatewayCheck({ mqtt: { host: '127.0.0.1', port: 9000 }, http: { host: '10.0.0.1', port: 9000 } }))).toEqual([]);
    expect(rules(gatewayCheck({ mqtt: { host: '127.0.0.1', port: 9000 }, http: { host: '0.0.0.0', port: 9000 } }))).toEqual(['error port-clash http.port']);
  });

  it('the data dir: a file where the directory should be is an error; a missing one under a writable parent is fine', () => {
    const f = file('not-a-dir', 'x');
    expect(rules(gatewayCheck({ dataDir: f }))).toEqual(['error data-dir dataDir']);
    expect(rules(gatewayCheck({ dataDir: join(f, 'below') }))).toEqual(['error data-dir dataDir']);
    expect(rules(gatewayCheck({ dataDir: join(dir, 'a', 'b', 'c') }))).toEqual([]);
    expect(rules(cloudCheck({ dataDir: f }))).toEqual(['error data-dir dataDir']);
  });

  it('cron expressions: invalid is an error, 6 fields a warning (seconds first)', () => {
    expect(rules(gatewayCheck({ speed: { pruneCron: 'every 5 minutes' } }))).toEqual(['error cron speed.pruneCron']);
    expect(rules(gatewayCheck({ speed: { pruneCron: '*/5 * * * * *' } }))).toEqual(['warning cron-seconds speed.pruneCron']);
    expect(rules(cloudCheck({ batch: { cron: null } }))).toEqual([]);
  });

  it('cross-key warnings', () => {
    expect(rules(gatewayCheck({ mqtt: { maxPayloadBytes: 1_000_000 }, outbox: { epochIdleMs: 60_000 }, cloud: { retryInitialMs: 90_000 } })))
      .toEqual(['warning payload-over-packet mqtt.maxPayloadBytes', 'warning epoch-idle outbox.epochIdleMs', 'warning retry-order cloud.retryInitialMs']);
    expect(rules(gatewayCheck({ mqtt: { ratePerDevice: 500 } }))).toEqual(['warning burst-below-rate mqtt.rateBurst']);
    expect(rules(cloudCheck({ batch: { memoryLimit: '64TiB' }, ingest: { maxBodyBytes: 100_000_000 } })))
      .toEqual(['warning memory-limit batch.memoryLimit', 'warning body-limits ingest.maxBodyBytes']);
    expect(rules(cloudCheck({ influx: { url: 'http://influx:8086', api: 'v2' } }))).toEqual(['warning influx-token influx.token']);
    expect(rules(cloudCheck({ influx: { url: 'http://influx:8086', api: 'v2' } }, { BRAID_INFLUX_TOKEN: 't' }))).toEqual([]);
    expect(rules(gatewayCheck({ cloud: { url: 'http://127.0.0.1:8000', token: 't' } }))).toEqual([]);
  });

  it('cluster mode: node-local files must not go to the shared data dir', () => {
    const store = { url: 'postgres://braid@db.internal:5432/braid' };
    const data = join(dir, 'shared');
    expect(rules(cloudCheck({ dataDir: data, store }))).toEqual(['warning cluster-cache-dir cacheDir']);
    expect(rules(cloudCheck({ dataDir: data, store, cacheDir: join(data, 'cache') }))).toEqual(['warning cluster-cache-dir cacheDir']);
    expect(rules(cloudCheck({ dataDir: data, store, cacheDir: data }))).toEqual(['warning cluster-cache-dir cacheDir']);
    expect(rules(cloudCheck({ dataDir: data, store, cacheDir: join(dir, 'local-cache') }))).toEqual([]);
    expect(rules(cloudCheck({ dataDir: data, store, cacheDir: join(dir, 'shared-cache') }))).toEqual([]); // a sibling, not inside
    expect(rules(cloudCheck({ dataDir: data }))).toEqual([]); // the embedded store: the data dir is local
  });

  describe('TLS files (openssl makes real certificates)', () => {
    const haveOpenssl = requireBinary('openssl', 'openssl');
    const cert = (name: string, days: number) => {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=gw.example',
        '-days', String(days), '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.crt`)], { stdio: 'ignore' });
      return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
    };
    const tls = (c: { cert: string; key: string }) => ({ mqtt: { tlsPort: 8883, tlsCert: c.cert, tlsKey: c.key } });

    (haveOpenssl ? it : it.skip)('a matching pair passes; a wrong key, a missing file, a non-PEM file and a near expiry are caught', () => {
      const a = cert('a', 365);
      const b = cert('b', 365);
      expect(rules(gatewayCheck(tls(a)))).toEqual([]);
      expect(rules(gatewayCheck(tls({ cert: a.cert, key: b.key })))).toEqual(['error tls-files mqtt.tlsKey']);
      expect(gatewayCheck(tls({ cert: a.cert, key: b.key })).findings[0].message).toContain('is not the private key of the certificate');
      expect(rules(gatewayCheck(tls({ cert: join(dir, 'missing.crt'), key: a.key })))).toEqual(['error tls-files mqtt.tlsCert']);
      expect(rules(gatewayCheck(tls({ cert: a.key, key: a.key })))).toEqual(['error tls-files mqtt.tlsCert']);
      expect(rules(gatewayCheck(tls(cert('soon', 5))))).toEqual(['warning tls-expiry mqtt.tlsCert']);
      expect(rules(gatewayCheck({ mqtt: { tlsPort: 8883 } }))).toEqual(['error tls-incomplete mqtt.tlsCert', 'error tls-incomplete mqtt.tlsKey']);
      expect(rules(gatewayCheck({ mqtt: { tlsCert: a.cert, tlsKey: a.key } }))).toEqual(['warning tls-unused mqtt.tlsPort']);
      expect(readdirSync(dir).sort()).toEqual(['a.crt', 'a.key', 'b.crt', 'b.key', 'soon.crt', 'soon.key']);
    });
  });
});
