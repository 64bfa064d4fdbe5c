/**
 * Retired log segment files kept for reuse as new log segments, instead of being deleted.
 *
 * Why: writing into pages the page cache does not hold costs the writer the kernel's first touch
 * of fresh memory, and on this project's VMs that touch is dear (it looks like the hypervisor
 * taking back guest memory that stays free: virtio_balloon is loaded): `dd` of 1 GiB into a new
 * file spent 2.9–4.5 s of system CPU, over a cached file or into the pages a delete had just
 * freed 0.2–0.3 s (bench/machine.ts measures it).
 * A log that deletes retired segments and appends into new files pays it for every byte. A
 * recycled file is renamed (R… while pooled, then the next L…) and written over from the start:
 * its cached pages, and its blocks, stay where they were.
 *
 * The catch is what the new life leaves behind it: valid records of the old life. Recovery
 * tells them apart by version (storage/recovery.ts): a file is only handed out for a log
 * segment whose first record is newer than every record it still holds (`staleMaxVersion`),
 * and the log's versions only grow within a run of segments (an image install starts a fresh
 * file), so a record at or below the version already replayed is the old life: the log ends
 * there. Pooled files are deleted at open — their stale versions are not known then — and on
 * a write that fails for lack of space; none is kept while the filesystem is nearly full.
 */
import { rename, statfs, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { wrapFsError } from './errors.js';

/** Files are kept only while at least this share of the filesystem is free. */
const MIN_FREE_SHARE = 0.1;

export interface RecycledFile {
  path: string;
  /** Newest record version the file may still hold. */
  staleMaxVersion: number;
  sizeBytes: number;
}

/** R + 10 digits: a pooled file. Not a segment: recovery deletes them. */
export function recycledFileName(n: number): string {
  return `R${String(n).padStart(10, '0')}.seg`;
}

export function isRecycledFileName(name: string): boolean {
  return /^R\d{10}\.seg$/.test(name);
}

export class RecycledSegments {
  private readonly files: RecycledFile[] = [];
  private nextNumber = 1;
  /** Renames under way, so close() and releaseAll() find every file. */
  private pending = new Set<Promise<void>>();

  constructor(
    private readonly dir: string,
    private readonly maxFiles: number,
    private readonly logger?: Logger,
  ) {}

  /** Files held now, and their bytes (stats). */
  get count(): number {
    return this.files.length;
  }

  get bytes(): number {
    return this.files.reduce((n, f) => n + f.sizeBytes, 0);
  }

  /**
   * Keep a retired segment's file instead of deleting it (unlinked when the pool is full).
   * Called with its path once nothing reads it any more.
   */
  keep(path: string, staleMaxVersion: number, sizeBytes: number): Promise<void> {
    if (this.files.length + this.pending.size >= this.maxFiles) return unlink(path);
    const to = join(this.dir, recycledFileName(this.nextNumber++));
    const done = this.diskHasRoom().then((room) => (room ? rename(path, to) : Promise.reject(new Error('disk nearly full')))).then(
      () => {
        this.files.push({ path: to, staleMaxVersion, sizeBytes });
      },
      // Could not rename: delete as before (a failed unlink is the caller's report).
      () => unlink(path),
    );
    const tracked = done.finally(() => this.pending.delete(tracked));
    this.pending.add(tracked);
    return tracked;
  }

  /** Space is not short: with under MIN_FREE_SHARE of the filesystem free, retired files are deleted. */
  private async diskHasRoom(): Promise<boolean> {
    const fs = await statfs(this.dir).catch(() => undefined);
    return fs !== undefined && fs.bavail >= fs.blocks * MIN_FREE_SHARE;
  }

  /**
   * A file whose every record is older than `firstVersion`, taken out of the pool; undefined if
   * none. Files that are not (the versions went back: an image older than the log) stay until
   * the log's versions pass them.
   */
  take(firstVersion: number): RecycledFile | undefined {
    const at = this.files.findIndex((f) => f.staleMaxVersion < firstVersion);
    return at < 0 ? undefined : this.files.splice(at, 1)[0];
  }

  /** Delete every pooled file (no space left, or the store closes). */
  async releaseAll(): Promise<void> {
    await Promise.all([...this.pending]);
    const files = this.files.splice(0);
    if (files.length === 0) return;
    const results = await Promise.allSettled(files.map((f) => unlink(f.path)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) this.logger?.warn({ dir: this.dir, err: wrapFsError(failed.reason, 'delete a recycled segment').message }, 'lsvd: could not delete a recycled segment file');
  }
}
