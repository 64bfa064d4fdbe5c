/**
 * Lsvd: the log-structured virtual disk of one replica. Versions are applied strictly in
 * order, in memory at once (append is synchronous) and durable on flush(); reads see
 * everything appended. See storage/OPERATIONS.md for failure modes.
 *
 * Concurrency: appends, reads and flushes may interleave freely. Checkpoints, GC,
 * snapshot changes and image installs run one at a time (the maintenance lock); GC runs
 * while appends continue.
 */
import type { Logger } from 'pino';
import { createHash } from 'node:crypto';
import { mkdir, readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ExtentMap, type PieceFn } from './extent-map.js';
import { History } from './history.js';
import { LogWriter } from './log-writer.js';
import { RecycledSegments } from './recycled-segments.js';
import { parseRecord, RECORD_HEADER_BYTES, validateRecord, type LsvdRecord, type RecordKind } from './record.js';
import { SEGMENT_HEADER_BYTES, SegmentFile, segmentFileName } from './segment.js';
import { readSuperblock, writeSuperblock } from './superblock.js';
import { listCheckpoints, writeCheckpoint, type CheckpointData, type CheckpointSegment } from './checkpoint.js';
import { recover, type OpenReport } from './recovery.js';
import { CachedReadPolicy } from './cached-reads.js';
import { attachDiskFaults, detachDiskFaults, type DiskFaults } from './disk-faults.js';
import { lockDirectory, type DirLock } from './dir-lock.js';
import { copyVictim, makeRelocator, OutputSegments, rangeListBytes, referencedRanges, type GcReport, type RelocationTable } from './gc.js';
import {
  ClosedError,
  CorruptError,
  LogTruncatedError,
  OutOfRangeError,
  SnapshotUnknownError,
  StorageError,
  VersionGapError,
  wrapFsError,
} from './errors.js';

export interface LsvdOptions {
  dir: string;
  /** Required to create a new volume; when the volume exists it must match (or be omitted). */
  sizeBytes?: number;
  /** Log segment size; a record larger than this gets a segment of its own. Default 64 MiB. */
  segmentSizeBytes?: number;
  /** A write batch goes out when it passes this many bytes (else on the next turn). Default 1 MiB. */
  batchBytes?: number;
  /** Appended-but-unwritten bytes beyond which append throws ERR_BUSY (a larger record is taken when nothing is buffered). Default 256 MiB. */
  maxBufferedBytes?: number;
  /** Background checkpoint after this many records or log bytes. Defaults 200,000 / 512 MiB. */
  checkpointEveryRecords?: number;
  checkpointEveryBytes?: number;
  /** Versions kept streamable by recordsSince() and snapshot-able behind the current one. Default 100,000. */
  syncWindowVersions?: number;
  /**
   * ... and at most this many bytes of log behind the newest record, whichever is less, so
   * large writes cannot pin the whole log (a peer further behind gets an image). Default: a
   * quarter of the volume, at least one segment, at most 1 GiB (defaultSyncWindowBytes).
   */
  syncWindowBytes?: number;
  /** GC rewrites segments whose referenced share is below this. Default 0.5. */
  gcLiveShareThreshold?: number;
  /**
   * Background GC: checked every gcCheckEveryBytes of new log (default: one segment), it runs
   * once the bytes on disk exceed the live bytes by max(gcMinDeadBytes, gcDeadShare × live)
   * (defaults 256 MiB and 0.5). Off: the disk only shrinks through gc().
   */
  autoGc?: boolean;
  gcMinDeadBytes?: number;
  gcDeadShare?: number;
  gcCheckEveryBytes?: number;
  /**
   * On damage in the middle of the log: truncate there (losing later records) instead of
   * refusing to open; a damaged segment header is rewritten instead. See OPERATIONS.md.
   */
  repairCorruptLog?: boolean;
  /**
   * Retired log segment files kept (renamed) for reuse as new log segments, at most this many
   * (storage/recycled-segments.ts): writing over a file's cached pages is much cheaper than
   * into new ones. Deleted at close, at open, and when a write finds the disk full; none kept while under
   * 10 % of the filesystem is free. Default 16 (1 GiB of 64 MiB segments); 0 deletes at once.
   */
  recycleSegments?: number;
  /** Fault-injection runs: delays added to this store's segment IO (storage/disk-faults.ts). */
  diskFaults?: DiskFaults;
  logger?: Logger;
}

export interface ReadOptions {
  /** Read the disk as it was at this snapshot. */
  snapshot?: string;
}

export interface SnapshotInfo {
  name: string;
  version: number;
}

export interface LsvdStats {
  version: number;
  durableVersion: number;
  /** Oldest version recordsSince() can start from and createSnapshot() accepts. */
  horizonVersion: number;
  diskBytes: number;
  /** Of diskBytes: retired segment files kept for reuse (freed when the disk fills). */
  recycledBytes: number;
  liveBytes: number;
  segments: number;
  extents: number;
  historyPieces: number;
  snapshots: number;
  bufferedBytes: number;
  /** Background GCs run since open, and the last one's report. */
  backgroundGcRuns: number;
  lastBackgroundGc: GcReport | undefined;
}

/** A consistent image of the live content at one version; release() when not iterated to the end. */
export interface LsvdImage {
  version: number;
  /** Contiguous runs of data in offset order, each at most maxChunkBytes (default 1 MiB); holes are skipped. */
  extents(maxChunkBytes?: number): AsyncIterable<{ offsetBytes: number; data: Buffer }>;
  release(): void;
}

