/**
 * What must hold, checked as the run goes:
 *
 * - The driver's history: each version names one mutation, forever (a version handed out twice
 *   with different content is a bug).
 * - Every record a replica applies is that version of the history (each replica's history is a
 *   prefix of the driver's), and every image a replica installs is the history's content at its
 *   version. A replica's ack never claims more than its store holds or has made durable.
 * - Every read returns the content of one version A of the history, with A at least the newest
 *   write acknowledged before the read was sent (no acknowledged write is lost or hidden) and at
 *   most the last version handed out when it was answered (or a write still in flight).
 * - At the end (sim/run.ts): the chain converges to the history's content at the last version.
 */
import type { RecordKind } from '../protocol/frames.js';
import { applyRecord, type SimRecord } from './disk.js';

export interface HistoryEntry {
  v: number;
  kind: RecordKind;
  offsetBytes: number;
  lengthBytes: number;
  data?: Uint8Array;
  /** The client operation that asked for it. */
  opId: number;
}

/** The one bytes pattern of block `block` as written by operation `opId`: the checker can name any block's writer. */
export function blockData(opId: number, block: number, blockBytes: number): Uint8Array {
  const out = new Uint8Array(blockBytes);
  const view = new DataView(out.buffer);
  view.setUint32(0, opId, true);
  view.setUint32(4, block, true);
  let x = (Math.imul(opId, 2654435761) + Math.imul(block, 40503)) >>> 0;
  for (let i = 8; i < blockBytes; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

export class SimFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SimFailure';
  }
}

export class Checker {
  /** First violation; the run stops at the next step. */
  failure: string | null = null;
  /** By version; index 0 is the empty volume. */
  private readonly history: Array<HistoryEntry | undefined> = [undefined];
  /** Versions that touch each block, ascending. */
  private readonly blockVersions: number[][];
  private readonly opVersion = new Map<number, number>();
  /** Newest version of a write the client saw succeed; newest version covered by a flush it saw succeed. */
  maxAckedVersion = 0;
  maxFlushedVersion = 0;
  readsChecked = 0;
  appendsChecked = 0;
  private contentCache: { v: number; content: Uint8Array } = { v: 0, content: new Uint8Array(0) };

  constructor(
    readonly blocks: number,
    readonly blockBytes: number,
  ) {
    this.blockVersions = Array.from({ length: blocks }, () => []);
    this.contentCache.content = new Uint8Array(blocks * blockBytes);
  }

  fail(message: string): void {
    this.failure ??= message;
  }

  get lastVersion(): number {
    return this.history.length - 1;
  }

  /** The driver handed out version `entry.v` for a client operation. */
  recordVersion(entry: HistoryEntry): void {
    const known = this.history[entry.v];
    if (known) {
      if (!sameMutation(known, entry)) this.fail(`version ${entry.v} handed out twice: op ${known.opId} and op ${entry.opId}`);
      return;
    }
    if (entry.v !== this.history.length) {
      this.fail(`version ${entry.v} handed out after ${this.history.length - 1}: versions must be gapless`);
      return;
    }
    this.history[entry.v] = entry;
    this.opVersion.set(entry.opId, entry.v);
    for (let b = this.firstBlock(entry.offsetBytes); b <= this.lastBlock(entry.offsetBytes, entry.lengthBytes); b++) {
      insertSorted(this.blockVersions[b], entry.v);
    }
  }

  /**
   * A driver died and a new one starts numbering after what the replicas hold: versions after
   * `v` never reached any disk, so handing them out again is fine. Any that reached one must
   * not be reused (the new driver would write different content under a number a replica has).
   */
  forgetVersionsAfter(v: number): void {
    for (let i = this.history.length - 1; i > v; i--) {
      const e = this.history[i]!;
      this.opVersion.delete(e.opId);
      for (const list of this.blockVersions) {
        const at = list.indexOf(i);
        if (at >= 0) list.splice(at, 1);
      }
    }
    if (this.history.length > v + 1) this.history.length = v + 1;
    if (this.contentCache.v > v) this.contentCache = { v: 0, content: new Uint8Array(this.blocks * this.blockBytes) };
  }

  versionOf(opId: number): number | undefined {
    return this.opVersion.get(opId);
  }

  /** A replica applied a record: it must be that version of the history. */
  checkAppend(replica: string, record: SimRecord): void {
    this.appendsChecked++;
    const entry = this.history[record.v];
    if (!entry) {
      this.fail(`${replica} applied version ${record.v}, which the driver never handed out`);
      return;
    }
    if (!sameMutation(entry, record)) {
      this.fail(`${replica} applied a version ${record.v} (${record.kind}@${record.offsetBytes}+${record.lengthBytes}) that differs from the driver's (${entry.kind}@${entry.offsetBytes}+${entry.lengthBytes}, op ${entry.opId})`);
    }
  }

