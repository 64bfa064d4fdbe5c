/**
 * The driver's I/O meter: counters since start, latency percentiles per heartbeat window, a
 * bounded window under load, and the backend's answers passed through untouched.
 */
import { describe, expect, it } from 'vitest';
import { IoMeter, maxLatencySamples } from '../../actors/io-meter.js';
import type { BlockBackend } from '../../nbd/backend.js';

function backend(delaysMs: number[] = []): BlockBackend {
  let i = 0;
  const wait = () => new Promise<void>((r) => setTimeout(r, delaysMs[i++] ?? 0));
  return {
    sizeBytes: 1 << 20,
    readOnly: false,
    canMultiConn: true,
    read: async (_o, length) => {
      await wait();
      return Buffer.alloc(length, 7);
    },
    write: async () => wait(),
    trim: async () => wait(),
    writeZeroes: async () => wait(),
    flush: async () => {
      await wait();
      throw Object.assign(new Error('disk gone'), { code: 'EIO' });
    },
  };
}

describe('IoMeter', () => {
  it('counts requests and bytes, and failures, and passes results through', async () => {
    const meter = new IoMeter();
    const b = meter.wrap(backend());
    expect(b.sizeBytes).toBe(1 << 20);
    expect(await b.read(0, 4096)).toEqual(Buffer.alloc(4096, 7));
    await b.write(0, Buffer.alloc(8192), { fua: false });
    await b.trim(0, 4096, { fua: false });
    await expect(b.flush()).rejects.toMatchObject({ code: 'EIO' });
    const s = meter.sample();
    expect(s).toMatchObject({ ops: 4, readBytes: 4096, writeBytes: 8192, errors: 1, windowOps: 4 });
    // A new window: counters stay, the window starts empty.
    expect(meter.sample()).toMatchObject({ ops: 4, windowOps: 0, latencyMsP50: 0, latencyMsP99: 0 });
  });

  it('reports the window’s p50 and p99 latency', async () => {
    const meter = new IoMeter();
    const delays = Array.from({ length: 100 }, (_, i) => (i === 99 ? 60 : 1));
    const b = meter.wrap(backend(delays));
    for (let i = 0; i < 100; i++) await b.write(0, Buffer.alloc(1), { fua: false });
    const s = meter.sample();
    expect(s.windowOps).toBe(100);
    expect(s.latencyMsP50).toBeLessThan(30);
    expect(s.latencyMsP99).toBeGreaterThanOrEqual(50);
  });

  it('keeps a bounded sample of a busy window', async () => {
    const meter = new IoMeter();
    const b = meter.wrap(backend());
    const n = maxLatencySamples + 1000;
    await Promise.all(Array.from({ length: n }, () => b.write(0, Buffer.alloc(1), { fua: false })));
    const s = meter.sample();
    expect(s.windowOps).toBe(n);
    expect(s.ops).toBe(n);
    expect(Number.isFinite(s.latencyMsP99)).toBe(true);
  });
});
