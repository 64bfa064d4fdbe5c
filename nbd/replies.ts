/**
 * Encoders for everything the server sends: option replies (handshake) and simple / structured
 * replies (transmission). Data payloads are never copied: an encoder returns the header, and the
 * caller queues header and data as separate buffers for one writev.
 */
import {
  NBD_REP_MAGIC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  OPTION_REPLY_HEADER_BYTES,
  SIMPLE_REPLY_HEADER_BYTES,
  STRUCTURED_REPLY_HEADER_BYTES,
} from './constants.js';

/** The 64-bit request cookie ("handle"), kept as two halves: no BigInt on the hot path. */
export interface Cookie {
  hi: number;
  lo: number;
}

/** Longest error message, in characters, put in a reply (a structured error allows 65535 bytes). */
const MAX_MESSAGE_CHARS = 256;

export function optionReply(option: number, replyType: number, data?: Buffer): Buffer {
  const dataBytes = data ? data.length : 0;
  const out = Buffer.allocUnsafe(OPTION_REPLY_HEADER_BYTES + dataBytes);
  out.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  out.writeUInt32BE(option >>> 0, 8);
  out.writeUInt32BE(replyType >>> 0, 12);
  out.writeUInt32BE(dataBytes, 16);
  if (data) data.copy(out, OPTION_REPLY_HEADER_BYTES);
  return out;
}

/** Option error reply carrying a human-readable message. */
export function optionError(option: number, replyType: number, message: string): Buffer {
  return optionReply(option, replyType, Buffer.from(message.slice(0, MAX_MESSAGE_CHARS), 'utf8'));
}

export function simpleReply(errno: number, cookie: Cookie): Buffer {
  const out = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_BYTES);
  out.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  out.writeUInt32BE(errno, 4);
  out.writeUInt32BE(cookie.hi, 8);
  out.writeUInt32BE(cookie.lo, 12);
  return out;
}

function writeStructuredHeader(out: Buffer, flags: number, type: number, cookie: Cookie, payloadBytes: number): void {
  out.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  out.writeUInt16BE(flags, 4);
  out.writeUInt16BE(type, 6);
  out.writeUInt32BE(cookie.hi, 8);
  out.writeUInt32BE(cookie.lo, 12);
  out.writeUInt32BE(payloadBytes, 16);
}

/** Header (20 bytes) + offset (8 bytes) of a final NBD_REPLY_TYPE_OFFSET_DATA chunk; data follows. */
export function offsetDataHeader(cookie: Cookie, offsetBytes: number, dataBytes: number): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 8);
  writeStructuredHeader(out, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, cookie, 8 + dataBytes);
  out.writeUInt32BE(Math.floor(offsetBytes / 0x1_0000_0000), 20);
  out.writeUInt32BE(offsetBytes >>> 0, 24);
  return out;
}

/** A final NBD_REPLY_TYPE_NONE chunk: success without payload. */
export function structuredDone(cookie: Cookie): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES);
  writeStructuredHeader(out, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, cookie, 0);
  return out;
}

/** A final NBD_REPLY_TYPE_ERROR chunk with a short message for a human. */
export function structuredError(cookie: Cookie, errno: number, message: string): Buffer {
  // Cut by characters, not bytes, so the message stays valid UTF-8.
  const text = Buffer.from(message.slice(0, MAX_MESSAGE_CHARS), 'utf8');
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 6 + text.length);
  writeStructuredHeader(out, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, cookie, 6 + text.length);
  out.writeUInt32BE(errno, 20);
  out.writeUInt16BE(text.length, 24);
  text.copy(out, 26);
  return out;
}
