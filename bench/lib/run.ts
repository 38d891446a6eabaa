/**
 * The frame every benchmark runs in: its child processes are stopped on every way out (the end, an
 * error, SIGINT/SIGTERM, the watchdog), and its temp dir is removed unless BENCH_KEEP=1.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { installCleanup, stopAll } from './procs.js';

/** A log line on stderr, `[tag HH:MM:SS] msg` (stdout carries the report). */
export function logger(tag: string): (msg: string) => void {
  return (msg) => { process.stderr.write(`[${tag} ${new Date().toISOString().slice(11, 19)}] ${msg}\n`); };
}

/** A fresh temp dir for the run's data dirs, under the OS temp dir. */
export function workDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

let stopping = false;
/** True once SIGINT/SIGTERM arrived: nothing new is started while the processes are being stopped. */
export function isStopping(): boolean {
  return stopping;
}

export interface RunOptions {
  log: (msg: string) => void;
  /** The run's temp dir: removed at the end and on any exit, unless BENCH_KEEP=1. */
  work: string;
  /** Stop every process and exit 2 after this long (BENCH_TIMEOUT_S); no watchdog when absent. */
  timeoutMs?: number;
}

/**
 * Run a bench's `main`: an error is logged with its stack and makes the exit code 1; every process
 * it started is stopped whatever happens.
 */
export async function runBench(main: () => Promise<void>, o: RunOptions): Promise<void> {
  const keep = process.env.BENCH_KEEP === '1';
  const removeWork = () => { if (!keep) rmSync(o.work, { recursive: true, force: true }); };
  installCleanup(() => { stopping = true; });
  // On any exit (a signal included, after every process was stopped): the work dir goes too.
  process.on('exit', removeWork);
  if (o.timeoutMs !== undefined) {
    const timeoutMs = o.timeoutMs;
    const watchdog = setTimeout(() => {
      o.log(`failed: still running after ${timeoutMs / 1000} s (BENCH_TIMEOUT_S); stopping every process it started`);
      void stopAll().finally(() => process.exit(2));
    }, timeoutMs);
    watchdog.unref();
  }
  try {
    await main();
  } catch (err) {
    o.log(`failed: ${(err as Error).stack ?? err}`);
    process.exitCode = 1;
  } finally {
    await stopAll();
    removeWork();
    if (keep) o.log(`kept ${o.work}`);
  }
}
