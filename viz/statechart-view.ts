/**
 * One machine's statechart as SVG, from the layout the controller computed with elkjs. The
 * states of the selected instance are highlighted (its leaf and the states enclosing it), the
 * transition that brought it there is drawn bold for a few seconds, and every instance of the
 * machine is shown as a badge on the state it is in — so the liveness chart shows at a glance
 * which members are active, inactive or failed.
 */
import type { ChartLayout, ChartState } from '../protocol/trace.js';
import { el, svg, svgLines } from './dom.js';
import type { MachineInstance } from './world.js';

/** A transition stays drawn bold this long after it was taken. */
const takenHighlightMs = 4000;
const badgeW = 34;
const badgeH = 15;

export class StatechartView {
  readonly element: HTMLElement;
  private readonly svgRoot: SVGSVGElement;
  private readonly picker: HTMLSelectElement;
  private readonly badges: SVGGElement;
  private readonly stateNodes = new Map<string, SVGGElement>();
  private readonly edgeNodes: Array<{ source: string; target: string; node: SVGGElement }> = [];
  private readonly states = new Map<string, ChartState>();
  private selected: string | null = null;

  constructor(
    readonly chart: ChartLayout,
    private readonly onPick: (node: string) => void,
  ) {
    this.picker = el('select', { 'aria-label': `${chart.machine} instance` });
    this.picker.addEventListener('change', () => this.onPick(this.picker.value));
    this.svgRoot = svg('svg', { viewBox: `0 0 ${chart.width} ${chart.height}`, class: 'chart', 'data-machine': chart.machine });
    // Through the CSSOM: the page's CSP refuses style attributes.
    this.svgRoot.style.maxWidth = `${Math.ceil(chart.width)}px`;
    this.badges = svg('g', { class: 'badges' });
    this.draw();
    this.element = el(
      'section',
      { class: 'statechart', 'data-machine': chart.machine },
      el('header', {}, el('h3', {}, `${chart.machine} machine`), this.picker),
      this.svgRoot,
    );
  }

  /** Which instance to highlight (a member id, or `controller`). */
  select(node: string | null): void {
    this.selected = node;
  }

  /** `gone`: members the controller declared failed (their last state is shown dimmed). */
  render(instances: MachineInstance[], atMs: number, gone: ReadonlySet<string> = new Set()): void {
    const mine = instances.filter((i) => i.machine === this.chart.machine);
    // Keep the picker's options in step with the instances there are.
    const ids = mine.map((i) => i.node);
    if (this.selected === null || !ids.includes(this.selected)) this.selected = ids[0] ?? null;
    const options = [...this.picker.options].map((o) => o.value);
    if (options.join('\n') !== ids.join('\n')) this.picker.replaceChildren(...ids.map((id) => el('option', { value: id }, id)));
    if (this.selected !== null) this.picker.value = this.selected;
    this.element.classList.toggle('empty', ids.length === 0);

    for (const g of this.stateNodes.values()) g.classList.remove('active', 'current');
    for (const e of this.edgeNodes) e.node.classList.remove('taken');
    const current = mine.find((i) => i.node === this.selected);
    if (current) {
      const leaf = this.resolve(current.value);
      for (const id of this.ancestry(leaf)) this.stateNodes.get(id)?.classList.add('active');
      if (leaf) this.stateNodes.get(leaf)?.classList.add('current');
      if (current.from !== null && atMs - current.sinceMs <= takenHighlightMs) this.markTaken(this.resolve(current.from), leaf);
    }

    this.badges.replaceChildren();
    const perState = new Map<string, string[]>();
    for (const i of mine) {
      const id = this.resolve(i.value);
      if (!id) continue;
      perState.set(id, [...(perState.get(id) ?? []), i.node]);
    }
    for (const [id, nodes] of perState) {
      const s = this.states.get(id)!;
      nodes.forEach((node, k) => {
        const x = s.x + s.width - (k + 1) * (badgeW + 3);
        const y = s.y + s.height - badgeH - 4;
        this.badges.append(
          svg(
            'g',
            { class: `badge${node === this.selected ? ' selected' : ''}${gone.has(node) && this.chart.machine !== 'liveness' ? ' gone' : ''}`, 'data-node': node, 'data-state-id': id, transform: `translate(${x},${y})` },
            svg('rect', { width: badgeW, height: badgeH, rx: 7 }),
            svg('text', { x: badgeW / 2, y: 11, 'text-anchor': 'middle' }, node.length > 5 ? `${node.slice(0, 4)}…` : node),
          ),
        );
      });
    }
  }

