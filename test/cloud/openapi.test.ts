/**
 * GET /api/v1/openapi.json: an OpenAPI 3 document generated from the route schemas of the whole
 * cloud (createCloud), served without auth, valid by @readme/openapi-parser, naming every /api/v1
 * route of the REST contract (DESIGN.md) and nothing that is not a route, with bearer auth declared.
 */
import { compileErrors, validate } from '@readme/openapi-parser';
import { createCloud, type CloudApp } from '../../cloud/app.js';
import { testCloudConfig } from '../support/cloud.js';
import { tempDir } from '../support/gateway.js';

/** The cloud's REST contract (DESIGN.md "REST (cloud)" and the query), and whoami (docs/serving.md). */
const CONTRACT: Array<[method: 'get' | 'post', path: string]> = [
  ['post', '/api/v1/ingest'], ['post', '/api/v1/speed'],
  ['get', '/api/v1/devices'], ['get', '/api/v1/gateways'],
  ['get', '/api/v1/batch'], ['post', '/api/v1/batch/run'],
  ['get', '/api/v1/query'], ['get', '/api/v1/openapi.json'],
  ['get', '/api/v1/whoami'],
];

type Operation = {
  security?: unknown[]; parameters?: Array<{ name: string; in: string; required?: boolean }>;
  responses: Record<string, { content?: Record<string, { schema?: { properties?: Record<string, unknown> } }> }>;
};
type Doc = { openapi: string; paths: Record<string, Record<string, Operation>>; components: { securitySchemes: Record<string, unknown> }; security: unknown[] };

let app: CloudApp;
let url: string;
let dir: ReturnType<typeof tempDir>;
let doc: Doc;

beforeAll(async () => {
  dir = tempDir('braid-openapi-');
  app = createCloud(testCloudConfig(dir.path));
  url = (await app.server.start()).url;
  const res = await fetch(`${url}/api/v1/openapi.json`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/application\/json/);
  doc = await res.json() as Doc;
});

afterAll(async () => {
  await app?.server.close();
  dir?.remove();
});

/** Whether the server has a route there: without a token it answers 401 (or 2xx for a public one), never 404. */
async function routeExists(method: string, path: string): Promise<boolean> {
  const res = await fetch(`${url}${path}`, { method: method.toUpperCase() });
  await res.arrayBuffer();
  return res.status !== 404;
}

describe('OpenAPI document', () => {
  it('is a valid OpenAPI 3.0 document', async () => {
    expect(doc.openapi).toMatch(/^3\.0\./);
    const result = await validate(structuredClone(doc) as never);
    if (!result.valid) throw new Error(compileErrors(result));
    expect(result.valid).toBe(true);
  });

  it.each(CONTRACT)('names %s %s, a route the server has', async (method, path) => {
    expect(doc.paths[path]?.[method]).toBeDefined();
    expect(await routeExists(method, path)).toBe(true);
  });

  it('names nothing that is not a route', async () => {
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const method of Object.keys(ops)) expect([method, path, await routeExists(method, path)]).toEqual([method, path, true]);
    }
  });

  it('declares bearer auth for every route but the document itself and /healthz', () => {
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.security).toEqual([{ bearerAuth: [] }]);
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const op of Object.values(ops)) {
        if (path === '/api/v1/openapi.json' || path === '/healthz') expect(op.security).toEqual([]);
        else expect(op.security ?? doc.security).toEqual([{ bearerAuth: [] }]);
      }
    }
  });

  it('documents the query: its parameters, JSON and CSV answers, and its errors', () => {
    const op = doc.paths['/api/v1/query'].get;
    expect(op.parameters?.filter((p) => p.in === 'query').map((p) => [p.name, p.required ?? false]).sort()).toEqual([
      ['agg', false], ['device', false], ['from', true], ['gateway', false], ['metric', true], ['step', false], ['to', true],
    ]);
    expect(Object.keys(op.responses['200'].content ?? {}).sort()).toEqual(['application/json', 'text/csv']);
    expect(Object.keys(op.responses).sort()).toEqual(['200', '400', '401', '403', '409']);
  });

  it('documents whoami: the caller as a key (name, role) or a gateway, and its 401', () => {
    const op = doc.paths['/api/v1/whoami'].get;
    expect(Object.keys(op.responses).sort()).toEqual(['200', '401']);
    expect(Object.keys(op.responses['200'].content?.['application/json']?.schema?.properties ?? {}).sort()).toEqual(['gateway', 'kind', 'name', 'role']);
  });
});
