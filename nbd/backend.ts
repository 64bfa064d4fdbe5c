/**
 * The one thing the NBD server knows about storage. A local LSVD (single-node `freebs serve`)
 * and the replicated volume (the driver) both implement it.
 *
 * Offsets and lengths are byte counts as JS numbers: exact up to 2^53, far past any volume.
 * The server checks ranges against `sizeBytes` before calling, so a backend may assume
 * `offsetBytes + lengthBytes <= sizeBytes`.
 *
 * Errors: reject with an Error whose `code` says what went wrong; the server maps codes to
 * NBD errnos once (see `errnoForError` in nbd/errors.ts): ENOSPC / ERR_NO_SPACE → ENOSPC,
 * ERR_READ_ONLY → EPERM, ERR_OUT_OF_RANGE / ERR_INVALID → EINVAL, anything else → EIO.
 */
export interface BlockBackend {
  readonly sizeBytes: number;
  /** Snapshot exports and the like: the server advertises READ_ONLY and refuses writes with EPERM. */
  readonly readOnly: boolean;
  /**
   * True only if a flush on one connection makes writes completed on every other connection
   * durable (NBD_FLAG_CAN_MULTI_CONN). A single-writer ordered backend can promise it.
   */
  readonly canMultiConn: boolean;
  /** Preferred and minimum IO sizes, advertised in NBD_INFO_BLOCK_SIZE. */
  readonly minimumBlockSizeBytes?: number;
  readonly preferredBlockSizeBytes?: number;

  /**
   * Exactly lengthBytes bytes (a short buffer is answered with EIO). The server only reads the
   * buffer (it goes to the socket), so a view into shared memory is fine if it is not changed
   * until the reply is written.
   */
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer>;
  /**
   * Optional, preferred over read() when present: fill all of `target` with the bytes at
   * offsetBytes. `target` is the server's, reused for another read once the reply is written, so
   * the backend must not touch it after the promise resolves. (If it rejects, the server never
   * reuses that buffer: reads the backend still has in flight into it do no harm.)
   */
  readInto?(offsetBytes: number, target: Buffer): Promise<void>;
  /**
   * True if write() is done with `data` when it returns: it copied, synchronously, whatever it
   * keeps. The server may then receive the next payload into the same buffer, instead of
   * allocating a fresh one per write that straddles socket chunks (1 MiB writes arrive in 64 KiB
   * chunks: an allocation, 256 page faults and GC pressure each). Absent or false: the server
   * never reuses or changes `data`.
   */
  readonly copiesWriteData?: boolean;

  /**
   * With fua, the data is durable when the promise resolves. `data` may be a view into a received
   * socket chunk; unless copiesWriteData is set, the server never reuses or changes it, so a
   * backend may keep it without copying.
   */
  write(offsetBytes: number, data: Buffer, options: { fua: boolean }): Promise<void>;
  trim(offsetBytes: number, lengthBytes: number, options: { fua: boolean }): Promise<void>;
  /** noHole: the range must stay allocated (reads zero, no trim). */
  writeZeroes(offsetBytes: number, lengthBytes: number, options: { fua: boolean; noHole: boolean }): Promise<void>;
  /** Everything completed before this call is durable when it resolves. */
  flush(): Promise<void>;
  /** Optional read-ahead hint; absent means CACHE succeeds as a no-op. */
  cache?(offsetBytes: number, lengthBytes: number): Promise<void>;
  /** Release resources; idempotent. */
  close?(): Promise<void>;
}

/** Export name → backend. "" is the default export. */
export interface ExportCatalog {
  list(): Array<{ name: string; description?: string }>;
  get(name: string): BlockBackend | undefined;
}
