/**
 * Segment files: the log (L…) receives every record in version order; GC output and
 * installed images (G…) hold relocated records and are never replayed, only referenced
 * by a checkpoint. Separate numbering lets recovery demand that log segments after the
 * checkpoint are gapless, whatever GC did.
 *
 * Segment header (32 bytes): magic u32 | formatVersion u16 | kind u8 | flags u8 | number u64
 * | crc32c(bytes 0..16) u32 | 12 reserved zero bytes. Flag 1: a recycled file, whose bytes
 * after the last record of this segment are its previous content (storage/recycled-segments.ts).
 */
import { crc32c } from '@node-rs/crc32';
import { readSync } from 'node:fs';
import { access, open, rename, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { FORMAT_VERSION, readU64, writeU64 } from './record.js';
import { CorruptError, StorageError, wrapFsError } from './errors.js';
import { diskFaultsFor } from './disk-faults.js';

export const SEGMENT_MAGIC = 0x5356534c; // "LSVS"
export const SEGMENT_HEADER_BYTES = 32;

export type SegmentKind = 'log' | 'gc';

/** In-memory id stored in extents: both kinds share one u32 space without colliding. */
export function segmentId(kind: SegmentKind, number: number): number {
  return number * 2 + (kind === 'gc' ? 1 : 0);
}

export function segmentFromId(id: number): { kind: SegmentKind; number: number } {
  return { kind: id % 2 === 1 ? 'gc' : 'log', number: Math.floor(id / 2) };
}

export function segmentFileName(kind: SegmentKind, number: number): string {
  return `${kind === 'log' ? 'L' : 'G'}${String(number).padStart(10, '0')}.seg`;
}

/** Parse a segment file name; undefined for other files. */
export function parseSegmentFileName(name: string): { kind: SegmentKind; number: number } | undefined {
  const m = /^([LG])(\d{10})\.seg$/.exec(name);
  if (!m) return undefined;
  return { kind: m[1] === 'L' ? 'log' : 'gc', number: Number(m[2]) };
}

const FLAG_RECYCLED = 1;

export function encodeSegmentHeader(kind: SegmentKind, number: number, options: { recycled?: boolean } = {}): Buffer {
  const buf = Buffer.alloc(SEGMENT_HEADER_BYTES);
  buf.writeUInt32LE(SEGMENT_MAGIC, 0);
  buf.writeUInt16LE(FORMAT_VERSION, 4);
  buf[6] = kind === 'log' ? 1 : 2;
  buf[7] = options.recycled ? FLAG_RECYCLED : 0;
  writeU64(buf, number, 8);
  buf.writeUInt32LE(crc32c(buf.subarray(0, 16)), 16);
  return buf;
}

/** Whether a (checked) segment header marks a recycled file. */
export function isRecycledSegmentHeader(buf: Buffer): boolean {
  return (buf[7] & FLAG_RECYCLED) !== 0;
}

/** Check a segment header; returns a reason string when it is not the header of this segment. */
export function checkSegmentHeader(buf: Buffer, kind: SegmentKind, number: number): string | undefined {
  if (buf.length < SEGMENT_HEADER_BYTES) return `short segment header (${buf.length} bytes)`;
  if (buf.readUInt32LE(0) !== SEGMENT_MAGIC) return 'bad segment magic';
  if (buf.readUInt32LE(16) !== crc32c(buf.subarray(0, 16))) return 'bad segment header crc';
  if (buf.readUInt16LE(4) !== FORMAT_VERSION) return `unsupported segment format ${buf.readUInt16LE(4)}`;
  if (buf[6] !== (kind === 'log' ? 1 : 2) || readU64(buf, 8) !== number) return 'segment header names another segment';
  return undefined;
}

export class SegmentFile {
  readonly id: number;
  readonly path: string;
  /** Logical end: bytes on disk plus bytes queued in the writer. */
  sizeBytes: number;
  /** Log segments: first and last record versions in it (0 when empty). */
  firstVersion = 0;
  lastVersion = 0;
  /** Reads in flight; a retired segment is closed and deleted when this drops to 0. */
  private pins = 0;
  private retired = false;
  private deleted: Promise<void> | undefined;
  private onDeleted: (() => void) | undefined;
  private fhPromise: Promise<FileHandle> | undefined;
  /** The open file's descriptor, once open: synchronous reads need it at hand. */
  private fd: number | undefined;

  /**
   * Synchronous so the writer can roll over inside a synchronous append: the file itself is
   * created (mode 'create') or opened on first use.
   */
  constructor(
    readonly dir: string,
    readonly kind: SegmentKind,
    readonly number: number,
    sizeBytes: number,
    private readonly mode: 'create' | 'existing' | 'readonly' | 'recycled',
    /** mode 'recycled': the pooled file (storage/recycled-segments.ts) renamed to this segment on first use. */
    private recycledFrom?: string,
  ) {
    this.id = segmentId(kind, number);
    this.path = join(dir, segmentFileName(kind, number));
    this.sizeBytes = sizeBytes;
  }

  get name(): string {
    return segmentFileName(this.kind, this.number);
  }

  get isRetired(): boolean {
    return this.retired;
  }

  handle(): Promise<FileHandle> {
    if (!this.fhPromise) {
      // 'wx+': a name collision means our numbering is wrong; never clobber a segment.
      const flags = this.mode === 'create' ? 'wx+' : this.mode === 'readonly' ? 'r' : 'r+';
      this.fhPromise = this.takeRecycled().then(() => open(this.path, flags)).then(
        (fh) => {
          this.fd = fh.fd;
          return fh;
        },
        (err: unknown) => {
        this.fhPromise = undefined;
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new CorruptError(`segment ${this.name} is missing in ${this.dir}`);
        throw wrapFsError(err, `open segment ${this.path}`);
        },
      );
    }
    return this.fhPromise;
  }

  /** mode 'recycled': give the pooled file this segment's name, once (never over an existing segment). */
  private async takeRecycled(): Promise<void> {
    const from = this.recycledFrom;
    if (from === undefined) return;
    const exists = await access(this.path).then(() => true, () => false);
    if (exists) throw new StorageError('ERR_IO', `segment ${this.path} already exists; refusing to recycle ${from} over it`);
    await rename(from, this.path);
    // Renamed: a later open (after close(), or a failed open) finds the file under its own name.
    this.recycledFrom = undefined;
  }

  /** Read exactly `length` bytes at `position`, pinning the file for the duration. */
  async readAt(target: Buffer, targetOffset: number, length: number, positionBytes: number): Promise<void> {
    this.pins += 1;
    try {
      await diskFaultsFor(this.dir)?.before('read');
      const fh = await this.handle();
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(target, targetOffset + done, length - done, positionBytes + done);
        if (bytesRead === 0) throw new CorruptError(`segment ${this.name} ends at ${positionBytes + done}, expected data up to ${positionBytes + length}`);
        done += bytesRead;
      }
    } catch (err) {
      throw wrapFsError(err, `read segment ${this.name}`);
    } finally {
      this.pins -= 1;
      if (this.retired && this.pins === 0) this.finishDelete();
    }
  }

  /**
   * readAt without waiting, when the file is open (storage/cached-reads.ts says when that pays):
   * false if it is not open yet (use readAt). Nothing can retire the file during the call.
   */
  readAtSync(target: Buffer, targetOffset: number, length: number, positionBytes: number): boolean {
    const fd = this.fd;
    if (fd === undefined || this.retired || diskFaultsFor(this.dir)?.slowReads) return false;
    let done = 0;
    try {
      while (done < length) {
        const bytesRead = readSync(fd, target, targetOffset + done, length - done, positionBytes + done);
        if (bytesRead === 0) throw new CorruptError(`segment ${this.name} ends at ${positionBytes + done}, expected data up to ${positionBytes + length}`);
        done += bytesRead;
      }
    } catch (err) {
      throw wrapFsError(err, `read segment ${this.name}`);
    }
    return true;
  }

  /** Write all of `buffers` at `position` (loops over short writes). */
  async writeAt(buffers: Buffer[], positionBytes: number): Promise<void> {
    await diskFaultsFor(this.dir)?.before('write');
    const fh = await this.handle();
    let pos = positionBytes;
    let pending = buffers;
    while (pending.length > 0) {
      const total = pending.reduce((n, b) => n + b.length, 0);
      let bytesWritten: number;
      try {
        ({ bytesWritten } = await fh.writev(pending, pos));
      } catch (err) {
        // Name the file: a bare "ENOSPC: no space left on device, write" does not say where.
        throw wrapFsError(err, `write ${this.path} at ${pos}`);
      }
      pos += bytesWritten;
      if (bytesWritten >= total) return;
      // Short write: drop what went out and go again (the next call reports ENOSPC if that is why).
      let skip = bytesWritten;
      const rest: Buffer[] = [];
      for (const b of pending) {
        if (skip >= b.length) skip -= b.length;
        else {
          rest.push(skip > 0 ? b.subarray(skip) : b);
          skip = 0;
        }
      }
      pending = rest;
    }
  }

  async datasync(): Promise<void> {
    await diskFaultsFor(this.dir)?.before('sync');
    const fh = await this.handle();
    await fh.datasync().catch((err: unknown) => {
      throw wrapFsError(err, `fdatasync ${this.path}`);
    });
  }

  /** Delete once no read holds it (GC, image install). Resolves when the file is gone. */
  retire(unlinkFn: (path: string) => Promise<void>): Promise<void> {
    if (!this.deleted) {
      this.retired = true;
      this.deleted = new Promise<void>((resolve) => {
        this.onDeleted = () => {
          this.fd = undefined;
          const closing = this.fhPromise ? this.fhPromise.then((fh) => fh.close()).catch(() => undefined) : Promise.resolve();
          void closing
            .then(() => unlinkFn(this.path))
            .catch(() => undefined)
            .then(resolve);
        };
      });
      if (this.pins === 0) this.finishDelete();
    }
    return this.deleted;
  }

  private finishDelete(): void {
    const fn = this.onDeleted;
    this.onDeleted = undefined;
    fn?.();
  }

  async close(): Promise<void> {
    if (this.retired || !this.fhPromise) return;
    const p = this.fhPromise;
    this.fhPromise = undefined;
    this.fd = undefined;
    await p.then((fh) => fh.close()).catch(() => undefined);
  }
}

/** fsync a directory so created / renamed / deleted names survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw wrapFsError(err, `fsync directory ${dir}`);
  }
}
