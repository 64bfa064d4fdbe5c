/**
 * Checkpoints: the extent map, snapshot maps, retention history and version, written
 * atomically (temp file, fdatasync, rename, fsync of the directory) so recovery replays
 * only the log after them. The newest two are kept: a corrupt newest one falls back to
 * its predecessor.
 *
 * File: 32-byte header | JSON metadata | 8-byte aligned typed-array columns.
 *   header: magic u32 | formatVersion u16 | 0 u16 | bodyLength u64 | crc32c(body) u32 |
 *           jsonLength u32 | 8 zero bytes
 */
import { crc32c } from '@node-rs/crc32';
import { open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { FORMAT_VERSION, readU64, writeU64 } from './record.js';
import type { ExtentColumns } from './extent-map.js';
import type { HistoryColumns } from './history.js';
import type { SegmentKind } from './segment.js';
import { fsyncDir } from './segment.js';
import { wrapFsError } from './errors.js';

export const CHECKPOINT_MAGIC = 0x4356534c; // "LSVC"
const HEADER_BYTES = 32;

export interface CheckpointSegment {
  kind: SegmentKind;
  number: number;
  sizeBytes: number;
  firstVersion: number;
  lastVersion: number;
}

export interface CheckpointMeta {
  formatVersion: number;
  sequence: number;
  version: number;
  horizonVersion: number;
  sizeBytes: number;
  /** The log is replayed from here: the active log segment and its end when captured. */
  replayFrom: { segmentNumber: number; positionBytes: number };
  segments: CheckpointSegment[];
  nextGcNumber: number;
  snapshots: Array<{ name: string; version: number; extentCount: number }>;
  extentCount: number;
  historyCount: number;
}

export interface CheckpointData {
  meta: CheckpointMeta;
  map: ExtentColumns;
  snapshotMaps: ExtentColumns[];
  history: HistoryColumns;
}

const EXTENT_KEYS: Array<keyof ExtentColumns> = ['starts', 'versions', 'lengths', 'segments', 'positions'];
const HISTORY_KEYS: Array<keyof HistoryColumns> = ['starts', 'versions', 'supersededBy', 'lengths', 'segments', 'positions'];

function pad8(n: number): number {
  return (n + 7) & ~7;
}

export function checkpointFileName(sequence: number): string {
  return `checkpoint-${String(sequence).padStart(12, '0')}.ckpt`;
}

export function parseCheckpointFileName(name: string): number | undefined {
  const m = /^checkpoint-(\d{12})\.ckpt$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

export function encodeCheckpoint(data: CheckpointData): Buffer {
  const json = Buffer.from(JSON.stringify(data.meta));
  const arrays: ArrayBufferView[] = [];
  for (const cols of [data.map, ...data.snapshotMaps]) for (const k of EXTENT_KEYS) arrays.push(cols[k]);
  for (const k of HISTORY_KEYS) arrays.push(data.history[k]);
  let bodyLength = pad8(json.length);
  for (const a of arrays) bodyLength += pad8(a.byteLength);
  const buf = Buffer.alloc(HEADER_BYTES + bodyLength);
  json.copy(buf, HEADER_BYTES);
  let at = HEADER_BYTES + pad8(json.length);
  for (const a of arrays) {
    buf.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), at);
    at += pad8(a.byteLength);
  }
  buf.writeUInt32LE(CHECKPOINT_MAGIC, 0);
  buf.writeUInt16LE(FORMAT_VERSION, 4);
  writeU64(buf, bodyLength, 8);
  buf.writeUInt32LE(crc32c(buf.subarray(HEADER_BYTES)), 16);
  buf.writeUInt32LE(json.length, 20);
  return buf;
}

/** Decode and verify; throws an Error saying what is wrong (the caller falls back). */
export function decodeCheckpoint(buf: Buffer): CheckpointData {
  if (buf.length < HEADER_BYTES) throw new Error(`too short (${buf.length} bytes)`);
  if (buf.readUInt32LE(0) !== CHECKPOINT_MAGIC) throw new Error('bad magic');
  if (buf.readUInt16LE(4) !== FORMAT_VERSION) throw new Error(`unsupported format ${buf.readUInt16LE(4)}`);
  const bodyLength = readU64(buf, 8);
  if (bodyLength !== buf.length - HEADER_BYTES) throw new Error(`length ${buf.length - HEADER_BYTES} != recorded ${bodyLength} (torn write?)`);
  if (crc32c(buf.subarray(HEADER_BYTES)) !== buf.readUInt32LE(16)) throw new Error('crc mismatch');
  const jsonLength = buf.readUInt32LE(20);
  const meta = JSON.parse(buf.subarray(HEADER_BYTES, HEADER_BYTES + jsonLength).toString()) as CheckpointMeta;
  if (meta.formatVersion !== FORMAT_VERSION) throw new Error('metadata format mismatch');
  let at = HEADER_BYTES + pad8(jsonLength);
  // Copy into fresh (aligned) arrays: the file buffer's offset may not suit a Float64Array view.
  const take = <T extends Float64Array | Uint32Array>(ctor: new (n: number) => T, count: number): T => {
    const out = new ctor(count);
    const bytes = out.byteLength;
    if (at + bytes > buf.length) throw new Error('column past the end');
    new Uint8Array(out.buffer).set(buf.subarray(at, at + bytes));
    at += pad8(bytes);
    return out;
  };
  const readExtents = (count: number): ExtentColumns => ({
    starts: take(Float64Array, count),
    versions: take(Float64Array, count),
    lengths: take(Uint32Array, count),
    segments: take(Uint32Array, count),
    positions: take(Uint32Array, count),
  });
  const map = readExtents(meta.extentCount);
  const snapshotMaps = meta.snapshots.map((s) => readExtents(s.extentCount));
  const history: HistoryColumns = {
    starts: take(Float64Array, meta.historyCount),
    versions: take(Float64Array, meta.historyCount),
    supersededBy: take(Float64Array, meta.historyCount),
    lengths: take(Uint32Array, meta.historyCount),
    segments: take(Uint32Array, meta.historyCount),
    positions: take(Uint32Array, meta.historyCount),
  };
  return { meta, map, snapshotMaps, history };
}

/** Write atomically; keeps the previous checkpoint, deletes older ones. */
export async function writeCheckpoint(dir: string, data: CheckpointData): Promise<string> {
  const name = checkpointFileName(data.meta.sequence);
  const tmp = join(dir, `${name}.tmp`);
  const buf = encodeCheckpoint(data);
  try {
    const fh = await open(tmp, 'w');
    try {
      let done = 0;
      while (done < buf.length) done += (await fh.write(buf, done, buf.length - done, done)).bytesWritten;
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, join(dir, name));
    await fsyncDir(dir);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw wrapFsError(err, `write checkpoint ${join(dir, name)}`);
  }
  const older = (await listCheckpoints(dir)).filter((seq) => seq < data.meta.sequence);
  // Keep one predecessor: the fallback if this one is ever found corrupt.
  for (const seq of older.slice(1)) await unlink(join(dir, checkpointFileName(seq))).catch(() => undefined);
  return name;
}

/** Checkpoint sequence numbers present, newest first. */
export async function listCheckpoints(dir: string): Promise<number[]> {
  const names = await readdir(dir);
  return names
    .map(parseCheckpointFileName)
    .filter((s): s is number => s !== undefined)
    .sort((a, b) => b - a);
}

export async function readCheckpoint(dir: string, sequence: number): Promise<CheckpointData> {
  const buf = await readFile(join(dir, checkpointFileName(sequence)));
  return decodeCheckpoint(buf);
}
