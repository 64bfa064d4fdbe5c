/**
 * Storage failures with stable `code` strings, so callers (the replica actor, the NBD
 * server's errno mapping) and tests match on codes, never on message text.
 */
export type StorageErrorCode =
  | 'ERR_VERSION_GAP'
  | 'ERR_OUT_OF_RANGE'
  | 'ERR_INVALID'
  | 'ERR_CORRUPT'
  | 'ERR_LOG_TRUNCATED'
  | 'ERR_NO_SPACE'
  | 'ERR_IO'
  | 'ERR_CLOSED'
  | 'ERR_SNAPSHOT_UNKNOWN'
  | 'ERR_SNAPSHOT_EXISTS'
  | 'ERR_BUSY'
  | 'ERR_LOCKED'
  | 'ERR_NOT_FOUND';

export class StorageError extends Error {
  override readonly name: string = 'StorageError';
  readonly code: StorageErrorCode;

  constructor(code: StorageErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

export class VersionGapError extends StorageError {
  override readonly name = 'VersionGapError';
  constructor(
    readonly expectedVersion: number,
    readonly gotVersion: number,
  ) {
    super('ERR_VERSION_GAP', `version gap: expected ${expectedVersion} got ${gotVersion}`);
  }
}

export class OutOfRangeError extends StorageError {
  override readonly name = 'OutOfRangeError';
  constructor(message: string) {
    super('ERR_OUT_OF_RANGE', message);
  }
}

export class CorruptError extends StorageError {
  override readonly name = 'CorruptError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CORRUPT', message, options);
  }
}

export class LogTruncatedError extends StorageError {
  override readonly name = 'LogTruncatedError';
  constructor(
    readonly requestedVersion: number,
    readonly oldestAvailableVersion: number,
  ) {
    super(
      'ERR_LOG_TRUNCATED',
      `log no longer holds the records after version ${requestedVersion}; it reaches back to version ${oldestAvailableVersion} (send an image)`,
    );
  }
}

export class NoSpaceError extends StorageError {
  override readonly name = 'NoSpaceError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_NO_SPACE', message, options);
  }
}

export class ClosedError extends StorageError {
  override readonly name = 'ClosedError';
  constructor(what = 'store') {
    super('ERR_CLOSED', `${what} is closed`);
  }
}

export class SnapshotUnknownError extends StorageError {
  override readonly name = 'SnapshotUnknownError';
  constructor(readonly snapshotName: string) {
    super('ERR_SNAPSHOT_UNKNOWN', `no snapshot named ${JSON.stringify(snapshotName)}`);
  }
}

/** Map an fs error to a storage error: ENOSPC/EDQUOT become ERR_NO_SPACE, the rest ERR_IO. */
export function wrapFsError(err: unknown, what: string): StorageError {
  if (err instanceof StorageError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const detail = err instanceof Error ? err.message : String(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') return new NoSpaceError(`${what}: no space left on device (${detail})`, { cause: err });
  return new StorageError('ERR_IO', `${what}: ${detail}`, { cause: err });
}
