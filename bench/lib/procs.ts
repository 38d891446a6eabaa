/**
 * Child processes of the benchmark: every server and client it starts is tracked here, and
 * stopped at the end, on error, on SIGINT/SIGTERM and (SIGKILL, synchronously) on exit.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { createInterface } from 'node:readline';

export interface Proc {
  name: string;
  child: ChildProcess;
  pid: number;
  /** Resolves when the process has exited (never rejects). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last lines it wrote to stderr, for error messages. */
  stderrTail: () => string;
  /** Lines written to stdout so far. */
  lines: string[];
  /** Wait for a stdout line matching `re`. */
  waitLine: (re: RegExp, timeoutMs: number) => Promise<RegExpMatchArray>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  stop: (graceMs?: number) => Promise<void>;
}

const live = new Set<Proc>();

export function startProc(name: string, cmd: string, args: string[], opts: SpawnOptions = {}): Proc {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  if (child.pid === undefined) throw new Error(`${name}: could not start ${cmd}`);
  const tail: string[] = [];
  const lines: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (m: RegExpMatchArray) => void }> = [];
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    tail.push(chunk);
    while (tail.length > 20) tail.shift();
  });
  if (child.stdout) {
    createInterface({ input: child.stdout }).on('line', (line) => {
      lines.push(line);
      for (let i = waiters.length - 1; i >= 0; i--) {
        const m = line.match(waiters[i].re);
        if (m) {
          waiters[i].resolve(m);
          waiters.splice(i, 1);
        }
      }
    });
  }
  let exitedFlag = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      exitedFlag = true;
      live.delete(proc);
      resolve({ code, signal });
    });
    child.once('error', () => {
      exitedFlag = true;
      live.delete(proc);
      resolve({ code: -1, signal: null });
    });
  });
  const proc: Proc = {
    name,
    child,
    pid: child.pid,
    exited,
    lines,
    stderrTail: () => tail.join('').split('\n').slice(-15).join('\n'),
    waitLine: (re, timeoutMs) => {
      const seen = lines.map((l) => l.match(re)).find((m) => m);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${name}: no line matching ${re} within ${timeoutMs} ms\n${proc.stderrTail()}`)), timeoutMs);
        const w = { re, resolve: (m: RegExpMatchArray) => { clearTimeout(timer); resolve(m); } };
        waiters.push(w);
        void exited.then(({ code, signal }) => {
          if (!waiters.includes(w)) return;
          clearTimeout(timer);
          reject(new Error(`${name} exited (code ${code}, signal ${signal}) before printing ${re}\n${proc.stderrTail()}`));
        });
      });
    },
    stop: async (graceMs = 5000) => {
      if (exitedFlag) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => { if (!exitedFlag) child.kill('SIGKILL'); }, graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  live.add(proc);
  return proc;
}

/** Stop every process still running (SIGTERM, then SIGKILL). */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop(3000)));
}

let installed = false;
/** SIGKILL leftovers when the benchmark exits for any reason; SIGINT/SIGTERM stop them first. */
export function installCleanup(onSignal?: () => void): void {
  if (installed) return;
  installed = true;
  process.on('exit', () => {
    for (const p of live) {
      try { p.child.kill('SIGKILL'); } catch { /* gone */ }
    }
  });
  const handler = (signal: NodeJS.Signals) => {
    process.stderr.write(`\nbench: ${signal}: stopping every process it started\n`);
    onSignal?.();
    stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', handler);
  process.once('SIGTERM', handler);
}

/** VmRSS and VmHWM of a process, in bytes (from /proc/<pid>/status). */
export function memoryOf(pid: number): { rss: number; hwm: number } {
  const text = readProc(`/proc/${pid}/status`);
  const kb = (key: string) => Number(text.match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'))?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** CPU seconds (user + system) a process has used so far (from /proc/<pid>/stat). */
export function cpuSecondsOf(pid: number): number {
  return cpuSecondsOfStat(`/proc/${pid}/stat`);
}

/** CPU seconds of a process's main thread alone (its JavaScript; /proc/<pid>/task/<pid>/stat). */
export function mainThreadCpuSecondsOf(pid: number): number {
  return cpuSecondsOfStat(`/proc/${pid}/task/${pid}/stat`);
}

function cpuSecondsOfStat(file: string): number {
  const stat = readProc(file);
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime is field 14, stime field 15.
  return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ = 100 on Linux
}

/**
 * Bytes the process (all its threads, live and exited) caused to be written to storage:
 * `write_bytes` of /proc/<pid>/io, counted when a page of the page cache turns dirty (so a 4 KiB
 * page written again after an fsync counts again, whatever part of it changed).
 */
export function writeBytesOf(pid: number): number {
  return writeBytesOfTask(String(pid));
}

/**
 * Bytes the block device holding `path` has written, all writers together (the filesystem's journal
 * too): sectors written (the 7th field of /sys/dev/block/<major>:<minor>/stat) x 512. What the card
 * wears from, where write_bytes counts what a process dirtied: a whole large folio of the page cache
 * when one byte of it changes (the kernel of docs/benchmarks.md's runs makes them for a file read
 * ahead or written in one large write). NaN where the path is on no block device (overlay, tmpfs).
 */
export function deviceWrittenBytes(path: string): number {
  const dev = statSync(path).dev;
  const major = Math.floor(dev / 256) & 0xfff;
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & 0xfff00);
  try {
    return Number(readProc(`/sys/dev/block/${major}:${minor}/stat`).trim().split(/\s+/)[6]) * 512;
  } catch {
    return NaN;
  }
}

/**
 * write_bytes of /proc/<task>/io: `<pid>` for a process (which also counts the children it has
 * reaped), `<pid>/task/<tid>` for one thread alone.
 */
export function writeBytesOfTask(task: string): number {
  let io: string;
  try { io = readProc(`/proc/${task}/io`); } catch { return NaN; } // gone
  const m = /^write_bytes:\s*(\d+)/m.exec(io);
  return m ? Number(m[1]) : NaN;
}

function readProc(path: string): string {
  return readFileSync(path, 'utf8');
}
