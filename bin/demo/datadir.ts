/**
 * The demo's data dir (./.braid-demo by default): one folder for the cloud and one per gateway,
 * kept between runs, wiped with --fresh. A marker file says the dir is the demo's, so --fresh never
 * deletes a folder a user pointed --data-dir at by mistake.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigInvalidError } from '../../shared/errors.js';
import { DEMO_GATEWAYS } from './fleet.js';

export const MARKER = 'braid-demo.json';
/** What a demo dir may hold: ours, and `gateway/` of the one-gateway demo of 0.1.0. */
const OURS = new Set([MARKER, 'cloud', 'gateway', ...DEMO_GATEWAYS]);

export interface DemoDirs {
  root: string;
  cloud: string;
  gateways: Record<string, string>;
  /** Whether this run found data of an earlier one. */
  reused: boolean;
}

/** Make (or reuse, or with `fresh` wipe and make) the demo data dir. */
export function prepareDataDir(dir: string, fresh: boolean): DemoDirs {
  const root = resolve(dir);
  const entries = existsSync(root) ? readdirSync(root) : [];
  const foreign = entries.filter((e) => !OURS.has(e));
  if (entries.length && !entries.includes(MARKER) && foreign.length) {
    throw new ConfigInvalidError(`--data-dir ${dir} holds files the demo did not make (${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', ...' : ''}); give an empty or new folder`);
  }
  let reused = entries.some((e) => e !== MARKER);
  if (fresh && entries.length) {
    rmSync(root, { recursive: true, force: true });
    reused = false;
  }
  mkdirSync(root, { recursive: true });
  writeFileSync(join(root, MARKER), `${JSON.stringify({ what: 'braid demo data dir; `braid demo --fresh` wipes it', at: new Date().toISOString() })}\n`);
  const gateways = Object.fromEntries(DEMO_GATEWAYS.map((g) => [g, join(root, g)]));
  for (const d of [join(root, 'cloud'), ...Object.values(gateways)]) mkdirSync(d, { recursive: true });
  return { root, cloud: join(root, 'cloud'), gateways, reused };
}
