import { describe, expect, it } from 'vitest';
import { createActor, SimulatedClock } from 'xstate';
import { livenessMachine, type LivenessEmitted } from '../../machines/liveness.js';

const T = 500;

/**
 * SimulatedClock fires timers due within one increment but starts timers they set from the
 * increment's end, so long jumps would stretch chained timers: advance in steps of T/10.
 */
function advancer(clock: SimulatedClock) {
  return (ms: number) => {
    for (let left = ms; left > 0; left -= Math.min(left, T / 10)) clock.increment(Math.min(left, T / 10));
  };
}

function start(peers = ['r2', 'r3']) {
  const clock = new SimulatedClock();
  const emitted: LivenessEmitted[] = [];
  const actor = createActor(livenessMachine, { clock, input: { member: 'r1', heartbeatIntervalMs: T, peers } });
  actor.on('*', (e) => emitted.push(e as LivenessEmitted));
  actor.start();
  const state = () => {
    const s = actor.getSnapshot();
    return s.status === 'done' ? 'failed' : Object.keys(s.value)[0];
  };
  return { actor, clock: { increment: advancer(clock) }, emitted, state, take: () => emitted.splice(0) };
}

describe('liveness machine', () => {
  it('starts active and announces it', () => {
    const { state, take } = start();
    expect(state()).toBe('active');
    expect(take()).toEqual([{ type: 'stateChanged', member: 'r1', state: 'active' }]);
  });

  it('heartbeats every T keep it active, without announcing anything new', () => {
    const { actor, clock, state, take } = start();
    take();
    for (let i = 0; i < 20; i++) {
      clock.increment(T);
      actor.send({ type: 'heartbeat' });
    }
    expect(state()).toBe('active');
    expect(take()).toEqual([]);
  });

  it('a heartbeat just before 2T restarts the full 2T', () => {
    const { actor, clock, state } = start();
    clock.increment(2 * T - 1);
    actor.send({ type: 'heartbeat' });
    clock.increment(2 * T - 1);
    expect(state()).toBe('active');
    clock.increment(1);
    expect(state()).toBe('inactive');
  });

  it('silence: inactive exactly at 2T (asking the peers to probe), failed exactly at 4T', () => {
    const { clock, state, take } = start();
    take();
    clock.increment(2 * T - 1);
    expect(state()).toBe('active');
    clock.increment(1);
    expect(state()).toBe('inactive');
    expect(take()).toEqual([
      { type: 'stateChanged', member: 'r1', state: 'inactive' },
      { type: 'probe', member: 'r1', via: ['r2', 'r3'] },
    ]);
    clock.increment(2 * T - 1);
    expect(state()).toBe('inactive');
    clock.increment(1);
    expect(state()).toBe('failed');
    expect(take()).toEqual([{ type: 'stateChanged', member: 'r1', state: 'failed' }]);
  });

  it('a heartbeat while inactive makes it active again', () => {
    const { actor, clock, state, take } = start();
    clock.increment(3 * T);
    take();
    actor.send({ type: 'heartbeat' });
    expect(state()).toBe('active');
    expect(take()).toEqual([{ type: 'stateChanged', member: 'r1', state: 'active' }]);
    clock.increment(2 * T - 1);
    expect(state()).toBe('active');
  });

  it('failed is final: this incarnation is done (a member that returns gets a new one)', () => {
    const { actor, clock, state } = start();
    clock.increment(4 * T);
    expect(state()).toBe('failed');
    expect(actor.getSnapshot().status).toBe('done');
  });

  it('fresh gossip holds off failed while direct heartbeats are cut (broken link, live member)', () => {
    const { actor, clock, state, take } = start();
    clock.increment(2 * T);
    expect(state()).toBe('inactive');
    take();
    // Its neighbours keep hearing it: each of their heartbeats reports it heard r1 ~T/2 ago.
    for (let i = 0; i < 40; i++) {
      clock.increment(T);
      actor.send({ type: 'gossip', from: i % 2 ? 'r2' : 'r3', heardAgoMs: T / 2 });
    }
    expect(state()).toBe('inactive');
    expect(take()).toEqual([]);
    // The member dies: the last sign of life was T/2 before the last gossip, so it fails 4T after that.
    clock.increment(4 * T - T / 2 - 1);
    expect(state()).toBe('inactive');
    clock.increment(1);
    expect(state()).toBe('failed');
  });

  it('stale gossip (≥ 2T old) and gossip about itself count for nothing', () => {
    const { actor, clock, state } = start();
    clock.increment(2 * T);
    actor.send({ type: 'gossip', from: 'r2', heardAgoMs: 2 * T });
    actor.send({ type: 'gossip', from: 'r1', heardAgoMs: 0 });
    clock.increment(2 * T);
    expect(state()).toBe('failed');
  });

  it('gossip alone does not make it active again', () => {
    const { actor, clock, state } = start();
    clock.increment(2 * T);
    actor.send({ type: 'gossip', from: 'r2', heardAgoMs: 0 });
    expect(state()).toBe('inactive');
  });

  it('probes go to the current peers', () => {
    const { actor, clock, take } = start([]);
    actor.send({ type: 'peers', peers: ['r1', 'r4', 'd'] });
    take();
    clock.increment(2 * T);
    expect(take()).toContainEqual({ type: 'probe', member: 'r1', via: ['r4', 'd'] });
  });

  it('T defaults to 500 ms', () => {
    const clock = new SimulatedClock();
    const actor = createActor(livenessMachine, { clock, input: { member: 'x' } }).start();
    clock.increment(999);
    expect(actor.getSnapshot().matches('active')).toBe(true);
    clock.increment(1);
    expect(actor.getSnapshot().matches('inactive')).toBe(true);
  });
});
