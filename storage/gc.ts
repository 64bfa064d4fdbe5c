/**
 * Garbage collection: segments whose referenced share is low are rewritten into new G
 * segments (records keep their versions), every structure pointing into them is moved,
 * and the old files are deleted only after the new data is durable and two checkpoints
 * (the newest and its fallback) reference the new layout.
 *
 * "Referenced" = the current map, every snapshot, every open image stream and the
 * retention history (pieces a snapshot at a version inside the sync window would need).
 * Log segments holding versions above the horizon are never rewritten: recordsSince()
 * streams them as they are.
 */
import type { PieceFn } from './extent-map.js';
import { encodedRecordBytes, encodeRecordInto, parseRecord, RECORD_HEADER_BYTES } from './record.js';
import { encodeSegmentHeader, fsyncDir, SEGMENT_HEADER_BYTES, SegmentFile } from './segment.js';
import { CorruptError } from './errors.js';

export interface GcReport {
  segmentsRewritten: number;
  /** Bytes of victim files deleted minus bytes of new output written. */
  bytesReclaimed: number;
  bytesCopied: number;
  segmentsCreated: number;
  durationMs: number;
}

/** Merged referenced ranges of one segment: [pos, len, offsetDelta, version] quadruples, by position. */
export type RangeList = number[];

/** Union of referenced byte ranges per segment id. Invariant: overlapping pieces agree on offset and version. */
export function referencedRanges(visitAll: (fn: PieceFn) => void): Map<number, RangeList> {
  const raw = new Map<number, number[]>();
  visitAll((start, len, seg, pos, version) => {
    let list = raw.get(seg);
    if (!list) raw.set(seg, (list = []));
    list.push(pos, len, start - pos, version);
  });
  const merged = new Map<number, RangeList>();
  for (const [seg, list] of raw) {
    const n = list.length / 4;
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => list[a * 4] - list[b * 4]);
    const out: number[] = [];
    for (const i of order) {
      const pos = list[i * 4];
      const len = list[i * 4 + 1];
      const delta = list[i * 4 + 2];
      const version = list[i * 4 + 3];
      const last = out.length - 4;
      if (last >= 0 && pos <= out[last] + out[last + 1]) {
        if (out[last + 2] !== delta || out[last + 3] !== version) {
          throw new CorruptError(`invariant: overlapping references in segment id ${seg} disagree on offset/version at position ${pos}`);
        }
        out[last + 1] = Math.max(out[last] + out[last + 1], pos + len) - out[last];
      } else {
        out.push(pos, len, delta, version);
      }
    }
    merged.set(seg, out);
  }
  return merged;
}

export function rangeListBytes(list: RangeList | undefined): number {
  let total = 0;
  if (list) for (let i = 0; i < list.length; i += 4) total += list[i + 1];
  return total;
}

/** Old position range → new place, per victim segment id. [oldPos, len, newSegId, newPos] quadruples by oldPos. */
export type RelocationTable = Map<number, number[]>;

export function makeRelocator(table: RelocationTable): (seg: number, pos: number, len: number) => [number, number] | undefined {
  return (seg, pos, len) => {
    const list = table.get(seg);
    if (!list) return undefined;
    let lo = 0;
    let hi = list.length / 4;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid * 4] <= pos) lo = mid + 1;
      else hi = mid;
    }
    const i = (lo - 1) * 4;
    if (i < 0 || pos + len > list[i] + list[i + 1]) {
      // A reference the copy did not cover: continuing would lose data.
      throw new CorruptError(`invariant: reference to segment id ${seg} [${pos}, +${len}) was not copied by GC`);
    }
    return [list[i + 2], list[i + 3] + (pos - list[i])];
  };
}

/** Sequential writer for GC / image output segments (never read before they are durable). */
export class OutputSegments {
  readonly created: SegmentFile[] = [];
  private current: SegmentFile | undefined;
  private buf = Buffer.allocUnsafeSlow(1024 * 1024);
  private used = 0;
  private bufStart = 0;
  bytesWritten = 0;

  constructor(
    private readonly dir: string,
    private readonly segmentSizeBytes: number,
    private readonly nextNumber: () => number,
  ) {}

