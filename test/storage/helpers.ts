import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LsvdRecord } from '../../storage/index.js';

/** A fresh temp directory; remove() deletes it. */
export async function tempDir(prefix = 'lsvd-'): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** Deterministic bytes for (seed, version): what a crash test can regenerate to compare. */
export function patternBytes(seed: number, version: number, lengthBytes: number): Buffer {
  const buf = Buffer.allocUnsafe((lengthBytes + 3) & ~3);
  let x = (seed * 2654435761 + version * 40503 + 1) >>> 0;
  for (let i = 0; i < lengthBytes; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf.writeUInt32LE(x, i);
  }
  return buf.subarray(0, lengthBytes);
}

/** A small seeded PRNG (mulberry32): the same seed gives the same sequence in every process. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/**
 * The record a crash workload appends at `version` under `seed`: mostly writes of 1 byte
 * to 16 KiB at any offset, some trims and write-zeroes. A pure function of its arguments,
 * so the parent of a killed writer regenerates exactly what the child appended.
 */
export function crashRecord(seed: number, version: number, sizeBytes: number): LsvdRecord {
  const rnd = seededRandom(Math.imul(seed, 0x9e3779b1) ^ Math.imul(version, 0x85ebca6b));
  const pick = rnd();
  const lengthBytes = 1 + Math.floor(rnd() * (pick < 0.7 ? 16 * 1024 : 64 * 1024));
  const offsetBytes = Math.floor(rnd() * (sizeBytes - lengthBytes + 1));
  if (pick < 0.7) return { version, kind: 'write', offsetBytes, lengthBytes, data: patternBytes(seed, version, lengthBytes) };
  return { version, kind: pick < 0.85 ? 'trim' : 'zero', offsetBytes, lengthBytes };
}

/** Apply a record to a model of the whole disk (trim and zero both read back as zeroes). */
export function applyToModel(model: Buffer, record: LsvdRecord): void {
  if (record.kind === 'write') model.set(record.data!, record.offsetBytes);
  else model.fill(0, record.offsetBytes, record.offsetBytes + record.lengthBytes);
}
