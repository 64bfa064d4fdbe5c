/**
 * The extent map: disk range → (segment, position in segment, version), for the live
 * content only. Memory is per extent written, never per block of volume size.
 *
 * Shape: a one-level B-tree of leaves, each leaf a fixed-capacity block of typed arrays
 * (28 bytes per extent). Inserting shifts at most one leaf (≤ LEAF_CAPACITY entries), so
 * random writes stay O(log n + leaf) instead of moving the whole array.
 * Invariant: extents are sorted by start and never overlap; lengths are > 0.
 */

const LEAF_CAPACITY = 512;
/** Bytes per extent in a leaf: start f64, version f64, length u32, segment u32, position u32. */
export const EXTENT_BYTES = 28;

export interface Extent {
  startBytes: number;
  lengthBytes: number;
  segmentId: number;
  positionBytes: number;
  version: number;
}

/** Receives a piece of an extent (already clipped to the queried / removed range). */
export type PieceFn = (startBytes: number, lengthBytes: number, segmentId: number, positionBytes: number, version: number) => void;

class Leaf {
  n = 0;
  readonly starts: Float64Array;
  readonly versions: Float64Array;
  readonly lengths: Uint32Array;
  readonly segments: Uint32Array;
  readonly positions: Uint32Array;

  constructor(capacity: number) {
    // One ArrayBuffer per leaf: fewer allocations, and the columns stay close in memory.
    const buf = new ArrayBuffer(capacity * EXTENT_BYTES);
    this.starts = new Float64Array(buf, 0, capacity);
    this.versions = new Float64Array(buf, capacity * 8, capacity);
    this.lengths = new Uint32Array(buf, capacity * 16, capacity);
    this.segments = new Uint32Array(buf, capacity * 20, capacity);
    this.positions = new Uint32Array(buf, capacity * 24, capacity);
  }

  get capacity(): number {
    return this.starts.length;
  }

  end(i: number): number {
    return this.starts[i] + this.lengths[i];
  }

  /** Make room for `count` entries at i (or close a gap with a negative count). */
  shift(i: number, count: number): void {
    if (count === 0) return;
    const n = this.n;
    this.starts.copyWithin(i + count, i, n);
    this.versions.copyWithin(i + count, i, n);
    this.lengths.copyWithin(i + count, i, n);
    this.segments.copyWithin(i + count, i, n);
    this.positions.copyWithin(i + count, i, n);
    this.n = n + count;
  }

  put(i: number, start: number, length: number, segment: number, position: number, version: number): void {
    this.starts[i] = start;
    this.lengths[i] = length;
    this.segments[i] = segment;
    this.positions[i] = position;
    this.versions[i] = version;
  }

  /** First index whose start is > offset. */
  upperBound(offset: number): number {
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid] <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

export class ExtentMap {
  private leaves: Leaf[];
  private extentCount = 0;
  private mappedBytes = 0;

  /** leafCapacity is for tests (tiny leaves exercise splits and cross-leaf cuts). */
  constructor(private readonly leafCapacity = LEAF_CAPACITY) {
    if (leafCapacity < 4) throw new RangeError('leafCapacity must be >= 4');
    this.leaves = [new Leaf(leafCapacity)];
  }

  /** Number of extents. */
  get size(): number {
    return this.extentCount;
  }

  /** Sum of extent lengths: the bytes of live (non-hole) content. */
  get liveBytes(): number {
    return this.mappedBytes;
  }

