/**
 * The write path of the log: appends are encoded straight into an in-memory batch
 * buffer (synchronously, so the caller sees a version applied at once), and batches go
 * to the active segment with one write syscall each, on the next event-loop turn or when
 * a batch passes `batchBytes`. flush() waits for the writes and makes them durable with
 * one fdatasync however many callers ask at once.
 *
 * Failure policy: a write that fails with ENOSPC keeps its batch queued (nothing
 * acknowledged is lost, positions stay valid); appends are refused with ERR_NO_SPACE
 * until a flush() retries the write successfully. An fdatasync failure is fatal (after a
 * failed fsync the page cache state is unknown): every later call fails, and the
 * operator reopens the store, which re-verifies the log by crc.
 */
import type { Logger } from 'pino';
import { encodedRecordBytes, encodeRecordInto, type LsvdRecord } from './record.js';
import { encodeSegmentHeader, fsyncDir, SEGMENT_HEADER_BYTES, SegmentFile } from './segment.js';
import { NoSpaceError, StorageError, wrapFsError } from './errors.js';
import type { RecycledSegments } from './recycled-segments.js';

/**
 * Batch buffers are batchBytes plus this slack (or a larger multiple of it for a record that
 * needs more), so one size serves batches of small records and a batchBytes-sized write with its
 * header alike, and a written buffer always fits the next batch.
 */
const BATCH_SLACK_BYTES = 64 * 1024;
/** Larger batch buffers (one huge write) are left to the GC rather than kept. */
const MAX_SPARE_BUFFER_BYTES = 8 * 1024 * 1024;
/**
 * Written batch buffers kept: at least one writev's worth (64 batches go out together), so a
 * saturated writer gets back as many as it just wrote and allocates none.
 */
const MAX_SPARE_BUFFERS = 64;

interface Batch {
  seq: number;
  segment: SegmentFile;
  startBytes: number;
  buf: Buffer;
  usedBytes: number;
  lastVersion: number;
  /** True for the first batch of a new file: the directory needs an fsync. */
  createsFile: boolean;
}

export interface LogWriterOptions {
  dir: string;
  segmentSizeBytes: number;
  batchBytes: number;
  /** Bound on appended-but-unwritten bytes; past it append throws ERR_BUSY. */
  maxBufferedBytes: number;
  /** Retired segment files to append into instead of new ones (storage/recycled-segments.ts). */
  recycled?: RecycledSegments;
  logger?: Logger;
}

export interface AppendedLocation {
  segment: SegmentFile;
  /** Position of the record's data (after its header) in the segment. */
  dataPositionBytes: number;
}

export class LogWriter {
  private current: Batch | undefined;
  private readonly queue: Batch[] = [];
  private nextBatchSeq = 1;
  private writtenBatchSeq = 0;
  private writing: Promise<void> | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private readonly dirty = new Set<SegmentFile>();
  private dirNeedsSync = false;
  private writeError: StorageError | undefined;
  private fatalError: StorageError | undefined;
  private waiters: Array<{ seq: number; resolve: () => void; reject: (err: unknown) => void }> = [];
  private syncRunning: Promise<number> | undefined;
  private syncQueued: Promise<number> | undefined;
  private queuedBytes = 0;
  /** Written batch buffers kept for reuse (up to MAX_SPARE_BUFFERS, or what the bound lets exist). */
  private spareBuffers: Buffer[] = [];
  private readonly maxSpareBuffers: number;

  /** Last version appended (in memory), written to the file, and made durable. */
  appendedVersion: number;
  durableVersion: number;

  constructor(
    private readonly options: LogWriterOptions,
    public active: SegmentFile,
    version: number,
    /** Called when a new log segment starts, so the store registers it. */
    private readonly onNewSegment: (segment: SegmentFile) => void,
  ) {
    this.appendedVersion = version;
    this.durableVersion = version;
    this.maxSpareBuffers = Math.min(MAX_SPARE_BUFFERS, Math.ceil(options.maxBufferedBytes / options.batchBytes) + 1);
  }

  get bufferedBytes(): number {
    return this.queuedBytes + (this.current?.usedBytes ?? 0);
  }

  /** The sticky error, if any (fatal first). */
  get error(): StorageError | undefined {
    return this.fatalError ?? this.writeError;
  }

  /** Throws if an append cannot be accepted now; call before changing any state. */
  checkWritable(record: LsvdRecord): void {
    if (this.fatalError) throw this.fatalError;
    if (this.writeError) throw new NoSpaceError(`not accepting version ${record.version}: ${this.writeError.message}; free space and call flush() to retry`);
    // A record larger than the bound goes alone, once everything before it is written.
    if (this.bufferedBytes > 0 && this.bufferedBytes + encodedRecordBytes(record) > this.options.maxBufferedBytes) {
      throw new StorageError('ERR_BUSY', `write buffer full (${this.bufferedBytes} bytes unwritten): wait for flush()`);
    }
  }