/** Receiver side of an image transfer: the old content stands until commit(). */
export interface ImageSink {
  readonly version: number;
  write(offsetBytes: number, data: Uint8Array): Promise<void>;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

const MiB = 1024 * 1024;
const HASH_CHUNK_BYTES = MiB;
/** maxBufferedBytes unless set: the write buffer in front of the log. */
export const DEFAULT_MAX_BUFFERED_BYTES = 256 * MiB;
/**
 * The log kept for SYNC behind the newest record, unless set: a quarter of the volume, at least
 * one segment, at most 1 GiB. A peer that missed more than the volume's size is better sent an
 * image than the log; and every byte of window is disk (and page cache) a small volume pays for
 * on top of its data, for a replica that is down.
 */
export function defaultSyncWindowBytes(volumeBytes: number, segmentBytes: number): number {
  return Math.min(1024 * MiB, Math.max(segmentBytes, Math.floor(volumeBytes / 4)));
}

/** A background GC that took nothing, or failed, waits at most this many check intervals before the next. */
const GC_MAX_WAIT_CHECKS = 16;

interface Snapshot {
  version: number;
  map: ExtentMap;
}

export class Lsvd {
  private map = new ExtentMap();
  private history = new History();
  private snapshots = new Map<string, Snapshot>();
  /** Maps handed out by imageAt()/contentHash(): GC keeps and moves what they reference. */
  private readonly images = new Set<ExtentMap>();
  /** Where each running recordsSince() stream is: GC keeps the log after the oldest. */
  private readonly streamCursors = new Set<{ version: number }>();
  private segments = new Map<number, SegmentFile>();
  private writer!: LogWriter;
  private recycled!: RecycledSegments;
  private currentVersion = 0;
  private horizon = 0;
  private nextGcNumber = 1;
  private checkpointSequence = 0;
  private recordsSinceCheckpoint = 0;
  private bytesSinceCheckpoint = 0;
  private checkpointScheduled = false;
  /** Counts at which the next scheduled checkpoint starts: the options, pushed back after a failure. */
  private checkpointDueRecords: number;
  private checkpointDueBytes: number;
  /** Log bytes appended since the last background-GC check, and how many the next one waits for. */
  private bytesSinceGcCheck = 0;
  private gcCheckDueBytes: number;
  private gcScheduled = false;
  /** Background GCs so far and what the last one did (stats, tests). */
  private autoGcRuns = 0;
  private lastAutoGc: GcReport | undefined;
  private maintenance: Promise<unknown> = Promise.resolve();
  /** When reads may bypass the thread pool. */
  private readonly cachedReads = new CachedReadPolicy();
  private closing: Promise<void> | undefined;
  private closed = false;
  private readonly segmentSizeBytes: number;
  private readonly opts: Required<Omit<LsvdOptions, 'logger' | 'sizeBytes' | 'dir' | 'diskFaults'>>;
  private readonly diskFaults: DiskFaults | undefined;
  /** This process's hold on the directory (storage/dir-lock.ts), released at close. */
  private lock: DirLock | undefined;
  private readonly logger: Logger | undefined;
  /** What the last open found and did: version recovered, records replayed, bytes cut, warnings. */
  openReport!: OpenReport;

  private constructor(
    readonly dir: string,
    readonly sizeBytes: number,
    options: LsvdOptions,
  ) {
    this.opts = {
      segmentSizeBytes: options.segmentSizeBytes ?? 64 * MiB,
      batchBytes: options.batchBytes ?? MiB,
      maxBufferedBytes: options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES,
      checkpointEveryRecords: options.checkpointEveryRecords ?? 200_000,
      checkpointEveryBytes: options.checkpointEveryBytes ?? 512 * MiB,
      syncWindowVersions: options.syncWindowVersions ?? 100_000,
      syncWindowBytes: options.syncWindowBytes ?? defaultSyncWindowBytes(sizeBytes, options.segmentSizeBytes ?? 64 * MiB),
      gcLiveShareThreshold: options.gcLiveShareThreshold ?? 0.5,
      autoGc: options.autoGc ?? true,
      gcMinDeadBytes: options.gcMinDeadBytes ?? 256 * MiB,
      gcDeadShare: options.gcDeadShare ?? 0.5,
      gcCheckEveryBytes: options.gcCheckEveryBytes ?? options.segmentSizeBytes ?? 64 * MiB,
      repairCorruptLog: options.repairCorruptLog ?? false,
      recycleSegments: options.recycleSegments ?? 16,
    };
    this.segmentSizeBytes = this.opts.segmentSizeBytes;
    this.gcCheckDueBytes = this.opts.gcCheckEveryBytes;
    this.checkpointDueRecords = this.opts.checkpointEveryRecords;
    this.checkpointDueBytes = this.opts.checkpointEveryBytes;
    if (this.segmentSizeBytes < 4096 || this.segmentSizeBytes > 2 ** 31) {
      throw new StorageError('ERR_INVALID', `segmentSizeBytes must be in [4096, 2^31], got ${this.segmentSizeBytes}`);
    }
    this.logger = options.logger;
    this.diskFaults = options.diskFaults;
  }

