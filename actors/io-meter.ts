/**
 * The volume's I/O as the driver's heartbeat reports it (HeartbeatFrame.io) for the visualizer:
 * counters since start, and latency percentiles over the requests completed since the last
 * sample. Prometheus histograms (metrics.ts) keep the long view; this is the live one.
 *
 * Hot path cost: two clock reads and a store into a preallocated array per request. The window
 * holds at most `maxLatencySamples`; past that it keeps a uniform sample (reservoir), so p99
 * stays honest under load without the buffer growing.
 */
import type { BlockBackend } from '../nbd/backend.js';
import type { IoStats } from '../protocol/frames.js';

/** Latencies kept per window (one heartbeat period): 64 KiB of doubles. */
export const maxLatencySamples = 8192;

export class IoMeter {
  private ops = 0;
  private readBytes = 0;
  private writeBytes = 0;
  private errors = 0;
  private readonly latenciesMs = new Float64Array(maxLatencySamples);
  /** Requests completed in this window (may exceed the samples kept). */
  private windowOps = 0;

  /** The same backend, counted. */
  wrap(backend: BlockBackend): BlockBackend {
    const timed = <T>(run: () => Promise<T>, onDone: () => void): Promise<T> => {
      const started = performance.now();
      return run().then(
        (value) => {
          onDone();
          this.complete(performance.now() - started);
          return value;
        },
        (err: unknown) => {
          this.errors += 1;
          this.complete(performance.now() - started);
          throw err;
        },
      );
    };
    const none = () => {};
    const metered: BlockBackend = {
      get sizeBytes() {
        return backend.sizeBytes;
      },
      readOnly: backend.readOnly,
      canMultiConn: backend.canMultiConn,
      ...(backend.minimumBlockSizeBytes !== undefined ? { minimumBlockSizeBytes: backend.minimumBlockSizeBytes } : {}),
      ...(backend.preferredBlockSizeBytes !== undefined ? { preferredBlockSizeBytes: backend.preferredBlockSizeBytes } : {}),
      read: (offset, length) => timed(() => backend.read(offset, length), () => (this.readBytes += length)),
      write: (offset, data, options) => timed(() => backend.write(offset, data, options), () => (this.writeBytes += data.length)),
      trim: (offset, length, options) => timed(() => backend.trim(offset, length, options), none),
      writeZeroes: (offset, length, options) => timed(() => backend.writeZeroes(offset, length, options), none),
      flush: () => timed(() => backend.flush(), none),
      close: () => backend.close?.() ?? Promise.resolve(),
    };
    if (backend.cache) {
      const cache = backend.cache.bind(backend);
      metered.cache = (offset, length) => cache(offset, length);
    }
    return metered;
  }

  /** Counters now, and the window's latency percentiles; starts a new window. */
  sample(): IoStats {
    const kept = Math.min(this.windowOps, maxLatencySamples);
    const sorted = this.latenciesMs.slice(0, kept).sort();
    const at = (q: number) => (kept === 0 ? 0 : round3(sorted[Math.min(kept - 1, Math.floor(q * kept))]));
    const stats: IoStats = {
      ops: this.ops,
      readBytes: this.readBytes,
      writeBytes: this.writeBytes,
      errors: this.errors,
      windowOps: this.windowOps,
      latencyMsP50: at(0.5),
      latencyMsP99: at(0.99),
    };
    this.windowOps = 0;
    return stats;
  }

  private complete(latencyMs: number): void {
    this.ops += 1;
    const n = this.windowOps++;
    if (n < maxLatencySamples) this.latenciesMs[n] = latencyMs;
    else {
      // Reservoir sampling: request n replaces a kept one with probability maxLatencySamples/(n+1).
      const slot = Math.floor(Math.random() * (n + 1));
      if (slot < maxLatencySamples) this.latenciesMs[slot] = latencyMs;
    }
  }
}

function round3(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
