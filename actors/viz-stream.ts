/**
 * The visualizer's trace at the controller: stamps records (one seq counter, wall-clock ms),
 * keeps a bounded history for pages that open late and for `/viz/trace.json`, and streams new
 * records to every open page, one WebSocket message per event-loop turn.
 *
 * Bounds: the history keeps the newest `maxEventRecords` state/event records and the newest
 * `maxStatusRecords` status pictures (those come every T and would crowd out the rest); a page
 * that stops reading (more than `maxPageBufferedBytes` unsent) is dropped, never buffered for.
 */
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { traceFormat, traceFormatVersion, type ChartGraph, type TraceFile, type TraceRecord, type VizMessage } from '../protocol/trace.js';
import type { Unstamped } from './viz-recorder.js';

export const vizLimits = {
  /**
   * Machine state changes and events kept for late pages (hours of a quiet cluster). With the
   * status pictures, a late page's first message is a few MB: tens of ms to serialize.
   */
  maxEventRecords: 10_000,
  /** Status pictures kept: 5 minutes at T = 250 ms, 10 at the default 500 ms. */
  maxStatusRecords: 1200,
  /** Open pages at once. */
  maxPages: 32,
  /** A page further behind than this is dropped. */
  maxPageBufferedBytes: 16 * 1024 * 1024,
} as const;

export interface TraceStreamOptions {
  charts: () => ChartGraph[];
  /** Where this trace comes from, for the page's title and saved files. */
  source: () => string;
  log: Logger;
  /** Wall clock, ms since the Unix epoch. */
  now?: () => number;
}

/** Keeps the newest `max` entries; drops in chunks so a full ring is not a shift per push. */
class Ring<T> {
  private items: T[] = [];
  constructor(private readonly max: number) {}
  push(x: T): void {
    this.items.push(x);
    if (this.items.length > this.max + Math.ceil(this.max / 8)) this.items = this.items.slice(-this.max);
  }
  get all(): readonly T[] {
    return this.items.length > this.max ? this.items.slice(-this.max) : this.items;
  }
}

export class TraceStream {
  private seq = 0;
  private readonly events = new Ring<TraceRecord>(vizLimits.maxEventRecords);
  private readonly statuses = new Ring<TraceRecord>(vizLimits.maxStatusRecords);
  private readonly pages = new Set<WebSocket>();
  private pending: TraceRecord[] = [];
  private flushing = false;
  private closed = false;
  private readonly now: () => number;

  constructor(private readonly options: TraceStreamOptions) {
    this.now = options.now ?? Date.now;
  }

  get pageCount(): number {
    return this.pages.size;
  }

  /** Stamp, keep, and send to the open pages. */
  push(r: Unstamped): TraceRecord {
    const record = { ...r, seq: ++this.seq, atMs: this.now() } as TraceRecord;
    (record.kind === 'status' ? this.statuses : this.events).push(record);
    if (this.pages.size > 0) {
      this.pending.push(record);
      if (!this.flushing) {
        this.flushing = true;
        setImmediate(() => this.flush());
      }
    }
    return record;
  }

  /** Everything kept, in seq order. */
  history(): TraceRecord[] {
    const a = this.events.all;
    const b = this.statuses.all;
    const out: TraceRecord[] = [];
    let i = 0;
    let j = 0;
    while (i < a.length || j < b.length) {
      if (j >= b.length || (i < a.length && a[i].seq < b[j].seq)) out.push(a[i++]);
      else out.push(b[j++]);
    }
    return out;
  }

  file(): TraceFile {
    return { format: traceFormat, version: traceFormatVersion, savedAtMs: this.now(), source: this.options.source(), charts: this.options.charts(), records: this.history() };
  }

  /** A page connected: it gets the charts and the history, then every new record. */
  attach(ws: WebSocket): void {
    if (this.closed || this.pages.size >= vizLimits.maxPages) {
      ws.close(1013, 'too many visualizer pages open');
      return;
    }
    ws.on('error', (err) => this.options.log.debug({ err: err.message }, 'visualizer page socket error'));
    // Pages only listen; anything they send is ignored.
    const hello: VizMessage = { t: 'hello', format: traceFormat, version: traceFormatVersion, source: this.options.source(), charts: this.options.charts(), history: this.history() };
    ws.send(JSON.stringify(hello));
    // Added after the history was taken, in the same turn: no record is missed or sent twice.
    this.pages.add(ws);
    ws.once('close', () => this.pages.delete(ws));
  }

  close(): void {
    this.closed = true;
    for (const ws of this.pages) ws.close(1001, 'controller stopping');
    this.pages.clear();
  }

  private flush(): void {
    this.flushing = false;
    if (this.pending.length === 0) return;
    const message: VizMessage = { t: 'records', records: this.pending };
    this.pending = [];
    const text = JSON.stringify(message);
    for (const ws of this.pages) {
      if (ws.bufferedAmount > vizLimits.maxPageBufferedBytes) {
        this.options.log.warn({ bufferedBytes: ws.bufferedAmount }, 'visualizer page is not reading; dropping it');
        ws.terminate();
        this.pages.delete(ws);
        continue;
      }
      ws.send(text);
    }
  }
}
