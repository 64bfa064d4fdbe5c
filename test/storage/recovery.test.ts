/**
 * Damaged directories: torn and corrupt tails are cut and reported; damage in the middle,
 * missing segments and numbering gaps refuse to open with ERR_CORRUPT naming the file.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { open, readdir, stat, truncate, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Lsvd, type LsvdOptions, type StorageError } from '../../storage/index.js';
import { encodeSegmentHeader } from '../../storage/segment.js';
import { patternBytes, tempDir } from './helpers.js';

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

const RECORD = 40 + 4096;

/** A closed store with `count` 4 KiB writes at block v-1, in one log segment (no checkpoint unless asked). */
async function build(count: number, extra: Partial<LsvdOptions> = {}, withCheckpoint = false): Promise<LsvdOptions> {
  const dir = await tempDir('lsvd-rec-');
  cleanups.push(dir.remove);
  const options: LsvdOptions = { dir: dir.path, sizeBytes: 8 * 1024 * 1024, ...extra };
  const store = await Lsvd.open(options);
  for (let v = 1; v <= count; v += 1) store.append({ version: v, kind: 'write', offsetBytes: (v - 1) * 4096, lengthBytes: 4096, data: patternBytes(5, v, 4096) });
  await store.flush();
  if (withCheckpoint) await store.checkpoint();
  // As if the process died after its last flush: no final checkpoint.
  await store.close({ checkpoint: false });
  return options;
}

async function verify(store: Lsvd, upTo: number): Promise<void> {
  for (let v = 1; v <= upTo; v += 1) expect((await store.read((v - 1) * 4096, 4096)).equals(patternBytes(5, v, 4096))).toBe(true);
  expect((await store.read(upTo * 4096, 4096)).every((b) => b === 0)).toBe(true);
}

async function openError(options: LsvdOptions): Promise<StorageError> {
  try {
    const s = await Lsvd.open(options);
    await s.close();
  } catch (err) {
    return err as StorageError;
  }
  throw new Error('open succeeded');
}

const L1 = 'L0000000001.seg';