  /** Encode the record into the batch; returns where its data lands. Call checkWritable first. */
  append(record: LsvdRecord): AppendedLocation {
    const need = encodedRecordBytes(record);
    let seg = this.active;
    if (seg.sizeBytes + need > this.options.segmentSizeBytes && seg.sizeBytes > SEGMENT_HEADER_BYTES) {
      seg = this.rollover(record.version);
    }
    let batch = this.current;
    if (!batch || batch.segment !== seg || batch.buf.length - batch.usedBytes < need) {
      this.seal();
      batch = this.newBatch(seg, seg.sizeBytes, need, false);
    }
    const at = batch.usedBytes;
    encodeRecordInto(record, batch.buf, at);
    batch.usedBytes += need;
    batch.lastVersion = record.version;
    const recordPos = batch.startBytes + at;
    seg.sizeBytes = recordPos + need;
    if (seg.firstVersion === 0) seg.firstVersion = record.version;
    seg.lastVersion = record.version;
    this.appendedVersion = record.version;
    if (batch.usedBytes >= this.options.batchBytes) {
      this.seal();
      this.kick();
    } else if (!this.immediate) {
      // Gather the appends of this event-loop turn into one write.
      this.immediate = setImmediate(() => {
        this.immediate = undefined;
        this.seal();
        this.kick();
      });
    }
    return { segment: seg, dataPositionBytes: recordPos + 40 };
  }

  private newBatch(seg: SegmentFile, startBytes: number, need: number, createsFile: boolean): Batch {
    const size = Math.max(this.options.batchBytes + BATCH_SLACK_BYTES, Math.ceil(need / BATCH_SLACK_BYTES) * BATCH_SLACK_BYTES);
    // Reuse written batch buffers: a fresh 1 MiB buffer per small batch (one 4 KiB write per
    // turn at queue depth 1), or per large write, costs far more in GC and page faults than the
    // write itself.
    const spare = this.spareBuffers.findIndex((b) => b.length >= size);
    const buf = spare >= 0 ? this.spareBuffers.splice(spare, 1)[0] : Buffer.allocUnsafeSlow(size);
    const batch: Batch = { seq: 0, segment: seg, startBytes, buf, usedBytes: 0, lastVersion: 0, createsFile };
    this.current = batch;
    return batch;
  }

  /**
   * Start the next log segment; `firstVersion` is the record about to go in it, when known, so
   * a recycled file is used only if everything it still holds is older.
   */
  private rollover(firstVersion?: number): SegmentFile {
    this.seal();
    const number = this.active.number + 1;
    const recycled = firstVersion !== undefined ? this.options.recycled?.take(firstVersion) : undefined;
    const next = recycled
      ? new SegmentFile(this.options.dir, 'log', number, SEGMENT_HEADER_BYTES, 'recycled', recycled.path)
      : new SegmentFile(this.options.dir, 'log', number, SEGMENT_HEADER_BYTES, 'create');
    const batch = this.newBatch(next, 0, SEGMENT_HEADER_BYTES, true);
    encodeSegmentHeader('log', next.number, { recycled: recycled !== undefined }).copy(batch.buf, 0);
    batch.usedBytes = SEGMENT_HEADER_BYTES;
    this.active = next;
    this.onNewSegment(next);
    return next;
  }

  /** Start a fresh log segment now (image install, or after open when asked): never a recycled file. */
  startNewSegment(): SegmentFile {
    return this.rollover();
  }

  private seal(): void {
    const batch = this.current;
    if (!batch) return;
    this.current = undefined;
    if (batch.usedBytes === 0) return;
    batch.seq = this.nextBatchSeq++;
    this.queue.push(batch);
    this.queuedBytes += batch.usedBytes;
  }

  /** Copy bytes that are appended but not yet on disk; false if the range is not pending. */
  readPending(segment: SegmentFile, positionBytes: number, lengthBytes: number, target: Buffer, targetOffset: number): boolean {
    const find = (b: Batch | undefined): boolean => {
      if (!b || b.segment !== segment) return false;
      if (positionBytes < b.startBytes || positionBytes + lengthBytes > b.startBytes + b.usedBytes) return false;
      const from = positionBytes - b.startBytes;
      b.buf.copy(target, targetOffset, from, from + lengthBytes);
      return true;
    };
    if (find(this.current)) return true;
    for (const b of this.queue) if (find(b)) return true;
    return false;
  }

