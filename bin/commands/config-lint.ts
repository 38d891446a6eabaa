/**
 * The config lint of `--check-config`: problems the schema cannot see because they span keys, the
 * file system or the machine. Schema validation (shared/config.ts) runs first; these rules get a
 * valid config. An error stops the command (exit 2) because the service would fail or silently
 * misbehave; a warning is printed and the check still passes.
 *
 * The rules are data (id, level, doc) so docs/configuration.md lists them from here.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import cron from 'node-cron';
import type { CloudConfig } from '../../cloud/config.js';
import type { GatewayConfig } from '../../edge/config.js';
import { splitCloudUrls } from '../../edge/cloudclient/index.js';

export type Level = 'error' | 'warning';

export interface Finding {
  level: Level;
  /** The rule's stable id, e.g. `port-clash`. */
  rule: string;
  /** The key the problem is about (the first one, where it spans keys). */
  key: string;
  message: string;
}

export interface LintContext {
  /** The environment the config was loaded from (for BRAID_* names that match no key). */
  env: NodeJS.ProcessEnv;
  /** Every BRAID_* name the schema reads. */
  knownEnv: ReadonlySet<string>;
  /** The machine's memory in bytes (os.totalmem()). */
  totalMemBytes: number;
  /** "Now" for certificate expiry, epoch ms. */
  now: number;
}

type Problem = { key: string; message: string };

export interface Rule<C> {
  id: string;
  level: Level;
  /** One line for docs/configuration.md. */
  doc: string;
  check(config: C, ctx: LintContext): Problem[];
}

/** A certificate that expires within this long gets a warning. */
const CERT_EXPIRY_WARNING_MS = 30 * 24 * 3600_000;

const WILDCARD_HOSTS = new Set(['', '0.0.0.0', '::', '::0', '0:0:0:0:0:0:0:0']);

/** Two listeners clash when they share a port and one of the hosts covers the other (Linux EADDRINUSE). */
function hostsOverlap(a: string, b: string): boolean {
  return a === b || WILDCARD_HOSTS.has(a) || WILDCARD_HOSTS.has(b);
}

function cronProblems(key: string, expr: string | null): Problem[] {
  if (expr === null) return [];
  const r = cron.validateDetailed(expr);
  if (r.valid) return [];
  const why = r.errors.map((e) => e.message).join('; ');
  return [{ key, message: `"${expr}" is not a cron expression: ${why}` }];
}

function cronSecondsProblems(key: string, expr: string | null): Problem[] {
  if (expr === null || expr.trim().split(/\s+/).length !== 6) return [];
  return [{ key, message: `"${expr}" has 6 fields: node-cron reads the first as seconds (minute hour day month weekday come after it)` }];
}

/** dataDir is a writable directory, or can be created (its nearest existing ancestor is writable). */
function dataDirProblems(dataDir: string): Problem[] {
  let dir = resolve(dataDir);
  for (;;) {
    let isDir: boolean;
    try {
      isDir = statSync(dir).isDirectory();
    } catch (err) {
      const parent = dirname(dir);
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && parent !== dir) { dir = parent; continue; }
      return [{ key: 'dataDir', message: `cannot inspect ${dir} (${(err as Error).message})` }];
    }
    if (!isDir) return [{ key: 'dataDir', message: `${dir} exists and is not a directory` }];
    try {
      // access() also answers EROFS for a read-only mount (systemd ProtectSystem=strict without ReadWritePaths).
      accessSync(dir, constants.W_OK | constants.X_OK);
      return [];
    } catch (err) {
      const what = dir === resolve(dataDir) ? `${dir} is not writable` : `${resolve(dataDir)} does not exist and ${dir} is not writable to create it`;
      return [{ key: 'dataDir', message: `${what} by this user (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` }];
    }
  }
}

function unknownEnvProblems(ctx: LintContext): Problem[] {
  return Object.keys(ctx.env)
    .filter((name) => name.startsWith('BRAID_') && !ctx.knownEnv.has(name))
    .sort()
    .map((name) => ({ key: name, message: `environment variable ${name} matches no config key and is ignored (a typo?)` }));
}

