/**
 * Background GC and the byte-bounded sync window: a volume that is overwritten for ever must
 * not fill the disk, and what GC deletes must never be what a reader or a stream still needs.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Lsvd, type LsvdOptions } from '../../storage/index.js';
import { patternBytes, tempDir } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

/** A 4 MiB volume with 256 KiB segments and thresholds scaled down with it. */
async function small(extra: Partial<LsvdOptions> = {}): Promise<{ store: Lsvd; options: LsvdOptions }> {
  const dir = await tempDir('lsvd-autogc-');
  cleanups.push(dir.remove);
  const options: LsvdOptions = {
    dir: dir.path,
    sizeBytes: 4 * MiB,
    segmentSizeBytes: 256 * KiB,
    syncWindowBytes: 512 * KiB,
    gcMinDeadBytes: 1 * MiB,
    gcCheckEveryBytes: 256 * KiB,
    ...extra,
  };
  return { store: await Lsvd.open(options), options };
}

function write(store: Lsvd, offsetBytes: number, data: Buffer): void {
  store.append({ version: store.version + 1, kind: 'write', offsetBytes, lengthBytes: data.length, data });
}

/** Let scheduled background work (GC starts on setImmediate) run, then wait for it. */
async function settle(store: Lsvd): Promise<void> {
  await new Promise((r) => setImmediate(r));
  await store.checkpoint();
}

const CHUNK = 64 * KiB;
const CHUNKS = (4 * MiB) / CHUNK;

describe('background GC', () => {
  it('keeps the disk bounded under endless sequential overwrites, and reads stay right', async () => {
    const { store, options } = await small();
    let maxDiskBytes = 0;
    for (let round = 0; round < 24; round += 1) {
      for (let i = 0; i < CHUNKS; i += 1) write(store, i * CHUNK, patternBytes(round, i, CHUNK));
      await store.flush();
      await settle(store);
      // Reads while GC moves things around see the newest data.
      for (const i of [0, 17, CHUNKS - 1]) expect((await store.read(i * CHUNK, CHUNK)).equals(patternBytes(round, i, CHUNK))).toBe(true);
      maxDiskBytes = Math.max(maxDiskBytes, (await store.stats()).diskBytes);
    }
    const stats = await store.stats();
    expect(stats.backgroundGcRuns).toBeGreaterThan(5);
    expect(stats.lastBackgroundGc?.bytesReclaimed).toBeGreaterThan(0);
    // 96 MiB were written to a 4 MiB volume: without GC the log would hold all of it. Bound:
    // live (4 MiB) + dead before a GC starts (max(1 MiB, 0.5 × live) = 2 MiB) + the byte window
    // + one check interval + checkpoints.
    expect(maxDiskBytes).toBeLessThan(4 * MiB + 2 * MiB + 512 * KiB + 2 * 256 * KiB + 1 * MiB);
    await store.close();
    const again = await Lsvd.open(options);
    for (let i = 0; i < CHUNKS; i += 1) expect((await again.read(i * CHUNK, CHUNK)).equals(patternBytes(23, i, CHUNK))).toBe(true);
    expect(again.openReport.warnings).toEqual([]);
    await again.close();
  });

  it('bounds the sync window in bytes: a peer further behind needs an image, a recent one streams', async () => {
    const { store } = await small({ syncWindowVersions: 1_000_000 });
    for (let round = 0; round < 6; round += 1) for (let i = 0; i < CHUNKS; i += 1) write(store, i * CHUNK, patternBytes(round, i, CHUNK));
    await store.flush();
    await settle(store);
    await store.gc();
    // 24 MiB of log, a 512 KiB window: version 1 is long gone even though the version window is huge.
    expect(store.hasRecordsSince(1)).toBe(false);
    expect(store.horizonVersion).toBeGreaterThan(store.version - 16);
    const from = store.version - 4;
    expect(store.hasRecordsSince(from)).toBe(true);
    const versions: number[] = [];
    for await (const rec of store.recordsSince(from)) versions.push(rec.version);
    expect(versions).toEqual([from + 1, from + 2, from + 3, from + 4]);
    await store.close();
  });

  it('never deletes log a running stream has yet to read, though the window moved past it', async () => {
    const { store } = await small();
    for (let i = 0; i < CHUNKS; i += 1) write(store, i * CHUNK, patternBytes(100, i, CHUNK));
    await store.flush();
    const from = 0;
    const stream = store.recordsSince(from)[Symbol.asyncIterator]();
    const first = await stream.next();
    expect(first.value?.version).toBe(1);
    // Overwrite everything many times: every record the stream still has to send is dead and
    // far outside the byte window.
    for (let round = 0; round < 8; round += 1) for (let i = 0; i < CHUNKS; i += 1) write(store, i * CHUNK, patternBytes(round, i, CHUNK));
    await store.flush();
    await settle(store);
    await store.gc();
    let expectVersion = 2;
    for (let r = await stream.next(); !r.done; r = await stream.next()) {
      expect(r.value.version).toBe(expectVersion);
      expect(Buffer.from(r.value.data!).equals(patternBytes(100, expectVersion - 1, CHUNK))).toBe(true);
      expectVersion += 1;
    }
    expect(expectVersion - 1).toBe(CHUNKS);
    // Once the stream is done its log may go.
    await store.gc();
    expect(store.hasRecordsSince(1)).toBe(false);
    await store.close();
  });

  it('backs off while a snapshot pins the dead data instead of running on every check', async () => {
    const { store } = await small();
    for (let i = 0; i < CHUNKS; i += 1) write(store, i * CHUNK, patternBytes(0, i, CHUNK));
    await store.createSnapshot('pinned');
    // 32 MiB more: 128 checks' worth. Everything the snapshot sees stays referenced.
    for (let round = 1; round <= 8; round += 1) {
      for (let i = 0; i < CHUNKS; i += 1) write(store, i * CHUNK, patternBytes(round, i, CHUNK));
      await store.flush();
      await settle(store);
    }
    const stats = await store.stats();
    expect(stats.backgroundGcRuns).toBeGreaterThan(0);
    expect(stats.backgroundGcRuns).toBeLessThan(40);
    expect((await store.read(0, CHUNK, { snapshot: 'pinned' })).equals(patternBytes(0, 0, CHUNK))).toBe(true);
    expect((await store.read(0, CHUNK)).equals(patternBytes(8, 0, CHUNK))).toBe(true);
    await store.close();
  });

  it('stays off when asked: the log keeps everything until gc()', async () => {
    const { store } = await small({ autoGc: false });
    for (let round = 0; round < 6; round += 1) for (let i = 0; i < CHUNKS; i += 1) write(store, i * CHUNK, patternBytes(round, i, CHUNK));
    await store.flush();
    await settle(store);
    const stats = await store.stats();
    expect(stats.backgroundGcRuns).toBe(0);
    expect(stats.diskBytes).toBeGreaterThan(24 * MiB);
    const report = await store.gc();
    expect(report.bytesReclaimed).toBeGreaterThan(16 * MiB);
    await store.close();
  });
});
