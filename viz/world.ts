/**
 * The world at one moment of a trace: the cluster picture and every machine's state, folded
 * from the records up to that moment. Pure and DOM-free (tests run it in Node).
 *
 * Status pictures come every T; machine state changes and events come between them, as they
 * happen. A state change, liveness change or new epoch newer than the last picture overrides
 * what the picture says, so clicking an event shows the cluster right at it, not up to T earlier.
 */
import type { ClusterView, LinkView, Liveness, MachineName, NodeView, TraceRecord } from '../protocol/trace.js';

export interface MachineInstance {
  machine: MachineName;
  /** `controller`, or the member the machine belongs to (or, for liveness, watches). */
  node: string;
  /** Dotted state path. */
  value: string;
  from: string | null;
  event: string | null;
  sinceMs: number;
}

export interface World {
  /** Index of the last record folded in; -1 for none. */
  index: number;
  atMs: number;
  cluster: ClusterView | null;
  clusterAtMs: number;
  machines: Map<string, MachineInstance>;
  /** State changes after the last picture, by member. */
  overrides: Map<string, { liveness?: Liveness; state?: string }>;
  /** A new epoch announced after the last picture. */
  epochOverride: { epoch: number; chain: string[] } | null;
}

export function emptyWorld(): World {
  return { index: -1, atMs: 0, cluster: null, clusterAtMs: 0, machines: new Map(), overrides: new Map(), epochOverride: null };
}

export function machineKey(machine: MachineName, node: string): string {
  return `${machine}:${node}`;
}

/** Fold one more record in (mutates `world`). */
export function applyRecord(world: World, r: TraceRecord, index: number): void {
  world.index = index;
  world.atMs = r.atMs;
  if (r.kind === 'status') {
    world.cluster = r.cluster;
    world.clusterAtMs = r.atMs;
    world.overrides.clear();
    world.epochOverride = null;
    return;
  }
  if (r.kind === 'event') {
    // The controller's decisions reach the next picture up to T later; show them at once.
    const data = r.data ?? {};
    if (r.type === 'liveness' && r.node !== null && typeof data.state === 'string') {
      world.overrides.set(r.node, { ...world.overrides.get(r.node), liveness: data.state as Liveness });
      // The controller reports the change as its liveness child makes it; the child's own
      // snapshot (with the sub-state) is recorded just after. Show the new state from here.
      const key = machineKey('liveness', r.node);
      const prev = world.machines.get(key);
      if (prev?.value.split('.')[0] !== data.state) {
        world.machines.set(key, { machine: 'liveness', node: r.node, value: data.state, from: prev?.value ?? null, event: 'liveness report', sinceMs: r.atMs });
      }
    } else if (r.type === 'epoch' && typeof data.epoch === 'number' && Array.isArray(data.chain)) {
      world.epochOverride = { epoch: data.epoch, chain: data.chain };
    }
    return;
  }
  world.machines.set(machineKey(r.machine, r.node), { machine: r.machine, node: r.node, value: r.value, from: r.from, event: r.event, sinceMs: r.atMs });
  const o = world.overrides.get(r.node) ?? {};
  if (r.machine === 'liveness') o.liveness = r.value.split('.')[0] as Liveness;
  else if (r.machine === 'replica' || r.machine === 'driver') o.state = r.value;
  else return;
  world.overrides.set(r.node, o);
}

/** The world right after records[0…index]. */
export function worldAt(records: readonly TraceRecord[], index: number): World {
  const world = emptyWorld();
  const last = Math.min(index, records.length - 1);
  for (let i = 0; i <= last; i++) applyRecord(world, records[i], i);
  return world;
}

/** The cluster as shown at this moment: the last picture with newer changes applied. */
export function clusterAt(world: World): ClusterView | null {
  const base = world.cluster;
  if (!base) return null;
  const ageMs = world.atMs - world.clusterAtMs;
  const epoch = world.epochOverride?.epoch ?? base.epoch;
  const chain = world.epochOverride?.chain ?? base.chain;
  const nodes: Record<string, NodeView> = {};
  for (const [id, n] of Object.entries(base.nodes)) {
    const o = world.overrides.get(id);
    const at = chain.indexOf(id);
    const role: NodeView['role'] =
      !world.epochOverride || n.role === 'driver' || n.role === 'pending' ? n.role : at < 0 ? 'retired' : at === 0 ? 'head' : at === chain.length - 1 ? 'tail' : 'middle';
    nodes[id] = {
      ...n,
      role,
      liveness: o?.liveness ?? n.liveness,
      state: o?.state ?? n.state,
      msSinceHeartbeat: n.msSinceHeartbeat === null ? null : n.msSinceHeartbeat + ageMs,
    };
  }
  let links = base.links;
  if (world.epochOverride || world.overrides.size > 0) {
    const path = [base.driverId, ...chain];
    links = [];
    for (let i = 0; i + 1 < path.length; i++) {
      const [from, to] = [path[i], path[i + 1]];
      const known = base.links.find((l) => l.from === from && l.to === to);
      const alive = nodes[from]?.liveness === 'active' && nodes[to]?.liveness === 'active';
      const state: LinkView['state'] = !alive ? 'down' : (known?.state ?? 'idle');
      links.push({ from, to, state });
    }
  }
  return { ...base, epoch, chain, nodes, links };
}

/** Every member as shown at this moment. */
export function nodeViews(world: World): Record<string, NodeView> {
  return clusterAt(world)?.nodes ?? {};
}

/**
 * Every machine instance at this moment. Members that have not changed state since the trace
 * began (a page that opened late) are filled in from the picture.
 */
export function machineInstances(world: World): MachineInstance[] {
  const out = new Map(world.machines);
  const nodes = nodeViews(world);
  for (const n of Object.values(nodes)) {
    const own: MachineName = n.kind === 'driver' ? 'driver' : 'replica';
    const ownKey = machineKey(own, n.id);
    if (!out.has(ownKey) && n.state !== 'unknown') out.set(ownKey, { machine: own, node: n.id, value: n.state, from: null, event: null, sinceMs: world.clusterAtMs });
    const liveKey = machineKey('liveness', n.id);
    if (!out.has(liveKey) && n.liveness) out.set(liveKey, { machine: 'liveness', node: n.id, value: n.liveness, from: null, event: null, sinceMs: world.clusterAtMs });
  }
  if (world.cluster && !out.has(machineKey('controller', 'controller'))) {
    out.set(machineKey('controller', 'controller'), { machine: 'controller', node: 'controller', value: 'running', from: null, event: null, sinceMs: world.clusterAtMs });
  }
  const order: MachineName[] = ['controller', 'driver', 'replica', 'liveness'];
  return [...out.values()].sort((a, b) => order.indexOf(a.machine) - order.indexOf(b.machine) || a.node.localeCompare(b.node, undefined, { numeric: true }));
}
