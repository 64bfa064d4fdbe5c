import { describe, expect, it } from 'vitest';
import { limits, resolveLimits } from '../../protocol/limits.js';

describe('limits', () => {
  it('are consistent with each other', () => {
    // A batch is flushed once it reaches batchFlushBytes, so its last frame may add a whole IO.
    expect(limits.batchFlushBytes + limits.maxIoBytes + 64 * 1024).toBeLessThanOrEqual(limits.maxMessageBytes);
    expect(limits.imageChunkBytes).toBeLessThanOrEqual(limits.maxIoBytes);
    expect(limits.sendLowWaterBytes).toBeLessThan(limits.sendHighWaterBytes);
    // Room past high water for what is sent regardless of backpressure (a largest read reply or two).
    expect(limits.sendHighWaterBytes + 2 * limits.maxIoBytes).toBeLessThanOrEqual(limits.sendMaxPendingBytes);
    expect(limits.reconnectMinMs).toBeLessThanOrEqual(limits.reconnectMaxMs / 2);
    expect(limits.maxIoBytes).toBeLessThanOrEqual(Number.MAX_SAFE_INTEGER);
  });

  it('can be overridden in part', () => {
    expect(resolveLimits()).toBe(limits);
    expect(resolveLimits({ helloTimeoutMs: 10 })).toEqual({ ...limits, helloTimeoutMs: 10 });
  });
});
