/**
 * Disk full, for real: the store runs on an 8 MiB tmpfs and is filled until the log write
 * fails. The failure must be a coded StorageError (ERR_NO_SPACE naming the directory),
 * later appends are refused with the same code, everything flushed stays readable, a copy
 * of the directory opens elsewhere at the last flushed version or later, and once space is
 * freed a flush() retries the write and the store carries on.
 *
 * Needs root (mount -t tmpfs); skipped with the reason otherwise (FREEBS_REQUIRE_TOOLS=1: fails).
 */
import { afterAll, expect, it, vi } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { cp, open, readdir, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { Lsvd, StorageError, type LsvdRecord } from '../../storage/index.js';
import { requirements, itWith, type RequirementCheck } from '../helpers/tools.js';
import { patternBytes, seededRandom, tempDir } from './helpers.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;
const VOLUME_BYTES = 64 * MiB;

/** Mount an 8 MiB tmpfs on a fresh directory; unmounted (by path) in afterAll. */
function mountTmpfs(): string {
  const mountDir = mkdtempSync(join(tmpdir(), 'lsvd-enospc-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mountDir], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    rmdirSync(mountDir);
    const stderr = String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim();
    throw new Error(`mount -t tmpfs failed: ${stderr}`);
  }
  cleanups.push(async () => {
    execFileSync('umount', [mountDir]);
    rmdirSync(mountDir);
  });
  return mountDir;
}

/**
 * Whether the test can run is decided when the file is collected: try a mount and undo it
 * at once (the real one happens in the test, so a filtered-out test leaves no mount behind).
 */
function probeTmpfs(): RequirementCheck {
  const needs = requirements({ root: true, commands: ['mount', 'umount'] });
  if (needs.missing !== undefined) return needs;
  try {
    const dir = mountTmpfs();
    cleanups.pop();
    execFileSync('umount', [dir]);
    rmdirSync(dir);
    return needs;
  } catch (err) {
    return { missing: `a working "mount -t tmpfs" (${(err as Error).message})` };
  }
}

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  // LIFO: the copy and the store's files go before the mount they live on.
  for (const c of cleanups.reverse()) await c();
});
const check = probeTmpfs();

/** A logger that keeps warnings (pino's interface, as far as the store uses it). */
function countingLogger(): { logger: Logger; warnings: string[]; fields: Array<Record<string, unknown>> } {
  const warnings: string[] = [];
  const fields: Array<Record<string, unknown>> = [];
  const noop = (): void => undefined;
  const warn = (obj: Record<string, unknown>, msg?: string): void => {
    warnings.push(msg ?? '');
    fields.push(obj);
  };
  const logger = { info: noop, debug: noop, error: noop, warn } as unknown as Logger;
  return { logger, warnings, fields };
}

