/**
 * The demo's data dir (./.braid-demo by default): one folder for the cloud and one per gateway,
 * kept between runs, wiped with --fresh. A marker file says the dir is the demo's, so --fresh never
 * deletes a folder a user pointed --data-dir at by mistake. The demo owns its dir for its whole
 * run (shared/owner-lock.ts): a second `braid demo` on it would rotate the first one's tokens and
 * keys and share its gateways' outboxes, so it exits 2 naming the first; each gateway also locks
 * its own sub-dir, as `braid gateway` does.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigInvalidError } from '../../shared/errors.js';
import { OWNER_INFO_FILE, OWNER_LOCK_FILE, acquireOwnerLock, tryChmod, type OwnerLock } from '../../shared/owner-lock.js';
import { DEMO_GATEWAYS } from './fleet.js';

export const MARKER = 'braid-demo.json';
const LOCK_FILES = new Set([OWNER_LOCK_FILE, OWNER_INFO_FILE]);
/** What a demo dir may hold: ours, and `gateway/` of the one-gateway demo of 0.1.0. */
const OURS = new Set([MARKER, 'cloud', 'gateway', ...DEMO_GATEWAYS, ...LOCK_FILES]);

export interface DemoDirs {
  root: string;
  cloud: string;
  gateways: Record<string, string>;
  /** Whether this run found data of an earlier one. */
  reused: boolean;
  /** The demo's hold on `root`; released by the demo's close. */
  lock: OwnerLock;
}

/**
 * Make (or reuse, or with `fresh` wipe and make) the demo data dir, owned by this process: throws
 * DataDirInUseError while another demo runs on it (before wiping anything).
 */
export async function prepareDataDir(dir: string, fresh: boolean): Promise<DemoDirs> {
  const root = resolve(dir);
  const entries = existsSync(root) ? readdirSync(root) : [];
  const foreign = entries.filter((e) => !OURS.has(e));
  if (entries.length && !entries.includes(MARKER) && foreign.length) {
    throw new ConfigInvalidError(`--data-dir ${dir} holds files the demo did not make (${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', ...' : ''}); give an empty or new folder`);
  }
  mkdirSync(root, { recursive: true, mode: 0o700 });
  tryChmod(root, 0o700);
  const lock = await acquireOwnerLock(root, 'braid demo');
  let reused = entries.some((e) => e !== MARKER && !LOCK_FILES.has(e));
  if (fresh) {
    // Everything but the lock we hold (removing owner.lock would let another demo lock a new file).
    for (const e of readdirSync(root)) if (!LOCK_FILES.has(e)) rmSync(join(root, e), { recursive: true, force: true });
    reused = false;
  }
  writeFileSync(join(root, MARKER), `${JSON.stringify({ what: 'braid demo data dir; `braid demo --fresh` wipes it', at: new Date().toISOString() })}\n`);
  const gateways = Object.fromEntries(DEMO_GATEWAYS.map((g) => [g, join(root, g)]));
  for (const d of [join(root, 'cloud'), ...Object.values(gateways)]) mkdirSync(d, { recursive: true, mode: 0o700 });
  return { root, cloud: join(root, 'cloud'), gateways, reused, lock };
}
