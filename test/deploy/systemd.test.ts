/**
 * deploy/braid-{gateway,cloud}.service: what an SRE installs. The units are parsed and their key
 * options asserted (user, state directory = the example's dataDir, config check before start,
 * restart policy, limits, hardening); `systemd-analyze verify` and `security` judge them where
 * systemd is installed; and the ExecStartPre line itself is run against the example config.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cloudConfigSchema } from '../../cloud/config.js';
import { gatewayConfigSchema } from '../../edge/config.js';
import { envName } from '../../shared/config.js';
import { keyDocs } from '../../bin/gen-config-docs.js';
import { requireBinary } from '../support/gateway.js';
import { DEPLOY, ROOT, envFile, parseUnit, readJson, readText, run } from './support.js';

/** systemd sizes: K, M, G, T are powers of 1024. */
const unitBytes = (s: string) => Number(s.slice(0, -1)) * 1024 ** ('KMGT'.indexOf(s.slice(-1)) + 1);
/** DuckDB sizes as batch.memoryLimit takes them (GB = 1000^3, GiB = 1024^3). */
const duckBytes = (s: string) => {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B$/i.exec(s)!;
  return Number(m[1]) * (m[3] ? 1024 : 1000) ** ('KMGT'.indexOf(m[2].toUpperCase()) + 1);
};

const units = [
  ['gateway', gatewayConfigSchema],
  ['cloud', cloudConfigSchema],
] as const;

