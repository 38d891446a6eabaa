/** What the numbers were measured on. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, release } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sqlite3 from 'sqlite3';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface MachineInfo {
  date: string;
  nproc: number;
  cpu: string;
  ramGiB: number;
  kernel: string;
  node: string;
  mosquitto: string;
  sqlite: string;
  aedes: string;
  mqttjs: string;
  disk: string;
}

function tryRun(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    // mosquitto -h exits non-zero after printing its usage
    const e = err as { stdout?: string; stderr?: string };
    return `${e.stdout ?? ''}${e.stderr ?? ''}`;
  }
}

export async function machineInfo(dataDir: string): Promise<MachineInfo> {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const meminfo = readFileSync('/proc/meminfo', 'utf8');
  const version = (pkg: string) => {
    try {
      return (JSON.parse(readFileSync(join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      return 'unknown';
    }
  };
  const sqlite = await new Promise<string>((resolve) => {
    const db = new sqlite3.Database(':memory:');
    db.get('SELECT sqlite_version() AS v', (err, row: { v: string } | undefined) => {
      db.close();
      resolve(err ? 'unknown' : `${row?.v} (node sqlite3 ${version('sqlite3')})`);
    });
  });
  const df = tryRun('df', ['-h', '--output=source,fstype,size', dataDir]).trim().split('\n')[1]?.trim().split(/\s+/) ?? [];
  return {
    date: new Date().toISOString(),
    nproc: availableParallelism(),
    cpu: cpuinfo.match(/^model name\s*:\s*(.+)$/m)?.[1]?.trim() ?? 'unknown',
    ramGiB: Math.round((Number(meminfo.match(/^MemTotal:\s+(\d+)/m)?.[1] ?? 0) / 1024 / 1024) * 10) / 10,
    kernel: release(),
    node: process.version,
    mosquitto: tryRun('/usr/sbin/mosquitto', ['-h']).match(/mosquitto version (\S+)/)?.[1] ?? 'not found',
    sqlite,
    aedes: version('aedes'),
    mqttjs: version('mqtt'),
    disk: df.length ? `${df[0]} (${df[1]}, ${df[2]})` : 'unknown',
  };
}
