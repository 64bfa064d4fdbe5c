import type { WriteFrame } from '../protocol/frames.js';

/**
 * What a replica needs from its local copy. The LSVD implements it (see lsvd-store.ts);
 * records travel as write frames so forwarding needs no conversion.
 */
export interface ReplicaStore {
  readonly sizeBytes: number;
  /** Last version applied (in memory at least). */
  readonly version: number;
  /** Last version made durable. */
  readonly durableVersion: number;
  /** Apply the next version. Throws a coded error on a gap or a failed disk. */
  append(frame: WriteFrame): void;
  /** Make everything applied so far durable; resolves with the durable version. */
  flush(): Promise<number>;
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer>;
  /** read() into the caller's buffer (holes as zeros). */
  readInto(offsetBytes: number, target: Buffer): Promise<void>;
  /** Whether the log still holds every version after `version` (else an image is needed). */
  hasRecordsSince(version: number): Promise<boolean>;
  /** Versions after `version`, in order, as write frames (epoch 0: the forwarder stamps it). */
  recordsSince(version: number): AsyncIterable<WriteFrame>;
  /** A consistent image of the live content at a version, read in chunks. */
  imageAt(): Promise<{ version: number; chunks(chunkBytes: number): AsyncIterable<{ offsetBytes: number; data: Uint8Array }> }>;
  /** Receiver side: replace everything with an image, atomically. */
  beginImage(version: number): Promise<ImageSink>;
  contentHash(): Promise<string>;
  close(): Promise<void>;
}

export interface ImageSink {
  write(offsetBytes: number, data: Uint8Array): Promise<void>;
  /** Make the image the store's content at its version; until then the old content stands. */
  commit(): Promise<void>;
  abort(): Promise<void>;
}
