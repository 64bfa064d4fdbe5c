/**
 * The page's world at a moment: status pictures every T, and changes between them shown at
 * once, so a clicked event shows the cluster right at it.
 */
import { describe, expect, it } from 'vitest';
import type { ClusterView, NodeView, TraceRecord } from '../../protocol/trace.js';
import { clusterAt, machineInstances, worldAt } from '../../viz/world.js';

function node(id: string, over: Partial<NodeView> = {}): NodeView {
  return {
    id, kind: id === 'driver' ? 'driver' : 'replica', role: 'middle', liveness: 'active', state: id === 'driver' ? 'attached' : 'serving', caughtUp: true,
    appliedVersion: 10, durableVersion: 10, lagVersions: 0, epoch: 1, msSinceHeartbeat: 100, syncProgress: null, controllerLink: true, ...over,
  };
}

function cluster(over: Partial<ClusterView> = {}): ClusterView {
  return {
    clusterId: 'c', volume: { name: 'v', sizeBytes: 1 << 20 }, epoch: 1, heartbeatMs: 250, inactiveAfterMs: 500, failedAfterMs: 1000,
    chain: ['r1', 'r2', 'r3'], driverId: 'driver', quorum: 2, replicaCount: 3, pendingReplacements: [],
    nodes: { driver: node('driver', { role: 'driver' }), r1: node('r1', { role: 'head' }), r2: node('r2'), r3: node('r3', { role: 'tail' }) },
    links: [
      { from: 'driver', to: 'r1', state: 'up' },
      { from: 'r1', to: 'r2', state: 'up' },
      { from: 'r2', to: 'r3', state: 'up' },
    ],
    io: null,
    ...over,
  };
}

const records: TraceRecord[] = [
  { seq: 1, atMs: 1000, kind: 'status', cluster: cluster() },
  { seq: 2, atMs: 1100, kind: 'event', type: 'liveness', node: 'r2', text: 'r2 is inactive', data: { state: 'inactive' } },
  { seq: 3, atMs: 1101, kind: 'state', node: 'r2', machine: 'liveness', value: 'inactive.waiting', from: 'active.waiting', event: 'after inactiveAfter' },
  { seq: 4, atMs: 1600, kind: 'event', type: 'liveness', node: 'r2', text: 'r2 is failed', data: { state: 'failed' } },
  { seq: 5, atMs: 1610, kind: 'event', type: 'epoch', node: null, text: 'epoch 2: r1 → r3 (without r2)', data: { epoch: 2, chain: ['r1', 'r3'], removed: ['r2'], added: [] } },
  { seq: 6, atMs: 1620, kind: 'state', node: 'r3', machine: 'replica', value: 'syncing', from: 'serving', event: null },
  { seq: 7, atMs: 1750, kind: 'status', cluster: cluster({ epoch: 2, chain: ['r1', 'r3'], nodes: { ...cluster().nodes, r2: node('r2', { role: 'retired', liveness: 'failed' }), r3: node('r3', { role: 'tail', state: 'syncing' }) } }) },
];

describe('the world at a moment', () => {
  it('shows a liveness change at its event, before the next picture', () => {
    const w = worldAt(records, 1);
    expect(clusterAt(w)!.nodes.r2.liveness).toBe('inactive');
    expect(clusterAt(w)!.links.find((l) => l.to === 'r2')!.state).toBe('down');
    // The liveness machine is shown in the new state from the report on, its sub-state once recorded.
    expect(machineInstances(w).find((m) => m.machine === 'liveness' && m.node === 'r2')!.value).toBe('inactive');
    expect(machineInstances(worldAt(records, 2)).find((m) => m.machine === 'liveness' && m.node === 'r2')!.value).toBe('inactive.waiting');
    // Time since the heartbeat ages with the moment.
    expect(clusterAt(w)!.nodes.r2.msSinceHeartbeat).toBe(200);
  });

  it('shows a new epoch and its chain at the epoch event', () => {
    const c = clusterAt(worldAt(records, 4))!;
    expect(c.epoch).toBe(2);
    expect(c.chain).toEqual(['r1', 'r3']);
    expect(c.nodes.r2.role).toBe('retired');
    expect(c.nodes.r3.role).toBe('tail');
    expect(c.links.map((l) => `${l.from}-${l.to}`)).toEqual(['driver-r1', 'r1-r3']);
  });

  it('takes the next picture as it is, and lists every machine', () => {
    const w = worldAt(records, 6);
    const c = clusterAt(w)!;
    expect(c.epoch).toBe(2);
    expect(c.nodes.r3.state).toBe('syncing');
    const machines = machineInstances(w).map((m) => `${m.machine}:${m.node}=${m.value}`);
    expect(machines).toEqual(expect.arrayContaining(['controller:controller=running', 'replica:r3=syncing', 'liveness:r2=failed', 'driver:driver=attached', 'liveness:r1=active']));
  });

  it('is empty before the first picture', () => {
    expect(clusterAt(worldAt(records, -1))).toBeNull();
    expect(machineInstances(worldAt([], 0))).toEqual([]);
  });
});
