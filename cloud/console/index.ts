/**
 * The operator console (DESIGN.md: "the console at /"): a static app of plain ES modules and CSS
 * under static/, plus uPlot from node_modules. No build step and no CDN: it works offline.
 *
 * Static files take no key (the app asks for one and sends it on every /api/v1 call). The files
 * served are a fixed list made at registration (every file under static/ and the two uPlot files),
 * so no request path ever reaches the file system: nothing to traverse, no directory listings.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { CloudPlugin } from '../server.js';

/** Where the app's files are served, beside `/` (index.html). */
export const CONSOLE_PREFIX = '/console/';

const STATIC_DIR = join(dirname(fileURLToPath(import.meta.url)), 'static');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/**
 * The app only talks to its own origin; uPlot sets element styles through the CSSOM (allowed
 * under style-src 'self'), and its legend markers need no inline <style>.
 */
const HEADERS = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  // Small files, no fingerprints in their names: revalidate, so an upgrade shows at the next load.
  'cache-control': 'no-cache',
};

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

/** URL path -> file on disk. */
export function consoleFiles(): Map<string, string> {
  const files = new Map<string, string>();
  for (const p of walk(STATIC_DIR)) {
    if (!TYPES[extname(p)]) continue;
    files.set(CONSOLE_PREFIX + relative(STATIC_DIR, p).split(sep).join('/'), p);
  }
  const require = createRequire(import.meta.url);
  files.set(`${CONSOLE_PREFIX}vendor/uPlot.esm.js`, require.resolve('uplot/dist/uPlot.esm.js'));
  files.set(`${CONSOLE_PREFIX}vendor/uPlot.min.css`, require.resolve('uplot/dist/uPlot.min.css'));
  return files;
}

/** Register GET / and GET /console/* (hidden from the OpenAPI document: they are not the API). */
export function registerConsole(app: FastifyInstance): void {
  const files = consoleFiles();
  // Read once: the files are small and fixed for the life of the process.
  const bodies = new Map([...files].map(([url, p]) => [url, { body: readFileSync(p), type: TYPES[extname(p)] }]));
  const index = bodies.get(`${CONSOLE_PREFIX}index.html`);
  if (!index) throw new Error(`console: ${STATIC_DIR}/index.html is missing`);

  const send = (file: { body: Buffer; type: string }) => async (_req: unknown, reply: FastifyReply) => {
    void reply.headers(HEADERS).type(file.type);
    return file.body;
  };
  app.get('/', { schema: { hide: true } }, send(index));
  for (const [url, file] of bodies) app.get(url, { schema: { hide: true } }, send(file));
}

/** The console as a CloudServer plugin. */
export const consolePlugin: CloudPlugin = (app) => registerConsole(app);
