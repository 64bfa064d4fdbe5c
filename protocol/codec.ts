import { Packr, Unpackr } from 'msgpackr';
import { ProtocolError } from './errors.js';
import { ErrorCodes, type Batch, type Frame } from './frames.js';
import { validateBatch } from './validate.js';

/*
 * One Batch ⇄ one msgpack message.
 *
 * Records (msgpackr's record extension) are on, without shared structures: each message carries
 * the definitions of the structures it uses, and the Unpackr starts every message from an empty
 * structure table, so decoding a message never depends on an earlier one (links reconnect, and a
 * new peer must understand the first message it sees). Measured on this machine (ns per frame,
 * maps → records): 64 acks per batch decode 329 → 114 and encode 242 → 161, 2.8× smaller;
 * 64 writes of 4 KiB decode 523 → 292; a lone frame costs ~350 ns more to encode and decode,
 * since its structure is defined inline. Batches are the regime that matters at 100k frames/s.
 *
 * Binary fields travel as msgpack bin. On decode they are Buffers viewing the received message
 * (no copy): a frame's `data` keeps the whole message alive for as long as it is held.
 *
 * Large payloads travel detached, so no one copies them into a msgpack buffer: a batch holding a
 * `data` of at least DETACH_MIN_BYTES is sent as an envelope,
 *
 *   0xc1 | u32 headerBytes | u32 n | n × (u32 frameIndex, u32 dataBytes) | msgpack batch | data…
 *
 * where the msgpack batch lacks those frames' `data`, and the data follow in frame order.
 * 0xc1 is the one byte msgpack never uses, so an envelope is never mistaken for a plain message.
 * The link sends the envelope's parts as fragments of one WebSocket message (the payloads are
 * written from the caller's buffers) and receives the fragments unjoined; decoding views each
 * payload where it lies and copies only one that straddles fragments (another sender may cut
 * fragments anywhere). Measured here: a 1 MiB write cost a replica one more 1 MiB allocation and
 * copy per hop when packed, and allocations of that size drive V8's full GCs.
 */

const packr = new Packr({ useRecords: true, moreTypes: false });
// mapsAsObjects: plain msgpack maps (from other encoders, or our records' absence) decode as objects, not Maps.
const unpackr = new Unpackr({ useRecords: true, mapsAsObjects: true, moreTypes: false });

/** Payloads at least this long travel detached (below it, copying beats another fragment). */
export const DETACH_MIN_BYTES = 64 * 1024;
const ENVELOPE_MARK = 0xc1;

/**
 * Encode a batch as the parts of one message: [msgpack] or [envelope head, payload…]. Payload
 * parts are the frames' own buffers (not copied); the head is never reused by later calls.
 */
export function encodeBatchParts(batch: Batch): Buffer[] {
  let detached: Array<{ index: number; data: Uint8Array }> | undefined;
  let frames = batch.frames;
  for (let i = 0; i < frames.length; i++) {
    const data = (frames[i] as { data?: unknown }).data;
    if (!(data instanceof Uint8Array) || data.length < DETACH_MIN_BYTES) continue;
    if (!detached) {
      detached = [];
      frames = [...frames];
    }
    detached.push({ index: i, data });
    const { data: _omitted, ...rest } = frames[i] as { data?: Uint8Array };
    frames[i] = rest as Frame;
  }
  if (!detached) return [packr.pack(batch)];
  const header = packr.pack({ from: batch.from, lc: batch.lc, frames });
  const head = Buffer.allocUnsafe(9 + detached.length * 8 + header.length);
  head[0] = ENVELOPE_MARK;
  head.writeUInt32LE(header.length, 1);
  head.writeUInt32LE(detached.length, 5);
  let at = 9;
  for (const d of detached) {
    head.writeUInt32LE(d.index, at);
    head.writeUInt32LE(d.data.length, at + 4);
    at += 8;
  }
  header.copy(head, at);
  const parts: Buffer[] = [head];
  for (const d of detached) parts.push(Buffer.isBuffer(d.data) ? d.data : Buffer.from(d.data.buffer, d.data.byteOffset, d.data.length));
  return parts;
}

