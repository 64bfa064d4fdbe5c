/**
 * What the controller sees, as trace records: heartbeats become machine state changes, SYNC
 * start/progress/end and I/O rates; silence becomes a missed heartbeat before `inactive`; the
 * controller's decisions become liveness, epoch, replacement and alert events.
 */
import { describe, expect, it } from 'vitest';
import { ClusterRecorder, eventName, type Unstamped } from '../../actors/viz-recorder.js';
import type { ControllerStatus, MemberStatus } from '../../machines/controller.js';
import type { HeartbeatFrame, IoStats } from '../../protocol/frames.js';

const T = 250;

function member(role: MemberStatus['role'], over: Partial<MemberStatus> = {}): MemberStatus {
  return { role, liveness: 'active', replicaState: 'serving', caughtUp: true, appliedVersion: 0, durableVersion: 0, lagVersions: 0, epoch: 1, msSinceHeartbeat: 0, ...over };
}

function setup() {
  let now = 0;
  const records: Unstamped[] = [];
  const status: ControllerStatus = {
    clusterId: 'freebs', volume: { name: 'v', sizeBytes: 1 << 30 }, epoch: 1, tick: 0, chain: ['r1', 'r2', 'r3'], driverId: 'driver',
    lease: { driverId: 'driver', expiresAtTick: 10, expiresInMs: 2500 }, replicaCount: 3, quorum: 2, pendingReplacements: [],
    members: { driver: member('driver', { lagVersions: null }), r1: member('head'), r2: member('middle'), r3: member('tail') },
  };
  const recorder = new ClusterRecorder({ heartbeatMs: T, status: () => status, linked: () => new Set(['r1', 'r2', 'r3', 'driver']), record: (r) => records.push(r), now: () => now });
  const beat = (id: string, over: Partial<HeartbeatFrame> = {}) =>
    recorder.heartbeat({ t: 'heartbeat', id, role: id === 'driver' ? 'driver' : 'replica', epoch: 1, state: id === 'driver' ? 'attached' : 'serving', appliedVersion: 0, durableVersion: 0, view: {}, ...over });
  const events = () => records.filter((r) => r.kind === 'event').map((r) => (r.kind === 'event' ? `${r.type} ${r.node ?? '-'}: ${r.text}` : ''));
  const states = () => records.filter((r) => r.kind === 'state').map((r) => (r.kind === 'state' ? `${r.machine}:${r.node} ${r.from ?? '∅'} → ${r.value}` : ''));
  return { recorder, records, status, beat, events, states, advance: (ms: number) => (now += ms) };
}

