import { afterAll, describe, expect, it, vi } from 'vitest';
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Lsvd, type LsvdOptions, type StorageError } from '../../storage/index.js';
import { patternBytes, tempDir } from './helpers.js';

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

async function fresh(extra: Partial<LsvdOptions> = {}): Promise<{ store: Lsvd; options: LsvdOptions }> {
  const dir = await tempDir();
  cleanups.push(dir.remove);
  const options: LsvdOptions = { dir: dir.path, sizeBytes: 16 * 1024 * 1024, ...extra };
  return { store: await Lsvd.open(options), options };
}

function write(store: Lsvd, offsetBytes: number, data: Buffer): void {
  store.append({ version: store.version + 1, kind: 'write', offsetBytes, lengthBytes: data.length, data });
}

async function codeOf(fn: () => unknown): Promise<string | undefined> {
  try {
    await fn();
  } catch (err) {
    return (err as StorageError).code;
  }
  return undefined;
}

describe('Lsvd basics', () => {
  it('applies versions in order: resend is a no-op, a gap is ERR_VERSION_GAP', async () => {
    const { store } = await fresh();
    write(store, 0, Buffer.alloc(4096, 1));
    expect(store.append({ version: 1, kind: 'trim', offsetBytes: 0, lengthBytes: 4096 })).toBe(false);
    expect((await store.read(0, 4096))[0]).toBe(1);
    let err: StorageError | undefined;
    try {
      store.append({ version: 5, kind: 'trim', offsetBytes: 0, lengthBytes: 1 });
    } catch (e) {
      err = e as StorageError;
    }
    expect(err?.code).toBe('ERR_VERSION_GAP');
    expect(err?.message).toContain('expected 2 got 5');
    expect(store.version).toBe(1);
    expect(await codeOf(() => store.append({ version: 2, kind: 'write', offsetBytes: 16 * 1024 * 1024 - 1, lengthBytes: 2, data: Buffer.alloc(2) }))).toBe('ERR_OUT_OF_RANGE');
    expect(await codeOf(() => store.append({ version: 2, kind: 'write', offsetBytes: 0, lengthBytes: 3, data: Buffer.alloc(2) }))).toBe('ERR_INVALID');
    expect(await codeOf(() => store.read(16 * 1024 * 1024, 1))).toBe('ERR_OUT_OF_RANGE');
    expect(store.version).toBe(1);
    await store.close();
    await store.close();
    expect(await codeOf(() => store.read(0, 1))).toBe('ERR_CLOSED');
    expect(await codeOf(() => write(store, 0, Buffer.alloc(1)))).toBe('ERR_CLOSED');
  });

  it('reads see unflushed data; never-written ranges read as zeroes', async () => {
    const { store } = await fresh();
    const data = patternBytes(1, 1, 10_000);
    write(store, 5000, data);
    const got = await store.read(0, 20_000);
    expect(got.subarray(0, 5000).every((b) => b === 0)).toBe(true);
    expect(got.subarray(5000, 15_000).equals(data)).toBe(true);
    expect(got.subarray(15_000).every((b) => b === 0)).toBe(true);
    expect(store.durableVersion).toBe(0);
    expect(await store.flush()).toBe(1);
    await store.close();
  });

  it('concurrent flushes share one fdatasync', async () => {
    const { store } = await fresh();
    const probe = await open(join(store.dir, 'volume.json'), 'r');
    const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
    await probe.close();
    const spy = vi.spyOn(proto, 'datasync');
    for (let i = 0; i < 50; i += 1) write(store, i * 4096, Buffer.alloc(4096, i));
    const results = await Promise.all(Array.from({ length: 20 }, () => store.flush()));
    expect(new Set(results)).toEqual(new Set([50]));
    expect(spy.mock.calls.length).toBeGreaterThanOrEqual(1);
    expect(spy.mock.calls.length).toBeLessThanOrEqual(2);
    spy.mockRestore();
    await store.close();
  });

  it('is sparse: 1 TiB volume with 10 MiB written takes about 10 MiB on disk', async () => {
    const dir = await tempDir();
    cleanups.push(dir.remove);
    const store = await Lsvd.open({ dir: dir.path, sizeBytes: 2 ** 40 });
    const chunk = patternBytes(3, 1, 1024 * 1024);
    for (let i = 0; i < 10; i += 1) write(store, i * 2 ** 36, chunk);
    await store.close();
    let total = 0;
    for (const name of await readdir(dir.path)) total += (await stat(join(dir.path, name))).blocks * 512;
    expect(total).toBeLessThan(12 * 1024 * 1024);
    const again = await Lsvd.open({ dir: dir.path });
    expect((await again.read(9 * 2 ** 36, chunk.length)).equals(chunk)).toBe(true);
    await again.close();
  });

  it('GC gives disk space back after overwrites and trims', async () => {
    const { store } = await fresh({ segmentSizeBytes: 256 * 1024, syncWindowVersions: 10 });
    for (let round = 0; round < 8; round += 1) for (let i = 0; i < 64; i += 1) write(store, i * 4096, patternBytes(round, i, 4096));
    store.append({ version: store.version + 1, kind: 'trim', offsetBytes: 0, lengthBytes: 32 * 4096 });
    await store.flush();
    const before = await store.stats();
    const report = await store.gc();
    const after = await store.stats();
    expect(report.segmentsRewritten).toBeGreaterThan(0);
    expect(report.bytesReclaimed).toBeGreaterThan(0);
    // What GC frees is either gone or kept for the next log segments (freed if the disk fills).
    expect(after.diskBytes - after.recycledBytes).toBeLessThan(before.diskBytes / 2);
    expect(after.recycledBytes).toBeLessThanOrEqual(8 * 256 * 1024 + 64 * 1024);
    for (let i = 0; i < 64; i += 1) {
      const expected = i < 32 ? Buffer.alloc(4096) : patternBytes(7, i, 4096);
      expect((await store.read(i * 4096, 4096)).equals(expected)).toBe(true);
    }
    // History older than the window is gone.
    expect(await codeOf(async () => {
      for await (const _ of store.recordsSince(1)) void _;
    })).toBe('ERR_LOG_TRUNCATED');
    expect(store.hasRecordsSince(1)).toBe(false);
    expect(store.hasRecordsSince(store.version - 5)).toBe(true);
    await store.close();
  });

  it('keeps a quarter of a small volume as the sync window by default', async () => {
    // 16 MiB volume, 1 MiB segments: a 4 MiB window. 6 MiB of 64 KiB writes (96 versions) pass it.
    const { store } = await fresh({ segmentSizeBytes: 1024 * 1024 });
    const chunk = 64 * 1024;
    for (let i = 0; i < 96; i += 1) write(store, (i % 32) * chunk, patternBytes(1, i, chunk));
    await store.gc();
    // The window is whole segments of at most 4 MiB behind the newest record: 4 MiB is 64
    // versions, a segment 15. (The 1 GiB of a large volume would keep all 96.)
    expect(store.version - store.horizonVersion).toBeLessThanOrEqual(64);
    expect(store.version - store.horizonVersion).toBeGreaterThanOrEqual(64 - 16);
    expect(store.hasRecordsSince(store.horizonVersion)).toBe(true);
    await store.close();
  });

  it('snapshots read the past, survive reopen and GC, and are validated', async () => {
    const { store, options } = await fresh({ segmentSizeBytes: 64 * 1024, syncWindowVersions: 20 });
    for (let v = 1; v <= 30; v += 1) write(store, 0, patternBytes(9, v, 8192));
    await store.createSnapshot('v25', 25);
    await store.createSnapshot('now');
    expect(await codeOf(() => store.createSnapshot('old', 2))).toBe('ERR_OUT_OF_RANGE');
    expect(await codeOf(() => store.createSnapshot('now'))).toBe('ERR_SNAPSHOT_EXISTS');
    for (let v = 31; v <= 80; v += 1) write(store, 0, patternBytes(9, v, 8192));
    await store.gc({ liveShareThreshold: 1.01 });
    expect((await store.read(0, 8192, { snapshot: 'v25' })).equals(patternBytes(9, 25, 8192))).toBe(true);
    await store.close();
    const again = await Lsvd.open(options);
    expect(again.listSnapshots()).toEqual([
      { name: 'v25', version: 25 },
      { name: 'now', version: 30 },
    ]);
    expect((await again.read(0, 8192, { snapshot: 'now' })).equals(patternBytes(9, 30, 8192))).toBe(true);
    expect(await codeOf(() => again.read(0, 1, { snapshot: 'nope' }))).toBe('ERR_SNAPSHOT_UNKNOWN');
    await again.deleteSnapshot('v25');
    expect(await codeOf(() => again.deleteSnapshot('v25'))).toBe('ERR_SNAPSHOT_UNKNOWN');
    await again.close();
  });
});