function readable(key: string, path: string): { text?: string; problem?: Problem } {
  try {
    return { text: readFileSync(path, 'utf8') };
  } catch (err) {
    return { problem: { key, message: `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` } };
  }
}

/**
 * A token file's problems. Others-readable is refused (like ssh with a private key); group-readable
 * is the usual way a root-owned secret reaches a service user (0640 root:braid), so only a group
 * this process is not in gets a warning.
 */
function tokenFileProblems(token: string | null, file: string | null): Array<Problem & { level: Level }> {
  if (file === null) return [];
  if (token) return [{ level: 'error', key: 'cloud.tokenFile', message: 'cloud.token is set as well: give the token one way' }];
  let st;
  try {
    st = statSync(file);
  } catch (err) {
    return [{ level: 'error', key: 'cloud.tokenFile', message: `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` }];
  }
  if (!st.isFile()) return [{ level: 'error', key: 'cloud.tokenFile', message: `${file} is not a file` }];
  const r = readable('cloud.tokenFile', file);
  if (r.problem) return [{ level: 'error', ...r.problem }];
  if (readTokenText(r.text!) === '') return [{ level: 'error', key: 'cloud.tokenFile', message: `${file} is empty` }];
  const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
  if ((st.mode & 0o007) !== 0) return [{ level: 'error', key: 'cloud.tokenFile', message: `${file} (mode ${mode}) can be read by every user of this machine; chmod o-rwx ${file}` }];
  const groups = process.getgroups?.() ?? [];
  if ((st.mode & 0o070) !== 0 && process.getgid && st.gid !== process.getgid() && !groups.includes(st.gid)) {
    return [{ level: 'warning', key: 'cloud.tokenFile', message: `${file} (mode ${mode}) can be read by group ${st.gid}, which this process is not in` }];
  }
  return [];
}

/** The token in a token file's text: surrounding whitespace (the trailing newline an editor or echo adds) is not part of it. */
export function readTokenText(text: string): string {
  return text.trim();
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '[::1]' || /^127\./.test(host);
}

/** The two rules of a cron key: a valid node-cron expression (error), and not 6 fields (warning). */
const cronRules = <C>(key: string, get: (c: C) => string | null, orNull = ''): Array<Rule<C>> => [
  {
    id: 'cron',
    level: 'error',
    doc: `\`${key}\` is a valid node-cron expression${orNull}.`,
    check: (c) => cronProblems(key, get(c)),
  },
  {
    id: 'cron-seconds',
    level: 'warning',
    doc: `\`${key}\` has 6 fields: node-cron reads the first as seconds.`,
    check: (c) => cronSecondsProblems(key, get(c)),
  },
];

const dataDirRule = <C extends { dataDir: string }>(): Rule<C> => ({
  id: 'data-dir',
  level: 'error',
  doc: '`dataDir` is a writable directory, or does not exist yet and its nearest existing parent is writable (checked as the user running the check).',
  check: (c) => dataDirProblems(c.dataDir),
});

const unknownEnvRule = <C>(): Rule<C> => ({
  id: 'unknown-env',
  level: 'warning',
  doc: 'A `BRAID_*` environment variable that names no key (it would be ignored).',
  check: (_c, ctx) => unknownEnvProblems(ctx),
});

