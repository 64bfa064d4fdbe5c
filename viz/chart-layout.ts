/**
 * Lays out a statechart graph from the controller with elkjs and turns the result into what the
 * statechart view draws. In the page, elkjs runs in its own web worker (/viz/elk-worker.js), so a
 * layout never freezes the page; tests hand in an in-process instance.
 */
import type { ChartEdge, ChartGraph, ChartGraphNode, ChartLayout, ChartMarker, ChartState } from '../protocol/trace.js';

/** What this module needs of an elkjs instance. */
export interface ElkLike {
  layout(graph: ChartGraph['elk']): Promise<unknown>;
}

interface LaidNode extends ChartGraphNode {
  x?: number;
  y?: number;
  children?: LaidNode[];
  edges?: LaidEdge[];
}

interface LaidEdge {
  id: string;
  sources: string[];
  targets: string[];
  sections?: Array<{ startPoint: { x: number; y: number }; endPoint: { x: number; y: number }; bendPoints?: Array<{ x: number; y: number }> }>;
  labels?: Array<{ text?: string; x?: number; y?: number; width?: number; height?: number }>;
}

export async function layoutChart(graph: ChartGraph, elk: ElkLike): Promise<ChartLayout> {
  // elkjs writes positions into the graph it is given: hand it a copy, keep the original clean.
  const laid = (await elk.layout(structuredClone(graph.elk))) as LaidNode;
  const states: ChartState[] = [];
  const markers: ChartMarker[] = [];
  const edges: ChartEdge[] = [];
  const walk = (n: LaidNode) => {
    for (const e of n.edges ?? []) edges.push(toEdge(e));
    for (const c of n.children ?? []) {
      const box = { x: c.x ?? 0, y: c.y ?? 0, width: c.width ?? 0, height: c.height ?? 0 };
      if (c.id.endsWith('#initial')) markers.push({ id: c.id, kind: 'initial', ...box });
      else if (c.id.endsWith('#any')) markers.push({ id: c.id, kind: 'any', ...box });
      else {
        const meta = graph.states[c.id];
        states.push({ id: c.id, label: meta?.label ?? c.id, parent: meta?.parent ?? null, kind: meta?.kind ?? 'atomic', internal: meta?.internal ?? [], ...box });
      }
      walk(c);
    }
  };
  walk(laid);
  return { machine: graph.machine, width: laid.width ?? 0, height: laid.height ?? 0, states, markers, edges };
}

function toEdge(e: LaidEdge): ChartEdge {
  const points: Array<[number, number]> = [];
  for (const s of e.sections ?? []) {
    if (points.length === 0) points.push([s.startPoint.x, s.startPoint.y]);
    for (const b of s.bendPoints ?? []) points.push([b.x, b.y]);
    points.push([s.endPoint.x, s.endPoint.y]);
  }
  const label = e.labels?.[0];
  return {
    id: e.id,
    source: e.sources[0],
    target: e.targets[0],
    label: label?.text ?? '',
    points,
    labelBox: label ? { x: label.x ?? 0, y: label.y ?? 0, width: label.width ?? 0, height: label.height ?? 0 } : null,
  };
}
