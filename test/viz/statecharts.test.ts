/**
 * Statecharts come from the machines' own definitions: every state and every transition with a
 * target is in the graph, and elkjs lays it out (in-process here; in a web worker on the page)
 * into boxes and polylines the page can draw.
 */
import { describe, expect, it } from 'vitest';
import { chartGraph, statechartGraphs } from '../../actors/statecharts.js';
import { livenessMachine } from '../../machines/liveness.js';
import { replicaMachine } from '../../machines/replica.js';
import { layoutChart, type ElkLike } from '../../viz/chart-layout.js';

async function inProcessElk(): Promise<ElkLike> {
  // elkjs is CommonJS: Node hands its module.exports over as `default`.
  const mod = (await import('elkjs/lib/elk.bundled.js')) as unknown as { default: new () => ElkLike };
  return new mod.default();
}

describe('statechart graphs', () => {
  it('has every state of the replica machine and its transitions, guards included', () => {
    const g = chartGraph('replica', replicaMachine);
    expect(Object.keys(g.states).sort()).toEqual(['replica.faulted', 'replica.joining', 'replica.serving', 'replica.stopped', 'replica.syncing']);
    expect(g.states['replica.stopped'].kind).toBe('final');
    const edge = (from: string, to: string) => g.elk.edges.find((e) => e.sources[0] === from && e.targets[0] === to);
    expect(edge('replica.joining', 'replica.syncing')?.labels?.[0].text).toBe('config [inNewConfig]');
    expect(edge('replica.syncing', 'replica.serving')?.labels?.[0].text.split('\n')).toEqual(
      expect.arrayContaining(['sync.start [syncHasNothingNew]', 'store.applied [caughtUp]']),
    );
    // Machine-wide transitions start at the "any state" marker; the initial dot points at joining.
    expect(edge('replica#any', 'replica.faulted')?.labels?.[0].text).toBe('store.failed');
    expect(edge('replica#initial', 'replica.joining')).toBeDefined();
    // Events handled in place are listed in the state, not drawn.
    expect(g.states['replica.serving'].internal).toEqual(expect.arrayContaining(['writes', 'read', 'config [!isNewerConfig]']));
  });

  it('nests the liveness machine and names its delays', () => {
    const g = chartGraph('liveness', livenessMachine);
    expect(g.states['liveness.inactive.waiting'].parent).toBe('liveness.inactive');
    const labels = g.elk.edges.map((e) => `${e.sources[0]} -> ${e.targets[0]}: ${e.labels?.[0]?.text ?? ''}`);
    expect(labels).toEqual(
      expect.arrayContaining([
        'liveness.active.waiting -> liveness.inactive: after inactiveAfter',
        'liveness.inactive.waiting -> liveness.failed: after failAfter',
        'liveness.inactive -> liveness.active: heartbeat',
        'liveness.inactive -> liveness.inactive.waiting: gossip [freshGossip]',
      ]),
    );
  });

  it('lays out all four machines with elkjs: states inside their parents, edges as polylines', async () => {
    const elk = await inProcessElk();
    const graphs = statechartGraphs();
    expect(graphs.map((g) => g.machine)).toEqual(['controller', 'liveness', 'replica', 'driver']);
    for (const graph of graphs) {
      const layout = await layoutChart(graph, elk);
      expect(layout.states.map((s) => s.id).sort()).toEqual(Object.keys(graph.states).sort());
      expect(layout.width).toBeGreaterThan(100);
      for (const s of layout.states) {
        expect(s.x + s.width).toBeLessThanOrEqual(layout.width + 0.5);
        expect(s.y + s.height).toBeLessThanOrEqual(layout.height + 0.5);
        const parent = s.parent ? layout.states.find((p) => p.id === s.parent)! : null;
        if (parent) {
          expect(s.x).toBeGreaterThanOrEqual(parent.x);
          expect(s.y).toBeGreaterThanOrEqual(parent.y);
          expect(s.x + s.width).toBeLessThanOrEqual(parent.x + parent.width + 0.5);
        }
      }
      for (const e of layout.edges) expect(e.points.length).toBeGreaterThanOrEqual(2);
      // Layout works on a copy: the graph can be laid out again (a replayed file, a reconnect).
      expect(JSON.stringify(graph)).not.toContain('"sections"');
    }
  });
});