  /** Open (or, with sizeBytes, create) the volume in options.dir and recover it. */
  static async open(options: LsvdOptions): Promise<Lsvd> {
    const { dir } = options;
    await mkdir(dir, { recursive: true }).catch((err: unknown) => {
      throw wrapFsError(err, `create ${dir}`);
    });
    const lock = await lockDirectory(dir);
    if (options.diskFaults) attachDiskFaults(dir, options.diskFaults);
    try {
      const store = await Lsvd.openLocked(options);
      store.lock = lock;
      return store;
    } catch (err) {
      if (options.diskFaults) detachDiskFaults(dir, options.diskFaults);
      await lock.release();
      throw err;
    }
  }

  private static async openLocked(options: LsvdOptions): Promise<Lsvd> {
    const { dir } = options;
    let sb = await readSuperblock(dir);
    let created = false;
    if (!sb) {
      if (options.sizeBytes === undefined) throw new StorageError('ERR_NOT_FOUND', `${dir} holds no LSVD volume (pass sizeBytes to create one)`);
      if (!Number.isSafeInteger(options.sizeBytes) || options.sizeBytes <= 0) throw new StorageError('ERR_INVALID', `bad sizeBytes ${options.sizeBytes}`);
      const leftovers = (await readdir(dir)).filter((n) => n.endsWith('.seg') || n.endsWith('.ckpt'));
      if (leftovers.length > 0) throw new CorruptError(`${dir} has log files (${leftovers[0]}, ...) but no volume.json; refusing to create over them`);
      sb = await writeSuperblock(dir, options.sizeBytes);
      created = true;
    } else if (options.sizeBytes !== undefined && options.sizeBytes !== sb.sizeBytes) {
      throw new StorageError('ERR_INVALID', `${dir} is a ${sb.sizeBytes}-byte volume, not ${options.sizeBytes}`);
    }
    const store = new Lsvd(dir, sb.sizeBytes, options);
    await store.recoverState(created);
    return store;
  }

  private async recoverState(created: boolean): Promise<void> {
    const rec = await recover(
      this.dir,
      { repairCorruptLog: this.opts.repairCorruptLog, logger: this.logger },
      {
        loadCheckpoint: (data) => this.loadCheckpoint(data),
        apply: (header, segment, dataPos) => this.applyRecord(header.version, header.kind, header.offsetBytes, header.lengthBytes, segment.id, dataPos),
      },
      created,
    );
    this.segments = rec.segments;
    this.currentVersion = rec.version;
    this.recycled = new RecycledSegments(this.dir, this.opts.recycleSegments, this.logger);
    this.writer = new LogWriter(
      {
        dir: this.dir,
        segmentSizeBytes: this.segmentSizeBytes,
        batchBytes: this.opts.batchBytes,
        maxBufferedBytes: this.opts.maxBufferedBytes,
        recycled: this.recycled,
        logger: this.logger,
      },
      rec.active,
      rec.version,
      (seg) => this.segments.set(seg.id, seg),
    );
    this.openReport = rec.report;
    if (rec.checkpoint) this.checkpointSequence = rec.checkpoint.meta.sequence;
    this.recordsSinceCheckpoint = rec.report.replayedRecords;
    this.bytesSinceCheckpoint = rec.report.replayedBytes;
    this.logger?.info({ dir: this.dir, ...rec.report, warnings: rec.report.warnings.length }, 'lsvd opened');
  }

  private loadCheckpoint(data: CheckpointData): void {
    const meta = data.meta;
    if (meta.sizeBytes !== this.sizeBytes) throw new CorruptError(`checkpoint is for a ${meta.sizeBytes}-byte volume, volume.json says ${this.sizeBytes}`);
    this.map = ExtentMap.fromColumns(data.map);
    this.history = History.fromColumns(data.history);
    this.snapshots = new Map(meta.snapshots.map((s, i) => [s.name, { version: s.version, map: ExtentMap.fromColumns(data.snapshotMaps[i]) }]));
    this.currentVersion = meta.version;
    this.horizon = meta.horizonVersion;
    this.nextGcNumber = meta.nextGcNumber;
  }

  /** The version being applied, for supersede(): one callback for the store's life, not a closure per record. */
  private applyingVersion = 0;
  private readonly supersede: PieceFn = (s, l, seg, pos, pv) => this.history.push(s, l, seg, pos, pv, this.applyingVersion);

  /** Apply one record to the map; superseded pieces go to the history. */
  private applyRecord(version: number, kind: RecordKind, offsetBytes: number, lengthBytes: number, segmentId: number, dataPositionBytes: number): void {
    this.applyingVersion = version;
    if (kind === 'write') this.map.set(offsetBytes, lengthBytes, segmentId, dataPositionBytes, version, this.supersede);
    else this.map.remove(offsetBytes, lengthBytes, this.supersede);
    this.currentVersion = version;
  }

  // ---- state -------------------------------------------------------------------------

  /** Last version applied (in memory at least). */
  get version(): number {
    return this.currentVersion;
  }

  /** Last version made durable by flush(). */
  get durableVersion(): number {
    return this.writer.durableVersion;
  }

  /** Oldest version the store can stream from or snapshot at. */
  get horizonVersion(): number {
    return this.horizon;
  }

  private assertOpen(): void {
    if (this.closed || this.closing) throw new ClosedError(`LSVD ${this.dir}`);
  }

  // ---- write path ----------------------------------------------------------------------

