/**
 * Host CPU, memory and disk from systeminformation, sampled in the background: a health request
 * never waits on `df` or /proc.
 */
import { resolve } from 'node:path';
import si from 'systeminformation';
import type { Logger } from '../../shared/logger.js';

export interface HostStats {
  cpuPercent: number | null;
  memUsedBytes: number | null;
  memTotalBytes: number | null;
  diskPath: string;
  diskUsedBytes: number | null;
  diskTotalBytes: number | null;
  sampledAt: string | null;
}

export class HostSampler {
  private stats: HostStats;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(private readonly dataDir: string, private readonly logger: Logger, private readonly intervalMs = 10_000) {
    this.stats = { cpuPercent: null, memUsedBytes: null, memTotalBytes: null, diskPath: dataDir, diskUsedBytes: null, diskTotalBytes: null, sampledAt: null };
  }

  start(): void {
    this.running = this.sample();
    this.timer = setInterval(() => { this.running = this.sample(); }, this.intervalMs);
    this.timer.unref();
  }

  get current(): HostStats {
    return this.stats;
  }

  private async sample(): Promise<void> {
    try {
      const [load, mem, fs] = await Promise.all([si.currentLoad(), si.mem(), si.fsSize()]);
      // The file system holding the data dir: the longest mount point that prefixes its path.
      const dir = resolve(this.dataDir);
      const disk = fs.filter((f) => dir === f.mount || dir.startsWith(f.mount.endsWith('/') ? f.mount : `${f.mount}/`))
        .sort((a, b) => b.mount.length - a.mount.length)[0];
      this.stats = {
        cpuPercent: Math.round(load.currentLoad * 10) / 10,
        memUsedBytes: mem.active,
        memTotalBytes: mem.total,
        diskPath: disk?.mount ?? dir,
        diskUsedBytes: disk?.used ?? null,
        diskTotalBytes: disk?.size ?? null,
        sampledAt: new Date().toISOString(),
      };
    } catch (err) {
      this.logger.warn({ err }, 'host sampling failed');
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}
