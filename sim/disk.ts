/**
 * A replica's disk, in memory, behaving as actors/replica-store.ts's ReplicaStore over the LSVD
 * does (storage/lsvd.ts): versions applied strictly in order (a resend at or below the current
 * version is a no-op, a gap throws ERR_VERSION_GAP), reads see everything applied, flush makes
 * what was applied durable. A crash keeps the durable prefix and maybe some of what followed
 * (written back but never fsync'd); the last record that made it may be torn, and recovery cuts
 * a torn record off, as LSVD recovery does with a crc that does not match.
 *
 * The log may be trimmed by "GC" (retainRecords): a successor asking for older versions then
 * gets an image, as with a real LSVD whose old segments were reclaimed.
 *
 * Timing (how long a flush or read takes) is the process's business (sim/replica.ts); the store
 * itself is synchronous.
 */
import type { RecordKind, WriteFrame } from '../protocol/frames.js';
import type { Rng } from './rng.js';

export interface SimRecord {
  v: number;
  kind: RecordKind;
  offsetBytes: number;
  lengthBytes: number;
  data?: Uint8Array;
  /** Cut short by a crash: its crc does not match, recovery drops it and everything after. */
  torn?: boolean;
}

export class StoreError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'StoreError';
  }
}

export interface CrashReport {
  /** Version before the crash, durable version, and what recovery found. */
  before: number;
  durable: number;
  after: number;
  torn: boolean;
}

export class SimStore {
  /** The applied content (what reads see). */
  private content: Uint8Array;
  /** Content at baseVersion: the volume's start (zeros) or the last image installed; durable. */
  private base: Uint8Array;
  private baseVersion = 0;
  /** Records baseVersion+1 … version, in order. */
  private log: SimRecord[] = [];
  version = 0;
  durableVersion = 0;
  /** The highest version this disk ever applied, crashes or not (what a driver must never reuse). */
  highestVersionEver = 0;
  /** Called after every record applied (the checker compares it with the driver's history). */
  onAppend: ((record: SimRecord) => void) | null = null;

  constructor(
    readonly sizeBytes: number,
    /** Records GC leaves for SYNC by log; older ones need an image. */
    readonly retainRecords = Infinity,
  ) {
    this.content = new Uint8Array(sizeBytes);
    this.base = new Uint8Array(sizeBytes);
  }

  /** Apply the next version, as Lsvd.append: older or equal is a no-op, a gap throws. */
  append(frame: WriteFrame): void {
    if (frame.v <= this.version) return;
    if (frame.v !== this.version + 1) {
      throw new StoreError('ERR_VERSION_GAP', `expected version ${this.version + 1}, got ${frame.v}`);
    }
    if (frame.offsetBytes < 0 || frame.lengthBytes < 0 || frame.offsetBytes + frame.lengthBytes > this.sizeBytes) {
      throw new StoreError('ERR_OUT_OF_RANGE', `version ${frame.v}: range past the volume end`);
    }
    if (frame.kind === 'write' && frame.data?.length !== frame.lengthBytes) {
      throw new StoreError('ERR_INVALID', `version ${frame.v}: data length does not match`);
    }
    const record: SimRecord = { v: frame.v, kind: frame.kind, offsetBytes: frame.offsetBytes, lengthBytes: frame.lengthBytes };
    if (frame.data) record.data = frame.data;
    this.log.push(record);
    this.version = frame.v;
    this.highestVersionEver = Math.max(this.highestVersionEver, frame.v);
    applyRecord(this.content, record);
    this.onAppend?.(record);
  }

  /** A flush that started at `version` completed: that much is durable now. */
  completeFlush(version: number): number {
    this.durableVersion = Math.max(this.durableVersion, Math.min(version, this.version));
    return this.durableVersion;
  }

