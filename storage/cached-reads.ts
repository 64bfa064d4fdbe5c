/**
 * When to read segments synchronously. A pread the page cache answers costs ~1.5 µs on the event
 * loop; the same read through libuv's thread pool costs 7–14 µs of CPU (a hand-off, a wake-up and
 * a callback or promise per read), which at 4 KiB random reads is most of the server's time.
 * A read the disk must answer, though, would stall the event loop for the disk's latency.
 *
 * So: read synchronously while reads are fast, and time each one. A read slower than a page-cache
 * hit can be came from the disk — or the process was preempted during it, which on a busy machine
 * happens now and then. A few slow ones among the last reads (not one: preemption) send reads to
 * the thread pool for a while, after which synchronous reads are tried again: the event loop
 * stalls for at most `slowReadsToBackOff` disk reads per back-off period.
 */
export interface CachedReadOptions {
  /** A synchronous read slower than this came from the disk. */
  slowReadNs?: number;
  /** How long reads go to the thread pool after a slow one. */
  backoffMs?: number;
  /** Reads longer than this always go to the thread pool (their copy alone is long). */
  maxSyncBytes?: number;
  /** This many slow reads within one window of `windowReads` reads back off. */
  slowReadsToBackOff?: number;
  windowReads?: number;
}

export class CachedReadPolicy {
  private readonly slowReadNs: bigint;
  private readonly backoffNs: bigint;
  readonly maxSyncBytes: number;
  private readonly slowReadsToBackOff: number;
  private readonly windowReads: number;
  /** hrtime until which reads go to the thread pool. */
  private asyncUntilNs = 0n;
  private readsInWindow = 0;
  private slowInWindow = 0;
  /** Reads answered synchronously / sent to the pool after a slow one (stats, tests). */
  syncReads = 0;
  slowSyncReads = 0;

  constructor(options: CachedReadOptions = {}) {
    this.slowReadNs = BigInt(options.slowReadNs ?? 200_000);
    this.backoffNs = BigInt((options.backoffMs ?? 250) * 1_000_000);
    this.maxSyncBytes = options.maxSyncBytes ?? 256 * 1024;
    this.slowReadsToBackOff = options.slowReadsToBackOff ?? 4;
    this.windowReads = options.windowReads ?? 256;
  }

  /** Whether to try a read of lengthBytes synchronously now. */
  trySync(lengthBytes: number): boolean {
    if (lengthBytes > this.maxSyncBytes) return false;
    if (this.asyncUntilNs === 0n) return true;
    if (process.hrtime.bigint() < this.asyncUntilNs) return false;
    this.asyncUntilNs = 0n;
    return true;
  }

  /** Time a synchronous read. */
  timed<T>(read: () => T): T {
    const start = process.hrtime.bigint();
    const result = read();
    const end = process.hrtime.bigint();
    this.syncReads += 1;
    if (++this.readsInWindow >= this.windowReads) {
      this.readsInWindow = 0;
      this.slowInWindow = 0;
    }
    if (end - start > this.slowReadNs) {
      this.slowSyncReads += 1;
      if (++this.slowInWindow >= this.slowReadsToBackOff) {
        this.asyncUntilNs = end + this.backoffNs;
        this.readsInWindow = 0;
        this.slowInWindow = 0;
      }
    }
    return result;
  }
}
