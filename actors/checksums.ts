/**
 * Content checksums of a replica, chunk by chunk, for `freebs scrub` (like DRBD's online
 * verify): GET /checksums?chunk=BYTES on a replica's port streams NDJSON —
 *
 *   {"id":"r2","version":1234,"chunkBytes":1048576,"sizeBytes":67108864}   first line
 *   {"i":0,"sha256":"…"}                                                   one per chunk with data
 *   {"done":true,"chunks":37}                                              last line
 *
 * — computed over one consistent image at `version` (the store's imageAt()). A chunk is the
 * aligned range [i·chunkBytes, (i+1)·chunkBytes); holes read as zeros, and a chunk that is all
 * zeros is left out, so a trimmed or zero-written range and one never written compare equal.
 * Two replicas' lists are comparable only at the same version.
 *
 * One scan at a time per replica (429 otherwise): it reads every live byte of the volume.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ReplicaStore } from './replica-store.js';

export const CHECKSUMS_PATH = '/checksums';
export const defaultChunkBytes = 1024 * 1024;
const minChunkBytes = 4096;
const maxChunkBytes = 64 * 1024 * 1024;

export interface ChecksumHeader {
  id: string;
  version: number;
  chunkBytes: number;
  sizeBytes: number;
}

export interface ChunkChecksum {
  i: number;
  sha256: string;
}

/** Per-chunk sha256 of one consistent image of the store; calls onChunk in offset order. */
export async function chunkChecksums(
  store: Pick<ReplicaStore, 'imageAt' | 'sizeBytes'>,
  chunkBytes: number,
  onStart: (version: number) => void,
  onChunk: (c: ChunkChecksum) => void | Promise<void>,
): Promise<number> {
  const image = await store.imageAt();
  onStart(image.version);
  let current = -1;
  let buf = Buffer.alloc(chunkBytes);
  let dirty = false;
  let count = 0;
  const finish = async () => {
    if (current < 0 || !dirty) return;
    // All zeros compares equal to a hole: leave it out.
    if (buf.some((b) => b !== 0)) {
      const end = Math.min(chunkBytes, store.sizeBytes - current * chunkBytes);
      await onChunk({ i: current, sha256: createHash('sha256').update(buf.subarray(0, end)).digest('hex') });
      count++;
    }
    buf.fill(0);
    dirty = false;
  };
  // Runs come in offset order, at most chunkBytes each but not aligned: split at chunk edges.
  for await (const { offsetBytes, data } of image.chunks(chunkBytes)) {
    let at = 0;
    while (at < data.length) {
      const offset = offsetBytes + at;
      const index = Math.floor(offset / chunkBytes);
      if (index !== current) {
        await finish();
        current = index;
      }
      const within = offset - index * chunkBytes;
      const n = Math.min(data.length - at, chunkBytes - within);
      buf.set(data.subarray(at, at + n), within);
      dirty = true;
      at += n;
    }
  }
  await finish();
  buf = Buffer.alloc(0);
  return count;
}

/** The /checksums route of a replica's HTTP handler; returns false for other URLs. */
export function serveChecksums(id: string, store: ReplicaStore, req: IncomingMessage, res: ServerResponse, busy: { scanning: boolean }): boolean {
  const url = new URL(req.url ?? '/', 'http://replica');
  if (req.method !== 'GET' || url.pathname !== CHECKSUMS_PATH) return false;
  const chunkBytes = Number(url.searchParams.get('chunk') ?? defaultChunkBytes);
  if (!Number.isInteger(chunkBytes) || chunkBytes < minChunkBytes || chunkBytes > maxChunkBytes || chunkBytes % minChunkBytes !== 0) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`chunk must be a multiple of ${minChunkBytes} bytes between ${minChunkBytes} and ${maxChunkBytes}\n`);
    return true;
  }
  if (busy.scanning) {
    res.writeHead(429, { 'content-type': 'text/plain', 'retry-after': '1' });
    res.end('a checksum scan is already running on this replica\n');
    return true;
  }
  busy.scanning = true;
  let aborted = false;
  res.on('close', () => {
    aborted = !res.writableFinished;
  });
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  const write = async (line: unknown) => {
    if (aborted) throw new Error('client went away');
    if (!res.write(JSON.stringify(line) + '\n')) await new Promise<void>((r) => res.once('drain', r).once('close', r));
  };
  chunkChecksums(
    store,
    chunkBytes,
    (version) => void write({ id, version, chunkBytes, sizeBytes: store.sizeBytes } satisfies ChecksumHeader),
    (c) => write(c),
  ).then(
    (chunks) => res.end(JSON.stringify({ done: true, chunks }) + '\n'),
    (err: unknown) => {
      // The stream has begun: say so in-band; a reader without the done line knows it is incomplete.
      if (!aborted) res.end(JSON.stringify({ error: (err as Error).message }) + '\n');
    },
  ).finally(() => {
    busy.scanning = false;
  });
  return true;
}
