/**
 * The timeline: every event and machine state change, in order, with a scrubber over the whole
 * run. Clicking an entry (or dragging the scrubber) pauses the page at that moment, and every
 * other view shows the world as it was then; "Live" follows the cluster again.
 */
import type { TraceRecord, StateRecord, TraceEvent } from '../protocol/trace.js';
import { el } from './dom.js';
import { clock, offset } from './format.js';
import type { Recording, RecordingChange } from './recording.js';

type Filter = 'all' | 'events' | 'failover';

/** Event types of the failover story: what the filter "failover" keeps. */
const failoverTypes = new Set(['heartbeat-missed', 'liveness', 'epoch', 'replacement', 'sync-start', 'sync-end', 'io-error', 'alert']);

export class TimelineView {
  readonly element: HTMLElement;
  private readonly list: HTMLOListElement;
  private readonly scrubber: HTMLInputElement;
  private readonly timeLabel: HTMLElement;
  private readonly liveButton: HTMLButtonElement;
  private readonly filterPicker: HTMLSelectElement;
  private readonly entries = new Map<number, HTMLLIElement>();
  private filter: Filter = 'all';
  private marked: HTMLLIElement | null = null;

  constructor(private readonly recording: Recording) {
    this.list = el('ol', { class: 'events', 'aria-label': 'events' });
    this.scrubber = el('input', { type: 'range', min: 0, max: 0, value: 0, step: 1, 'aria-label': 'scrub through the run', id: 'scrubber' });
    this.scrubber.addEventListener('input', () => recording.seek(Number(this.scrubber.value)));
    this.timeLabel = el('span', { class: 'time', id: 'cursor-time' });
    this.liveButton = el('button', { type: 'button', id: 'live-toggle' });
    this.liveButton.addEventListener('click', () => (recording.following ? recording.pause() : recording.resume()));
    this.filterPicker = el(
      'select',
      { 'aria-label': 'which entries to list', id: 'timeline-filter' },
      el('option', { value: 'all' }, 'events and state changes'),
      el('option', { value: 'events' }, 'events only'),
      el('option', { value: 'failover' }, 'the failover story'),
    );
    this.filterPicker.addEventListener('change', () => {
      this.filter = this.filterPicker.value as Filter;
      this.rebuild();
    });
    this.list.addEventListener('click', (e) => {
      const li = (e.target as Element).closest('li');
      const seq = Number(li?.dataset.seq);
      if (!li || !Number.isFinite(seq)) return;
      const index = this.indexOfSeq(seq);
      if (index >= 0) recording.seek(index);
    });
    this.element = el(
      'section',
      { class: 'timeline' },
      el('header', {}, el('h2', {}, 'Timeline'), this.liveButton, this.filterPicker, this.timeLabel),
      this.scrubber,
      this.list,
    );
    recording.onChange((change) => this.update(change));
  }

  private update(change: RecordingChange): void {
    if (change.kind === 'reset') this.rebuild();
    else if (change.kind === 'append') {
      if (change.dropped > 0) {
        const first = this.recording.records[0]?.seq ?? Infinity;
        for (const [seq, li] of this.entries) {
          if (seq >= first) break;
          li.remove();
          this.entries.delete(seq);
        }
      }
      const atBottom = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 24;
      for (const r of change.added) this.add(r);
      if (this.recording.following && atBottom) this.list.scrollTop = this.list.scrollHeight;
    }
    this.showCursor(change.kind === 'cursor');
  }

  private rebuild(): void {
    this.list.replaceChildren();
    this.entries.clear();
    this.marked = null;
    for (const r of this.recording.records) this.add(r);
    this.list.scrollTop = this.list.scrollHeight;
  }

  private add(r: TraceRecord): void {
    if (r.kind === 'status') return;
    if (this.filter === 'events' && r.kind !== 'event') return;
    if (this.filter === 'failover' && !(r.kind === 'event' && failoverTypes.has(r.type))) return;
    const li = r.kind === 'event' ? this.eventEntry(r) : this.stateEntry(r);
    li.dataset.seq = String(r.seq);
    this.entries.set(r.seq, li);
    this.list.append(li);
  }

  private eventEntry(r: TraceEvent): HTMLLIElement {
    return el(
      'li',
      { class: `entry event type-${r.type}`, 'data-type': r.type, 'data-node': r.node ?? '', title: clock(r.atMs) },
      el('span', { class: 'when' }, offset(r.atMs - this.recording.startMs)),
      el('span', { class: 'tag' }, r.type),
      el('span', { class: 'text' }, r.text),
    );
  }

  private stateEntry(r: StateRecord): HTMLLIElement {
    const cause = r.event ? ` on ${r.event}` : '';
    return el(
      'li',
      { class: `entry state machine-${r.machine}`, 'data-type': 'state', 'data-machine': r.machine, 'data-node': r.node, 'data-value': r.value, title: clock(r.atMs) },
      el('span', { class: 'when' }, offset(r.atMs - this.recording.startMs)),
      el('span', { class: 'tag' }, r.machine),
      el('span', { class: 'text' }, `${r.node}: ${r.from ?? '∅'} → ${r.value}${cause}`),
    );
  }

  /** Scrubber, time and the entry at the cursor. */
  private showCursor(scrollToIt: boolean): void {
    const { records, cursor, following, mode } = this.recording;
    this.scrubber.max = String(Math.max(0, records.length - 1));
    this.scrubber.value = String(Math.max(0, cursor));
    const at = records[cursor];
    this.timeLabel.textContent = at ? `${clock(at.atMs)} (${offset(at.atMs - this.recording.startMs)}) · record ${cursor + 1} of ${records.length}` : 'no records yet';
    this.liveButton.textContent = following ? '⏸ Pause' : mode === 'replay' ? '▶ Follow to the end' : '▶ Live';
    this.liveButton.dataset.following = String(following);

    // The entry at the cursor: the last listed one at or before it.
    const seq = at?.seq ?? -1;
    let mark: HTMLLIElement | null = null;
    for (const [s, li] of this.entries) {
      if (s > seq) break;
      mark = li;
    }
    if (mark !== this.marked) {
      this.marked?.classList.remove('at-cursor');
      mark?.classList.add('at-cursor');
      this.marked = mark;
    }
    if (scrollToIt && mark && !following) mark.scrollIntoView({ block: 'nearest' });
  }

  private indexOfSeq(seq: number): number {
    const records = this.recording.records;
    let lo = 0;
    let hi = records.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (records[mid].seq === seq) return mid;
      if (records[mid].seq < seq) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }
}
