/**
 * Recycled log segments (storage/recycled-segments.ts): GC'd log files are renamed and written
 * over as new log segments. What must hold: the files really are reused (same inode), the old
 * bytes behind the new records never reach a reader, a SYNC stream or an open — a crash image
 * opens at its flushed version without warnings — real damage in a recycled segment is still
 * refused, and a store whose versions went back (an image older than its log) never reuses a
 * file whose old records could pass for new ones.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { cp, open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Lsvd, type LsvdOptions } from '../../storage/index.js';
import { RecycledSegments } from '../../storage/recycled-segments.js';
import { parseRecord, RECORD_HEADER_BYTES, RECORD_MAGIC } from '../../storage/record.js';
import { isRecycledSegmentHeader, SEGMENT_HEADER_BYTES } from '../../storage/segment.js';
import { patternBytes, tempDir } from './helpers.js';

const KiB = 1024;
const BLOCK = 4 * KiB;
const BLOCKS = 48;

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function dir(): Promise<string> {
  const d = await tempDir('lsvd-recycle-');
  cleanups.push(d.remove);
  return d.path;
}

async function openStore(path: string, extra: Partial<LsvdOptions> = {}): Promise<Lsvd> {
  const store = await Lsvd.open({ dir: path, sizeBytes: BLOCKS * BLOCK, segmentSizeBytes: 64 * KiB, syncWindowVersions: 20, autoGc: false, ...extra });
  cleanups.push(() => store.close());
  return store;
}

/** Overwrite every block `rounds` times, `perWrite` blocks a record; `content` follows. */
function overwrite(store: Lsvd, rounds: number, content: Buffer, seed: number, perWrite = 1): void {
  for (let r = 0; r < rounds; r++) {
    for (let b = 0; b < BLOCKS; b += perWrite) {
      const v = store.version + 1;
      const data = patternBytes(seed + r, v, perWrite * BLOCK);
      data.copy(content, b * BLOCK);
      store.append({ version: v, kind: 'write', offsetBytes: b * BLOCK, lengthBytes: data.length, data });
    }
  }
}

async function inodes(path: string, prefix: string): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  for (const name of await readdir(path)) if (name.startsWith(prefix)) out.set((await stat(join(path, name))).ino, name);
  return out;
}

/** A store whose blocks were overwritten six times and GC'd: retired log files wait in its pool. */
async function storeWithPool(extra: Partial<LsvdOptions> = {}): Promise<{ path: string; store: Lsvd; content: Buffer }> {
  const path = await dir();
  const store = await openStore(path, extra);
  const content = Buffer.alloc(BLOCKS * BLOCK);
  overwrite(store, 6, content, 1);
  await store.flush();
  expect((await store.gc()).segmentsRewritten).toBeGreaterThan(1);
  return { path, store, content };
}

/** Log segments whose header marks a recycled file. */
async function recycledLogSegments(path: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(path)).filter((n) => n.startsWith('L'))) {
    const fh = await open(join(path, name), 'r');
    const header = Buffer.alloc(SEGMENT_HEADER_BYTES);
    await fh.read(header, 0, header.length, 0);
    await fh.close();
    if (isRecycledSegmentHeader(header)) out.push(name);
  }
  return out;
}

/** Versions of a segment file's records: the chain from its start, and every other valid record in it. */
async function recordVersions(file: string): Promise<{ newLife: number[]; oldLife: number[] }> {
  const data = await readFile(file);
  const newLife: number[] = [];
  const inChain = new Set<number>();
  let pos = SEGMENT_HEADER_BYTES;
  for (let parsed = parseRecord(data, pos); parsed.ok; parsed = parseRecord(data, pos)) {
    if (newLife.length > 0 && parsed.header.version !== newLife.at(-1)! + 1) break;
    newLife.push(parsed.header.version);
    inChain.add(pos);
    pos += parsed.totalBytes;
  }
  const oldLife: number[] = [];
  const magic = Buffer.alloc(4);
  magic.writeUInt32LE(RECORD_MAGIC, 0);
  for (let at = data.indexOf(magic, SEGMENT_HEADER_BYTES); at >= 0; at = data.indexOf(magic, at + 1)) {
    const parsed = parseRecord(data, at);
    if (parsed.ok && !inChain.has(at)) oldLife.push(parsed.header.version);
  }
  return { newLife, oldLife };
}