  /**
   * Apply the next version. record.version <= version is a no-op (an idempotent resend:
   * returns false); a gap throws ERR_VERSION_GAP; bad input throws before anything changes.
   */
  append(record: LsvdRecord): boolean {
    this.assertOpen();
    if (record.version <= this.currentVersion) return false;
    if (record.version !== this.currentVersion + 1) throw new VersionGapError(this.currentVersion + 1, record.version);
    const problem = validateRecord(record, this.sizeBytes);
    if (problem) {
      const code = problem.includes('past the volume end') ? 'ERR_OUT_OF_RANGE' : 'ERR_INVALID';
      throw new StorageError(code, `version ${record.version}: ${problem}`);
    }
    this.writer.checkWritable(record);
    const loc = this.writer.append(record);
    this.applyRecord(record.version, record.kind, record.offsetBytes, record.lengthBytes, loc.segment.id, loc.dataPositionBytes);
    const recordBytes = RECORD_HEADER_BYTES + (record.kind === 'write' ? record.lengthBytes : 0);
    this.recordsSinceCheckpoint += 1;
    this.bytesSinceCheckpoint += recordBytes;
    this.bytesSinceGcCheck += recordBytes;
    if (this.bytesSinceGcCheck >= this.gcCheckDueBytes && this.opts.autoGc && !this.gcScheduled) this.considerGc();
    if (
      !this.checkpointScheduled &&
      (this.recordsSinceCheckpoint >= this.checkpointDueRecords || this.bytesSinceCheckpoint >= this.checkpointDueBytes)
    ) {
      this.checkpointScheduled = true;
      setImmediate(() => {
        Promise.resolve()
          .then(() => (this.closing ? this.currentVersion : this.checkpoint()))
          .catch((err: unknown) => {
            // Try again after another interval, not on the next append: a checkpoint that
            // cannot be written (disk nearly full) must not be rewritten on every turn.
            this.checkpointDueRecords = this.recordsSinceCheckpoint + this.opts.checkpointEveryRecords;
            this.checkpointDueBytes = this.bytesSinceCheckpoint + this.opts.checkpointEveryBytes;
            this.logger?.warn({ dir: this.dir, err: (err as Error).message, code: (err as StorageError).code }, 'scheduled checkpoint failed');
          })
          .finally(() => {
            this.checkpointScheduled = false;
          });
      });
    }
    return true;
  }

  /** Make everything appended so far durable; resolves with durableVersion. */
  async flush(): Promise<number> {
    if (this.closed) throw new ClosedError(`LSVD ${this.dir}`);
    return this.writer.flush();
  }

  // ---- read path -----------------------------------------------------------------------

  async read(offsetBytes: number, lengthBytes: number, options: ReadOptions = {}): Promise<Buffer> {
    this.assertOpen();
    this.checkRange(offsetBytes, lengthBytes);
    let map = this.map;
    if (options.snapshot !== undefined) {
      const snap = this.snapshots.get(options.snapshot);
      if (!snap) throw new SnapshotUnknownError(options.snapshot);
      map = snap.map;
    }
    return this.readRange(map, offsetBytes, lengthBytes);
  }

  private async readRange(map: ExtentMap, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(lengthBytes);
    await this.readFrom(map, offsetBytes, out);
    return out;
  }

  private checkRange(offsetBytes: number, lengthBytes: number): void {
    if (!Number.isSafeInteger(offsetBytes) || !Number.isSafeInteger(lengthBytes) || offsetBytes < 0 || lengthBytes < 0) {
      throw new StorageError('ERR_INVALID', `bad range offset ${offsetBytes} length ${lengthBytes}`);
    }
    if (offsetBytes + lengthBytes > this.sizeBytes) throw new OutOfRangeError(`range [${offsetBytes}, ${offsetBytes + lengthBytes}) is past the volume end ${this.sizeBytes}`);
  }

  /**
   * Read into `target` (the caller's buffer: a pooled one saves an allocation per read). Holes
   * read as zeros.
   */
  async readInto(offsetBytes: number, target: Buffer, options: ReadOptions = {}): Promise<void> {
    this.assertOpen();
    this.checkRange(offsetBytes, target.length);
    let map = this.map;
    if (options.snapshot !== undefined) {
      const snap = this.snapshots.get(options.snapshot);
      if (!snap) throw new SnapshotUnknownError(options.snapshot);
      map = snap.map;
    }
    return this.readFrom(map, offsetBytes, target);
  }

  /**
   * Lookup and start every read in one synchronous pass, so each segment is pinned before any
   * await. Pieces the page cache likely holds are read at once (storage/cached-reads.ts).
   */
  private readFrom(map: ExtentMap, offsetBytes: number, out: Buffer): Promise<void> {
    const reads: Array<Promise<void>> = [];
    const sync = this.cachedReads.trySync(out.length);
    let filled = 0;
    map.lookup(offsetBytes, out.length, (s, l, segId, pos) => {
      const seg = this.segments.get(segId);
      if (!seg) throw new CorruptError(`invariant: extent at ${s} points into unknown segment id ${segId}`);
      const at = s - offsetBytes;
      if (at > filled) out.fill(0, filled, at);
      filled = at + l;
      if (this.writer.readPending(seg, pos, l, out, at)) return;
      if (sync && this.cachedReads.timed(() => seg.readAtSync(out, at, l, pos))) return;
      reads.push(seg.readAt(out, at, l, pos));
    });
    if (filled < out.length) out.fill(0, filled);
    if (reads.length === 0) return Promise.resolve();
    return Promise.all(reads).then(() => undefined);
  }

  // ---- maintenance: checkpoints --------------------------------------------------------

