/**
 * Streams this replica's history to its successor: everything after the version the
 * successor asked from (SYNC), then every new write as it is applied. One cursor serves
 * both, so the successor always receives versions in order with no gap or overlap.
 *
 * Recent versions come from memory (RecentWrites); older ones from the store's log; when
 * the log no longer reaches back that far, a consistent image, then the log after it.
 */
import type { Logger } from 'pino';
import type { Frame, WriteFrame } from '../protocol/frames.js';
import { limits } from '../protocol/limits.js';
import type { RecentWrites } from './recent-writes.js';
import type { ReplicaStore } from './replica-store.js';

/** Where forwarded frames go: a link to the successor. */
export interface FrameSink {
  /** false: the link is past its high-water mark; wait for drain. */
  send(frame: Frame): boolean;
  /** Resolves when the sink can take more, or the link closed. */
  drained(): Promise<void>;
  readonly open: boolean;
  /** Drop the link: the successor dials again and asks for a fresh SYNC. */
  close(reason: string): void;
}

export interface SyncProgressListener {
  (p: { sentVersion: number; targetVersion: number; mode: 'log' | 'image' }): void;
}

export class Forwarder {
  private sentVersion: number;
  private pumping = false;
  private again = false;
  private stopped = false;
  /** The sink refused more: wait for drain before the next send. */
  private full = false;

  constructor(
    private readonly store: ReplicaStore,
    private readonly recent: RecentWrites,
    private readonly sink: FrameSink,
    fromVersion: number,
    private readonly epoch: () => number,
    private readonly log: Logger,
    private readonly onProgress?: SyncProgressListener,
  ) {
    this.sentVersion = fromVersion;
  }

  /** Answer the successor's SYNC and start streaming. */
  async start(): Promise<void> {
    const fromVersion = this.sentVersion;
    if (fromVersion > this.store.version) {
      // The successor claims versions we never had: its history diverged (an old epoch's
      // writes). Only a full image makes it a prefix of ours again.
      this.log.warn({ fromVersion, version: this.store.version }, 'successor is ahead of us; sending an image');
      await this.sendImage();
    } else if (!(await this.store.hasRecordsSince(fromVersion))) {
      await this.sendImage();
    } else {
      const targetVersion = this.store.version;
      this.put({ t: 'sync-start', epoch: this.epoch(), mode: 'log', fromVersion, imageVersion: 0, targetVersion });
      this.log.info({ fromVersion, targetVersion }, 'sync: streaming log to successor');
    }
    this.notify();
  }

  /** New versions were applied: send what the successor lacks. */
  notify(): void {
    if (this.stopped) return;
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    this.pump()
      .catch((err: unknown) => {
        // Typically the log no longer reaches back to the cursor (an image replaced it under a
        // live stream). Stopping alone left the successor linked and waiting forever (simulator,
        // seed 46): drop its link, so it SYNCs again and gets an image.
        this.log.error({ err }, 'forwarding to successor failed; dropping its link so it SYNCs again');
        this.stopped = true;
        this.sink.close('forwarding failed: SYNC again');
      })
      .finally(() => {
        this.pumping = false;
      });
  }

  stop(): void {
    this.stopped = true;
  }

  private async pump(): Promise<void> {
    do {
      this.again = false;
      while (!this.stopped && this.sink.open && this.sentVersion < this.store.version) {
        const next = this.recent.get(this.sentVersion + 1);
        if (next) {
          this.sendWrite(next);
          if (!(await this.roomToSend())) return;
          continue;
        }
        await this.sendFromLog();
      }
    } while (this.again && !this.stopped);
  }

  /** Old versions: read them back from the log until memory has the rest. */
  private async sendFromLog(): Promise<void> {
    const fromVersion = this.sentVersion;
    let sent = 0;
    for await (const record of this.store.recordsSince(fromVersion)) {
      if (this.stopped || !this.sink.open) return;
      if (record.v !== this.sentVersion + 1) {
        throw new Error(`log stream out of order: expected v${this.sentVersion + 1}, got v${record.v}`);
      }
      this.sendWrite(record);
      sent++;
      if (sent % 4096 === 0) this.onProgress?.({ sentVersion: this.sentVersion, targetVersion: this.store.version, mode: 'log' });
      if (!(await this.roomToSend())) return;
      if (this.recent.get(this.sentVersion + 1)) break;
    }
  }

  private async sendImage(): Promise<void> {
    const image = await this.store.imageAt();
    const targetVersion = this.store.version;
    this.put({
      t: 'sync-start',
      epoch: this.epoch(),
      mode: 'image',
      fromVersion: this.sentVersion,
      imageVersion: image.version,
      targetVersion,
    });
    this.log.info({ imageVersion: image.version, targetVersion }, 'sync: streaming image to successor');
    let bytes = 0;
    for await (const chunk of image.chunks(limits.imageChunkBytes)) {
      if (this.stopped || !this.sink.open) return;
      this.put({ t: 'image-chunk', epoch: this.epoch(), offsetBytes: chunk.offsetBytes, data: chunk.data });
      bytes += chunk.data.length;
      if (!(await this.roomToSend())) return;
    }
    this.put({ t: 'image-end', epoch: this.epoch(), imageVersion: image.version });
    this.log.info({ imageVersion: image.version, bytes }, 'sync: image sent');
    this.sentVersion = image.version;
  }

  private sendWrite(frame: WriteFrame): void {
    this.put({ ...frame, epoch: this.epoch() });
    this.sentVersion = frame.v;
  }

  private put(frame: Frame): void {
    if (!this.sink.send(frame)) this.full = true;
  }

  /** Wait out backpressure; false when the link closed meanwhile. */
  private async roomToSend(): Promise<boolean> {
    if (!this.full) return true;
    await this.sink.drained();
    this.full = false;
    return this.sink.open;
  }
}
