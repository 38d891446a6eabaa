/**
 * Where a small file I/O runs: on the main thread while such I/O has been fast, on libuv's thread
 * pool otherwise. A write of a page to a fast disk, or a read the page cache answers, takes less
 * than the two hops to a pool thread and back (and, on 2 cores, the pool thread preempting the
 * main thread it was woken from); a slow disk (an SD card, a cold read) must not hold the event
 * loop at every call. The gateway's commit log writes this way, and the cloud's series files read
 * this way (docs/benchmarks.md, gateway session 19 and Query session 21).
 *
 * The time of each call, exponentially weighted (1/16 a call): a call on the main thread is timed
 * around it, one on the pool from its dispatch to its callback (the hops included). One call that
 * stalls sends the next ones to the pool until the average is back under `maxMs`: ~15 calls of
 * 0.2 ms after a 10 ms stall with a 0.5 ms limit.
 */
export class IoTimes {
  private avg = 0;

  /** `maxMs`: calls go on the main thread while the average is under it. */
  constructor(readonly maxMs: number) {}

  record(ms: number): void {
    this.avg += (ms - this.avg) / 16;
  }

  /** Whether the next call goes on the main thread. */
  inline(): boolean {
    return this.avg < this.maxMs;
  }
}