itWith(check, 'disk full: ERR_NO_SPACE naming the directory, flushed data readable, recovers once space is freed', async () => {
  const mountDir = mountTmpfs();
  const dir = join(mountDir, 'vol');
  // Ballast: freed later, as an operator would free space.
  const ballast = join(mountDir, 'ballast');
  await writeFile(ballast, Buffer.alloc(MiB, 1));
  const { logger, warnings } = countingLogger();
  const store = await Lsvd.open({ dir, sizeBytes: VOLUME_BYTES, segmentSizeBytes: MiB, checkpointEveryRecords: 256, logger });
  // Closed before the unmount even when an assertion fails (close is idempotent).
  cleanups.push(() => store.close().catch(() => undefined));

  // The model: which version last wrote each block.
  const lastWrite = new Map<number, number>();
  const rnd = seededRandom(42);
  const record = (version: number): LsvdRecord => {
    const block = Math.floor(rnd() * (VOLUME_BYTES / BLOCK_BYTES));
    return { version, kind: 'write', offsetBytes: block * BLOCK_BYTES, lengthBytes: BLOCK_BYTES, data: patternBytes(7, version, BLOCK_BYTES) };
  };
  const verify = async (s: Lsvd, upTo: number): Promise<void> => {
    for (const [block, version] of lastWrite) {
      if (version > upTo) continue;
      const got = await s.read(block * BLOCK_BYTES, BLOCK_BYTES);
      expect(got.equals(patternBytes(7, version, BLOCK_BYTES)), `block ${block} (version ${version})`).toBe(true);
    }
  };

  let lastFlushed = 0;
  let failure: unknown;
  fill: for (let round = 0; round < 10_000; round += 1) {
    for (let i = 0; i < 16; i += 1) {
      const rec = record(store.version + 1);
      try {
        store.append(rec);
      } catch (err) {
        failure = err;
        break fill;
      }
      lastWrite.set(rec.offsetBytes / BLOCK_BYTES, rec.version);
    }
    try {
      lastFlushed = await store.flush();
    } catch (err) {
      failure = err;
      break;
    }
  }
  expect(failure, 'the 8 MiB tmpfs never filled up').toBeDefined();
  expect(failure).toBeInstanceOf(StorageError);
  const err = failure as StorageError;
  expect(err.code).toBe('ERR_NO_SPACE');
  expect(err.message).toContain(dir);
  expect(err.message).toMatch(/no space left on device/);
  expect(lastFlushed).toBeGreaterThan(500);
  const appended = store.version;

  // Appends are refused (nothing changes) until a flush gets through.
  let refused: StorageError | undefined;
  try {
    store.append(record(appended + 1));
  } catch (e) {
    refused = e as StorageError;
  }
  expect(refused?.code).toBe('ERR_NO_SPACE');
  expect(refused?.message).toMatch(/free space and call flush\(\) to retry/);
  expect(store.version).toBe(appended);
  // A retry while still full fails the same way, and does not lose anything.
  await expect(store.flush()).rejects.toMatchObject({ code: 'ERR_NO_SPACE' });
  // Everything appended (flushed or still queued) reads back.
  await verify(store, appended);

  // The directory as it is now (a crash at this moment), opened elsewhere: at least the last flushed version.
  const copy = await tempDir('lsvd-enospc-copy-');
  cleanups.push(copy.remove);
  await cp(dir, copy.path, { recursive: true });
  const elsewhere = await Lsvd.open({ dir: copy.path });
  expect(elsewhere.version).toBeGreaterThanOrEqual(lastFlushed);
  expect(elsewhere.version).toBeLessThanOrEqual(appended);
  await verify(elsewhere, elsewhere.version);
  await elsewhere.close();

  // Free space: the next flush writes the queued batches and the store carries on.
  await unlink(ballast);
  expect(await store.flush()).toBe(appended);
  for (let i = 0; i < 16; i += 1) {
    const rec = record(store.version + 1);
    store.append(rec);
    lastWrite.set(rec.offsetBytes / BLOCK_BYTES, rec.version);
  }
  const final = await store.flush();
  expect(final).toBe(appended + 16);
  await verify(store, final);
  // Failed scheduled checkpoints must not spin: a handful of warnings, not one per append.
  expect(warnings.filter((w) => w.includes('checkpoint')).length).toBeLessThan(20);
  await store.close();

  const again = await Lsvd.open({ dir });
  expect(again.version).toBe(final);
  await verify(again, final);
  await again.close();
});

it('a checkpoint that cannot be written: appends go on, ERR_NO_SPACE, retried once per interval, not per append', async () => {
  const dir = await tempDir('lsvd-ckpt-full-');
  cleanups.push(dir.remove);
  const { logger, warnings, fields } = countingLogger();
  const store = await Lsvd.open({ dir: dir.path, sizeBytes: VOLUME_BYTES, checkpointEveryRecords: 20, logger });
  // Checkpoints are written with FileHandle.write, the log with writev: fail only the former.
  const probe = await open(join(dir.path, 'volume.json'), 'r');
  const proto = Object.getPrototypeOf(probe) as { write: (...args: unknown[]) => Promise<unknown> };
  await probe.close();
  const spy = vi.spyOn(proto, 'write').mockRejectedValue(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));
  try {
    for (let v = 1; v <= 400; v += 1) {
      store.append({ version: v, kind: 'write', offsetBytes: (v % 64) * BLOCK_BYTES, lengthBytes: BLOCK_BYTES, data: patternBytes(3, v, BLOCK_BYTES) });
      if (v % 10 === 0) expect(await store.flush()).toBe(v);
      await new Promise((resolve) => setImmediate(resolve));
    }
    const failed = fields.filter((_, i) => warnings[i] === 'scheduled checkpoint failed');
    expect(failed.length).toBeGreaterThan(5);
    expect(failed.length).toBeLessThanOrEqual(400 / 20);
    expect(failed[0]).toMatchObject({ code: 'ERR_NO_SPACE' });
    const explicit = await store.checkpoint().then(() => undefined, (e: unknown) => e as StorageError);
    expect(explicit?.code).toBe('ERR_NO_SPACE');
    expect(explicit?.message).toContain(join(dir.path, 'checkpoint-'));
    expect((await readdir(dir.path)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  } finally {
    spy.mockRestore();
  }
  await store.close();
  const again = await Lsvd.open({ dir: dir.path });
  expect(again.version).toBe(400);
  expect(again.openReport.checkpointVersion).toBe(400);
  await again.close();
});
