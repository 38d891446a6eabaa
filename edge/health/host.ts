/**
 * Host CPU, memory and disk from systeminformation, sampled in the background: a health request
 * or a scrape never waits on `df` or /proc. The same sample is the health document's `host` and
 * the `braid_host_*` gauges (base units, Prometheus naming: a ratio in 0..1, bytes).
 */
import { resolve } from 'node:path';
import { Gauge, type Registry } from 'prom-client';
import si from 'systeminformation';
import type { Logger } from '../../shared/logger.js';

export interface HostStats {
  cpuPercent: number | null;
  memUsedBytes: number | null;
  memTotalBytes: number | null;
  diskPath: string;
  diskUsedBytes: number | null;
  /** What an unprivileged process (the gateway) can still write: `df`'s Avail, root's reserve excluded. */
  diskAvailableBytes: number | null;
  diskTotalBytes: number | null;
  sampledAt: string | null;
}

/**
 * The gauges read the last sample at scrape time; before the first sample (or after a failed one
 * that left a value unknown) a gauge has no sample rather than a 0 that would read as "disk full".
 */
function createHostMetrics(registry: Registry, stats: () => HostStats): void {
  const registers = [registry];
  const gauge = (name: string, help: string, value: (s: HostStats) => number | null, labelled = false) => new Gauge({
    name, help, registers, labelNames: labelled ? ['mount'] : [],
    collect() {
      this.reset();
      const s = stats();
      const v = value(s);
      if (v === null) return;
      if (labelled) this.set({ mount: s.diskPath }, v);
      else this.set(v);
    },
  });
  gauge('braid_host_cpu_usage_ratio', 'Share of the host\'s CPU time busy over the last sampling interval (all cores), 0..1', (s) => (s.cpuPercent === null ? null : s.cpuPercent / 100));
  gauge('braid_host_memory_used_bytes', 'Host memory in use by processes (active; page cache and buffers excluded), in bytes', (s) => s.memUsedBytes);
  gauge('braid_host_memory_total_bytes', 'Host memory installed, in bytes', (s) => s.memTotalBytes);
  gauge('braid_host_disk_available_bytes', 'Bytes an unprivileged process can still write on the file system of the data dir (label mount: its mount point)', (s) => s.diskAvailableBytes, true);
  gauge('braid_host_disk_total_bytes', 'Size of the file system of the data dir, in bytes (label mount: its mount point)', (s) => s.diskTotalBytes, true);
}

export class HostSampler {
  private stats: HostStats;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  /** With a registry, the samples are also the braid_host_* gauges. `intervalMs`: between samples. */
  constructor(private readonly dataDir: string, private readonly logger: Logger, registry?: Registry, private readonly intervalMs = 10_000) {
    this.stats = {
      cpuPercent: null, memUsedBytes: null, memTotalBytes: null, diskPath: resolve(dataDir),
      diskUsedBytes: null, diskAvailableBytes: null, diskTotalBytes: null, sampledAt: null,
    };
    if (registry) createHostMetrics(registry, () => this.stats);
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
        cpuPercent: Number.isFinite(load.currentLoad) ? Math.round(load.currentLoad * 10) / 10 : null,
        memUsedBytes: mem.active,
        memTotalBytes: mem.total,
        diskPath: disk?.mount ?? dir,
        diskUsedBytes: disk?.used ?? null,
        diskAvailableBytes: disk && Number.isFinite(disk.available) ? disk.available : null,
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
