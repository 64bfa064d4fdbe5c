/**
 * The volume's throughput and latency over the last minute before the cursor, from the driver's
 * I/O in each status picture: IOPS, MB/s (read and write) and p99 latency, as small line charts
 * with the current values beside them. A failover shows as a dip in IOPS and a spike in p99.
 */
import type { IoView, TraceRecord } from '../protocol/trace.js';
import { el, svg } from './dom.js';
import { num } from './format.js';

const windowMs = 60_000;
const w = 300;
const h = 54;

interface Series {
  key: string;
  label: string;
  unit: string;
  lines: Array<{ pick: (io: IoView) => number; cls: string }>;
}

const series: Series[] = [
  { key: 'iops', label: 'IOPS', unit: '', lines: [{ pick: (io) => io.iops, cls: 'l1' }] },
  {
    key: 'mbps',
    label: 'MB/s',
    unit: ' MB/s',
    lines: [
      { pick: (io) => io.writeMBps, cls: 'l1' },
      { pick: (io) => io.readMBps, cls: 'l2' },
    ],
  },
  { key: 'p99', label: 'p99 latency', unit: ' ms', lines: [{ pick: (io) => io.latencyMsP99, cls: 'l1' }] },
];

export class IoChart {
  readonly element: HTMLElement;
  private readonly charts = new Map<string, { svg: SVGSVGElement; value: HTMLElement }>();

  constructor() {
    this.element = el('section', { class: 'io' }, el('h2', {}, 'Volume I/O'));
    for (const s of series) {
      const chart = svg('svg', { viewBox: `0 0 ${w} ${h}`, class: 'spark', preserveAspectRatio: 'none', 'data-series': s.key });
      const value = el('span', { class: 'value', 'data-series': s.key }, '—');
      this.charts.set(s.key, { svg: chart, value });
      this.element.append(el('div', { class: 'series' }, el('div', { class: 'label' }, s.label, value), chart));
    }
    this.element.append(el('p', { class: 'legend muted' }, 'MB/s: ', el('span', { class: 'l1' }, 'write'), ' · ', el('span', { class: 'l2' }, 'read'), ' · last minute'));
  }

  render(records: readonly TraceRecord[], cursor: number): void {
    const at = records[cursor]?.atMs ?? 0;
    const points: Array<{ t: number; io: IoView }> = [];
    for (let i = cursor; i >= 0; i--) {
      const r = records[i];
      if (r.atMs < at - windowMs) break;
      if (r.kind === 'status' && r.cluster.io) points.push({ t: r.atMs, io: r.cluster.io });
    }
    points.reverse();
    const latest = points[points.length - 1]?.io ?? null;
    for (const s of series) {
      const { svg: chart, value } = this.charts.get(s.key)!;
      chart.replaceChildren();
      value.textContent = latest ? s.lines.map((l) => num(l.pick(latest))).join(' / ') + s.unit : '—';
      value.dataset.value = latest ? String(s.lines[0].pick(latest)) : '';
      if (points.length < 2) continue;
      const max = Math.max(1e-9, ...points.flatMap((p) => s.lines.map((l) => l.pick(p.io))));
      for (const line of s.lines) {
        const pts = points.map((p) => `${(((p.t - (at - windowMs)) / windowMs) * w).toFixed(1)},${(h - 3 - (line.pick(p.io) / max) * (h - 8)).toFixed(1)}`);
        chart.append(svg('polyline', { points: pts.join(' '), class: line.cls }));
      }
      chart.append(svg('text', { x: 3, y: 11, class: 'max' }, `max ${num(max)}`));
    }
  }
}
