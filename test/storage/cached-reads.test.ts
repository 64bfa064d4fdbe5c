import { afterAll, describe, expect, it } from 'vitest';
import { Lsvd } from '../../storage/index.js';
import { CachedReadPolicy } from '../../storage/cached-reads.js';
import { patternBytes, tempDir } from './helpers.js';

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

/** Busy-wait: a read the disk answered, as the policy sees it. */
function slowRead(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

describe('CachedReadPolicy', () => {
  it('backs off to the thread pool after a few slow reads in a window, not after one', () => {
    const policy = new CachedReadPolicy({ slowReadNs: 500_000, slowReadsToBackOff: 3, windowReads: 100, backoffMs: 60_000 });
    expect(policy.trySync(4096)).toBe(true);
    policy.timed(() => slowRead(2));
    policy.timed(() => slowRead(2));
    for (let i = 0; i < 10; i++) policy.timed(() => undefined);
    expect(policy.trySync(4096)).toBe(true);
    policy.timed(() => slowRead(2));
    expect(policy.trySync(4096)).toBe(false);
    expect(policy.slowSyncReads).toBe(3);
  });

  it('forgets slow reads once a window of fast ones has passed', () => {
    const policy = new CachedReadPolicy({ slowReadNs: 500_000, slowReadsToBackOff: 2, windowReads: 20, backoffMs: 60_000 });
    policy.timed(() => slowRead(2));
    for (let i = 0; i < 40; i++) policy.timed(() => undefined);
    policy.timed(() => slowRead(2));
    expect(policy.trySync(4096)).toBe(true);
  });

  it('tries synchronous reads again after the back-off', async () => {
    const policy = new CachedReadPolicy({ slowReadNs: 500_000, slowReadsToBackOff: 1, backoffMs: 20 });
    policy.timed(() => slowRead(2));
    expect(policy.trySync(4096)).toBe(false);
    await new Promise((r) => setTimeout(r, 40));
    expect(policy.trySync(4096)).toBe(true);
  });

  it('never reads long ranges synchronously', () => {
    const policy = new CachedReadPolicy({ maxSyncBytes: 64 * 1024 });
    expect(policy.trySync(64 * 1024)).toBe(true);
    expect(policy.trySync(64 * 1024 + 1)).toBe(false);
  });
});

describe('Lsvd.readInto', () => {
  it('fills the caller buffer: data from the log and the file, holes as zeros over old bytes', async () => {
    const dir = await tempDir();
    cleanups.push(dir.remove);
    const store = await Lsvd.open({ dir: dir.path, sizeBytes: 16 * 1024 * 1024 });
    const a = patternBytes(1, 1, 8192);
    const b = patternBytes(2, 2, 4096);
    store.append({ version: 1, kind: 'write', offsetBytes: 4096, lengthBytes: a.length, data: a });
    await store.flush();
    // Read once through the thread pool (opens the segment), then synchronously.
    for (let round = 0; round < 2; round++) {
      const target = Buffer.alloc(20480, 0xee);
      await store.readInto(0, target);
      expect(target.subarray(0, 4096).every((x) => x === 0)).toBe(true);
      expect(target.subarray(4096, 12288).equals(a)).toBe(true);
      expect(target.subarray(12288).every((x) => x === 0)).toBe(true);
    }
    // Appended, not yet written: served from the writer's batch.
    store.append({ version: 2, kind: 'write', offsetBytes: 16384, lengthBytes: b.length, data: b });
    const target = Buffer.alloc(8192, 0xee);
    await store.readInto(12288, target);
    expect(target.subarray(0, 4096).every((x) => x === 0)).toBe(true);
    expect(target.subarray(4096).equals(b)).toBe(true);
    await store.close();
  });
});