export const GATEWAY_RULES: ReadonlyArray<Rule<GatewayConfig>> = [
  {
    id: 'port-clash',
    level: 'error',
    doc: '`mqtt.port`, `mqtt.wsPort`, `mqtt.tlsPort` and `http.port` are all different where their hosts overlap (0 = any free port never clashes).',
    check: (c) => {
      const listeners: Array<[string, number | null, string]> = [
        ['mqtt.port', c.mqtt.port, c.mqtt.host], ['mqtt.wsPort', c.mqtt.wsPort, c.mqtt.host],
        ['mqtt.tlsPort', c.mqtt.tlsPort, c.mqtt.host], ['http.port', c.http.port, c.http.host],
      ];
      const out: Problem[] = [];
      for (let i = 0; i < listeners.length; i++) {
        for (let j = i + 1; j < listeners.length; j++) {
          const [ka, pa, ha] = listeners[i];
          const [kb, pb, hb] = listeners[j];
          if (pa !== null && pa !== 0 && pa === pb && hostsOverlap(ha, hb)) out.push({ key: kb, message: `port ${pb} is also ${ka}` });
        }
      }
      return out;
    },
  },
  {
    id: 'tls-incomplete',
    level: 'error',
    doc: '`mqtt.tlsPort` needs `mqtt.tlsCert` and `mqtt.tlsKey`.',
    check: (c) => {
      if (c.mqtt.tlsPort === null) return [];
      return (['tlsCert', 'tlsKey'] as const).filter((k) => !c.mqtt[k])
        .map((k) => ({ key: `mqtt.${k}`, message: `mqtt.tlsPort is set (${c.mqtt.tlsPort}) but mqtt.${k} is not` }));
    },
  },
  {
    id: 'tls-files',
    level: 'error',
    doc: '`mqtt.tlsCert` and `mqtt.tlsKey` are readable PEM files, a certificate and the private key that goes with it.',
    check: (c) => {
      if (c.mqtt.tlsPort === null || !c.mqtt.tlsCert || !c.mqtt.tlsKey) return [];
      const cert = readable('mqtt.tlsCert', c.mqtt.tlsCert);
      const key = readable('mqtt.tlsKey', c.mqtt.tlsKey);
      const out = [cert.problem, key.problem].filter((p): p is Problem => p !== undefined);
      if (out.length) return out;
      let x509: X509Certificate;
      try {
        x509 = new X509Certificate(cert.text!);
      } catch (err) {
        return [{ key: 'mqtt.tlsCert', message: `${c.mqtt.tlsCert} holds no PEM certificate (${(err as Error).message})` }];
      }
      try {
        if (!x509.checkPrivateKey(createPrivateKey(key.text!))) {
          return [{ key: 'mqtt.tlsKey', message: `${c.mqtt.tlsKey} is not the private key of the certificate in ${c.mqtt.tlsCert}` }];
        }
      } catch (err) {
        return [{ key: 'mqtt.tlsKey', message: `${c.mqtt.tlsKey} holds no usable PEM private key (${(err as Error).message})` }];
      }
      return [];
    },
  },
  {
    id: 'tls-expiry',
    level: 'warning',
    doc: 'The certificate of `mqtt.tlsCert` has expired, or expires within 30 days.',
    check: (c, ctx) => {
      if (c.mqtt.tlsPort === null || !c.mqtt.tlsCert) return [];
      let x509: X509Certificate;
      try { x509 = new X509Certificate(readFileSync(c.mqtt.tlsCert)); } catch { return []; } // tls-files reports it
      const end = Date.parse(x509.validTo);
      if (end <= ctx.now) return [{ key: 'mqtt.tlsCert', message: `the certificate expired on ${new Date(end).toISOString()}; devices will refuse it` }];
      if (end - ctx.now < CERT_EXPIRY_WARNING_MS) return [{ key: 'mqtt.tlsCert', message: `the certificate expires on ${new Date(end).toISOString()}` }];
      return [];
    },
  },
  {
    id: 'tls-unused',
    level: 'warning',
    doc: '`mqtt.tlsCert` or `mqtt.tlsKey` is set but `mqtt.tlsPort` is null (no TLS listener).',
    check: (c) => (c.mqtt.tlsPort === null && (c.mqtt.tlsCert || c.mqtt.tlsKey)
      ? [{ key: 'mqtt.tlsPort', message: 'mqtt.tlsCert/mqtt.tlsKey are set but mqtt.tlsPort is null, so no TLS listener runs' }]
      : []),
  },
  {
    id: 'cloud-token',
    level: 'error',
    doc: '`cloud.url` needs `cloud.token` (the cloud refuses a gateway without one, and the outbox would only fill up).',
    check: (c) => (c.cloud.url && !c.cloud.token && !c.cloud.tokenFile
      ? [{ key: 'cloud.token', message: 'cloud.url is set but cloud.token is not (get one with `braid cloud gateway add <id>`; set BRAID_CLOUD_TOKEN or cloud.tokenFile)' }]
      : []),
  },
  {
    id: 'cloud-token-unused',
    level: 'warning',
    doc: '`cloud.token` is set without `cloud.url` (nothing is forwarded).',
    check: (c) => (!c.cloud.url && (c.cloud.token || c.cloud.tokenFile)
      ? [{ key: 'cloud.url', message: `${c.cloud.token ? 'cloud.token' : 'cloud.tokenFile'} is set but cloud.url is null: readings stay in the outbox` }]
      : []),
  },
  {
    id: 'token-file',
    level: 'error',
    doc: '`cloud.tokenFile` is a readable, non-empty file that other users cannot read, and `cloud.token` is not set as well.',
    check: (c) => tokenFileProblems(c.cloud.token, c.cloud.tokenFile).filter((p) => p.level === 'error'),
  },
  {
    id: 'token-file-group',
    level: 'warning',
    doc: '`cloud.tokenFile` is readable by a group this process is not in.',
    check: (c) => tokenFileProblems(c.cloud.token, c.cloud.tokenFile).filter((p) => p.level === 'warning'),
  },
  {
    id: 'cloud-plaintext',
    level: 'warning',
    doc: '`cloud.url` (any of its nodes) is `http://` to a host other than loopback: the token and the readings cross the network unencrypted.',
    check: (c) => {
      if (!c.cloud.url) return [];
      return splitCloudUrls(c.cloud.url).map((text) => new URL(text)).filter((u) => u.protocol === 'http:' && !isLoopback(u.hostname))
        .map((u) => ({ key: 'cloud.url', message: `${u.origin} is plain HTTP: the gateway token and readings are sent unencrypted (use https://)` }));
    },
  },
  ...cronRules<GatewayConfig>('speed.pruneCron', (c) => c.speed.pruneCron),
  {
    id: 'payload-over-packet',
    level: 'warning',
    doc: '`mqtt.maxPayloadBytes` is above `mqtt.maxPacketBytes`: such payloads close the connection before the payload limit applies.',
    check: (c) => (c.mqtt.maxPayloadBytes > c.mqtt.maxPacketBytes
      ? [{ key: 'mqtt.maxPayloadBytes', message: `${c.mqtt.maxPayloadBytes} is above mqtt.maxPacketBytes (${c.mqtt.maxPacketBytes}): the packet limit wins` }]
      : []),
  },
  {
    id: 'burst-below-rate',
    level: 'warning',
    doc: '`mqtt.rateBurst` is below `mqtt.ratePerDevice`.',
    check: (c) => (c.mqtt.rateBurst < c.mqtt.ratePerDevice
      ? [{ key: 'mqtt.rateBurst', message: `${c.mqtt.rateBurst} is below mqtt.ratePerDevice (${c.mqtt.ratePerDevice}): a device cannot even send one second's worth at once` }]
      : []),
  },
  {
    id: 'epoch-idle',
    level: 'warning',
    doc: '`outbox.epochIdleMs` is not below `outbox.epochMs` (the idle close never comes first).',
    check: (c) => (c.outbox.epochIdleMs >= c.outbox.epochMs
      ? [{ key: 'outbox.epochIdleMs', message: `${c.outbox.epochIdleMs} is not below outbox.epochMs (${c.outbox.epochMs}): epochs never close early when idle` }]
      : []),
  },
  {
    id: 'retry-order',
    level: 'warning',
    doc: '`cloud.retryInitialMs` is above `cloud.retryMaxMs`.',
    check: (c) => (c.cloud.retryInitialMs > c.cloud.retryMaxMs
      ? [{ key: 'cloud.retryInitialMs', message: `${c.cloud.retryInitialMs} is above cloud.retryMaxMs (${c.cloud.retryMaxMs})` }]
      : []),
  },
  dataDirRule<GatewayConfig>(),
  unknownEnvRule<GatewayConfig>(),
];