/** What a crash leaves: the files as they are now (the page cache), the lock of this live process left out. */
async function crashCopy(from: string): Promise<string> {
  const to = await dir();
  await cp(from, to, { recursive: true, filter: (src) => !src.endsWith('lsvd.lock') });
  return to;
}

describe('recycled log segments', () => {
  it('reuses GC’d log files for new log segments; readers, streams and a crash image see only the new records', async () => {
    const { path, store, content } = await storeWithPool({ recycleSegments: 32 });
    const pooled = await inodes(path, 'R');
    expect(pooled.size).toBeGreaterThan(0);
    expect((await store.stats()).recycledBytes).toBeGreaterThan(0);

    // Larger records than the old ones, so old bytes and whole old records lie behind the new
    // ones, in full segments and in the active one.
    overwrite(store, 3, content, 100, 2);
    await store.flush();
    const logs = await inodes(path, 'L');
    const reused = [...logs.keys()].filter((ino) => pooled.has(ino));
    expect(reused.length).toBeGreaterThan(0);
    const recycled = (await recycledLogSegments(path)).sort();
    expect(recycled).toEqual(reused.map((ino) => logs.get(ino)).sort());
    expect(recycled.at(-1)).toBe([...logs.values()].sort().at(-1));

    expect((await store.read(0, BLOCKS * BLOCK)).equals(content)).toBe(true);
    // A SYNC stream over the recycled segments: exactly the versions asked for, in order.
    const from = store.version - 15;
    let expect_ = from + 1;
    for await (const rec of store.recordsSince(from)) expect(rec.version).toBe(expect_++);
    expect(expect_).toBe(store.version + 1);

    // A crash now: the copy opens at the flushed version, with no warning and nothing cut.
    const copy = await crashCopy(path);
    const reopened = await openStore(copy);
    expect(reopened.version).toBe(store.version);
    expect(reopened.openReport.warnings).toEqual([]);
    expect(reopened.openReport.truncatedBytes).toBe(0);
    expect(reopened.openReport.removedFiles.every((n) => n.startsWith('R'))).toBe(true);
    expect((await reopened.read(0, BLOCKS * BLOCK)).equals(content)).toBe(true);
    expect((await readdir(copy)).some((n) => n.startsWith('R'))).toBe(false);

    // And a clean close leaves no pooled file behind.
    await store.close();
    expect((await readdir(path)).some((n) => n.startsWith('R'))).toBe(false);
  });

  it('a recycled active segment ending right in front of a whole old record opens at its last new one', async () => {
    const { path, store, content } = await storeWithPool({ recycleSegments: 32 });
    // Same-size records: the new ones sit exactly where old ones were, and the next old one
    // (an older version, valid crc) follows the last new one.
    for (let i = 0; i < 20; i++) {
      const v = store.version + 1;
      const data = patternBytes(400, v, BLOCK);
      data.copy(content, (i % BLOCKS) * BLOCK);
      store.append({ version: v, kind: 'write', offsetBytes: (i % BLOCKS) * BLOCK, lengthBytes: BLOCK, data });
    }
    await store.flush();
    const last = (await readdir(path)).filter((n) => n.startsWith('L')).sort().at(-1)!;
    expect(await recycledLogSegments(path)).toContain(last);
    const reopened = await openStore(await crashCopy(path));
    expect(reopened.version).toBe(store.version);
    expect(reopened.openReport.warnings).toEqual([]);
    expect(reopened.openReport.truncatedBytes).toBe(0);
    expect((await reopened.read(0, BLOCKS * BLOCK)).equals(content)).toBe(true);
  });

  it('a flipped record in the middle of a recycled segment is still refused at open', async () => {
    const { path, store, content } = await storeWithPool();
    const pooled = await inodes(path, 'R');
    overwrite(store, 4, content, 200);
    await store.flush();
    const logs = await inodes(path, 'L');
    const reusedName = [...logs.entries()].filter(([ino]) => pooled.has(ino)).map(([, n]) => n).sort()[0];
    expect(reusedName).toBeDefined();
    const copy = await crashCopy(path);
    // The second record of the recycled segment (its new life): one data byte flipped.
    const fh = await open(join(copy, reusedName!), 'r+');
    const at = 32 + (RECORD_HEADER_BYTES + BLOCK) + RECORD_HEADER_BYTES + 100;
    const byte = Buffer.alloc(1);
    await fh.read(byte, 0, 1, at);
    byte[0] ^= 0xff;
    await fh.write(byte, 0, 1, at);
    await fh.close();
    const err = await Lsvd.open({ dir: copy }).then(
      (s) => {
        cleanups.push(() => s.close());
        return undefined;
      },
      (e: { code?: string; message: string }) => e,
    );
    expect(err?.code).toBe('ERR_CORRUPT');
    expect(err?.message).toContain(reusedName);
  });

  it('after an image older than the log, a pooled file is reused only if all it holds is older than the new records', async () => {
    const { path, store, content } = await storeWithPool({ recycleSegments: 64 });
    const pooled = await inodes(path, 'R');
    expect(pooled.size).toBeGreaterThan(0);
    // An image at version 10, far below the log's ~288: the store's versions go back.
    const image = Buffer.alloc(BLOCKS * BLOCK, 7);
    await store.installImage(10, [{ offsetBytes: 0, data: image }]);
    expect(store.version).toBe(10);
    image.copy(content);
    // Records of another size than before, so old records survive behind the new ones.
    overwrite(store, 16, content, 300, 2);
    await store.flush();
    // Files from before the image holding only versions below the new log's are fine to reuse;
    // those retired by the image (up to ~288) are not: in every recycled segment, each old record
    // is older than the first new one.
    const recycled = await recycledLogSegments(path);
    expect(recycled.length).toBeGreaterThan(0);
    for (const name of recycled) {
      const { newLife, oldLife } = await recordVersions(join(path, name));
      expect(newLife.length).toBeGreaterThan(0);
      expect(Math.max(0, ...oldLife)).toBeLessThan(newLife[0]!);
    }
    const copy = await crashCopy(path);
    const reopened = await openStore(copy);
    expect(reopened.version).toBe(store.version);
    expect(reopened.openReport.warnings).toEqual([]);
    expect((await reopened.read(0, BLOCKS * BLOCK)).equals(content)).toBe(true);
  });

  it('the pool is bounded, and releases every file on demand', async () => {
    const path = await dir();
    const pool = new RecycledSegments(path, 2);
    for (let i = 0; i < 3; i++) {
      const file = join(path, `L000000000${i + 1}.seg`);
      await (await open(file, 'w')).close();
      await pool.keep(file, 10 * (i + 1), 100);
    }
    expect(pool.count).toBe(2);
    expect((await readdir(path)).sort()).toEqual(['R0000000001.seg', 'R0000000002.seg']);
    // Only a file whose records are all older than the first version it would receive; one
    // that is not (the versions went back) waits until they pass it.
    const taken = pool.take(15);
    expect(taken?.staleMaxVersion).toBe(10);
    expect(pool.take(15)).toBeUndefined();
    expect(pool.count).toBe(1);
    expect(pool.take(21)?.staleMaxVersion).toBe(20);
    expect(pool.count).toBe(0);
    await pool.keep(join(path, 'L0000000009.seg'), 1, 100).catch(() => undefined); // missing file: nothing kept
    expect(pool.count).toBe(0);
    const again = join(path, 'L0000000010.seg');
    await (await open(again, 'w')).close();
    await pool.keep(again, 1, 100);
    await pool.releaseAll();
    expect(pool.count).toBe(0);
    // What was taken is the taker's; the rest is gone.
    expect((await readdir(path)).sort()).toEqual(['R0000000001.seg', 'R0000000002.seg']);
  });
});