  /** Run fn after every earlier maintenance task (checkpoint, GC, snapshot change, install). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.maintenance.then(fn, fn);
    this.maintenance = run.catch(() => undefined);
    return run;
  }

  private advanceHorizon(): void {
    const target = Math.max(this.currentVersion - this.opts.syncWindowVersions, this.byteWindowStart());
    if (target > this.horizon) this.horizon = target;
    this.history.prune(this.horizon);
  }

  /**
   * The newest version outside the byte window: the last version of the newest log segment
   * that does not fit, with every newer one, in syncWindowBytes (0: the whole log fits).
   */
  private byteWindowStart(): number {
    let keptBytes = 0;
    for (const seg of this.logSegmentsNewestFirst()) {
      keptBytes += seg.sizeBytes;
      if (keptBytes > this.opts.syncWindowBytes && seg !== this.writer.active) return seg.lastVersion;
    }
    return 0;
  }

  /** The log segments in use, newest first. */
  private logSegmentsNewestFirst(): SegmentFile[] {
    return [...this.segments.values()].filter((s) => s.kind === 'log' && !s.isRetired).sort((a, b) => b.number - a.number);
  }

  /** Bytes of every segment file in use (log and GC output). */
  private get segmentBytes(): number {
    let total = 0;
    for (const seg of this.segments.values()) if (!seg.isRetired) total += seg.sizeBytes;
    return total;
  }

  /**
   * Called from append every gcCheckEveryBytes of log: start a background GC when enough of the
   * disk is dead. A GC that reclaims nothing (the dead bytes are still in the sync window or a
   * snapshot's) doubles the wait before the next check, so a pinned log costs no GC storm.
   */
  private considerGc(): void {
    this.bytesSinceGcCheck = 0;
    const liveBytes = this.map.liveBytes;
    const deadBytes = this.segmentBytes - liveBytes;
    if (this.closing || deadBytes < Math.max(this.opts.gcMinDeadBytes, this.opts.gcDeadShare * liveBytes)) return;
    this.gcScheduled = true;
    setImmediate(() => {
      if (this.closing) {
        this.gcScheduled = false;
        return;
      }
      this.exclusive(() => this.gcLocked(this.opts.gcLiveShareThreshold))
        .then((report) => {
          this.autoGcRuns += 1;
          this.lastAutoGc = report;
          const maxWaitBytes = GC_MAX_WAIT_CHECKS * this.opts.gcCheckEveryBytes;
          this.gcCheckDueBytes = report.bytesReclaimed > 0 ? this.opts.gcCheckEveryBytes : Math.min(maxWaitBytes, this.gcCheckDueBytes * 2);
        })
        .catch((err: unknown) => {
          // Disk full or the like: the store keeps serving; try again after a longer wait.
          this.gcCheckDueBytes = GC_MAX_WAIT_CHECKS * this.opts.gcCheckEveryBytes;
          this.logger?.warn({ dir: this.dir, err: (err as Error).message, code: (err as StorageError).code }, 'background gc failed');
        })
        .finally(() => {
          this.gcScheduled = false;
        });
    });
  }

  /** Write a checkpoint now (also done on a schedule and on close). Resolves with the version it covers. */
  checkpoint(): Promise<number> {
    this.assertOpen();
    return this.exclusive(() => this.checkpointLocked());
  }

  private async checkpointLocked(): Promise<number> {
    this.advanceHorizon();
    // Capture synchronously: one consistent state, whatever appends come next.
    const active = this.writer.active;
    const segments: CheckpointSegment[] = [...this.segments.values()]
      .filter((s) => !s.isRetired)
      .map((s) => ({ kind: s.kind, number: s.number, sizeBytes: s.sizeBytes, firstVersion: s.firstVersion, lastVersion: s.lastVersion }));
    const snapshots = [...this.snapshots.entries()];
    const data: CheckpointData = {
      meta: {
        formatVersion: 1,
        sequence: this.checkpointSequence + 1,
        version: this.currentVersion,
        horizonVersion: this.horizon,
        sizeBytes: this.sizeBytes,
        replayFrom: { segmentNumber: active.number, positionBytes: active.sizeBytes },
        segments,
        nextGcNumber: this.nextGcNumber,
        snapshots: snapshots.map(([name, s]) => ({ name, version: s.version, extentCount: s.map.size })),
        extentCount: this.map.size,
        historyCount: this.history.size,
      },
      map: this.map.toColumns(),
      snapshotMaps: snapshots.map(([, s]) => s.map.toColumns()),
      history: this.history.toColumns(),
    };
    const records = this.recordsSinceCheckpoint;
    const bytes = this.bytesSinceCheckpoint;
    this.recordsSinceCheckpoint = 0;
    this.bytesSinceCheckpoint = 0;
    try {
      // Everything the checkpoint maps must be on disk before the checkpoint is.
      await this.writer.flush();
      this.checkpointSequence = data.meta.sequence;
      await writeCheckpoint(this.dir, data);
      this.checkpointDueRecords = this.opts.checkpointEveryRecords;
      this.checkpointDueBytes = this.opts.checkpointEveryBytes;
    } catch (err) {
      this.recordsSinceCheckpoint += records;
      this.bytesSinceCheckpoint += bytes;
      throw err;
    }
    return data.meta.version;
  }

  // ---- snapshots -----------------------------------------------------------------------

