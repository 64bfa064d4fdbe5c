/**
 * The record codec: one record per write / trim / write-zeroes, self-describing so the log
 * can be replayed, streamed to a peer and checked without any other file.
 *
 * Layout (little-endian, 40-byte header, then data for writes only):
 *   0 magic u32 | 4 formatVersion u16 | 6 kind u8 | 7 flags u8 | 8 version u64
 *  16 offsetBytes u64 | 24 lengthBytes u64 | 32 dataLengthBytes u32 | 36 crc32c u32
 * The crc covers header bytes 0..36 followed by the data, so a torn or flipped byte
 * anywhere in the record is caught.
 */
import { crc32c } from '@node-rs/crc32';

export const RECORD_MAGIC = 0x4456534c; // "LSVD" read as little-endian bytes
export const FORMAT_VERSION = 1;
export const RECORD_HEADER_BYTES = 40;
/** A write larger than this is refused; extents and segment positions are u32. */
export const MAX_WRITE_BYTES = 64 * 1024 * 1024;
const TWO_POW_32 = 2 ** 32;

export type RecordKind = 'write' | 'trim' | 'zero';

/** What the writer appends and what a sync stream carries. */
export interface LsvdRecord {
  version: number;
  kind: RecordKind;
  offsetBytes: number;
  lengthBytes: number;
  /** kind 'write' only; data.length === lengthBytes. */
  data?: Uint8Array;
}

export interface RecordHeader {
  version: number;
  kind: RecordKind;
  offsetBytes: number;
  lengthBytes: number;
  dataLengthBytes: number;
  crc: number;
}

const KIND_CODES: Record<RecordKind, number> = { write: 1, trim: 2, zero: 3 };
const KINDS: Array<RecordKind | undefined> = [undefined, 'write', 'trim', 'zero'];

export function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32LE(value % TWO_POW_32 >>> 0, at);
  buf.writeUInt32LE(Math.floor(value / TWO_POW_32), at + 4);
}

export function readU64(buf: Buffer, at: number): number {
  const hi = buf.readUInt32LE(at + 4);
  // Above 2^53 a JS number loses integers: treat as corruption rather than round silently.
  if (hi >= 2 ** 21) return Number.NaN;
  return hi * TWO_POW_32 + buf.readUInt32LE(at);
}

/** Bytes the encoded record takes in a segment. */
export function encodedRecordBytes(record: LsvdRecord): number {
  return RECORD_HEADER_BYTES + (record.kind === 'write' ? record.lengthBytes : 0);
}

/**
 * Encode into `target` at `at` (header and data contiguous, so the batch buffer is written
 * with one syscall and a pending read can slice it). Returns the encoded length.
 */
export function encodeRecordInto(record: LsvdRecord, target: Buffer, at: number): number {
  const dataLengthBytes = record.kind === 'write' ? record.lengthBytes : 0;
  target.writeUInt32LE(RECORD_MAGIC, at);
  target.writeUInt16LE(FORMAT_VERSION, at + 4);
  target[at + 6] = KIND_CODES[record.kind];
  target[at + 7] = 0;
  writeU64(target, record.version, at + 8);
  writeU64(target, record.offsetBytes, at + 16);
  writeU64(target, record.lengthBytes, at + 24);
  target.writeUInt32LE(dataLengthBytes, at + 32);
  // Copy and checksum the caller's data as it is (no slices: this runs once per write).
  const data = record.data;
  if (dataLengthBytes > 0) {
    if (data!.length !== dataLengthBytes) throw new RangeError(`invariant: record ${record.version} has ${data!.length} data bytes, header says ${dataLengthBytes}`);
    target.set(data!, at + RECORD_HEADER_BYTES);
  }
  let crc = crc32c(target.subarray(at, at + 36));
  if (dataLengthBytes > 0) crc = crc32c(data!, crc);
  target.writeUInt32LE(crc, at + 36);
  return RECORD_HEADER_BYTES + dataLengthBytes;
}