  private kick(): void {
    if (this.writing || this.writeError || this.fatalError || this.queue.length === 0) return;
    this.writing = this.writeLoop().finally(() => {
      this.writing = undefined;
    });
  }

  private async writeLoop(): Promise<void> {
    while (this.queue.length > 0) {
      // Batches queued behind a slow write go out together: one writev per segment run.
      const first = this.queue[0];
      let n = 1;
      let expect = first.startBytes + first.usedBytes;
      while (n < this.queue.length && n < 64 && this.queue[n].segment === first.segment && this.queue[n].startBytes === expect) {
        expect += this.queue[n].usedBytes;
        n += 1;
      }
      const group = this.queue.slice(0, n);
      try {
        await first.segment.writeAt(
          group.map((b) => b.buf.subarray(0, b.usedBytes)),
          first.startBytes,
        );
      } catch (err) {
        const wrapped = wrapFsError(err, `write segment ${first.segment.name}`);
        if (wrapped.code === 'ERR_NO_SPACE') {
          this.writeError = wrapped;
          // Files kept for reuse hold space the retry may need.
          void this.options.recycled?.releaseAll();
          this.options.logger?.warn({ segment: first.segment.name, err: wrapped.message }, 'log write failed: no space; appends refused until a flush succeeds');
        } else {
          this.fatalError = wrapped;
          this.options.logger?.error({ segment: first.segment.name, err: wrapped.message }, 'log write failed');
        }
        this.rejectWaiters(wrapped);
        return;
      }
      this.queue.splice(0, n);
      for (const b of group) {
        if (b.buf.length <= MAX_SPARE_BUFFER_BYTES && this.spareBuffers.length < this.maxSpareBuffers) this.spareBuffers.push(b.buf);
        this.queuedBytes -= b.usedBytes;
        if (b.createsFile) this.dirNeedsSync = true;
        this.dirty.add(b.segment);
        this.writtenBatchSeq = b.seq;
      }
      this.resolveWaiters();
    }
  }

  private resolveWaiters(): void {
    const still: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (w.seq <= this.writtenBatchSeq) w.resolve();
      else still.push(w);
    }
    this.waiters = still;
  }

  private rejectWaiters(err: unknown): void {
    const all = this.waiters;
    this.waiters = [];
    for (const w of all) w.reject(err);
  }

  /** Wait until every batch sealed so far is written (not yet durable). */
  private waitWritten(seq: number): Promise<void> {
    if (seq <= this.writtenBatchSeq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.waiters.push({ seq, resolve, reject });
      this.kick();
    });
  }

  /** Make everything appended so far durable; concurrent callers share one fsync round. */
  flush(): Promise<number> {
    if (this.syncQueued) return this.syncQueued;
    if (!this.syncRunning) return this.startSync();
    const after = this.syncRunning.catch(() => undefined);
    this.syncQueued = after.then(() => {
      this.syncQueued = undefined;
      return this.startSync();
    });
    return this.syncQueued;
  }

  private startSync(): Promise<number> {
    const running = this.doSync().finally(() => {
      if (this.syncRunning === running) this.syncRunning = undefined;
    });
    this.syncRunning = running;
    return running;
  }

  private async doSync(): Promise<number> {
    if (this.fatalError) throw this.fatalError;
    if (this.immediate) {
      clearImmediate(this.immediate);
      this.immediate = undefined;
    }
    this.seal();
    const target = this.appendedVersion;
    const targetSeq = this.nextBatchSeq - 1;
    if (target === this.durableVersion && this.dirty.size === 0 && !this.dirNeedsSync && targetSeq <= this.writtenBatchSeq) return this.durableVersion;
    if (this.writeError) {
      // A flush is the retry point after ENOSPC: the queued batches are written again at the same positions.
      this.options.logger?.info('retrying log write after no-space');
      this.writeError = undefined;
    }
    await this.waitWritten(targetSeq);
    const segments = [...this.dirty];
    this.dirty.clear();
    const needDir = this.dirNeedsSync;
    this.dirNeedsSync = false;
    try {
      for (const seg of segments) await seg.datasync();
      if (needDir) await fsyncDir(this.options.dir);
    } catch (err) {
      this.fatalError = wrapFsError(err, 'fdatasync of the log');
      this.options.logger?.error({ err: this.fatalError.message }, 'log sync failed; the store must be reopened');
      throw this.fatalError;
    }
    if (target > this.durableVersion) this.durableVersion = target;
    return this.durableVersion;
  }

  /** Stop timers; pending data is the caller's to flush first. */
  dispose(): void {
    if (this.immediate) clearImmediate(this.immediate);
    this.immediate = undefined;
  }
}
