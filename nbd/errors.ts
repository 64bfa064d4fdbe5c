/**
 * NBD errors with stable `code`s, and the one place backend errors become NBD errnos.
 */
import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_ENOTSUP, NBD_EOVERFLOW, NBD_EPERM, NBD_ESHUTDOWN } from './constants.js';

export type NbdErrorCode =
  | 'ERR_NBD_HANDSHAKE'
  | 'ERR_NBD_BAD_MAGIC'
  | 'ERR_NBD_TOO_LARGE'
  | 'ERR_NBD_UNKNOWN_EXPORT'
  | 'ERR_NBD_TIMEOUT'
  | 'ERR_NBD_TLS_REQUIRED'
  | 'ERR_NBD_TLS'
  | 'ERR_NBD_SHUTDOWN';

/**
 * Why a client's session was ended by the server (reported in the 'disconnect' event), or a
 * backend's way to say the server is shutting down (ERR_NBD_SHUTDOWN → ESHUTDOWN).
 */
export class NbdError extends Error {
  readonly code: NbdErrorCode;
  constructor(code: NbdErrorCode, message: string) {
    super(message);
    this.name = 'NbdError';
    this.code = code;
  }
}

/** Errno names a backend may use as `code` (Node's fs errors do), mapped to NBD's wire errnos. */
const ERRNO_BY_CODE: Readonly<Record<string, number>> = {
  ENOSPC: NBD_ENOSPC,
  EDQUOT: NBD_ENOSPC,
  EFBIG: NBD_ENOSPC,
  ERR_NO_SPACE: NBD_ENOSPC,
  EPERM: NBD_EPERM,
  EROFS: NBD_EPERM,
  EACCES: NBD_EPERM,
  ERR_READ_ONLY: NBD_EPERM,
  EINVAL: NBD_EINVAL,
  ERR_OUT_OF_RANGE: NBD_EINVAL,
  ERR_INVALID: NBD_EINVAL,
  EOVERFLOW: NBD_EOVERFLOW,
  ENOTSUP: NBD_ENOTSUP,
  EOPNOTSUPP: NBD_ENOTSUP,
  ESHUTDOWN: NBD_ESHUTDOWN,
  ERR_SHUTDOWN: NBD_ESHUTDOWN,
  ERR_NBD_SHUTDOWN: NBD_ESHUTDOWN,
};

/**
 * NBD errno for a backend failure: by the error's `code` (see BlockBackend's doc), EIO for
 * anything unknown, including non-Error values. Never returns 0.
 */
export function errnoForError(err: unknown): number {
  if (typeof err === 'object' && err !== null) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string') return ERRNO_BY_CODE[code] ?? NBD_EIO;
  }
  return NBD_EIO;
}

/** A short, human-readable reason for a structured error chunk (never block data). */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
