/**
 * The run the page shows: the charts, the records so far, and a cursor. Live, the cursor follows
 * the newest record; paused (or scrubbing, or replaying a file) it stays where it was put while
 * records keep arriving. Every view draws the world at the cursor.
 */
import type { ChartGraph, TraceRecord } from '../protocol/trace.js';
import { applyRecord, emptyWorld, worldAt, type World } from './world.js';

/** Records kept by the page; the oldest go first (a day at T = 500 ms with a few events). */
export const maxPageRecords = 200_000;

export type RecordingChange =
  | { kind: 'reset' }
  | { kind: 'append'; added: readonly TraceRecord[]; dropped: number }
  | { kind: 'cursor' };

export class Recording {
  charts: ChartGraph[] = [];
  records: TraceRecord[] = [];
  source = '';
  /** live: from the controller; replay: from a file. */
  mode: 'live' | 'replay' = 'live';
  /** The cursor follows the newest record. */
  following = true;
  cursor = -1;
  private world: World = emptyWorld();
  private readonly listeners = new Set<(change: RecordingChange) => void>();

  onChange(listener: (change: RecordingChange) => void): void {
    this.listeners.add(listener);
  }

  get current(): World {
    return this.world;
  }

  get startMs(): number {
    return this.records[0]?.atMs ?? 0;
  }

  reset(options: { mode: 'live' | 'replay'; source: string; charts: ChartGraph[]; records: TraceRecord[] }): void {
    this.mode = options.mode;
    this.source = options.source;
    this.charts = options.charts;
    this.records = options.records.slice(-maxPageRecords);
    this.following = options.mode === 'live';
    this.cursor = this.records.length - 1;
    this.world = worldAt(this.records, this.cursor);
    this.emit({ kind: 'reset' });
  }

  append(added: readonly TraceRecord[]): void {
    if (added.length === 0) return;
    const from = this.records.length;
    this.records.push(...added);
    if (this.following) {
      for (let i = from; i < this.records.length; i++) applyRecord(this.world, this.records[i], i);
      this.cursor = this.records.length - 1;
    }
    let dropped = 0;
    if (this.records.length > maxPageRecords) {
      dropped = this.records.length - maxPageRecords;
      this.records.splice(0, dropped);
      this.cursor = Math.max(0, this.cursor - dropped);
      this.world.index = Math.max(-1, this.world.index - dropped);
    }
    this.emit({ kind: 'append', added, dropped });
  }

  /** Put the cursor on a record (pauses). */
  seek(index: number): void {
    this.following = false;
    this.cursor = Math.max(-1, Math.min(index, this.records.length - 1));
    this.world = worldAt(this.records, this.cursor);
    this.emit({ kind: 'cursor' });
  }

  pause(): void {
    if (!this.following) return;
    this.following = false;
    this.emit({ kind: 'cursor' });
  }

  /** Follow the newest record again. */
  resume(): void {
    this.following = true;
    this.cursor = this.records.length - 1;
    this.world = worldAt(this.records, this.cursor);
    this.emit({ kind: 'cursor' });
  }

  /** Index of the last record at or before `atMs`. */
  indexAt(atMs: number): number {
    let lo = 0;
    let hi = this.records.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.records[mid].atMs <= atMs) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }

  private emit(change: RecordingChange): void {
    for (const l of this.listeners) l(change);
  }
}