describe('the visualizer recorder', () => {
  it('records each member state change once, from its heartbeats', () => {
    const { beat, states } = setup();
    beat('r1');
    beat('r1');
    beat('r1', { state: 'syncing' });
    beat('driver');
    expect(states()).toEqual(['replica:r1 ∅ → serving', 'replica:r1 serving → syncing', 'driver:driver ∅ → attached']);
  });

  it('follows a SYNC from its start through progress to serving', () => {
    const { beat, events, advance } = setup();
    beat('r1', { appliedVersion: 1000 });
    beat('r4', { state: 'joining' });
    advance(100);
    beat('r4', { state: 'syncing', appliedVersion: 0 });
    advance(1100);
    beat('r1', { appliedVersion: 1000 });
    beat('r4', { state: 'syncing', appliedVersion: 500 });
    advance(200);
    beat('r4', { state: 'syncing', appliedVersion: 600 }); // within a second of the last progress: quiet
    advance(300);
    beat('r4', { state: 'serving', appliedVersion: 1000 });
    expect(events()).toEqual([
      'sync-start r4: r4 syncing from v0 (head at v1000)',
      'sync-progress r4: r4 at v500 of v1000 (50%)',
      'sync-end r4: r4 caught up at v1000 after 1600 ms: serving',
    ]);
  });

  it('tells of a missed heartbeat before the controller calls the member inactive', () => {
    const { recorder, beat, events, advance } = setup();
    for (const id of ['r1', 'r2', 'r3', 'driver']) beat(id);
    advance(T);
    for (const id of ['r1', 'r3', 'driver']) beat(id);
    recorder.checkHeartbeats();
    expect(events()).toEqual([]);
    advance(T / 2 + 10); // r2 silent for 1.5T + 10 ms
    recorder.checkHeartbeats();
    recorder.checkHeartbeats();
    expect(events()).toEqual(['heartbeat-missed r2: r2 missed a heartbeat (last heard 385 ms ago)']);
    // The controller's own verdict follows.
    recorder.emitted({ type: 'stateChanged', member: 'r2', state: 'inactive' });
    expect(events()[1]).toBe('liveness r2: r2 is inactive: no heartbeat for 2T (500 ms)');
    // Once it beats again, the next silence is told again.
    beat('r2');
    advance(2 * T);
    recorder.checkHeartbeats();
    expect(events().filter((e) => e.startsWith('heartbeat-missed r2'))).toHaveLength(2);
  });

  it('tells of the missed heartbeat even when the controller’s verdict comes first', () => {
    const { recorder, beat, events, advance } = setup();
    beat('r2');
    advance(2 * T + 5);
    recorder.emitted({ type: 'stateChanged', member: 'r2', state: 'inactive' });
    recorder.checkHeartbeats();
    expect(events()).toEqual(['heartbeat-missed r2: r2 missed a heartbeat (last heard 505 ms ago)', 'liveness r2: r2 is inactive: no heartbeat for 2T (500 ms)']);

    // A member never heard from is told once as such.
    recorder.emitted({ type: 'stateChanged', member: 'r3', state: 'inactive' });
    recorder.emitted({ type: 'stateChanged', member: 'r3', state: 'active' });
    recorder.emitted({ type: 'stateChanged', member: 'r3', state: 'inactive' });
    expect(events().filter((e) => e.startsWith('heartbeat-missed r3'))).toEqual(['heartbeat-missed r3: no heartbeat from r3 since the controller started']);
  });

  it('names each new epoch with who left and who joined, once', () => {
    const { recorder, events } = setup();
    const config = (epoch: number, ids: string[]) => ({ t: 'config' as const, epoch, chain: ids.map((id) => ({ id, url: `ws://x/${id}` })), driverId: 'driver', volume: { name: 'v', sizeBytes: 1 } });
    recorder.emitted({ type: 'broadcast', to: ['r1'], config: config(1, ['r1', 'r2', 'r3']) });
    recorder.emitted({ type: 'broadcast', to: ['r1'], config: config(1, ['r1', 'r2', 'r3']) });
    recorder.emitted({ type: 'broadcast', to: ['r1'], config: config(2, ['r1', 'r3']) });
    recorder.emitted({ type: 'spawnReplacement', id: 'r4', afterEpoch: 2 });
    recorder.emitted({ type: 'broadcast', to: ['r1'], config: config(3, ['r1', 'r3', 'r4']) });
    recorder.emitted({ type: 'alert', code: 'REDUNDANCY_LOST', epoch: 2, message: 'only 1 of 3', members: ['r1'] });
    expect(events()).toEqual([
      'epoch -: epoch 1: r1 → r2 → r3',
      'epoch -: epoch 2: r1 → r3 (without r2)',
      'replacement r4: starting replacement replica r4',
      'epoch -: epoch 3: r1 → r3 → r4 (with r4)',
      'alert r1: REDUNDANCY_LOST: only 1 of 3',
    ]);
  });

  it('turns the driver’s I/O counters into rates, and failed requests into io-error events', () => {
    const { recorder, beat, events, advance } = setup();
    const io = (over: Partial<IoStats>): IoStats => ({ ops: 0, readBytes: 0, writeBytes: 0, errors: 0, windowOps: 0, latencyMsP50: 0, latencyMsP99: 0, ...over });
    beat('driver', { io: io({}) });
    advance(500);
    beat('driver', { io: io({ ops: 500, writeBytes: 32_000_000, readBytes: 0, windowOps: 500, latencyMsP50: 1.5, latencyMsP99: 12 }) });
    expect(recorder.view().io).toEqual({ iops: 1000, readMBps: 0, writeMBps: 64, latencyMsP50: 1.5, latencyMsP99: 12, errors: 0 });
    advance(500);
    beat('driver', { io: io({ ops: 510, writeBytes: 32_000_000, errors: 3 }) });
    expect(events()).toEqual(['io-error driver: 3 I/O requests failed at driver (3 in all)']);
    // A driver silent for 4T has no current I/O to show.
    advance(5 * T);
    expect(recorder.view().io).toBeNull();
  });

  it('draws the chain with its links: up when heard lately, down when an end is not active', () => {
    const { recorder, status, beat } = setup();
    beat('driver', { view: { r1: 10 } });
    beat('r1', { view: { driver: 10 } });
    beat('r2', { view: { r1: 5000 } });
    beat('r3', { view: { r2: 20 } });
    status.members.r3 = member('tail', { liveness: 'inactive' });
    const view = recorder.view();
    expect(view.links).toEqual([
      { from: 'driver', to: 'r1', state: 'up' },
      { from: 'r1', to: 'r2', state: 'idle' },
      { from: 'r2', to: 'r3', state: 'down' },
    ]);
    expect(view.nodes.r3.liveness).toBe('inactive');
    expect(view.failedAfterMs).toBe(4 * T);
  });

  it('records the liveness machines from inspection, by member, without repeats', () => {
    const { recorder, states } = setup();
    const root = { sessionId: 'x:0' };
    const child = { sessionId: 'x:5', id: 'liveness:r2' };
    const snap = (actorRef: object, value: unknown, type = 'heartbeat') =>
      recorder.inspect({ type: '@xstate.snapshot', rootId: 'x:0', actorRef: actorRef as never, event: { type }, snapshot: { status: 'active', value } as never });
    snap(root, 'running', 'xstate.init');
    snap(child, { active: 'waiting' }, 'xstate.init');
    snap(child, { active: 'waiting' });
    snap(child, { inactive: 'waiting' }, 'xstate.after.inactiveAfter.liveness.active.waiting');
    snap(root, 'running');
    expect(states()).toEqual(['controller:controller ∅ → running', 'liveness:r2 ∅ → active.waiting', 'liveness:r2 active.waiting → inactive.waiting']);
    expect(eventName('xstate.after.failAfter.liveness.inactive.waiting')).toBe('after failAfter');
  });
});
