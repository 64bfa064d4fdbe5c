/**
 * Statecharts for the visualizer, drawn from the machines' own XState definitions (never a copy
 * that could drift): each state node and transition of `machine.root` becomes a node or an edge
 * of an ELK graph (layered, hierarchy included), sent to the page, which lays it out with elkjs
 * in a web worker and draws SVG. Layout stays off the controller: elkjs takes about a second of
 * CPU the first time, and a controller that stalls that long would see every member miss its
 * heartbeats.
 *
 * Drawing conventions: a filled dot points at each region's initial state; transitions declared
 * on the machine itself (valid in any state) start at an `*` marker; several transitions between
 * the same two states share one edge with one label line each; events handled without leaving a
 * state (actions only) are listed inside its box rather than drawn as loops.
 */
import type { AnyStateMachine } from 'xstate';
import { controllerMachine } from '../machines/controller.js';
import { driverMachine } from '../machines/driver.js';
import { livenessMachine } from '../machines/liveness.js';
import { replicaMachine } from '../machines/replica.js';
import type { ChartGraph, ChartGraphEdge, ChartGraphNode, ChartState, MachineName } from '../protocol/trace.js';

/** The machines the page draws, in its order. */
export const vizMachines: ReadonlyArray<{ name: MachineName; machine: AnyStateMachine }> = [
  { name: 'controller', machine: controllerMachine },
  { name: 'liveness', machine: livenessMachine },
  { name: 'replica', machine: replicaMachine },
  { name: 'driver', machine: driverMachine },
];

// Text metrics of the page's SVG font (monospace, so width is a character count).
const labelCharPx = 7.3;
const labelLinePx = 16;
const smallCharPx = 6.1;
const smallLinePx = 13;
const edgeCharPx = 6.1;
const edgeLinePx = 13;
/** Internal events listed per state box, at most; the rest are summarised as "+N more". */
const maxInternalLines = 6;

/** The parts of an XState v5 StateNode this module reads (its public fields). */
interface StateNodeLike {
  id: string;
  key: string;
  type: 'atomic' | 'compound' | 'parallel' | 'final' | 'history';
  states: Record<string, StateNodeLike>;
  initial?: { target: ReadonlyArray<StateNodeLike> } | undefined;
  transitions: Map<string, ReadonlyArray<TransitionLike>>;
  always?: ReadonlyArray<TransitionLike> | undefined;
  after: ReadonlyArray<TransitionLike & { delay: string | number }>;
}

interface TransitionLike {
  eventType: string;
  target?: ReadonlyArray<StateNodeLike> | undefined;
  guard?: unknown;
  reenter?: boolean;
}

function guardName(guard: unknown): string | null {
  if (guard === undefined || guard === null) return null;
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'object' && 'type' in guard && typeof (guard as { type: unknown }).type === 'string') return (guard as { type: string }).type;
  if (typeof guard === 'function') {
    // not('x'), and('x','y'), or(...) carry their operands in `guards`.
    const inner = (guard as { guards?: unknown[]; check?: { name?: string } }).guards;
    const op = (guard as { check?: { name?: string } }).check?.name ?? '';
    if (Array.isArray(inner)) {
      const names = inner.map((g) => guardName(g) ?? '?');
      if (op.includes('Not')) return `!${names.join('')}`;
      return names.join(op.includes('Or') ? ' || ' : ' && ');
    }
    return guard.name || 'guard';
  }
  return 'guard';
}

function eventLabel(t: TransitionLike, after: Map<string, string | number>): string {
  const delay = after.get(t.eventType);
  const base = delay !== undefined ? `after ${String(delay)}` : t.eventType === '' ? 'always' : t.eventType;
  const guard = guardName(t.guard);
  return guard ? `${base} [${guard}]` : base;
}

interface Collected {
  edges: Map<string, { source: string; target: string; lines: string[] }>;
  internal: Map<string, string[]>;
}

function collect(node: StateNodeLike, out: Collected, anyId: string): void {
  const after = new Map<string, string | number>();
  for (const t of node.after) after.set(t.eventType, t.delay);
  const transitions: TransitionLike[] = [];
  for (const list of node.transitions.values()) transitions.push(...list);
  for (const t of node.always ?? []) transitions.push({ ...t, eventType: '' });
  const isRoot = !node.id.includes('.');
  const source = isRoot ? anyId : node.id;
  for (const t of transitions) {
    const label = eventLabel(t, after);
    if (!t.target || t.target.length === 0) {
      // Guarded no-ops (e.g. `config [!isNewerConfig]`: ignore a stale one) are part of the story too.
      if (isRoot) continue;
      const list = out.internal.get(node.id) ?? [];
      if (!list.includes(label)) list.push(label);
      out.internal.set(node.id, list);
      continue;
    }
    for (const target of t.target) {
      const key = `${source}->${target.id}`;
      const edge = out.edges.get(key) ?? { source, target: target.id, lines: [] };
      const line = t.reenter && target.id === node.id ? `${label} (re-enter)` : label;
      if (!edge.lines.includes(line)) edge.lines.push(line);
      out.edges.set(key, edge);
    }
  }
  for (const child of Object.values(node.states)) collect(child, out, anyId);
}

