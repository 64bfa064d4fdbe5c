/**
 * A BlockBackend over one sparse file, like `nbdkit file`: reads and writes go straight to the
 * file, flush is fdatasync, TRIM and WRITE_ZEROES make holes where a file can without
 * fallocate (at the tail, by truncating) and otherwise drop the hint (trim) or write zeroes.
 * One FileHandle is shared by every connection, so a flush covers all of them (CAN_MULTI_CONN).
 */
import fs from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import type { BlockBackend } from './backend.js';

/**
 * Positional read/write through the callback API on the raw fd: in Node 20 it is about twice as
 * fast per call as FileHandle.read/write (measured: 218k vs 104k 4 KiB reads/s), and per-call
 * cost is what a 4 KiB random workload pays.
 */
function pread(fd: number, buffer: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.read(fd, buffer, offset, length, position, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead)));
  });
}

function pwrite(fd: number, buffer: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.write(fd, buffer, offset, length, position, (err, bytesWritten) => (err ? reject(err) : resolve(bytesWritten)));
  });
}

/**
 * Small read buffers are cut from shared slabs: Buffer.allocUnsafe(4096) is not pooled (only
 * sizes under 4 KiB are), so every 4 KiB read would otherwise create its own ArrayBuffer. A slab
 * is never reused; it is freed when the last view into it is gone.
 */
const SLAB_BYTES = 1024 * 1024;
const SLAB_MAX_READ_BYTES = 64 * 1024;
let slab = Buffer.allocUnsafe(0);
let slabUsed = 0;

function readBuffer(lengthBytes: number): Buffer {
  if (lengthBytes > SLAB_MAX_READ_BYTES) return Buffer.allocUnsafe(lengthBytes);
  if (slabUsed + lengthBytes > slab.length) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    slabUsed = 0;
  }
  const out = slab.subarray(slabUsed, slabUsed + lengthBytes);
  // Keep views 8-byte aligned, as the pool does.
  slabUsed += (lengthBytes + 7) & ~7;
  return out;
}

/** Zeroes written per call for WRITE_ZEROES that cannot become a hole. */
const ZERO_CHUNK_BYTES = 1024 * 1024;
let zeroChunk: Buffer | undefined;

export interface FileBackendOptions {
  /** Size of the export. The file is created or extended (sparsely) to it; never shrunk. Default: the file's size. */
  sizeBytes?: number;
  readOnly?: boolean;
  /** Create the file when missing (needs sizeBytes). Default true. */
  create?: boolean;
}

class BackendError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class FileBackend implements BlockBackend {
  readonly minimumBlockSizeBytes = 1;
  readonly preferredBlockSizeBytes = 4096;
  readonly canMultiConn = true;
  private closed = false;

  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly sizeBytes: number,
    readonly readOnly: boolean,
  ) {}

  static async open(path: string, options: FileBackendOptions = {}): Promise<FileBackend> {
    const readOnly = options.readOnly ?? false;
    const create = options.create ?? true;
    let fh: FileHandle;
    if (readOnly) fh = await open(path, 'r');
    else {
      try {
        fh = await open(path, 'r+');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !create) throw err;
        if (options.sizeBytes === undefined) throw new BackendError('ERR_INVALID', `${path} does not exist and no size was given`);
        fh = await open(path, 'w+');
      }
    }
    try {
      const fileBytes = (await fh.stat()).size;
      const sizeBytes = options.sizeBytes ?? fileBytes;
      if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw new BackendError('ERR_INVALID', `bad size ${sizeBytes}`);
      if (fileBytes < sizeBytes) {
        if (readOnly) throw new BackendError('ERR_INVALID', `${path} is ${fileBytes} bytes, smaller than ${sizeBytes}`);
        await fh.truncate(sizeBytes);
      }
      return new FileBackend(fh, path, sizeBytes, readOnly);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const out = readBuffer(lengthBytes);
    await this.readInto(offsetBytes, out);
    return out;
  }

  async readInto(offsetBytes: number, target: Buffer): Promise<void> {
    let done = 0;
    while (done < target.length) {
      const bytesRead = await pread(this.fh.fd, target, done, target.length - done, offsetBytes + done);
      if (bytesRead === 0) {
        // Past the file's end (someone truncated it under us): the disk reads as zeroes there.
        target.fill(0, done);
        break;
      }
      done += bytesRead;
    }
  }

  async write(offsetBytes: number, data: Buffer, options: { fua: boolean }): Promise<void> {
    this.assertWritable();
    await this.writeAll(data, offsetBytes);
    if (options.fua) await this.fh.datasync();
  }

  async trim(offsetBytes: number, lengthBytes: number, options: { fua: boolean }): Promise<void> {
    this.assertWritable();
    // Trim is a hint; a hole is only cheap to make at the tail. Elsewhere the data stays.
    if (offsetBytes + lengthBytes === this.sizeBytes) await this.punchTail(offsetBytes);
    if (options.fua) await this.fh.datasync();
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, options: { fua: boolean; noHole: boolean }): Promise<void> {
    this.assertWritable();
    if (!options.noHole && offsetBytes + lengthBytes === this.sizeBytes) {
      await this.punchTail(offsetBytes);
    } else {
      zeroChunk ??= Buffer.alloc(ZERO_CHUNK_BYTES);
      for (let at = 0; at < lengthBytes; at += ZERO_CHUNK_BYTES) {
        const n = Math.min(ZERO_CHUNK_BYTES, lengthBytes - at);
        await this.writeAll(n === ZERO_CHUNK_BYTES ? zeroChunk : zeroChunk.subarray(0, n), offsetBytes + at);
      }
    }
    if (options.fua) await this.fh.datasync();
  }

  async flush(): Promise<void> {
    if (!this.readOnly) await this.fh.datasync();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  private async writeAll(data: Buffer, positionBytes: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const bytesWritten = await pwrite(this.fh.fd, data, done, data.length - done, positionBytes + done);
      done += bytesWritten;
    }
  }

  /** Deallocate [offset, end) by truncating and re-extending: the re-extended part is a hole. */
  private async punchTail(offsetBytes: number): Promise<void> {
    await this.fh.truncate(offsetBytes);
    await this.fh.truncate(this.sizeBytes);
  }

  private assertWritable(): void {
    if (this.readOnly) throw new BackendError('ERR_READ_ONLY', 'export is read-only');
  }
}
