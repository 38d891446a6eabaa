/**
 * GET /api/v1/openapi.json of the whole cloud (createCloud) lints clean under @redocly/cli's
 * `recommended` rules (summary and operationId on every operation, a 4xx response, servers, a
 * license...): zero errors and zero warnings, with the real `redocly lint` run as a child process
 * on the document the server serves.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type CloudApp, createCloud } from '../../cloud/app.js';
import { testCloudConfig } from '../support/cloud.js';
import { tempDir } from '../support/gateway.js';

const ROOT = resolve(import.meta.dirname, '../..');
const REDOCLY = join(ROOT, 'node_modules/.bin/redocly');

/**
 * The only exceptions, each a rule that cannot apply to that operation: GET /healthz and GET
 * /api/v1/openapi.json take no auth, no parameters and no body, so there is no 4xx they could
 * answer; declaring one would be false. Redocly's own ignore file names the exact operations,
 * so the rule still holds for every other one (and for any route added later).
 */
const IGNORE = `openapi.json:
  operation-4xx-response:
    - '#/paths/~1api~1v1~1openapi.json/get/responses'
    - '#/paths/~1healthz/get/responses'
`;

interface LintReport { totals: { errors: number; warnings: number; ignored: number }; problems: Array<{ ruleId: string; severity: string; message: string; location: unknown }> }

function lint(dir: string, doc: unknown): Promise<LintReport> {
  writeFileSync(join(dir, 'openapi.json'), JSON.stringify(doc, null, 2));
  writeFileSync(join(dir, '.redocly.lint-ignore.yaml'), IGNORE);
  const env: NodeJS.ProcessEnv = { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', NODE_OPTIONS: '' };
  return new Promise((res, rej) => {
    // Exit code 1 when there are errors: the JSON report on stdout is what is judged.
    execFile(REDOCLY, ['lint', '--extends', 'recommended', '--format', 'json', '--max-problems', '1000', 'openapi.json'], { cwd: dir, env, timeout: 60_000 }, (err, stdout, stderr) => {
      const start = stdout.indexOf('{');
      if (start < 0) return rej(new Error(`redocly printed no report (${err?.message ?? 'no error'}):\n${stdout}\n${stderr}`));
      res(JSON.parse(stdout.slice(start)) as LintReport);
    });
  });
}

let app: CloudApp;
let dir: ReturnType<typeof tempDir>;
let doc: { paths: Record<string, Record<string, Record<string, unknown>>> };

beforeAll(async () => {
  dir = tempDir('braid-openapi-lint-');
  app = createCloud(testCloudConfig(join(dir.path, 'cloud')));
  const { url } = await app.server.start();
  const res = await fetch(`${url}/api/v1/openapi.json`);
  expect(res.status).toBe(200);
  doc = await res.json() as typeof doc;
});

afterAll(async () => {
  await app?.server.close();
  dir?.remove();
});

test('the served OpenAPI document lints with zero errors and zero warnings under redocly recommended', async () => {
  const report = await lint(dir.path, doc);
  expect(report.problems.map((p) => `${p.severity} ${p.ruleId}: ${p.message} ${JSON.stringify(p.location)}`)).toEqual([]);
  expect(report.totals).toEqual({ errors: 0, warnings: 0, ignored: 2 });
}, 90_000);

test('the lint can fail: an operation without summary, operationId and 4xx responses is reported', async () => {
  const broken = structuredClone(doc);
  const op = broken.paths['/api/v1/gateways'].get;
  delete op.summary;
  delete op.operationId;
  op.responses = { 200: (op.responses as Record<string, unknown>)['200'] };
  const report = await lint(dir.path, broken);
  expect(new Set(report.problems.map((p) => p.ruleId))).toEqual(new Set(['operation-summary', 'operation-operationId', 'operation-4xx-response']));
  expect(report.totals.errors).toBeGreaterThan(0);
}, 90_000);