  /** Pin the disk as of `version` (default: now) under a name; durable when this resolves. */
  async createSnapshot(name: string, version: number = this.currentVersion): Promise<SnapshotInfo> {
    this.assertOpen();
    if (typeof name !== 'string' || name.length === 0 || name.length > 200) throw new StorageError('ERR_INVALID', 'snapshot name must be 1..200 characters');
    if (this.snapshots.has(name)) throw new StorageError('ERR_SNAPSHOT_EXISTS', `snapshot ${JSON.stringify(name)} exists`);
    if (!Number.isSafeInteger(version) || version > this.currentVersion || version < this.horizon) {
      throw new OutOfRangeError(`cannot snapshot version ${version}: the store holds versions ${this.horizon}..${this.currentVersion}`);
    }
    // Built now, not in the queue: a later GC could otherwise move the horizon past it.
    const map = version === this.currentVersion ? this.map.clone() : this.history.imageMapAt(this.map, version);
    this.snapshots.set(name, { version, map });
    await this.exclusive(() => this.checkpointLocked());
    return { name, version };
  }

  async deleteSnapshot(name: string): Promise<void> {
    this.assertOpen();
    if (!this.snapshots.delete(name)) throw new SnapshotUnknownError(name);
    await this.exclusive(() => this.checkpointLocked());
  }

  listSnapshots(): SnapshotInfo[] {
    return [...this.snapshots.entries()].map(([name, s]) => ({ name, version: s.version })).sort((a, b) => a.version - b.version);
  }

  // ---- sync streams --------------------------------------------------------------------

  /** Oldest version recordsSince() can start after: the log segments from there on are intact. */
  get logStartVersion(): number {
    const logs = this.logSegmentsNewestFirst();
    let oldest = logs[0];
    for (let i = 1; i < logs.length && logs[i].number === logs[i - 1].number - 1; i += 1) oldest = logs[i];
    // Log segments always start with a record once anything follows them; an empty one is the active tail.
    return oldest && oldest.firstVersion > 0 ? oldest.firstVersion - 1 : this.currentVersion;
  }

  hasRecordsSince(version: number): boolean {
    return version >= this.logStartVersion && version <= this.currentVersion;
  }