/** DuckDB's size units (batch.memoryLimit): KB = 1000, KiB = 1024. */
function sizeBytes(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?i?B)$/i.exec(text.trim());
  if (!m) return NaN;
  const unit = m[2].toUpperCase();
  const base = unit.includes('I') ? 1024 : 1000;
  const power = { B: 0, K: 1, M: 2, G: 3, T: 4 }[unit[0] === 'B' ? 'B' : unit[0] as 'K' | 'M' | 'G' | 'T'];
  return Number(m[1]) * base ** power;
}

export const CLOUD_RULES: ReadonlyArray<Rule<CloudConfig>> = [
  ...cronRules<CloudConfig>('batch.cron', (c) => c.batch.cron, ' (or null)'),
  {
    id: 'view-store',
    level: 'error',
    doc: '`query.viewStore = "influx"` needs `influx.url`.',
    check: (c) => (c.query.viewStore === 'influx' && !c.influx.url
      ? [{ key: 'query.viewStore', message: 'is "influx" but influx.url is null: there is no InfluxDB to read views from' }]
      : []),
  },
  {
    id: 'influx-token',
    level: 'warning',
    doc: '`influx.api = "v2"` with neither `influx.token` nor `influx.username`: InfluxDB 2 refuses unauthenticated writes.',
    check: (c) => (c.influx.url && c.influx.api === 'v2' && !c.influx.token && !c.influx.username
      ? [{ key: 'influx.token', message: 'influx.api is "v2" but influx.token is null: InfluxDB 2 will refuse the writes (set BRAID_INFLUX_TOKEN)' }]
      : []),
  },
  {
    id: 'memory-limit',
    level: 'warning',
    doc: '`batch.memoryLimit` is above the memory of this machine (DuckDB would be killed before it spills).',
    check: (c, ctx) => {
      const bytes = sizeBytes(c.batch.memoryLimit);
      return bytes > ctx.totalMemBytes
        ? [{ key: 'batch.memoryLimit', message: `${c.batch.memoryLimit} is more than this machine's ${(ctx.totalMemBytes / 2 ** 30).toFixed(1)} GiB of memory` }]
        : [];
    },
  },
  {
    id: 'body-limits',
    level: 'warning',
    doc: '`ingest.maxBodyBytes` is above `ingest.maxInflatedBytes` (an uncompressed body that big is refused anyway).',
    check: (c) => (c.ingest.maxBodyBytes > c.ingest.maxInflatedBytes
      ? [{ key: 'ingest.maxBodyBytes', message: `${c.ingest.maxBodyBytes} is above ingest.maxInflatedBytes (${c.ingest.maxInflatedBytes})` }]
      : []),
  },
  {
    id: 'cluster-cache-dir',
    level: 'warning',
    doc: 'A PostgreSQL `store.url` (cluster mode) with `cacheDir` null or inside `dataDir`: node-local files (compacted views, DuckDB spill) would go to the shared storage.',
    check: (c) => {
      if (!/^postgres(ql)?:\/\//i.test(c.store.url)) return [];
      if (c.cacheDir === null) return [{ key: 'cacheDir', message: 'is null in cluster mode: compacted views and DuckDB spill would go under the shared dataDir; set cacheDir (--cache-dir) to a local disk of this node' }];
      const rel = relative(resolve(c.dataDir), resolve(c.cacheDir));
      return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel))
        ? [{ key: 'cacheDir', message: `${c.cacheDir} is inside dataDir (${c.dataDir}), the storage every node shares; set it to a local disk of this node` }]
        : [];
    },
  },
  dataDirRule<CloudConfig>(),
  unknownEnvRule<CloudConfig>(),
];

/** Run every rule; errors first, in rule order. */
export function lintConfig<C>(rules: ReadonlyArray<Rule<C>>, config: C, ctx: LintContext): Finding[] {
  const found = rules.flatMap((r) => r.check(config, ctx).map((p) => ({ level: r.level, rule: r.id, ...p })));
  return [...found.filter((f) => f.level === 'error'), ...found.filter((f) => f.level === 'warning')];
}