  read(offsetBytes: number, lengthBytes: number): Uint8Array {
    if (offsetBytes < 0 || lengthBytes < 0 || offsetBytes + lengthBytes > this.sizeBytes) {
      throw new StoreError('ERR_OUT_OF_RANGE', `read past the volume end`);
    }
    return this.content.slice(offsetBytes, offsetBytes + lengthBytes);
  }

  /** Oldest version recordsSince() can start after. */
  get logStartVersion(): number {
    return Math.max(this.baseVersion, this.version - this.retainRecords);
  }

  hasRecordsSince(version: number): boolean {
    return version >= this.logStartVersion && version <= this.version;
  }

  /** The records after `version` up to the current one; throws ERR_LOG_TRUNCATED when GC took them. */
  recordsSince(version: number): SimRecord[] {
    if (version > this.version) throw new StoreError('ERR_OUT_OF_RANGE', `recordsSince(${version}): the store is at ${this.version}`);
    if (version < this.logStartVersion) {
      throw new StoreError('ERR_LOG_TRUNCATED', `records after ${version} were reclaimed (log starts after ${this.logStartVersion})`);
    }
    return this.log.slice(version - this.baseVersion);
  }

  /** A consistent image at the current version: the non-zero runs, cut into chunks. */
  imageAt(chunkBytes: number): { version: number; chunks: Array<{ offsetBytes: number; data: Uint8Array }> } {
    const snapshot = this.content.slice();
    const chunks: Array<{ offsetBytes: number; data: Uint8Array }> = [];
    for (let off = 0; off < snapshot.length; off += chunkBytes) {
      const piece = snapshot.subarray(off, Math.min(snapshot.length, off + chunkBytes));
      if (piece.some((b) => b !== 0)) chunks.push({ offsetBytes: off, data: piece });
    }
    return { version: this.version, chunks };
  }

  /** Replace everything with an image (atomically, durably): the receiver's commit. */
  commitImage(version: number, image: Uint8Array): void {
    this.base = image.slice();
    this.baseVersion = version;
    this.log = [];
    this.content = image.slice();
    this.version = version;
    this.durableVersion = version;
    this.highestVersionEver = Math.max(this.highestVersionEver, version);
  }

  /** Equal content and version (the convergence check). */
  sameAs(other: SimStore): boolean {
    if (this.version !== other.version || this.content.length !== other.content.length) return false;
    for (let i = 0; i < this.content.length; i++) if (this.content[i] !== other.content[i]) return false;
    return true;
  }

  snapshot(): Uint8Array {
    return this.content.slice();
  }

  /**
   * Power loss: the durable prefix survives, and maybe some records after it (written back,
   * never fsync'd), the last of which may be torn. Then recovery, as LSVD's: cut the torn one.
   */
  crash(rng: Rng, tornChance: number): CrashReport {
    const before = this.version;
    const durable = this.durableVersion;
    const unflushed = this.version - this.durableVersion;
    const extra = unflushed === 0 || rng.chance(0.5) ? 0 : rng.range(1, unflushed);
    let keep = this.durableVersion - this.baseVersion + extra;
    let torn = false;
    if (extra > 0 && rng.chance(tornChance)) {
      this.log[keep - 1] = { ...this.log[keep - 1], torn: true };
      torn = true;
    }
    this.log.length = keep;
    // Recovery: replay the log, stop at the first record whose crc fails.
    const cut = this.log.findIndex((r) => r.torn);
    if (cut >= 0) keep = cut;
    this.log.length = keep;
    this.version = this.baseVersion + keep;
    this.durableVersion = this.version;
    this.content = this.base.slice();
    for (const r of this.log) applyRecord(this.content, r);
    return { before, durable, after: this.version, torn };
  }
}

export function applyRecord(content: Uint8Array, r: Pick<SimRecord, 'kind' | 'offsetBytes' | 'lengthBytes' | 'data'>): void {
  if (r.kind === 'write' && r.data) content.set(r.data, r.offsetBytes);
  else content.fill(0, r.offsetBytes, r.offsetBytes + r.lengthBytes);
}
