/**
 * The slow disk of fault-injection runs (storage/disk-faults.ts): delays from a real file,
 * followed while the store runs, applied to the store's real segment IO.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { DiskFaults, Lsvd } from '../../storage/index.js';
import { patternBytes, tempDir } from './helpers.js';

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

async function until(check: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('DiskFaults', () => {
  it('slows the store’s writes and fdatasyncs by the delays in force, and not once healed', async () => {
    const dir = await tempDir('lsvd-faults-');
    cleanups.push(dir.remove);
    const faults = new DiskFaults();
    const store = await Lsvd.open({ dir: dir.path, sizeBytes: 1 << 20, diskFaults: faults });
    faults.set({ writeDelayMs: 120, syncDelayMs: 150 });
    store.append({ version: 1, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data: patternBytes(1, 1, 4096) });
    let started = performance.now();
    await store.flush();
    // One batch write and one fdatasync, each waiting its delay (a lower bound: never flaky).
    expect(performance.now() - started).toBeGreaterThanOrEqual(120 + 150 - 5);
    faults.set({ readDelayMs: 100 });
    started = performance.now();
    expect((await store.read(0, 4096)).equals(patternBytes(1, 1, 4096))).toBe(true);
    expect(performance.now() - started).toBeGreaterThanOrEqual(95);
    faults.set({});
    store.append({ version: 2, kind: 'write', offsetBytes: 4096, lengthBytes: 4096, data: patternBytes(1, 2, 4096) });
    expect(await store.flush()).toBe(2);
    await store.close();
    // A store opened without faults in the same directory is not slowed by the old object.
    faults.set({ syncDelayMs: 5000 });
    const again = await Lsvd.open({ dir: dir.path });
    again.append({ version: 3, kind: 'trim', offsetBytes: 0, lengthBytes: 4096 });
    started = performance.now();
    await again.flush();
    expect(performance.now() - started).toBeLessThan(5000);
    await again.close();
  });

  it('follows a JSON file: applied when written, kept when the file is bad, healthy when it is gone', async () => {
    const dir = await tempDir('lsvd-faults-file-');
    cleanups.push(dir.remove);
    const file = join(dir.path, 'r2.json');
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (l: string) => lines.push(l) });
    const faults = new DiskFaults(logger);
    const stop = faults.watch(file);
    try {
      expect(faults.delays).toEqual({ writeDelayMs: 0, syncDelayMs: 0, readDelayMs: 0 });
      writeFileSync(file, JSON.stringify({ writeDelayMs: 40, syncDelayMs: 60 }));
      await until(() => faults.delays.syncDelayMs === 60);
      expect(faults.delays).toEqual({ writeDelayMs: 40, syncDelayMs: 60, readDelayMs: 0 });
      expect(lines.some((l) => l.includes('disk faults: disk slowed'))).toBe(true);
      writeFileSync(file, '{"writeDelayMs": 40, "syncDelayMs": ');
      await until(() => lines.some((l) => l.includes('disk faults: bad file')));
      expect(faults.delays.syncDelayMs).toBe(60);
      writeFileSync(file, JSON.stringify({ fsyncDelay: 10 }));
      await until(() => lines.some((l) => l.includes('unknown key \\"fsyncDelay\\"')));
      expect(faults.delays.syncDelayMs).toBe(60);
      writeFileSync(file, JSON.stringify({ syncDelayMs: -1 }));
      await until(() => lines.some((l) => l.includes('syncDelayMs must be 0')));
      writeFileSync(file, JSON.stringify({ readDelayMs: 30 }));
      await until(() => faults.slowReads);
      unlinkSync(file);
      await until(() => faults.delays.readDelayMs === 0);
      expect(lines.some((l) => l.includes('disk faults: disk healthy again'))).toBe(true);
    } finally {
      stop();
    }
  });
});
