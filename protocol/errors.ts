import type { ErrorCode } from './frames.js';

/**
 * A wire-level failure with a stable `code` (from ErrorCodes), so callers and tests match on the
 * code, never on message text. Thrown by decode/validate; carried to the peer in an error frame.
 */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