  /** A replica installed an image at `version`: it must be the history's content there. */
  checkImage(replica: string, version: number, content: Uint8Array): void {
    if (version > this.lastVersion) {
      this.fail(`${replica} installed an image at version ${version}, past the last handed out (${this.lastVersion})`);
      return;
    }
    const expected = this.contentAt(version);
    const at = firstDifference(expected, content);
    if (at >= 0) this.fail(`${replica} installed an image at version ${version} that differs from the history at byte ${at} (block ${Math.floor(at / this.blockBytes)})`);
  }

  /** The volume's content after versions 1…v. */
  contentAt(v: number): Uint8Array {
    let { v: from, content } = this.contentCache;
    if (v < from) {
      from = 0;
      content = new Uint8Array(this.blocks * this.blockBytes);
    } else content = content.slice();
    for (let i = from + 1; i <= v; i++) {
      const e = this.history[i];
      if (!e) throw new SimFailure(`history has no version ${i}`);
      applyRecord(content, e);
    }
    if (v >= this.contentCache.v) this.contentCache = { v, content: content.slice() };
    return content;
  }

  /**
   * A read of [offsetBytes, +data.length) answered with `data`: it must be the content of one
   * version A in [lo, hi]. Returns the possible versions, or fails.
   */
  checkRead(what: string, offsetBytes: number, data: Uint8Array, lo: number, hi: number): void {
    this.readsChecked++;
    let ranges: Array<[number, number]> = [[lo, hi]];
    const notes: string[] = [];
    for (let b = this.firstBlock(offsetBytes); b <= this.lastBlock(offsetBytes, data.length); b++) {
      const start = b * this.blockBytes - offsetBytes;
      const bytes = data.subarray(start, start + this.blockBytes);
      const found = this.candidates(b, bytes);
      if (typeof found === 'string') {
        this.fail(`${what}: block ${b}: ${found}`);
        return;
      }
      notes.push(`block ${b}: ${found.label}, at versions ${found.ranges.map(([x, y]) => (y === Infinity ? `${x}…` : `${x}…${y}`)).join(', ') || 'none'}`);
      ranges = intersect(ranges, found.ranges);
    }
    if (ranges.length === 0) {
      const acked = lo;
      this.fail(
        `${what}: no single version in [${lo}, ${hi}] matches what was read (newest acknowledged write before the read: v${acked}). ${notes.join('; ')}`,
      );
    }
  }

  private candidates(b: number, bytes: Uint8Array): { label: string; ranges: Array<[number, number]> } | string {
    const vs = this.blockVersions[b];
    const next = (i: number) => (i + 1 < vs.length ? vs[i + 1] - 1 : Infinity);
    if (bytes.every((x) => x === 0)) {
      const ranges: Array<[number, number]> = [[0, vs.length > 0 ? vs[0] - 1 : Infinity]];
      vs.forEach((v, i) => {
        if (this.history[v]?.kind !== 'write') ranges.push([v, next(i)]);
      });
      return { label: 'zeros', ranges };
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const opId = view.getUint32(0, true);
    const expected = blockData(opId, b, this.blockBytes);
    if (firstDifference(expected, bytes) >= 0) {
      const claimed = view.getUint32(4, true);
      return claimed !== b
        ? `holds op ${opId}'s data for block ${claimed} (misplaced)`
        : `holds bytes no operation wrote (op ${opId}'s tag, corrupt content)`;
    }
    const v = this.opVersion.get(opId);
    if (v === undefined) return `holds op ${opId}'s data, but the driver never handed that op a version`;
    const i = vs.indexOf(v);
    if (i < 0) return `holds op ${opId}'s data (v${v}), which did not write this block`;
    return { label: `op ${opId} (v${v})`, ranges: [[v, next(i)]] };
  }

  private firstBlock(offsetBytes: number): number {
    return Math.floor(offsetBytes / this.blockBytes);
  }

  private lastBlock(offsetBytes: number, lengthBytes: number): number {
    return Math.floor((offsetBytes + lengthBytes - 1) / this.blockBytes);
  }
}

function sameMutation(a: Omit<HistoryEntry, 'opId' | 'v'> & { v?: number }, b: Omit<HistoryEntry, 'opId' | 'v'> & { v?: number }): boolean {
  if (a.kind !== b.kind || a.offsetBytes !== b.offsetBytes || a.lengthBytes !== b.lengthBytes) return false;
  if (a.kind !== 'write') return true;
  if (!a.data || !b.data || a.data.length !== b.data.length) return false;
  return a.data === b.data || firstDifference(a.data, b.data) < 0;
}

export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

function insertSorted(list: number[], v: number): void {
  let i = list.length;
  while (i > 0 && list[i - 1] > v) i--;
  if (list[i - 1] !== v) list.splice(i, 0, v);
}

function intersect(xs: Array<[number, number]>, ys: Array<[number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const [a, b] of xs) {
    for (const [c, d] of ys) {
      const lo = Math.max(a, c);
      const hi = Math.min(b, d);
      if (lo <= hi) out.push([lo, hi]);
    }
  }
  return out;
}
