/**
 * A slow disk on demand, for fault-injection runs: delays added to a store's segment IO.
 *
 * This host has no device-mapper `delay` target, so the delay is injected where the store
 * does its IO (segment writes, fdatasyncs, reads), like a failpoint. The delays come from a
 * small JSON file that the run rewrites while the replica runs (the same idea as nbdkit's
 * error filter and its trigger file): only someone who can write on the replica's host can
 * slow it, and a replica started without the file has no hook at all.
 *
 *   {"writeDelayMs": 50, "syncDelayMs": 200, "readDelayMs": 20}   (absent or {}: a healthy disk)
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';

export interface DiskDelays {
  writeDelayMs: number;
  syncDelayMs: number;
  readDelayMs: number;
}

const HEALTHY: DiskDelays = { writeDelayMs: 0, syncDelayMs: 0, readDelayMs: 0 };
/** A fault of more than this is a typo, not a slow disk. */
const MAX_DELAY_MS = 60_000;
/** How often the file is looked at: a fault lands within this long of being written. */
const POLL_MS = 100;

export class DiskFaults {
  private current: DiskDelays = HEALTHY;

  constructor(private readonly logger?: Logger) {}

  get delays(): DiskDelays {
    return this.current;
  }

  /** Reads may not bypass the thread pool while they are to be slowed. */
  get slowReads(): boolean {
    return this.current.readDelayMs > 0;
  }

  set(delays: Partial<DiskDelays>): void {
    const next = { ...HEALTHY, ...delays };
    for (const [k, v] of Object.entries(next)) {
      if (!(k in HEALTHY)) throw new Error(`disk faults: unknown key ${JSON.stringify(k)} (known: ${Object.keys(HEALTHY).join(', ')})`);
      if (!Number.isFinite(v) || v < 0 || v > MAX_DELAY_MS) throw new Error(`disk faults: ${k} must be 0…${MAX_DELAY_MS} ms, got ${JSON.stringify(v)}`);
    }
    const changed = (Object.keys(HEALTHY) as Array<keyof DiskDelays>).some((k) => next[k] !== this.current[k]);
    this.current = next;
    if (changed) this.logger?.warn({ ...next }, next.writeDelayMs + next.syncDelayMs + next.readDelayMs > 0 ? 'disk faults: disk slowed' : 'disk faults: disk healthy again');
  }

  /** Wait out the delay of one IO of this kind (resolves at once on a healthy disk). */
  before(kind: 'write' | 'sync' | 'read'): Promise<void> | undefined {
    const ms = kind === 'write' ? this.current.writeDelayMs : kind === 'sync' ? this.current.syncDelayMs : this.current.readDelayMs;
    if (ms <= 0) return undefined;
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  /**
   * Follow a JSON file: its delays apply from the next poll on; a missing file is a healthy
   * disk; a file that does not parse is logged and the delays in force stay. Returns stop().
   * Polled by content, not by stat: two writes of one size within a timestamp tick look alike.
   */
  watch(file: string): () => void {
    let lastText: string | undefined;
    const load = (): void => {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
          this.logger?.error({ file, err: (err as Error).message }, 'disk faults: cannot read the file; delays unchanged');
          return;
        }
        text = '';
      }
      if (text === lastText) return;
      lastText = text;
      try {
        const parsed: unknown = text.trim() === '' ? {} : JSON.parse(text);
        if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('expected a JSON object');
        this.set(parsed as Partial<DiskDelays>);
      } catch (err) {
        this.logger?.error({ file, err: (err as Error).message }, 'disk faults: bad file; delays unchanged');
      }
    };
    load();
    const timer = setInterval(load, POLL_MS);
    timer.unref();
    return () => clearInterval(timer);
  }
}

/** Faults by store directory: segment files look theirs up (empty unless a run injects faults). */
const faultsByDir = new Map<string, DiskFaults>();

export function attachDiskFaults(dir: string, faults: DiskFaults): void {
  faultsByDir.set(dir, faults);
}

export function detachDiskFaults(dir: string, faults: DiskFaults): void {
  if (faultsByDir.get(dir) === faults) faultsByDir.delete(dir);
}

export function diskFaultsFor(dir: string): DiskFaults | undefined {
  return faultsByDir.size === 0 ? undefined : faultsByDir.get(dir);
}
