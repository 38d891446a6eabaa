/**
 * V8 heap settings made at run time, for processes that may have been started with no flag at
 * all (`npx braid ...`, a unit file without NODE_OPTIONS). An operator's own flag stands.
 */
import v8 from 'node:v8';

/** Whether the process was started with this V8 flag (command line or NODE_OPTIONS): the operator's choice stands. */
export function startedWith(flag: string): boolean {
  return [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => a.startsWith(flag) || a.startsWith(flag.replace(/-/g, '_')));
}

/**
 * `braid cloud`: no allocation-site pretenuring. V8 watches which allocation sites' objects survive
 * a scavenge and, past a ratio, allocates all their later objects in the old generation. A query's
 * rows and buckets live for its few milliseconds, but a scavenge that lands while one is in flight
 * (at its I/O) finds them alive, and from then on every query's rows went to the old generation
 * (0.4 MB a device's day at 1m): a mark-compact about every second under a query load, its marking
 * steps in the queries' tail. Whether a run fell into that was luck: one cloud asked 1,500 device
 * days at 1m, 7 of 11 runs did (p99 14.5-45.7 ms), and none of 12 with pretenuring off (p99
 * 10.6-15.2 ms; docs/benchmarks.md, Query, session 21). The gateway keeps V8's default (no gain
 * measured there). V8 reads the flag at every scavenge, so setting it now takes effect.
 */
export function configureCloudHeap(): void {
  if (startedWith('--allocation-site-pretenuring') || startedWith('--no-allocation-site-pretenuring')) return;
  v8.setFlagsFromString('--no-allocation-site-pretenuring');
}