  /**
   * The records after `version` up to the version current at the call, in order. Throws
   * ERR_LOG_TRUNCATED (on first iteration) if GC reclaimed that history: send an image.
   */
  recordsSince(version: number): AsyncIterable<LsvdRecord> {
    this.assertOpen();
    const endVersion = this.currentVersion;
    if (!Number.isSafeInteger(version) || version < 0 || version > endVersion) {
      throw new OutOfRangeError(`recordsSince(${version}): the store is at version ${endVersion}`);
    }
    const start = this.logStartVersion;
    const truncated = version < start;
    const logs = [...this.segments.values()].filter((s) => s.kind === 'log' && s.lastVersion > version).sort((a, b) => a.number - b.number);
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        if (truncated) throw new LogTruncatedError(version, start);
        let expect = version + 1;
        // While the stream runs, GC keeps the log segments it has yet to read.
        const cursor = { version };
        self.streamCursors.add(cursor);
        try {
          for (const seg of logs) {
            if (expect > endVersion) return;
            for await (const rec of self.readLogSegment(seg, expect, endVersion)) {
              if (rec.version !== expect) throw new CorruptError(`log out of order in ${seg.name}: expected version ${expect} got ${rec.version}`);
              expect += 1;
              cursor.version = rec.version;
              yield rec;
            }
          }
          if (expect <= endVersion) throw new CorruptError(`log ends at version ${expect - 1}, expected up to ${endVersion}`);
        } finally {
          self.streamCursors.delete(cursor);
        }
      },
    };
  }

  /** Records of one log segment with versions in [fromVersion, toVersion], verified by crc. */
  private async *readLogSegment(seg: SegmentFile, fromVersion: number, toVersion: number): AsyncGenerator<LsvdRecord> {
    let pos = SEGMENT_HEADER_BYTES;
    const end = seg.sizeBytes;
    const header = Buffer.allocUnsafe(RECORD_HEADER_BYTES);
    while (pos < end) {
      await this.readSegmentBytes(seg, pos, RECORD_HEADER_BYTES, header);
      const total = RECORD_HEADER_BYTES + (header.readUInt32LE(32) >>> 0);
      const buf = Buffer.allocUnsafe(total);
      await this.readSegmentBytes(seg, pos, total, buf);
      const parsed = parseRecord(buf, 0);
      if (!parsed.ok) throw new CorruptError(`sync stream: ${seg.name}:${pos} is not a valid record (${parsed.reason})`);
      const h = parsed.header;
      pos += parsed.totalBytes;
      if (h.version < fromVersion) continue;
      if (h.version > toVersion) return;
      const rec: LsvdRecord = { version: h.version, kind: h.kind, offsetBytes: h.offsetBytes, lengthBytes: h.lengthBytes };
      if (h.kind === 'write') rec.data = buf.subarray(RECORD_HEADER_BYTES);
      yield rec;
    }
  }

  private async readSegmentBytes(seg: SegmentFile, pos: number, len: number, target: Buffer): Promise<void> {
    if (this.writer.readPending(seg, pos, len, target, 0)) return;
    await seg.readAt(target, 0, len, pos);
  }

  /** A consistent image at the current version; later appends do not change it. */
  imageAt(): LsvdImage {
    this.assertOpen();
    const version = this.currentVersion;
    const map = this.map.clone();
    this.images.add(map);
    const release = (): void => {
      this.images.delete(map);
    };
    const self = this;
    return {
      version,
      release,
      extents(maxChunkBytes = MiB) {
        return {
          async *[Symbol.asyncIterator]() {
            try {
              yield* self.iterateRuns(map, maxChunkBytes);
            } finally {
              release();
            }
          },
        };
      },
    };
  }

  /** Contiguous mapped runs of a map, cut at maxChunkBytes boundaries. */
  private async *iterateRuns(map: ExtentMap, maxChunkBytes: number): AsyncGenerator<{ offsetBytes: number; data: Buffer }> {
    const runs: number[] = [];
    map.forEach((s, l) => {
      const last = runs.length - 2;
      if (last >= 0 && runs[last] + runs[last + 1] === s) runs[last + 1] += l;
      else runs.push(s, l);
    });
    for (let i = 0; i < runs.length; i += 2) {
      for (let off = runs[i]; off < runs[i] + runs[i + 1]; off += maxChunkBytes) {
        const len = Math.min(maxChunkBytes, runs[i] + runs[i + 1] - off);
        yield { offsetBytes: off, data: await this.readRange(map, off, len) };
      }
    }
  }

  /**
   * Receiver side: replace the whole content with an image at `version`. Data goes to new
   * segments; commit() swaps atomically through a checkpoint (a crash before it leaves the
   * old state). Snapshots are dropped: they belong to the replaced history.
   */
  beginImage(version: number): ImageSink {
    this.assertOpen();
    if (!Number.isSafeInteger(version) || version < 0) throw new StorageError('ERR_INVALID', `bad image version ${version}`);
    const out = new OutputSegments(this.dir, this.segmentSizeBytes, () => this.nextGcNumber++);
    const map = new ExtentMap();
    let done = false;
    return {
      version,
      write: async (offsetBytes, data) => {
        if (done) throw new StorageError('ERR_INVALID', 'image already committed or aborted');
        this.checkRange(offsetBytes, data.length);
        if (data.length === 0) return;
        for (let at = 0; at < data.length; at += MiB) {
          const piece = data.subarray(at, Math.min(data.length, at + MiB));
          const placed = await out.add(version, offsetBytes + at, piece);
          map.set(offsetBytes + at, piece.length, placed.segment.id, placed.dataPositionBytes, version);
        }
      },
      commit: async () => {
        if (done) throw new StorageError('ERR_INVALID', 'image already committed or aborted');
        done = true;
        await out.finish();
        await this.exclusive(async () => {
          await this.writer.flush();
          const old = [...this.segments.values()];
          for (const seg of out.created) this.segments.set(seg.id, seg);
          this.writer.startNewSegment();
          this.map = map;
          this.history = new History();
          this.snapshots.clear();
          this.images.clear();
          this.currentVersion = version;
          this.horizon = version;
          this.writer.appendedVersion = version;
          this.writer.durableVersion = version;
          for (const seg of old) this.segments.delete(seg.id);
          // Two checkpoints: the fallback one must not name the files deleted next.
          await this.checkpointLocked();
          await this.checkpointLocked();
          await Promise.all(old.map((seg) => this.retire(seg)));
        });
      },
      abort: async () => {
        if (done) return;
        done = true;
        await out.discard((p) => unlink(p));
      },
    };
  }

  /** Convenience over beginImage: install a whole image from an iterable. */
  async installImage(version: number, extents: AsyncIterable<{ offsetBytes: number; data: Uint8Array }> | Iterable<{ offsetBytes: number; data: Uint8Array }>): Promise<void> {
    const sink = this.beginImage(version);
    try {
      for await (const e of extents) await sink.write(e.offsetBytes, e.data);
    } catch (err) {
      await sink.abort();
      throw err;
    }
    await sink.commit();
  }

  // ---- GC ------------------------------------------------------------------------------

  /** Rewrite segments whose referenced share is below the threshold; appends may continue meanwhile. */
  gc(options: { liveShareThreshold?: number } = {}): Promise<GcReport> {
    this.assertOpen();
    return this.exclusive(() => this.gcLocked(options.liveShareThreshold ?? this.opts.gcLiveShareThreshold));
  }

  private visitReferences(fn: PieceFn): void {
    this.map.forEach(fn);
    for (const s of this.snapshots.values()) s.map.forEach(fn);
    for (const m of this.images) m.forEach(fn);
    this.history.forEach(fn);
  }

  private async gcLocked(threshold: number): Promise<GcReport> {
    const startedMs = Date.now();
    await this.writer.flush();
    this.advanceHorizon();
    const ranges = referencedRanges((fn) => this.visitReferences(fn));
    let keepLogAfter = this.horizon;
    for (const c of this.streamCursors) keepLogAfter = Math.min(keepLogAfter, c.version);
    const active = this.writer.active;
    const victims: SegmentFile[] = [];
    for (const seg of this.segments.values()) {
      if (seg === active || seg.isRetired) continue;
      // Log segments inside the sync window, or still ahead of a running stream, stay whole.
      if (seg.kind === 'log' && seg.lastVersion > keepLogAfter) continue;
      const payload = Math.max(1, seg.sizeBytes - SEGMENT_HEADER_BYTES);
      if (rangeListBytes(ranges.get(seg.id)) / payload < threshold) victims.push(seg);
    }
    const report: GcReport = { segmentsRewritten: 0, bytesReclaimed: 0, bytesCopied: 0, segmentsCreated: 0, durationMs: 0 };
    if (victims.length === 0) {
      report.durationMs = Date.now() - startedMs;
      return report;
    }
    const out = new OutputSegments(this.dir, this.segmentSizeBytes, () => this.nextGcNumber++);
    const table: RelocationTable = new Map();
    try {
      for (const v of victims) {
        const list = ranges.get(v.id);
        if (list && list.length > 0) report.bytesCopied += await copyVictim(v, list, out, table);
      }
      await out.finish();
    } catch (err) {
      await out.discard((p) => unlink(p));
      throw wrapFsError(err, `GC in ${this.dir}`);
    }
    // Synchronous swap: every structure moves to the copies in one step (appends made during
    // the copy only ever reference sub-ranges of what was copied, or the active segment).
    const relocate = makeRelocator(table);
    this.map.relocate(relocate);
    for (const s of this.snapshots.values()) s.map.relocate(relocate);
    for (const m of this.images) m.relocate(relocate);
    this.history.relocate(relocate);
    for (const seg of out.created) this.segments.set(seg.id, seg);
    for (const v of victims) this.segments.delete(v.id);
    // Two checkpoints, so the fallback checkpoint does not name the victims either.
    await this.checkpointLocked();
    await this.checkpointLocked();
    const victimBytes = victims.reduce((n, v) => n + v.sizeBytes, 0);
    await Promise.all(victims.map((v) => this.retire(v)));
    report.segmentsRewritten = victims.length;
    report.segmentsCreated = out.created.length;
    report.bytesReclaimed = victimBytes - out.bytesWritten;
    report.durationMs = Date.now() - startedMs;
    this.logger?.info({ dir: this.dir, ...report }, 'lsvd gc');
    return report;
  }

  /** Delete a segment no checkpoint names any more, once no read holds it; log files are kept for reuse. */
  private retire(seg: SegmentFile): Promise<void> {
    return seg.retire((p) => (seg.kind === 'log' && !this.closed ? this.recycled.keep(p, seg.lastVersion, seg.sizeBytes) : unlink(p)));
  }

  // ---- comparison ----------------------------------------------------------------------

  /**
   * sha256 over the logical content, independent of the log layout: for each 1 MiB chunk
   * holding any non-zero byte, (chunk index as u64 LE, chunk bytes). Equal disks hash equal.
   */
  async contentHash(): Promise<string> {
    this.assertOpen();
    const map = this.map.clone();
    this.images.add(map);
    try {
      const chunks: number[] = [];
      map.forEach((s, l) => {
        const first = Math.floor(s / HASH_CHUNK_BYTES);
        const last = Math.floor((s + l - 1) / HASH_CHUNK_BYTES);
        for (let c = Math.max(first, chunks.length > 0 ? chunks[chunks.length - 1] + 1 : first); c <= last; c += 1) chunks.push(c);
      });
      const hash = createHash('sha256');
      const index = Buffer.alloc(8);
      for (const c of chunks) {
        const off = c * HASH_CHUNK_BYTES;
        const data = await this.readRange(map, off, Math.min(HASH_CHUNK_BYTES, this.sizeBytes - off));
        if (isAllZero(data)) continue;
        index.writeUInt32LE(c % 2 ** 32, 0);
        index.writeUInt32LE(Math.floor(c / 2 ** 32), 4);
        hash.update(index);
        hash.update(data);
      }
      return hash.digest('hex');
    } finally {
      this.images.delete(map);
    }
  }

  async stats(): Promise<LsvdStats> {
    let diskBytes = this.segmentBytes + this.recycled.bytes;
    for (const seq of await listCheckpoints(this.dir)) {
      diskBytes += (await stat(join(this.dir, `checkpoint-${String(seq).padStart(12, '0')}.ckpt`)).catch(() => ({ size: 0 }))).size;
    }
    return {
      version: this.currentVersion,
      durableVersion: this.writer.durableVersion,
      horizonVersion: this.horizon,
      diskBytes,
      recycledBytes: this.recycled.bytes,
      liveBytes: this.map.liveBytes,
      segments: this.segments.size,
      extents: this.map.size,
      historyPieces: this.history.size,
      snapshots: this.snapshots.size,
      bufferedBytes: this.writer.bufferedBytes,
      backgroundGcRuns: this.autoGcRuns,
      lastBackgroundGc: this.lastAutoGc,
    };
  }

  /** Segment file names currently in use (tests, operators). */
  segmentNames(): string[] {
    return [...this.segments.values()].map((s) => segmentFileName(s.kind, s.number)).sort();
  }

  // ---- lifecycle -----------------------------------------------------------------------

  /** Flush, checkpoint and release files. Idempotent. A store whose disk failed closes without flushing. */
  close(options: { checkpoint?: boolean } = {}): Promise<void> {
    if (!this.closing) this.closing = this.closeOnce(options.checkpoint ?? true);
    return this.closing;
  }

  /**
   * checkpoint false: flush only, as if the process died after its last flush (tests; and
   * a quick stop when the next open may replay the log).
   */
  private async closeOnce(checkpoint: boolean): Promise<void> {
    try {
      if (this.writer.error) {
        // Nothing more can be made durable; the next open recovers from what is on disk.
      } else if (checkpoint) await this.exclusive(() => this.checkpointLocked());
      else await this.writer.flush();
    } finally {
      this.closed = true;
      this.writer.dispose();
      await this.maintenance;
      await Promise.all([...this.segments.values()].map((s) => s.close()));
      await this.recycled.releaseAll();
      if (this.diskFaults) detachDiskFaults(this.dir, this.diskFaults);
      await this.lock?.release();
    }
  }
}

const ZERO_CHUNK = Buffer.alloc(HASH_CHUNK_BYTES);

function isAllZero(buf: Buffer): boolean {
  return buf.equals(ZERO_CHUNK.subarray(0, buf.length));
}