describe('images and content hash', () => {
  it('an image is consistent at its version and installs atomically elsewhere', async () => {
    const { store: src } = await fresh({ segmentSizeBytes: 64 * 1024 });
    for (let v = 1; v <= 40; v += 1) write(src, ((v * 7) % 23) * 10_000, patternBytes(2, v, 3000 + v));
    src.append({ version: 41, kind: 'zero', offsetBytes: 20_000, lengthBytes: 5000 });
    const hashAt41 = await src.contentHash();
    const image = src.imageAt();
    expect(image.version).toBe(41);
    // Later appends and a GC do not change what the image streams.
    for (let v = 42; v <= 60; v += 1) write(src, 0, patternBytes(3, v, 50_000));
    await src.gc({ liveShareThreshold: 1.01 });

    const { store: dst, options: dstOptions } = await fresh();
    write(dst, 0, Buffer.alloc(4096, 0xee));
    // An aborted install leaves the old content.
    const aborted = dst.beginImage(41);
    await aborted.write(0, Buffer.alloc(100, 1));
    await aborted.abort();
    expect((await dst.read(0, 1))[0]).toBe(0xee);

    await dst.installImage(image.version, image.extents(7000));
    expect(dst.version).toBe(41);
    expect(await dst.contentHash()).toBe(hashAt41);
    // The receiver continues with the next versions from the log.
    for await (const rec of src.recordsSince(41)) dst.append(rec);
    expect(await dst.contentHash()).toBe(await src.contentHash());
    await dst.close();
    const reopened = await Lsvd.open(dstOptions);
    expect(reopened.version).toBe(60);
    expect(await reopened.contentHash()).toBe(await src.contentHash());
    await reopened.close();
    await src.close();
  });

  it('contentHash ignores layout: zeroes written equal a hole, order does not matter', async () => {
    const { store: a } = await fresh();
    const { store: b } = await fresh();
    write(a, 0, patternBytes(1, 1, 8192));
    write(a, 4 * 1024 * 1024, Buffer.alloc(4096)); // explicit zeroes
    write(b, 4096, patternBytes(1, 1, 8192).subarray(4096));
    write(b, 0, Buffer.alloc(4096, 9));
    write(b, 0, patternBytes(1, 1, 4096));
    b.append({ version: 4, kind: 'trim', offsetBytes: 8 * 1024 * 1024, lengthBytes: 4096 });
    expect(await a.contentHash()).toBe(await b.contentHash());
    write(b, 100, Buffer.alloc(1, 1));
    expect(await a.contentHash()).not.toBe(await b.contentHash());
    await a.close();
    await b.close();
  });
});