describe.each(units)('braid-%s.service', (name, schema) => {
  const path = join(DEPLOY, `braid-${name}.service`);
  const unit = parseUnit(readText(`deploy/braid-${name}.service`));
  const svc = unit.Service;
  const one = (key: string) => {
    expect({ key, values: svc[key]?.length }).toEqual({ key, values: 1 });
    return svc[key][0];
  };
  const example = readJson<{ dataDir: string }>(`deploy/${name}.example.json`);

  it('runs braid as a dedicated user with the config in /etc/braid and the data in its state directory', () => {
    expect(one('User')).toBe('braid');
    expect(one('Group')).toBe('braid');
    const sysusers = readText('deploy/braid.sysusers.conf').split('\n').find((l) => l.startsWith('u '));
    expect(sysusers?.split(/\s+/)[1]).toBe('braid');
    expect(one('ExecStart')).toBe(`/usr/bin/node /opt/braid/bin/braid.js ${name} --config /etc/braid/${name}.json`);
    // The example config's dataDir is exactly the directory systemd creates and lets the service write.
    expect(`/var/lib/${one('StateDirectory')}`).toBe(example.dataDir);
    expect(one('ConfigurationDirectory')).toBe('braid');
    expect(unit.Install.WantedBy).toEqual(['multi-user.target']);
    expect(unit.Unit.After).toContain('network-online.target');
  });

  it('checks the config before every start, with the same command line', () => {
    expect(one('ExecStartPre')).toBe(`${one('ExecStart')} --check-config`);
  });

  it('keeps secrets in an optional environment file whose example names only secret keys', () => {
    expect(one('EnvironmentFile')).toBe(`-/etc/braid/${name}.env`);
    const secretEnv = keyDocs(schema).filter((d) => d.secret).map((d) => d.env);
    const named = [
      ...Object.keys(envFile(`deploy/${name}.env.example`)),
      ...[...readText(`deploy/${name}.env.example`).matchAll(/^#(BRAID_[A-Z_]+)=/gm)].map((m) => m[1]),
    ];
    expect(named.length).toBeGreaterThan(0);
    for (const n of named) expect(secretEnv).toContain(n);
  });

  it('restarts on failure, but not for a bad config (exit 2), with a start limit', () => {
    expect(one('Restart')).toBe('on-failure');
    expect(one('RestartPreventExitStatus')).toBe('2');
    expect(Number(unit.Unit.StartLimitBurst[0])).toBeGreaterThan(1);
    expect(Number(unit.Unit.StartLimitIntervalSec[0])).toBeGreaterThan(0);
    expect(one('KillSignal')).toBe('SIGTERM');
    expect(Number(one('TimeoutStopSec'))).toBeGreaterThanOrEqual(30);
  });

  it('sets limits: file descriptors for many connections, memory', () => {
    expect(Number(one('LimitNOFILE'))).toBeGreaterThanOrEqual(65536);
    expect(unitBytes(one('MemoryHigh'))).toBeLessThan(unitBytes(one('MemoryMax')));
    if (name === 'cloud') {
      // DuckDB spills past batch.memoryLimit: the service's own limit must leave it room.
      const { batch } = readJson<{ batch: { memoryLimit: string } }>('deploy/cloud.example.json');
      expect(unitBytes(one('MemoryHigh'))).toBeGreaterThan(duckBytes(batch.memoryLimit));
    }
  });

  it('is hardened', () => {
    expect(svc).toMatchObject({
      NoNewPrivileges: ['yes'], ProtectSystem: ['strict'], ProtectHome: ['yes'], PrivateTmp: ['yes'], PrivateDevices: ['yes'],
      CapabilityBoundingSet: [''], AmbientCapabilities: [''], RestrictAddressFamilies: ['AF_INET AF_INET6 AF_UNIX'],
      RestrictNamespaces: ['yes'], RestrictSUIDSGID: ['yes'], LockPersonality: ['yes'], ProtectKernelTunables: ['yes'],
      ProtectKernelModules: ['yes'], ProtectControlGroups: ['yes'], SystemCallArchitectures: ['native'],
    });
    expect(svc.SystemCallFilter).toEqual(['@system-service', '~@privileged']);
    // V8's JIT needs writable executable memory; the health endpoint reads /proc/stat and /proc/meminfo.
    expect(svc.MemoryDenyWriteExecute).toBeUndefined();
    expect(svc.ProcSubset).toBeUndefined();
    // The one writable path is the state directory: no ReadWritePaths escape hatch by default.
    expect(svc.ReadWritePaths).toBeUndefined();
  });

  it('its ExecStartPre passes on the example config with the secrets file filled in', async () => {
    const data = mkdtempSync(join(tmpdir(), 'braid-unit-'));
    try {
      const argv = one('ExecStartPre').split(' ')
        .map((a) => a.replace('/opt/braid', ROOT).replace(`/etc/braid/${name}.json`, join(DEPLOY, `${name}.example.json`)));
      expect(argv[0]).toBe('/usr/bin/node');
      const secrets = Object.fromEntries(Object.keys(envFile(`deploy/${name}.env.example`)).map((k) => [k, 'from-env-file']));
      const r = await run(process.execPath, argv.slice(1), { ...secrets, [envName(['dataDir'])]: data });
      expect({ code: r.code, last: r.stderr.trim().split('\n').pop() }).toEqual({ code: 0, last: 'config OK' });
      expect(r.stdout).not.toContain('from-env-file');
    } finally {
      rmSync(data, { recursive: true, force: true });
    }
  });

  const haveSystemd = requireBinary('systemd-analyze', 'systemd');
  (haveSystemd ? it : it.skip)('passes systemd-analyze verify, and security rates its exposure below 2 of 10', async () => {
    // verify wants ExecStart's binary to exist: where node lives elsewhere (nvm), a copy points at it.
    let target = path;
    const tmp = mkdtempSync(join(tmpdir(), 'braid-verify-'));
    if (!existsSync('/usr/bin/node')) {
      target = join(tmp, `braid-${name}.service`);
      writeFileSync(target, readText(`deploy/braid-${name}.service`).replaceAll('/usr/bin/node', process.execPath));
    }
    const verify = await run('systemd-analyze', ['verify', target]);
    expect({ code: verify.code, out: verify.stdout + verify.stderr }).toEqual({ code: 0, out: '' });
    // --threshold is the exposure on systemd's 0-100 scale (shown as 0.0-10.0).
    const security = await run('systemd-analyze', ['security', '--offline=yes', '--threshold=20', target]);
    rmSync(tmp, { recursive: true, force: true });
    expect(security.stdout).toMatch(/Overall exposure level for braid-\w+\.service: 1\.\d OK/);
    expect(security.code).toBe(0);
  });
});
