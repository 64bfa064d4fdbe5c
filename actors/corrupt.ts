/**
 * Disk faults for `freebs inject`: damage one record in a replica's LSVD log, the way bit rot or
 * a bad sector would — a few bytes of a write record's data flipped in place.
 *
 * The record chosen is the newest one holding a given byte range (the run writes a canary there
 * once, before its workload, so the record is live and sits in the middle of the log). What the
 * damage then does depends on when the store reads it:
 *  - the replica runs: the in-memory extent map still points at the record and reads do not check
 *    crcs, so the replica serves the flipped bytes silently — a scrub (actors/scrub.ts) finds it;
 *  - the replica is down and no checkpoint covers the record: opening replays the log, the crc
 *    fails with valid records after it, and the store refuses with ERR_CORRUPT
 *    (storage/OPERATIONS.md, "Corrupt record in the middle of the log").
 */
import { open, readdir } from 'node:fs/promises';
import path from 'node:path';
import { readU64, RECORD_HEADER_BYTES, RECORD_MAGIC } from '../storage/record.js';
import { SEGMENT_HEADER_BYTES } from '../storage/segment.js';

export interface CorruptedRecord {
  segment: string;
  /** Where the record starts in the segment file. */
  positionBytes: number;
  version: number;
  offsetBytes: number;
  lengthBytes: number;
  /** Bytes flipped, from this position in the file. */
  flippedAtBytes: number;
  flippedBytes: number;
}

const KIND_WRITE = 1;
const FLIP_BYTES = 16;

/** Every write record overlapping [offsetBytes, offsetBytes + lengthBytes) in one segment file. */
async function scanSegment(file: string, offsetBytes: number, lengthBytes: number): Promise<Array<Omit<CorruptedRecord, 'flippedAtBytes' | 'flippedBytes'>>> {
  const fh = await open(file, 'r');
  try {
    const { size } = await fh.stat();
    const found: Array<Omit<CorruptedRecord, 'flippedAtBytes' | 'flippedBytes'>> = [];
    const header = Buffer.alloc(RECORD_HEADER_BYTES);
    let pos = SEGMENT_HEADER_BYTES;
    while (pos + RECORD_HEADER_BYTES <= size) {
      const { bytesRead } = await fh.read(header, 0, RECORD_HEADER_BYTES, pos);
      if (bytesRead < RECORD_HEADER_BYTES || header.readUInt32LE(0) !== RECORD_MAGIC) break;
      const dataLength = header.readUInt32LE(32);
      const recOffset = readU64(header, 16);
      const recLength = readU64(header, 24);
      if (header[6] === KIND_WRITE && recOffset < offsetBytes + lengthBytes && recOffset + recLength > offsetBytes) {
        found.push({ segment: path.basename(file), positionBytes: pos, version: readU64(header, 8), offsetBytes: recOffset, lengthBytes: recLength });
      }
      pos += RECORD_HEADER_BYTES + dataLength;
    }
    return found;
  } finally {
    await fh.close();
  }
}

/**
 * Flip bytes in the data of the newest write record covering the range, in `dir` (a replica's
 * LSVD directory). Log segments (L…) first, then GC and image segments (G…), which an image SYNC
 * fills: the last match is the live copy. Throws when no record covers the range.
 */
export async function corruptRecord(dir: string, range: { offsetBytes: number; lengthBytes: number }): Promise<CorruptedRecord> {
  const names = (await readdir(dir)).filter((n) => /^[LG]\d+\.seg$/.test(n)).sort((a, b) => (a[0] === b[0] ? a.localeCompare(b) : a[0] === 'L' ? -1 : 1));
  let chosen: Omit<CorruptedRecord, 'flippedAtBytes' | 'flippedBytes'> | null = null;
  for (const name of names) {
    for (const r of await scanSegment(path.join(dir, name), range.offsetBytes, range.lengthBytes)) {
      if (chosen === null || r.version >= chosen.version || r.segment.startsWith('G')) chosen = r;
    }
  }
  if (!chosen) throw new Error(`no write record covers [${range.offsetBytes}, ${range.offsetBytes + range.lengthBytes}) in ${dir}`);
  const flippedBytes = Math.min(FLIP_BYTES, chosen.lengthBytes);
  const flippedAtBytes = chosen.positionBytes + RECORD_HEADER_BYTES + Math.floor((chosen.lengthBytes - flippedBytes) / 2);
  const fh = await open(path.join(dir, chosen.segment), 'r+');
  try {
    const bytes = Buffer.alloc(flippedBytes);
    await fh.read(bytes, 0, flippedBytes, flippedAtBytes);
    for (let i = 0; i < bytes.length; i++) bytes[i] ^= 0xff;
    // In place, through the page cache a running replica reads from too.
    await fh.write(bytes, 0, flippedBytes, flippedAtBytes);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  return { ...chosen, flippedAtBytes, flippedBytes };
}