describe('recovery', () => {
  it('cuts a torn last record (half written) and reports it', async () => {
    const options = await build(10);
    const path = join(options.dir, L1);
    const size = (await stat(path)).size;
    await truncate(path, size - RECORD / 2);
    const store = await Lsvd.open(options);
    expect(store.version).toBe(9);
    expect(store.openReport.truncatedBytes).toBe(RECORD - RECORD / 2);
    expect(store.openReport.warnings.join()).toMatch(/log tail cut: torn/);
    await verify(store, 9);
    // It continues from there.
    store.append({ version: 10, kind: 'write', offsetBytes: 9 * 4096, lengthBytes: 4096, data: patternBytes(5, 10, 4096) });
    await store.close();
    const again = await Lsvd.open(options);
    expect(again.version).toBe(10);
    await verify(again, 10);
    await again.close();
  });

  it('cuts a last record with a flipped data byte (crc mismatch)', async () => {
    const options = await build(10);
    const path = join(options.dir, L1);
    const size = (await stat(path)).size;
    const fh = await open(path, 'r+');
    await fh.write(Buffer.from([0x5a]), 0, 1, size - 100);
    await fh.close();
    const store = await Lsvd.open(options);
    expect(store.version).toBe(9);
    expect(store.openReport.truncatedBytes).toBe(RECORD);
    expect(store.openReport.warnings.join()).toMatch(/crc mismatch/);
    await verify(store, 9);
    await store.close();
  });

  it('refuses damage in the middle of the log, naming segment and position; repairCorruptLog cuts there', async () => {
    const options = await build(10);
    const fh = await open(join(options.dir, L1), 'r+');
    const at = 32 + 4 * RECORD; // header of version 5
    await fh.write(Buffer.from([0xff, 0xff]), 0, 2, at);
    await fh.close();
    const err = await openError(options);
    expect(err.code).toBe('ERR_CORRUPT');
    expect(err.message).toContain(`${L1}:${at}`);
    expect(err.message).toContain('repairCorruptLog');
    const store = await Lsvd.open({ ...options, repairCorruptLog: true });
    expect(store.version).toBe(4);
    expect(store.openReport.truncatedBytes).toBe(6 * RECORD);
    await verify(store, 4);
    await store.close();
  });

  it('falls back from a corrupt checkpoint to the previous one (or full replay)', async () => {
    const options = await build(6, {}, true);
    const s = await Lsvd.open(options);
    for (let v = 7; v <= 12; v += 1) s.append({ version: v, kind: 'write', offsetBytes: (v - 1) * 4096, lengthBytes: 4096, data: patternBytes(5, v, 4096) });
    await s.close(); // writes a second checkpoint
    const ckpts = (await readdir(options.dir)).filter((n) => n.endsWith('.ckpt')).sort();
    expect(ckpts.length).toBe(2);
    const newest = join(options.dir, ckpts[1]);
    const fh = await open(newest, 'r+');
    await fh.write(Buffer.from([1, 2, 3]), 0, 3, (await fh.stat()).size - 10);
    await fh.close();
    const store = await Lsvd.open(options);
    expect(store.openReport.checkpointUsed).toBe(ckpts[0]);
    expect(store.openReport.warnings.join()).toMatch(/unusable \(crc mismatch\)/);
    // The unusable one goes, so it never becomes the fallback of a later checkpoint.
    expect(store.openReport.removedFiles).toEqual([ckpts[1]]);
    expect(store.version).toBe(12);
    await verify(store, 12);
    await store.close();
    // Both corrupt: full replay from L1.
    const garbage = (await readdir(options.dir)).filter((n) => n.endsWith('.ckpt'));
    for (const name of garbage) await writeFile(join(options.dir, name), 'garbage');
    const replayed = await Lsvd.open(options);
    expect(replayed.openReport.checkpointUsed).toBeNull();
    expect(replayed.openReport.removedFiles.sort()).toEqual(garbage.sort());
    expect(replayed.version).toBe(12);
    await verify(replayed, 12);
    await replayed.close();
    // The checkpoint written at close is the only one, and clean.
    const clean = await Lsvd.open(options);
    expect(clean.openReport.warnings).toEqual([]);
    expect(clean.openReport.checkpointVersion).toBe(12);
    expect((await readdir(options.dir)).filter((n) => n.endsWith('.ckpt'))).toEqual([clean.openReport.checkpointUsed]);
    await clean.close();
  });

  it('a missing segment named by the checkpoint is ERR_CORRUPT naming the file', async () => {
    const options = await build(40, { segmentSizeBytes: 16 * 1024 }, true);
    const segs = (await readdir(options.dir)).filter((n) => n.endsWith('.seg')).sort();
    expect(segs.length).toBeGreaterThan(3);
    await unlink(join(options.dir, segs[1]));
    const err = await openError(options);
    expect(err.code).toBe('ERR_CORRUPT');
    expect(err.message).toContain(segs[1]);
    expect(err.message).toMatch(/missing/);
  });

  it('a gap in log segment numbering after the checkpoint is ERR_CORRUPT', async () => {
    const options = await build(40, { segmentSizeBytes: 16 * 1024 });
    const segs = (await readdir(options.dir)).filter((n) => n.endsWith('.seg')).sort();
    await unlink(join(options.dir, segs[2]));
    const err = await openError(options);
    expect(err.code).toBe('ERR_CORRUPT');
    expect(err.message).toContain(segs[2]);
    expect(err.message).toMatch(/gap/);
  });

  it('drops empty segments after a cut newest first, so a crash during recovery never leaves a numbering gap', async () => {
    const options = await build(40, { segmentSizeBytes: 16 * 1024 });
    const segs = (await readdir(options.dir)).filter((n) => n.endsWith('.seg')).sort();
    const last = Number(segs[segs.length - 1].slice(1, 11));
    const name = (n: number): string => `L${String(n).padStart(10, '0')}.seg`;
    // Two later segments holding nothing but their header, and a torn last record before them.
    await writeFile(join(options.dir, name(last + 1)), encodeSegmentHeader('log', last + 1));
    await writeFile(join(options.dir, name(last + 2)), encodeSegmentHeader('log', last + 2));
    const path = join(options.dir, name(last));
    await truncate(path, (await stat(path)).size - 100);
    const store = await Lsvd.open(options);
    expect(store.version).toBe(39);
    expect(store.openReport.removedFiles).toEqual([name(last + 2), name(last + 1)]);
    await verify(store, 39);
    await store.close();
    // The same for a torn segment creation followed by an empty one.
    await writeFile(join(options.dir, name(last + 1)), Buffer.alloc(10));
    await writeFile(join(options.dir, name(last + 2)), encodeSegmentHeader('log', last + 2));
    const again = await Lsvd.open(options);
    expect(again.openReport.removedFiles).toEqual([name(last + 2), name(last + 1)]);
    expect(again.version).toBe(39);
    await again.close();
  });

  it('removes a torn new segment at the tail and output of an interrupted GC', async () => {
    const options = await build(40, { segmentSizeBytes: 16 * 1024 });
    const segs = (await readdir(options.dir)).filter((n) => n.endsWith('.seg')).sort();
    const last = segs[segs.length - 1];
    const next = `L${String(Number(last.slice(1, 11)) + 1).padStart(10, '0')}.seg`;
    await writeFile(join(options.dir, next), Buffer.alloc(10)); // torn segment creation
    await writeFile(join(options.dir, 'G0000000009.seg'), Buffer.alloc(100)); // GC output never checkpointed
    const store = await Lsvd.open(options);
    expect(store.version).toBe(40);
    expect(store.openReport.removedFiles).toEqual(expect.arrayContaining([next, 'G0000000009.seg']));
    await verify(store, 40);
    await store.close();
  });
});
