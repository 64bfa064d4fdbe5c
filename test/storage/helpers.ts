import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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