function internalLines(list: string[] | undefined): string[] {
  if (!list || list.length === 0) return [];
  if (list.length <= maxInternalLines) return list;
  return [...list.slice(0, maxInternalLines - 1), `+${list.length - maxInternalLines + 1} more`];
}

function textWidth(lines: string[], charPx: number): number {
  return Math.max(0, ...lines.map((l) => l.length)) * charPx;
}

/** One machine's chart, ready for ELK. */
export function chartGraph(name: MachineName, machine: AnyStateMachine): ChartGraph {
  const root = machine.root as unknown as StateNodeLike;
  const anyId = `${root.id}#any`;
  const collected: Collected = { edges: new Map(), internal: new Map() };
  collect(root, collected, anyId);
  const states: ChartGraph['states'] = {};
  const initialEdges: ChartGraphEdge[] = [];

  const build = (node: StateNodeLike, parentId: string | null): ChartGraphNode => {
    const children = Object.values(node.states);
    const kind: ChartState['kind'] = node.type === 'final' ? 'final' : children.length > 0 ? 'compound' : 'atomic';
    const internal = internalLines(collected.internal.get(node.id));
    states[node.id] = { label: node.key, parent: parentId, kind, internal };
    if (kind !== 'compound') {
      return {
        id: node.id,
        width: Math.max(96, textWidth([node.key], labelCharPx), textWidth(internal, smallCharPx)) + 20,
        height: 14 + labelLinePx + internal.length * smallLinePx + (internal.length > 0 ? 8 : 0) + 10,
      };
    }
    const elkChildren = children.map((c) => build(c, node.id));
    const initial = node.initial?.target[0];
    if (initial) {
      const markerId = `${node.id}#initial`;
      elkChildren.unshift({ id: markerId, width: 12, height: 12 });
      initialEdges.push({ id: `${markerId}->${initial.id}`, sources: [markerId], targets: [initial.id] });
    }
    const top = 14 + labelLinePx + internal.length * smallLinePx + 8;
    return {
      id: node.id,
      children: elkChildren,
      layoutOptions: {
        'elk.padding': `[top=${top},left=14,bottom=14,right=14]`,
        'elk.nodeSize.minimum': `(${Math.max(120, textWidth([node.key], labelCharPx), textWidth(internal, smallCharPx)) + 28}, 40)`,
        'elk.nodeSize.constraints': 'MINIMUM_SIZE',
      },
    };
  };

  const top = Object.values(root.states).map((c) => build(c, null));
  const rootInitial = root.initial?.target[0];
  if (rootInitial) {
    const markerId = `${root.id}#initial`;
    top.unshift({ id: markerId, width: 12, height: 12 });
    initialEdges.push({ id: `${markerId}->${rootInitial.id}`, sources: [markerId], targets: [rootInitial.id] });
  }
  if ([...collected.edges.values()].some((e) => e.source === anyId)) top.push({ id: anyId, width: 22, height: 22 });

  const edges: ChartGraphEdge[] = [...initialEdges];
  for (const [key, e] of collected.edges) {
    edges.push({
      id: key,
      sources: [e.source],
      targets: [e.target],
      labels: [{ text: e.lines.join('\n'), width: textWidth(e.lines, edgeCharPx) + 6, height: e.lines.length * edgeLinePx + 2 }],
    });
  }
  return {
    machine: name,
    elk: {
      id: `${name}#chart`,
      layoutOptions: {
        'elk.algorithm': 'layered',
        'elk.direction': 'RIGHT',
        'elk.hierarchyHandling': 'INCLUDE_CHILDREN',
        'elk.edgeRouting': 'ORTHOGONAL',
        'elk.layered.spacing.nodeNodeBetweenLayers': '48',
        'elk.spacing.nodeNode': '28',
        'elk.spacing.edgeLabel': '4',
        'elk.edgeLabels.inline': 'false',
        'elk.layered.edgeLabels.sideSelection': 'ALWAYS_UP',
        // Every position relative to the chart, not to the enclosing state.
        'elk.json.edgeCoords': 'ROOT',
        'elk.json.shapeCoords': 'ROOT',
        'elk.padding': '[top=12,left=12,bottom=12,right=12]',
      },
      children: top,
      edges,
    },
    states,
  };
}

let graphs: ChartGraph[] | null = null;

/** Every machine's chart graph (built once per process: a few ms). */
export function statechartGraphs(): ChartGraph[] {
  graphs ??= vizMachines.map(({ name, machine }) => chartGraph(name, machine));
  return graphs;
}