  /** Append a write record; returns where its data lands. */
  async add(version: number, offsetBytes: number, data: Uint8Array): Promise<{ segment: SegmentFile; dataPositionBytes: number }> {
    const record = { version, kind: 'write' as const, offsetBytes, lengthBytes: data.length, data };
    const need = encodedRecordBytes(record);
    if (!this.current || (this.current.sizeBytes + need > this.segmentSizeBytes && this.current.sizeBytes > SEGMENT_HEADER_BYTES)) {
      await this.drain();
      const seg = new SegmentFile(this.dir, 'gc', this.nextNumber(), SEGMENT_HEADER_BYTES, 'create');
      this.created.push(seg);
      this.current = seg;
      this.bufStart = 0;
      this.ensure(SEGMENT_HEADER_BYTES);
      encodeSegmentHeader('gc', seg.number).copy(this.buf, 0);
      this.used = SEGMENT_HEADER_BYTES;
    }
    if (this.buf.length - this.used < need) await this.drain();
    this.ensure(need);
    const seg = this.current;
    const pos = this.bufStart + this.used;
    encodeRecordInto(record, this.buf, this.used);
    this.used += need;
    seg.sizeBytes = pos + need;
    return { segment: seg, dataPositionBytes: pos + RECORD_HEADER_BYTES };
  }

  private ensure(need: number): void {
    if (this.buf.length - this.used < need) {
      const bigger = Buffer.allocUnsafeSlow(this.used + need);
      this.buf.copy(bigger, 0, 0, this.used);
      this.buf = bigger;
    }
  }

  private async drain(): Promise<void> {
    if (!this.current || this.used === 0) return;
    await this.current.writeAt([this.buf.subarray(0, this.used)], this.bufStart);
    this.bytesWritten += this.used;
    this.bufStart += this.used;
    this.used = 0;
  }

  /** Write what is buffered and make every output segment durable (data and names). */
  async finish(): Promise<void> {
    await this.drain();
    for (const seg of this.created) await seg.datasync();
    if (this.created.length > 0) await fsyncDir(this.dir);
  }

  /** Abandon: close and delete the outputs. */
  async discard(unlinkFn: (path: string) => Promise<void>): Promise<void> {
    for (const seg of this.created) await seg.retire(unlinkFn);
  }
}

/**
 * Copy the referenced ranges of `victim` into `out`, checking every source record's crc on
 * the way (a record is verified when read, as when written). Fills `table` for the victim.
 */
export async function copyVictim(victim: SegmentFile, ranges: RangeList, out: OutputSegments, table: RelocationTable): Promise<number> {
  const buf = Buffer.allocUnsafeSlow(victim.sizeBytes);
  if (victim.sizeBytes > 0) await victim.readAt(buf, 0, victim.sizeBytes, 0);
  // Record data areas, to prove each range lies inside one verified record.
  const areas: number[] = [];
  let pos = SEGMENT_HEADER_BYTES;
  while (pos < buf.length) {
    const parsed = parseRecord(buf, pos);
    if (!parsed.ok) throw new CorruptError(`GC: ${victim.name}:${pos} does not hold a valid record (${parsed.reason})`);
    areas.push(pos + RECORD_HEADER_BYTES, pos + parsed.totalBytes, parsed.header.version, parsed.header.offsetBytes - (pos + RECORD_HEADER_BYTES));
    pos += parsed.totalBytes;
  }
  const moved: number[] = [];
  let copied = 0;
  let a = 0;
  for (let i = 0; i < ranges.length; i += 4) {
    const rPos = ranges[i];
    const rLen = ranges[i + 1];
    while (a < areas.length && areas[a + 1] <= rPos) a += 4;
    if (a >= areas.length || rPos < areas[a] || rPos + rLen > areas[a + 1] || areas[a + 2] !== ranges[i + 3] || areas[a + 3] !== ranges[i + 2]) {
      throw new CorruptError(`invariant: referenced range ${victim.name}:[${rPos}, +${rLen}) does not match the record stored there`);
    }
    const placed = await out.add(ranges[i + 3], rPos + ranges[i + 2], buf.subarray(rPos, rPos + rLen));
    moved.push(rPos, rLen, placed.segment.id, placed.dataPositionBytes);
    copied += rLen;
  }
  table.set(victim.id, moved);
  return copied;
}
