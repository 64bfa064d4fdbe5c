/**
 * Superseded pieces inside the retention window: when a write or trim at version S
 * replaces a piece written at version P, the piece is kept here (with S) while
 * S > horizonVersion. With it, the image at any version V >= horizonVersion is
 * "current extents with version <= V, plus the pieces with P <= V < S" — no replay,
 * and GC knows exactly which old bytes a snapshot-to-be still needs.
 *
 * Pieces arrive in increasing S (versions are applied in order), so this is a FIFO:
 * pruning pops from the front.
 */
import type { ExtentMap, PieceFn } from './extent-map.js';

/** Bytes per history piece: start f64, version f64, supersededBy f64, length/segment/position u32. */
export const HISTORY_PIECE_BYTES = 36;

export interface HistoryColumns {
  starts: Float64Array;
  versions: Float64Array;
  supersededBy: Float64Array;
  lengths: Uint32Array;
  segments: Uint32Array;
  positions: Uint32Array;
}

export class History {
  private head = 0;
  private tail = 0;
  private cols: HistoryColumns = History.alloc(1024);

  private static alloc(capacity: number): HistoryColumns {
    return {
      starts: new Float64Array(capacity),
      versions: new Float64Array(capacity),
      supersededBy: new Float64Array(capacity),
      lengths: new Uint32Array(capacity),
      segments: new Uint32Array(capacity),
      positions: new Uint32Array(capacity),
    };
  }

  get size(): number {
    return this.tail - this.head;
  }

  push(startBytes: number, lengthBytes: number, segmentId: number, positionBytes: number, version: number, supersededBy: number): void {
    if (this.tail === this.cols.starts.length) this.grow();
    const c = this.cols;
    const i = this.tail;
    c.starts[i] = startBytes;
    c.lengths[i] = lengthBytes;
    c.segments[i] = segmentId;
    c.positions[i] = positionBytes;
    c.versions[i] = version;
    c.supersededBy[i] = supersededBy;
    this.tail += 1;
  }

  private grow(): void {
    const live = this.size;
    // Compact in place when at least half is pruned space; else double.
    const capacity = live * 2 <= this.cols.starts.length ? this.cols.starts.length : this.cols.starts.length * 2;
    const next = History.alloc(capacity);
    for (const key of Object.keys(next) as Array<keyof HistoryColumns>) {
      (next[key] as Float64Array).set((this.cols[key] as Float64Array).subarray(this.head, this.tail));
    }
    this.cols = next;
    this.head = 0;
    this.tail = live;
  }

  /** Forget pieces superseded at or before the horizon: no retained version needs them. */
  prune(horizonVersion: number): void {
    while (this.head < this.tail && this.cols.supersededBy[this.head] <= horizonVersion) this.head += 1;
    if (this.head === this.tail) {
      this.head = 0;
      this.tail = 0;
    }
  }

  /** Visit pieces that were visible at `version` (version <= V < supersededBy). */
  forEachVisibleAt(version: number, fn: PieceFn): void {
    const c = this.cols;
    for (let i = this.head; i < this.tail; i += 1) {
      if (c.versions[i] <= version && c.supersededBy[i] > version) fn(c.starts[i], c.lengths[i], c.segments[i], c.positions[i], c.versions[i]);
    }
  }

  forEach(fn: PieceFn): void {
    const c = this.cols;
    for (let i = this.head; i < this.tail; i += 1) fn(c.starts[i], c.lengths[i], c.segments[i], c.positions[i], c.versions[i]);
  }

  /** Rebuild the map as of `version` from the current map (see the file comment). */
  imageMapAt(current: ExtentMap, version: number): ExtentMap {
    const map = current.clone();
    map.dropNewerThan(version);
    this.forEachVisibleAt(version, (s, l, seg, pos, v) => map.set(s, l, seg, pos, v));
    return map;
  }

  relocate(relocateFn: (segmentId: number, positionBytes: number, lengthBytes: number) => [number, number] | undefined): void {
    const c = this.cols;
    for (let i = this.head; i < this.tail; i += 1) {
      const moved = relocateFn(c.segments[i], c.positions[i], c.lengths[i]);
      if (moved) {
        c.segments[i] = moved[0];
        c.positions[i] = moved[1];
      }
    }
  }

  toColumns(): HistoryColumns {
    const out = History.alloc(this.size);
    for (const key of Object.keys(out) as Array<keyof HistoryColumns>) {
      (out[key] as Float64Array).set((this.cols[key] as Float64Array).subarray(this.head, this.tail));
    }
    return out;
  }

  static fromColumns(cols: HistoryColumns): History {
    const h = new History();
    const n = cols.starts.length;
    h.cols = History.alloc(Math.max(1024, n));
    for (const key of Object.keys(cols) as Array<keyof HistoryColumns>) {
      (h.cols[key] as Float64Array).set(cols[key] as Float64Array);
    }
    h.tail = n;
    return h;
  }
}
