/**
 * A write-stall probe: one NBD connection issuing sequential 4 KiB writes, one at a time, over
 * its own region of the volume, recording the longest gap between two completions (the stall a
 * client sees during a failover) and every failure. Each block is stamped with the sequence
 * number that wrote it, so `verify()` can read the region back and check the last
 * acknowledged write of every block is there.
 */
import { NbdClient } from '../../nbd/client.js';

export interface StallReport {
  writesAcked: number;
  errors: string[];
  /** Longest time between two successive completions (or from the start to the first). */
  worstGapMs: number;
  /** When the worst gap ended, ms since the probe started. */
  worstGapEndedAtMs: number;
}

const BLOCK_BYTES = 4096;

/** A block as write `seq` of the probe with this salt left it (probes on one region differ by salt). */
function stamp(salt: number, seq: number): Buffer {
  const buf = Buffer.alloc(BLOCK_BYTES);
  for (let at = 0; at < BLOCK_BYTES; at += 8) {
    buf.writeUInt32LE(seq, at);
    buf.writeUInt32LE((Math.imul(seq, 2654435761) ^ salt) >>> 0, at + 4);
  }
  return buf;
}

export class StallProbe {
  private client: NbdClient | null = null;
  private running = false;
  private loop: Promise<void> = Promise.resolve();
  private readonly ackedSeq: Int32Array;
  private readonly report: StallReport = { writesAcked: 0, errors: [], worstGapMs: 0, worstGapEndedAtMs: 0 };
  private startedAtMs = 0;
  private lastCompletionMs = 0;
  private readonly salt = (Math.random() * 2 ** 32) >>> 0;

  constructor(
    private readonly uri: string,
    private readonly offsetBytes: number,
    private readonly blocks: number,
  ) {
    this.ackedSeq = new Int32Array(blocks);
  }

  async start(): Promise<void> {
    this.client = await NbdClient.connect(this.uri);
    this.running = true;
    this.startedAtMs = performance.now();
    this.loop = this.run(this.client);
  }

  /** Writes acknowledged so far. */
  get writesAcked(): number {
    return this.report.writesAcked;
  }

  /** Stop after the write in flight; resolves with the figures. */
  async stop(): Promise<StallReport> {
    this.running = false;
    await this.loop;
    return { ...this.report, errors: [...this.report.errors] };
  }

  /** Read the region back: every block must hold the last write acknowledged to it. */
  async verify(): Promise<{ checked: number; wrong: number[] }> {
    const client = this.client ?? (this.client = await NbdClient.connect(this.uri));
    const wrong: number[] = [];
    let checked = 0;
    for (let b = 0; b < this.blocks; b++) {
      const seq = this.ackedSeq[b];
      if (seq === 0) continue;
      const data = await client.read(this.offsetBytes + b * BLOCK_BYTES, BLOCK_BYTES);
      checked++;
      if (!data.equals(stamp(this.salt, seq))) wrong.push(b);
    }
    return { checked, wrong };
  }

  async close(): Promise<void> {
    await this.client?.disconnect().catch(() => undefined);
    this.client = null;
  }

  private async run(client: NbdClient): Promise<void> {
    this.lastCompletionMs = this.startedAtMs;
    let seq = 0;
    while (this.running) {
      seq++;
      const block = (seq - 1) % this.blocks;
      try {
        await client.write(this.offsetBytes + block * BLOCK_BYTES, stamp(this.salt, seq));
        this.ackedSeq[block] = seq;
        this.report.writesAcked++;
      } catch (err) {
        this.report.errors.push(`write #${seq}: ${(err as Error).message}`);
        // A broken connection stays broken: stop rather than spin.
        if (this.report.errors.length > 100) return;
      }
      const now = performance.now();
      const gap = now - this.lastCompletionMs;
      if (gap > this.report.worstGapMs) {
        this.report.worstGapMs = Math.round(gap);
        this.report.worstGapEndedAtMs = Math.round(now - this.startedAtMs);
      }
      this.lastCompletionMs = now;
    }
  }
}