  /** Index of the leaf that would hold `offset`: the last leaf starting at or before it. */
  private leafFor(offset: number): number {
    const leaves = this.leaves;
    let lo = 0;
    let hi = leaves.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const leaf = leaves[mid];
      if (leaf.n > 0 && leaf.starts[0] <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo === 0 ? 0 : lo - 1;
  }

  /** Map [start, start+length) to new data, replacing whatever was there; removed pieces go to onRemoved. */
  set(startBytes: number, lengthBytes: number, segmentId: number, positionBytes: number, version: number, onRemoved?: PieceFn): void {
    if (lengthBytes <= 0) return;
    this.remove(startBytes, lengthBytes, onRemoved);
    let li = this.leafFor(startBytes);
    let leaf = this.leaves[li];
    if (leaf.n === leaf.capacity) {
      this.splitLeaf(li);
      if (startBytes >= this.leaves[li + 1].starts[0]) li += 1;
      leaf = this.leaves[li];
    }
    const i = leaf.upperBound(startBytes);
    leaf.shift(i, 1);
    leaf.put(i, startBytes, lengthBytes, segmentId, positionBytes, version);
    this.extentCount += 1;
    this.mappedBytes += lengthBytes;
  }

  /** Unmap [start, start+length) (trim / write-zeroes); removed pieces go to onRemoved. */
  remove(startBytes: number, lengthBytes: number, onRemoved?: PieceFn): void {
    if (lengthBytes <= 0) return;
    const endBytes = startBytes + lengthBytes;
    let li = this.leafFor(startBytes);
    while (li < this.leaves.length) {
      const leaf = this.leaves[li];
      if (leaf.n === 0) {
        li += 1;
        continue;
      }
      if (leaf.starts[0] >= endBytes) break;
      let i = leaf.upperBound(startBytes) - 1;
      if (i < 0 || leaf.end(i) <= startBytes) i += 1;
      let j = i;
      while (j < leaf.n && leaf.starts[j] < endBytes) j += 1;
      // Extents after the run start at or after the end: nothing further overlaps.
      const hasMoreAfterRun = j < leaf.n;
      const rightKept = i < j ? this.cutRun(li, i, j, startBytes, endBytes, onRemoved) : false;
      if (rightKept || hasMoreAfterRun) return;
      if (leaf.n === 0 && this.leaves.length > 1) {
        this.leaves.splice(li, 1);
        continue;
      }
      li += 1;
    }
  }

  /** Replace extents [i, j) of leaf li (all overlapping [start, end)) with their kept remnants; true if a right remnant stays. */
  private cutRun(li: number, i: number, j: number, startBytes: number, endBytes: number, onRemoved?: PieceFn): boolean {
    const leaf = this.leaves[li];
    const first = i;
    const last = j - 1;
    const leftKeep = leaf.starts[first] < startBytes;
    const rightKeep = leaf.end(last) > endBytes;
    // Save the remnants before shifting.
    const lStart = leaf.starts[first];
    const lSeg = leaf.segments[first];
    const lPos = leaf.positions[first];
    const lVer = leaf.versions[first];
    const rStart = leaf.starts[last];
    const rEnd = leaf.end(last);
    const rSeg = leaf.segments[last];
    const rPos = leaf.positions[last];
    const rVer = leaf.versions[last];
    for (let k = first; k < j; k += 1) {
      const s = leaf.starts[k];
      const e = leaf.end(k);
      const cs = Math.max(s, startBytes);
      const ce = Math.min(e, endBytes);
      this.mappedBytes -= ce - cs;
      if (onRemoved) onRemoved(cs, ce - cs, leaf.segments[k], leaf.positions[k] + (cs - s), leaf.versions[k]);
    }
    const keep = (leftKeep ? 1 : 0) + (rightKeep ? 1 : 0);
    const removedCount = j - i;
    this.extentCount += keep - removedCount;
    if (keep > removedCount && leaf.n === leaf.capacity) {
      // A write inside one extent splits it in two: make room first.
      this.splitLeaf(li);
      const target = first < this.leaves[li].n ? this.leaves[li] : this.leaves[li + 1];
      const at = target === this.leaves[li] ? first : first - this.leaves[li].n;
      target.shift(at + 1, 1);
      target.put(at, lStart, startBytes - lStart, lSeg, lPos, lVer);
      target.put(at + 1, endBytes, rEnd - endBytes, rSeg, rPos + (endBytes - rStart), rVer);
      return true;
    }
    leaf.shift(j, keep - removedCount);
    let at = first;
    if (leftKeep) {
      leaf.put(at, lStart, startBytes - lStart, lSeg, lPos, lVer);
      at += 1;
    }
    if (rightKeep) leaf.put(at, endBytes, rEnd - endBytes, rSeg, rPos + (endBytes - rStart), rVer);
    return rightKeep;
  }

  private splitLeaf(li: number): void {
    const leaf = this.leaves[li];
    const half = leaf.n >>> 1;
    const right = new Leaf(this.leafCapacity);
    const moved = leaf.n - half;
    right.starts.set(leaf.starts.subarray(half, leaf.n));
    right.versions.set(leaf.versions.subarray(half, leaf.n));
    right.lengths.set(leaf.lengths.subarray(half, leaf.n));
    right.segments.set(leaf.segments.subarray(half, leaf.n));
    right.positions.set(leaf.positions.subarray(half, leaf.n));
    right.n = moved;
    leaf.n = half;
    this.leaves.splice(li + 1, 0, right);
  }

  /** Visit the mapped pieces of [start, start+length) in order, clipped to the range. */
  lookup(startBytes: number, lengthBytes: number, fn: PieceFn): void {
    const endBytes = startBytes + lengthBytes;
    for (let li = this.leafFor(startBytes); li < this.leaves.length; li += 1) {
      const leaf = this.leaves[li];
      if (leaf.n === 0) continue;
      if (leaf.starts[0] >= endBytes) return;
      let i = leaf.upperBound(startBytes) - 1;
      if (i < 0 || leaf.end(i) <= startBytes) i += 1;
      for (; i < leaf.n; i += 1) {
        const s = leaf.starts[i];
        if (s >= endBytes) return;
        const cs = Math.max(s, startBytes);
        const ce = Math.min(leaf.end(i), endBytes);
        fn(cs, ce - cs, leaf.segments[i], leaf.positions[i] + (cs - s), leaf.versions[i]);
      }
    }
  }

  /** Visit every extent in offset order. */
  forEach(fn: PieceFn): void {
    for (const leaf of this.leaves) {
      for (let i = 0; i < leaf.n; i += 1) fn(leaf.starts[i], leaf.lengths[i], leaf.segments[i], leaf.positions[i], leaf.versions[i]);
    }
  }

  /** Move extents whose data was copied elsewhere (GC): relocate returns the new [segment, position] or undefined. */
  relocate(relocateFn: (segmentId: number, positionBytes: number, lengthBytes: number) => [number, number] | undefined): void {
    for (const leaf of this.leaves) {
      for (let i = 0; i < leaf.n; i += 1) {
        const moved = relocateFn(leaf.segments[i], leaf.positions[i], leaf.lengths[i]);
        if (moved) {
          leaf.segments[i] = moved[0];
          leaf.positions[i] = moved[1];
        }
      }
    }
  }

  /** Drop extents newer than `version` (building a past image; the history fills the holes). */
  dropNewerThan(version: number): void {
    const kept: Extent[] = [];
    let dropped = false;
    this.forEach((startBytes, lengthBytes, segmentId, positionBytes, v) => {
      if (v <= version) kept.push({ startBytes, lengthBytes, segmentId, positionBytes, version: v });
      else dropped = true;
    });
    if (!dropped) return;
    const rebuilt = ExtentMap.fromExtents(kept, this.leafCapacity);
    this.leaves = rebuilt.leaves;
    this.extentCount = rebuilt.extentCount;
    this.mappedBytes = rebuilt.mappedBytes;
  }

  /** A compact, independent copy (snapshots, images). */
  clone(): ExtentMap {
    const cols = this.toColumns();
    return ExtentMap.fromColumns(cols, this.leafCapacity);
  }

  /** Column arrays in offset order, for checkpoints. */
  toColumns(): ExtentColumns {
    const n = this.extentCount;
    const cols: ExtentColumns = {
      starts: new Float64Array(n),
      versions: new Float64Array(n),
      lengths: new Uint32Array(n),
      segments: new Uint32Array(n),
      positions: new Uint32Array(n),
    };
    let at = 0;
    for (const leaf of this.leaves) {
      cols.starts.set(leaf.starts.subarray(0, leaf.n), at);
      cols.versions.set(leaf.versions.subarray(0, leaf.n), at);
      cols.lengths.set(leaf.lengths.subarray(0, leaf.n), at);
      cols.segments.set(leaf.segments.subarray(0, leaf.n), at);
      cols.positions.set(leaf.positions.subarray(0, leaf.n), at);
      at += leaf.n;
    }
    return cols;
  }

  /** Build from sorted, non-overlapping columns (checked: a checkpoint is input, not trust). */
  static fromColumns(cols: ExtentColumns, leafCapacity = LEAF_CAPACITY): ExtentMap {
    const map = new ExtentMap(leafCapacity);
    const n = cols.starts.length;
    // Fill leaves to 3/4 so the first random writes after a load do not split every leaf.
    const per = Math.max(1, Math.floor((leafCapacity * 3) / 4));
    map.leaves = [];
    let prevEnd = -1;
    for (let at = 0; at < n; at += per) {
      const leaf = new Leaf(leafCapacity);
      const count = Math.min(per, n - at);
      leaf.starts.set(cols.starts.subarray(at, at + count));
      leaf.versions.set(cols.versions.subarray(at, at + count));
      leaf.lengths.set(cols.lengths.subarray(at, at + count));
      leaf.segments.set(cols.segments.subarray(at, at + count));
      leaf.positions.set(cols.positions.subarray(at, at + count));
      leaf.n = count;
      for (let i = 0; i < count; i += 1) {
        if (leaf.starts[i] < prevEnd || leaf.lengths[i] === 0) throw new RangeError(`extent ${at + i} overlaps its predecessor or is empty`);
        prevEnd = leaf.starts[i] + leaf.lengths[i];
        map.mappedBytes += leaf.lengths[i];
      }
      map.leaves.push(leaf);
    }
    if (map.leaves.length === 0) map.leaves.push(new Leaf(leafCapacity));
    map.extentCount = n;
    return map;
  }

  static fromExtents(extents: Extent[], leafCapacity = LEAF_CAPACITY): ExtentMap {
    const n = extents.length;
    const cols: ExtentColumns = {
      starts: new Float64Array(n),
      versions: new Float64Array(n),
      lengths: new Uint32Array(n),
      segments: new Uint32Array(n),
      positions: new Uint32Array(n),
    };
    extents.forEach((e, i) => {
      cols.starts[i] = e.startBytes;
      cols.versions[i] = e.version;
      cols.lengths[i] = e.lengthBytes;
      cols.segments[i] = e.segmentId;
      cols.positions[i] = e.positionBytes;
    });
    return ExtentMap.fromColumns(cols, leafCapacity);
  }
}

export interface ExtentColumns {
  starts: Float64Array;
  versions: Float64Array;
  lengths: Uint32Array;
  segments: Uint32Array;
  positions: Uint32Array;
}
