/**
 * The LSVD as a replica's store: write frames in and out, records on disk.
 */
import type { Logger } from 'pino';
import type { WriteFrame } from '../protocol/frames.js';
import { Lsvd } from '../storage/lsvd.js';
import { DiskFaults } from '../storage/disk-faults.js';
import type { ImageSink, ReplicaStore } from './replica-store.js';

export class LsvdStore implements ReplicaStore {
  constructor(
    readonly lsvd: Lsvd,
    /** Stops following a disk-faults file, if any. */
    private readonly onClose: () => void = () => undefined,
  ) {}

  get sizeBytes(): number {
    return this.lsvd.sizeBytes;
  }

  get version(): number {
    return this.lsvd.version;
  }

  get durableVersion(): number {
    return this.lsvd.durableVersion;
  }

  append(frame: WriteFrame): void {
    this.lsvd.append({
      version: frame.v,
      kind: frame.kind,
      offsetBytes: frame.offsetBytes,
      lengthBytes: frame.lengthBytes,
      ...(frame.data ? { data: frame.data } : {}),
    });
  }

  flush(): Promise<number> {
    return this.lsvd.flush();
  }

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    return this.lsvd.read(offsetBytes, lengthBytes);
  }

  readInto(offsetBytes: number, target: Buffer): Promise<void> {
    return this.lsvd.readInto(offsetBytes, target);
  }

  hasRecordsSince(version: number): Promise<boolean> {
    return Promise.resolve(this.lsvd.hasRecordsSince(version));
  }

  async *recordsSince(version: number): AsyncIterable<WriteFrame> {
    for await (const r of this.lsvd.recordsSince(version)) {
      yield {
        t: 'write',
        epoch: 0,
        v: r.version,
        kind: r.kind,
        offsetBytes: r.offsetBytes,
        lengthBytes: r.lengthBytes,
        ...(r.data ? { data: r.data } : {}),
      };
    }
  }

  imageAt(): Promise<{ version: number; chunks(chunkBytes: number): AsyncIterable<{ offsetBytes: number; data: Uint8Array }> }> {
    const image = this.lsvd.imageAt();
    return Promise.resolve({ version: image.version, chunks: (chunkBytes: number) => image.extents(chunkBytes) });
  }

  beginImage(version: number): Promise<ImageSink> {
    return Promise.resolve(this.lsvd.beginImage(version));
  }

  contentHash(): Promise<string> {
    return this.lsvd.contentHash();
  }

  close(): Promise<void> {
    this.onClose();
    return this.lsvd.close();
  }
}

/**
 * Open the volume in `dir`, creating it when sizeBytes is given and nothing is there. With
 * diskFaults, the store's IO is slowed by the delays in that file while it is open;
 * syncWindowBytes bounds the log kept for SYNC (a single-node volume has no peer to serve).
 */
export async function openLsvdStore(
  dir: string,
  sizeBytes: number | undefined,
  logger: Logger,
  options: { diskFaults?: { file: string }; syncWindowBytes?: number; maxBufferedBytes?: number } = {},
): Promise<LsvdStore> {
  const { diskFaults, syncWindowBytes, maxBufferedBytes } = options;
  let faults: DiskFaults | undefined;
  let unwatch = (): void => undefined;
  if (diskFaults) {
    faults = new DiskFaults(logger);
    unwatch = faults.watch(diskFaults.file);
    logger.warn({ file: diskFaults.file }, 'disk faults: following the delays in this file (fault-injection runs only)');
  }
  try {
    // Recovery logs what it cut or repaired through the logger.
    // Options left undefined take the store's defaults.
    const lsvd = await Lsvd.open({ dir, sizeBytes, logger, diskFaults: faults, syncWindowBytes, maxBufferedBytes });
    return new LsvdStore(lsvd, unwatch);
  } catch (err) {
    unwatch();
    throw err;
  }
}