  /** The chart's state id for a dotted value; the nearest ancestor the chart knows, or null. */
  private resolve(value: string): string | null {
    const parts = value.split('.');
    for (let n = parts.length; n > 0; n--) {
      const id = `${this.chart.machine}.${parts.slice(0, n).join('.')}`;
      if (this.states.has(id)) return id;
    }
    return null;
  }

  private ancestry(id: string | null): string[] {
    const out: string[] = [];
    for (let s = id ? this.states.get(id) : undefined; s; s = s.parent ? this.states.get(s.parent) : undefined) out.push(s.id);
    return out;
  }

  /** The edge from (an ancestor of) `from` to (an ancestor of) `to`, innermost first. */
  private markTaken(from: string | null, to: string | null): void {
    if (!from || !to) return;
    const sources = [...this.ancestry(from), `${this.chart.machine}#any`];
    const targets = this.ancestry(to);
    for (const source of sources) {
      const edge = this.edgeNodes.find((e) => e.source === source && targets.includes(e.target));
      if (edge) {
        edge.node.classList.add('taken');
        return;
      }
    }
  }

  private draw(): void {
    const root = this.svgRoot;
    const markerId = `arrow-${this.chart.machine}`;
    root.append(
      svg(
        'defs',
        {},
        svg('marker', { id: markerId, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto-start-reverse' }, svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' })),
      ),
    );
    // Outer states first, so inner ones are drawn over them.
    const depth = (s: ChartState): number => (s.parent ? 1 + depth(this.states.get(s.parent)!) : 0);
    for (const s of this.chart.states) this.states.set(s.id, s);
    for (const s of [...this.chart.states].sort((a, b) => depth(a) - depth(b))) {
      const g = svg('g', { class: `state ${s.kind}`, 'data-state-id': s.id });
      g.append(svg('title', {}, s.id), svg('rect', { x: s.x, y: s.y, width: s.width, height: s.height, rx: 10 }));
      if (s.kind === 'final') g.append(svg('rect', { x: s.x + 3, y: s.y + 3, width: s.width - 6, height: s.height - 6, rx: 8, class: 'inner' }));
      g.append(svg('text', { x: s.x + 10, y: s.y + 19, class: 'state-label' }, s.label));
      if (s.internal.length > 0) g.append(svgLines(s.x + 10, s.y + 36, s.internal, 13, { class: 'internal' }));
      this.stateNodes.set(s.id, g);
      root.append(g);
    }
    for (const m of this.chart.markers) {
      const cx = m.x + m.width / 2;
      const cy = m.y + m.height / 2;
      if (m.kind === 'initial') root.append(svg('circle', { cx, cy, r: m.width / 2, class: 'initial' }));
      else root.append(svg('g', { class: 'any' }, svg('title', {}, 'in any state'), svg('circle', { cx, cy, r: m.width / 2 }), svg('text', { x: cx, y: cy + 5, 'text-anchor': 'middle' }, '*')));
    }
    for (const e of this.chart.edges) {
      if (e.points.length < 2) continue;
      const g = svg('g', { class: `edge${e.source.endsWith('#initial') ? ' from-initial' : ''}`, 'data-source': e.source, 'data-target': e.target });
      g.append(svg('polyline', { points: e.points.map(([x, y]) => `${x},${y}`).join(' '), 'marker-end': `url(#${markerId})` }));
      if (e.labelBox && e.label) g.append(svgLines(e.labelBox.x + 3, e.labelBox.y + 11, e.label.split('\n'), 13, { class: 'edge-label' }));
      this.edgeNodes.push({ source: e.source, target: e.target, node: g });
      root.append(g);
    }
    root.append(this.badges);
  }
}
