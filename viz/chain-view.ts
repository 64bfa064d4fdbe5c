/**
 * The chain as a picture: the controller on top, the driver and the replicas in chain order
 * below it (data links between them), members outside the chain (failed, retired, replacements
 * not yet joined) in a row underneath. Each box: liveness, the member's own state, version, lag
 * behind the head, epoch, time since its last heartbeat, and for an inactive member the time
 * left until the controller declares it failed.
 *
 * Boxes carry data-node / data-liveness / data-state / data-role / data-epoch so tests (and
 * stylesheets) can read the picture.
 */
import type { LinkView, NodeView } from '../protocol/trace.js';
import { svg, svgLines } from './dom.js';
import { duration, percent } from './format.js';
import { clusterAt, type World } from './world.js';

const boxW = 156;
const boxH = 112;
const gapX = 56;
const rowY = 118;
const outRowY = rowY + boxH + 56;
const outBoxH = 82;
const controllerH = 58;
const margin = 16;

export class ChainView {
  readonly element: SVGSVGElement;
  private selected: string | null = null;

  constructor(private readonly onSelect: (id: string) => void) {
    this.element = svg('svg', { class: 'chain', role: 'img', 'aria-label': 'the chain' });
  }

  select(id: string | null): void {
    this.selected = id;
  }

  render(world: World): void {
    const root = this.element;
    root.replaceChildren();
    const cluster = clusterAt(world);
    if (!cluster) {
      root.setAttribute('viewBox', '0 0 600 60');
      root.append(svg('text', { x: 20, y: 36, class: 'muted' }, 'waiting for the controller’s first picture…'));
      return;
    }
    const nodes = cluster.nodes;
    const row = [cluster.driverId, ...cluster.chain].filter((id) => nodes[id]);
    const outside = Object.values(nodes)
      .filter((n) => !row.includes(n.id))
      .sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
    const width = Math.max(row.length, outside.length, 3) * (boxW + gapX) - gapX + 2 * margin;
    const height = outside.length > 0 ? outRowY + outBoxH + margin : rowY + boxH + margin;
    root.setAttribute('viewBox', `0 0 ${width} ${height}`);
    root.setAttribute('data-epoch', String(cluster.epoch));

    root.append(
      svg(
        'defs',
        {},
        svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' })),
      ),
    );

    const pos = new Map<string, { x: number; y: number; h: number }>();
    const rowX0 = (width - (row.length * (boxW + gapX) - gapX)) / 2;
    row.forEach((id, i) => pos.set(id, { x: rowX0 + i * (boxW + gapX), y: rowY, h: boxH }));
    const outX0 = (width - (outside.length * (boxW + gapX) - gapX)) / 2;
    outside.forEach((n, i) => pos.set(n.id, { x: outX0 + i * (boxW + gapX), y: outRowY, h: outBoxH }));

    // The controller and its links to every member.
    const cx = width / 2 - boxW / 2;
    const cy = margin;
    for (const n of [...row.map((id) => nodes[id]), ...outside]) {
      const p = pos.get(n.id)!;
      root.append(
        svg('line', {
          x1: width / 2,
          y1: cy + controllerH,
          x2: p.x + boxW / 2,
          y2: p.y,
          class: `control ${n.controllerLink ? 'up' : 'down'}`,
          'data-link': `controller-${n.id}`,
          'data-state': n.controllerLink ? 'up' : 'down',
        }),
      );
    }
    const ctl = svg('g', { class: 'node controller', 'data-node': 'controller', transform: `translate(${cx},${cy})` });
    ctl.append(
      svg('rect', { width: boxW, height: controllerH, rx: 8 }),
      svgLines(10, 20, ['controller', `epoch ${cluster.epoch} · quorum ${cluster.quorum}`, `T = ${cluster.heartbeatMs} ms`], 15, { class: 'lines' }),
    );
    root.append(ctl);

    // Data links along the chain.
    for (const link of cluster.links) this.drawLink(root, link, pos);

    for (const id of row) this.drawNode(root, nodes[id], pos.get(id)!, cluster.epoch, cluster.failedAfterMs, false);
    for (const n of outside) this.drawNode(root, n, pos.get(n.id)!, cluster.epoch, cluster.failedAfterMs, true);
    if (outside.length > 0) root.append(svg('text', { x: margin, y: outRowY - 12, class: 'muted' }, 'outside the chain'));
  }

  private drawLink(root: SVGSVGElement, link: LinkView, pos: Map<string, { x: number; y: number; h: number }>): void {
    const a = pos.get(link.from);
    const b = pos.get(link.to);
    if (!a || !b) return;
    const y = a.y + boxH / 2;
    root.append(
      svg('line', { x1: a.x + boxW, y1: y, x2: b.x - 2, y2: y, class: `data ${link.state}`, 'marker-end': 'url(#arrow)', 'data-link': `${link.from}-${link.to}`, 'data-state': link.state }),
      svg('text', { x: (a.x + boxW + b.x) / 2, y: y - 8, class: `link-label ${link.state}`, 'text-anchor': 'middle' }, link.state),
    );
  }

  private drawNode(root: SVGSVGElement, n: NodeView, p: { x: number; y: number; h: number }, epoch: number, failedAfterMs: number, small: boolean): void {
    const liveness = n.liveness ?? (n.role === 'pending' ? 'starting' : 'untracked');
    const g = svg('g', {
      class: `node ${n.kind} live-${liveness} state-${n.state}${this.selected === n.id ? ' selected' : ''}${n.epoch < epoch && n.role !== 'retired' ? ' stale-epoch' : ''}`,
      transform: `translate(${p.x},${p.y})`,
      'data-node': n.id,
      'data-liveness': liveness,
      'data-state': n.state,
      'data-role': n.role,
      'data-epoch': n.epoch,
      tabindex: 0,
    });
    g.addEventListener('click', () => this.onSelect(n.id));
    let livenessText = liveness;
    if (n.liveness === 'inactive' && n.msSinceHeartbeat !== null) {
      livenessText = `inactive · fails in ${duration(Math.max(0, failedAfterMs - n.msSinceHeartbeat))}`;
    }
    const stateText = n.state === 'syncing' && n.syncProgress !== null ? `syncing ${percent(n.syncProgress)}` : n.state;
    const lines = small
      ? [`${n.id} · ${n.role}`, livenessText, stateText, `v${n.appliedVersion} · epoch ${n.epoch}`]
      : [
          `${n.id} · ${n.role}`,
          livenessText,
          stateText,
          n.kind === 'driver' ? `v${n.appliedVersion} committed` : `v${n.appliedVersion} · lag ${n.lagVersions ?? '—'}`,
          `epoch ${n.epoch}`,
          `heartbeat ${duration(n.msSinceHeartbeat)} ago`,
        ];
    g.append(svg('rect', { width: boxW, height: p.h, rx: 8, class: 'box' }), svg('circle', { cx: boxW - 14, cy: 14, r: 6, class: 'dot' }));
    g.append(svgLines(10, 20, lines, 15, { class: 'lines' }));
    if (n.state === 'syncing' && n.syncProgress !== null) {
      g.append(svg('rect', { x: 10, y: p.h - 9, width: boxW - 20, height: 4, class: 'progress-bg' }), svg('rect', { x: 10, y: p.h - 9, width: (boxW - 20) * n.syncProgress, height: 4, class: 'progress' }));
    }
    root.append(g);
  }
}
