import type { WriteFrame } from '../protocol/frames.js';

/**
 * The last writes this replica applied, by version, so live forwarding to the successor
 * needs no log read. A ring bounded by count and bytes; older versions come from the log.
 */
export class RecentWrites {
  private readonly ring: Array<WriteFrame | undefined>;
  /** Version of the oldest frame kept, and how many are kept. */
  private firstVersion = 0;
  private count = 0;
  private bytes = 0;

  constructor(
    private readonly maxFrames = 16_384,
    private readonly maxBytes = 64 * 1024 * 1024,
  ) {
    this.ring = new Array(maxFrames);
  }

  push(frame: WriteFrame): void {
    // An image install or a resync restarts the sequence: what we kept no longer lines up.
    if (this.count > 0 && frame.v !== this.firstVersion + this.count) this.clear();
    if (this.count === 0) this.firstVersion = frame.v;
    if (this.count === this.maxFrames) this.dropOldest();
    this.ring[frame.v % this.maxFrames] = frame;
    this.count++;
    this.bytes += frame.data?.length ?? 0;
    while (this.bytes > this.maxBytes && this.count > 1) this.dropOldest();
  }

  get(v: number): WriteFrame | undefined {
    if (v < this.firstVersion || v >= this.firstVersion + this.count) return undefined;
    return this.ring[v % this.maxFrames];
  }

  clear(): void {
    this.ring.fill(undefined);
    this.count = 0;
    this.bytes = 0;
  }

  private dropOldest(): void {
    const slot = this.firstVersion % this.maxFrames;
    this.bytes -= this.ring[slot]?.data?.length ?? 0;
    this.ring[slot] = undefined;
    this.firstVersion++;
    this.count--;
  }
}