export function encodeRecord(record: LsvdRecord): Buffer {
  const buf = Buffer.allocUnsafe(encodedRecordBytes(record));
  encodeRecordInto(record, buf, 0);
  return buf;
}

/** Parse a header; undefined if the magic, format or fields are impossible (not a record start). */
export function decodeHeader(buf: Buffer, at: number): RecordHeader | undefined {
  if (at + RECORD_HEADER_BYTES > buf.length) return undefined;
  if (buf.readUInt32LE(at) !== RECORD_MAGIC) return undefined;
  if (buf.readUInt16LE(at + 4) !== FORMAT_VERSION) return undefined;
  const kind = KINDS[buf[at + 6]];
  if (kind === undefined || buf[at + 7] !== 0) return undefined;
  const version = readU64(buf, at + 8);
  const offsetBytes = readU64(buf, at + 16);
  const lengthBytes = readU64(buf, at + 24);
  const dataLengthBytes = buf.readUInt32LE(at + 32);
  if (Number.isNaN(version) || Number.isNaN(offsetBytes) || Number.isNaN(lengthBytes)) return undefined;
  if (dataLengthBytes !== (kind === 'write' ? lengthBytes : 0) || dataLengthBytes > MAX_WRITE_BYTES) return undefined;
  return { version, kind, offsetBytes, lengthBytes, dataLengthBytes, crc: buf.readUInt32LE(at + 36) };
}

/** Check the crc of a record whose header and data are fully inside `buf`. */
export function recordCrcMatches(buf: Buffer, at: number, header: RecordHeader): boolean {
  let crc = crc32c(buf.subarray(at, at + 36));
  if (header.dataLengthBytes > 0) {
    crc = crc32c(buf.subarray(at + RECORD_HEADER_BYTES, at + RECORD_HEADER_BYTES + header.dataLengthBytes), crc);
  }
  return crc === header.crc;
}

export type ParseResult =
  | { ok: true; header: RecordHeader; totalBytes: number }
  | { ok: false; reason: 'short' | 'bad-header' | 'bad-crc' };

/** Parse and verify the record at `at` in a buffer holding (a prefix of) a segment. */
export function parseRecord(buf: Buffer, at: number): ParseResult {
  if (at + RECORD_HEADER_BYTES > buf.length) return { ok: false, reason: 'short' };
  const header = decodeHeader(buf, at);
  if (!header) return { ok: false, reason: 'bad-header' };
  const totalBytes = RECORD_HEADER_BYTES + header.dataLengthBytes;
  if (at + totalBytes > buf.length) return { ok: false, reason: 'short' };
  if (!recordCrcMatches(buf, at, header)) return { ok: false, reason: 'bad-crc' };
  return { ok: true, header, totalBytes };
}

/** Validate a record from the caller before it touches the log (bad input is an error, not corruption). */
export function validateRecord(record: LsvdRecord, sizeBytes: number): string | undefined {
  const { version, kind, offsetBytes, lengthBytes } = record;
  if (!Number.isSafeInteger(version) || version < 1) return `version must be a positive safe integer, got ${version}`;
  if (KIND_CODES[kind] === undefined) return `unknown record kind ${String(kind)}`;
  if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0) return `offsetBytes must be a non-negative integer, got ${offsetBytes}`;
  if (!Number.isSafeInteger(lengthBytes) || lengthBytes < 0) return `lengthBytes must be a non-negative integer, got ${lengthBytes}`;
  if (kind === 'write') {
    if (!record.data || record.data.length !== lengthBytes) return `write data length ${record.data?.length} != lengthBytes ${lengthBytes}`;
    if (lengthBytes > MAX_WRITE_BYTES) return `write of ${lengthBytes} bytes exceeds the ${MAX_WRITE_BYTES}-byte limit`;
  }
  if (offsetBytes + lengthBytes > sizeBytes) return `range [${offsetBytes}, ${offsetBytes + lengthBytes}) is past the volume end ${sizeBytes}`;
  return undefined;
}
