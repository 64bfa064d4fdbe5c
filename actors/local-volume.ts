/**
 * One local LSVD as an NBD backend (`freebs serve`): no replication, versions assigned here.
 * The single-node mode to compare against `nbdkit file`.
 *
 * Writes are acknowledged once applied (in memory; the LSVD writes them to its log on the next
 * turn) and durable after a flush or with FUA — the promise a disk's write cache makes, and
 * what `nbdkit file` gives through the page cache.
 *
 * Backpressure: the LSVD holds appended-but-unwritten batches in memory up to its bound and
 * refuses appends past it with ERR_BUSY. A client faster than the log writer (fio's 1 MiB
 * writes at QD8 outrun any disk) must be slowed down, not failed: a write refused with ERR_BUSY
 * is held, and so is every write after it (arrival order is kept), until the log writer has made
 * room. The store says nothing when its writes land, so held writes retry on a short timer; a
 * flush() — which waits for every write, but also syncs every dirty segment, so it is the last
 * resort — empties the buffer after a long refusal (a record larger than the bound is taken
 * once nothing else is buffered).
 */
import type { BlockBackend } from '../nbd/backend.js';
import type { RecordKind } from '../protocol/frames.js';
import type { ReplicaStore } from './replica-store.js';

/** How often held writes retry while the store's buffer is full. */
const BUSY_RETRY_MS = 1;
/**
 * Refusals in a row (≈ this many ms) after which held writes wait for a flush, which empties
 * the store's buffer: a record larger than the bound goes in alone then.
 */
const BUSY_RETRIES_BEFORE_FLUSH = 1000;

/** A write waiting for room in the store: applied when released, in arrival order. */
interface HeldWrite {
  kind: RecordKind;
  offsetBytes: number;
  lengthBytes: number;
  data: Buffer | undefined;
  fua: boolean;
  resolve: () => void;
  reject: (err: unknown) => void;
}

function isBusy(err: unknown): boolean {
  return (err as { code?: unknown } | undefined)?.code === 'ERR_BUSY';
}

export class LocalVolume implements BlockBackend {
  readonly readOnly: boolean;
  /** One process orders every write: a flush on any connection covers all of them. */
  readonly canMultiConn = true;
  readonly minimumBlockSizeBytes = 512;
  readonly preferredBlockSizeBytes = 4096;
  /** The LSVD copies a record into its batch inside append(); a held write is copied here. */
  readonly copiesWriteData = true;

  private readonly held: HeldWrite[] = [];
  private retryTimer: NodeJS.Timeout | undefined;
  private busyRetries = 0;
  /** The flush that empties the store's buffer for the first held write. */
  private lastResortFlush: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly store: ReplicaStore,
    options: { readOnly: boolean },
  ) {
    this.readOnly = options.readOnly;
  }

  get sizeBytes(): number {
    return this.store.sizeBytes;
  }

  /** Writes waiting for room in the store (tests, metrics). */
  get heldWrites(): number {
    return this.held.length;
  }

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    return this.store.read(offsetBytes, lengthBytes);
  }

  readInto(offsetBytes: number, target: Buffer): Promise<void> {
    return this.store.readInto(offsetBytes, target);
  }

  write(offsetBytes: number, data: Buffer, options: { fua: boolean }): Promise<void> {
    return this.apply('write', offsetBytes, data.length, data, options.fua);
  }

  trim(offsetBytes: number, lengthBytes: number, options: { fua: boolean }): Promise<void> {
    return this.apply('trim', offsetBytes, lengthBytes, undefined, options.fua);
  }

  writeZeroes(offsetBytes: number, lengthBytes: number, options: { fua: boolean; noHole: boolean }): Promise<void> {
    return this.apply('zero', offsetBytes, lengthBytes, undefined, options.fua);
  }

  async flush(): Promise<void> {
    await this.store.flush();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const err = Object.assign(new Error('volume closed with writes waiting for room'), { code: 'ERR_CLOSED' });
    for (const w of this.held.splice(0)) w.reject(err);
    await this.store.close();
  }

  private apply(kind: RecordKind, offsetBytes: number, lengthBytes: number, data: Buffer | undefined, fua: boolean): Promise<void> {
    if (this.held.length === 0) {
      try {
        this.append(kind, offsetBytes, lengthBytes, data);
        return fua ? this.flush() : Promise.resolve();
      } catch (err) {
        if (!isBusy(err)) return Promise.reject(err);
      }
    }
    // Behind a held write, or refused for lack of room: wait in line. Copied, because the server
    // may reuse `data` once write() returns (copiesWriteData).
    return new Promise((resolve, reject) => {
      this.held.push({ kind, offsetBytes, lengthBytes, data: data && Buffer.from(data), fua, resolve, reject });
      this.scheduleRetry();
    });
  }

  /** Append synchronously: the version is this store's next, so appends cannot interleave. */
  private append(kind: RecordKind, offsetBytes: number, lengthBytes: number, data: Buffer | undefined): void {
    const v = this.store.version + 1;
    this.store.append({ t: 'write', epoch: 0, v, kind, offsetBytes, lengthBytes, ...(data ? { data } : {}) });
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.lastResortFlush || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.releaseHeld(false);
    }, BUSY_RETRY_MS);
  }

  /** Apply held writes in order while the store takes them. */
  private releaseHeld(afterFlush: boolean): void {
    while (this.held.length > 0) {
      const w = this.held[0];
      try {
        this.append(w.kind, w.offsetBytes, w.lengthBytes, w.data);
      } catch (err) {
        if (isBusy(err) && !afterFlush) {
          this.busyRetries += 1;
          if (this.busyRetries >= BUSY_RETRIES_BEFORE_FLUSH) this.flushThenRelease();
          else this.scheduleRetry();
          return;
        }
        // Refused for good (or, impossible with an empty buffer, still busy after the flush).
        this.held.shift();
        w.reject(err);
        afterFlush = false;
        continue;
      }
      this.busyRetries = 0;
      afterFlush = false;
      this.held.shift();
      if (w.fua) this.flush().then(w.resolve, w.reject);
      else w.resolve();
    }
  }

  private flushThenRelease(): void {
    this.busyRetries = 0;
    this.lastResortFlush = this.store.flush().then(
      () => {
        this.lastResortFlush = undefined;
        if (!this.closed) this.releaseHeld(true);
      },
      (err: unknown) => {
        // A failed flush is the store's fatal error: held writes fail with it, later ones get it from append.
        this.lastResortFlush = undefined;
        for (const w of this.held.splice(0)) w.reject(err);
      },
    );
  }
}