/** Encode a batch as one Buffer (tests, tools; links send the parts). */
export function encodeBatch(batch: Batch): Buffer {
  const parts = encodeBatchParts(batch);
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

/**
 * Decode one message to an unvalidated value (run validateBatch on it next).
 * Any malformed input throws ProtocolError(ERR_BAD_FRAME); nothing else escapes.
 */
export function decodeMessage(bytes: Uint8Array): unknown {
  return decodeMessageParts([bytes]);
}

/** decodeMessage over the fragments of one message, as received. */
export function decodeMessageParts(parts: readonly Uint8Array[]): unknown {
  const first = parts.find((p) => p.length > 0);
  if (!first) throw new ProtocolError(ErrorCodes.badFrame, 'empty message');
  if (first[0] === ENVELOPE_MARK) return decodeEnvelope(parts);
  return decodeMsgpack(parts.length === 1 ? parts[0] : Buffer.concat(parts));
}

/** Bytes across fragments, read front to back; a piece inside one fragment is not copied. */
class FragmentCursor {
  private part = 0;
  private offset = 0;
  remaining: number;

  constructor(private readonly parts: readonly Uint8Array[]) {
    this.remaining = parts.reduce((n, p) => n + p.length, 0);
  }

  take(n: number): Uint8Array {
    if (n > this.remaining) throw new ProtocolError(ErrorCodes.badFrame, `envelope is short: wants ${n} more bytes, has ${this.remaining}`);
    this.remaining -= n;
    while (this.part < this.parts.length && this.offset === this.parts[this.part].length) {
      this.part++;
      this.offset = 0;
    }
    const p = this.parts[this.part];
    if (n === 0) return new Uint8Array(0);
    if (this.offset + n <= p.length) {
      const out = p.subarray(this.offset, this.offset + n);
      this.offset += n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const q = this.parts[this.part];
      const count = Math.min(n - filled, q.length - this.offset);
      out.set(q.subarray(this.offset, this.offset + count), filled);
      filled += count;
      this.offset += count;
      if (this.offset === q.length) {
        this.part++;
        this.offset = 0;
      }
    }
    return out;
  }
}

function decodeEnvelope(parts: readonly Uint8Array[]): unknown {
  const bad = (why: string) => new ProtocolError(ErrorCodes.badFrame, `bad envelope: ${why}`);
  const cursor = new FragmentCursor(parts);
  const fixed = toBuffer(cursor.take(9));
  const headerBytes = fixed.readUInt32LE(1);
  const n = fixed.readUInt32LE(5);
  if (n === 0 || n * 8 > cursor.remaining) throw bad(`${n} detached payloads`);
  const table = toBuffer(cursor.take(n * 8));
  if (headerBytes > cursor.remaining) throw bad(`header of ${headerBytes} bytes with ${cursor.remaining} left`);
  const value = decodeMsgpack(cursor.take(headerBytes)) as { frames?: unknown };
  const frames = value !== null && typeof value === 'object' && Array.isArray(value.frames) ? (value.frames as unknown[]) : undefined;
  if (!frames) throw bad('header is not a batch');
  let previous = -1;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const index = table.readUInt32LE(i * 8);
    total += table.readUInt32LE(i * 8 + 4);
    if (index <= previous || index >= frames.length) throw bad(`payload ${i} names frame ${index} (of ${frames.length}, after ${previous})`);
    const frame = frames[index];
    if (frame === null || typeof frame !== 'object' || 'data' in frame) throw bad(`frame ${index} cannot take a payload`);
    previous = index;
  }
  if (total !== cursor.remaining) throw bad(`payloads of ${total} bytes, ${cursor.remaining} bytes follow`);
  for (let i = 0; i < n; i++) {
    const frame = frames[table.readUInt32LE(i * 8)] as { data?: Uint8Array };
    frame.data = toBuffer(cursor.take(table.readUInt32LE(i * 8 + 4)));
  }
  return value;
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

function decodeMsgpack(bytes: Uint8Array): unknown {
  if (bytes.length === 0) throw new ProtocolError(ErrorCodes.badFrame, 'empty message');
  try {
    // unpackMultiple stops after the first value, so trailing bytes are reported by offset
    // (plain unpack would JSON-render the whole decoded value into its error message).
    let value: unknown;
    let endOffset = 0;
    unpackr.unpackMultiple(bytes, (first: unknown, _start?: number, end?: number) => {
      value = first;
      endOffset = end ?? -1;
      return false;
    });
    if (endOffset !== bytes.length) {
      throw new ProtocolError(
        ErrorCodes.badFrame,
        `message has ${bytes.length - endOffset} trailing bytes after the batch (offset ${endOffset} of ${bytes.length})`,
      );
    }
    return value;
  } catch (err) {
    if (err instanceof ProtocolError) throw err;
    // msgpackr throws plain Errors, RangeErrors (bad lengths, deep nesting) and the like.
    const reason = err instanceof Error ? err.message : String(err);
    throw new ProtocolError(ErrorCodes.badFrame, `undecodable message: ${reason}`, { cause: err });
  }
}

/** Decode and validate one message: a typed Batch, or ProtocolError(ERR_BAD_FRAME). */
export function decodeBatch(bytes: Uint8Array): Batch {
  return validateBatch(decodeMessage(bytes));
}

/** decodeBatch over the fragments of one message. */
export function decodeBatchParts(parts: readonly Uint8Array[]): Batch {
  return validateBatch(decodeMessageParts(parts));
}
