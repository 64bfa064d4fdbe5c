/**
 * One member's liveness as the controller sees it: `active` → `inactive` after 2T without a
 * heartbeat → `failed` after 4T. Pure: time comes only from XState `after` delays, so tests and
 * the simulator drive it with a SimulatedClock.
 *
 * SWIM-style indirect evidence: when the member goes inactive, the machine asks the others to
 * probe it, and a gossip report that another member heard from it less than 2T ago holds off
 * `failed`. That tells a broken controller↔member link (the member stays `inactive`, the others
 * still hear it) apart from a dead member (nobody hears it, it fails 4T after the last sign of
 * life). Only a direct heartbeat makes it `active` again: `inactive` then means "unreachable from
 * the controller, not known dead", which is what the visualizer should show.
 *
 * `failed` is final for this incarnation: a member that comes back after that gets a new
 * liveness actor, and the controller treats it as a new member.
 *
 * Every state change and probe is emitted (for standalone use and the visualizer) and, when the
 * machine runs as a child of the controller, also sent to the parent, whose `emit`s are the ones
 * the runtime listens to.
 */
import { assign, enqueueActions, setup } from 'xstate';
import type { MemberId } from '../protocol/frames.js';

export const defaultHeartbeatIntervalMs = 500;
/** Silent intervals before a member is `inactive`, and before it is `failed`. */
export const inactiveAfterIntervals = 2;
export const failedAfterIntervals = 4;

export type LivenessState = 'active' | 'inactive' | 'failed';

export interface LivenessInput {
  member: MemberId;
  /** T: how often the member heartbeats. */
  heartbeatIntervalMs?: number;
  /** Whom to ask to probe the member when it goes quiet. */
  peers?: MemberId[];
  /** Which incarnation of the member this actor tracks; echoed in reports to the parent. */
  incarnation?: number;
}

export interface LivenessContext {
  member: MemberId;
  heartbeatIntervalMs: number;
  peers: MemberId[];
  incarnation: number;
  /** Time left, from entering `inactive` or from the last fresh gossip, until `failed`. */
  failAfterMs: number;
}

export type LivenessEvent =
  | { type: 'heartbeat' }
  /** `from` heard the member `heardAgoMs` ago (from its heartbeat view or a probe answer). */
  | { type: 'gossip'; from: MemberId; heardAgoMs: number }
  | { type: 'peers'; peers: MemberId[] };

export type LivenessEmitted =
  | { type: 'stateChanged'; member: MemberId; state: LivenessState }
  | { type: 'probe'; member: MemberId; via: MemberId[] };

/** What a liveness child sends its parent: one of its emitted intentions, tagged with the incarnation. */
export interface LivenessReport {
  type: 'liveness.report';
  incarnation: number;
  report: LivenessEmitted;
}

function inactiveAfterMs(context: LivenessContext): number {
  return inactiveAfterIntervals * context.heartbeatIntervalMs;
}

type Enqueue = {
  emit: (e: LivenessEmitted) => void;
  sendParent: (e: LivenessReport) => void;
};

/** Emit, and tell the parent if there is one (a standalone actor has none). */
function report(self: { _parent?: unknown }, context: LivenessContext, enqueue: Enqueue, e: LivenessEmitted): void {
  enqueue.emit(e);
  if (self._parent) enqueue.sendParent({ type: 'liveness.report', incarnation: context.incarnation, report: e });
}

export const livenessMachine = setup({
  types: {
    context: {} as LivenessContext,
    events: {} as LivenessEvent,
    input: {} as LivenessInput,
    emitted: {} as LivenessEmitted,
  },
  delays: {
    inactiveAfter: ({ context }) => inactiveAfterMs(context),
    failAfter: ({ context }) => context.failAfterMs,
  },
  guards: {
    /** Someone else heard the member recently enough that it would still be `active` for them. */
    freshGossip: ({ context, event }) =>
      event.type === 'gossip' && event.from !== context.member && event.heardAgoMs >= 0 && event.heardAgoMs < inactiveAfterMs(context),
  },
  actions: {
    announce: enqueueActions(({ context, self, enqueue }, params: { state: LivenessState }) => {
      report(self, context, enqueue, { type: 'stateChanged', member: context.member, state: params.state });
    }),
    askForProbes: enqueueActions(({ context, self, enqueue }) => {
      report(self, context, enqueue, {
        type: 'probe',
        member: context.member,
        via: context.peers.filter((p) => p !== context.member),
      });
    }),
    /** Entering `inactive`: 2T of the 4T are already gone. */
    armFailTimer: assign({
      failAfterMs: ({ context }) => (failedAfterIntervals - inactiveAfterIntervals) * context.heartbeatIntervalMs,
    }),
    /**
     * The member was alive `heardAgoMs` ago: it fails 4T after that unless newer evidence comes.
     * Fresh gossip is < 2T old, so this always leaves more than 2T — never less than entering
     * `inactive` gave.
     */
    extendFailTimer: assign({
      failAfterMs: ({ context, event }) =>
        event.type === 'gossip' ? failedAfterIntervals * context.heartbeatIntervalMs - event.heardAgoMs : context.failAfterMs,
    }),
    setPeers: assign({ peers: ({ context, event }) => (event.type === 'peers' ? [...event.peers] : context.peers) }),
  },
}).createMachine({
  id: 'liveness',
  context: ({ input }) => {
    const heartbeatIntervalMs = input.heartbeatIntervalMs ?? defaultHeartbeatIntervalMs;
    if (!(heartbeatIntervalMs > 0)) throw new RangeError(`heartbeatIntervalMs must be > 0, got ${heartbeatIntervalMs}`);
    return {
      member: input.member,
      heartbeatIntervalMs,
      peers: input.peers ? [...input.peers] : [],
      incarnation: input.incarnation ?? 1,
      failAfterMs: (failedAfterIntervals - inactiveAfterIntervals) * heartbeatIntervalMs,
    };
  },
  initial: 'active',
  on: {
    peers: { actions: 'setPeers' },
  },
  states: {
    active: {
      entry: { type: 'announce', params: { state: 'active' } },
      initial: 'waiting',
      states: {
        // A child state so a heartbeat restarts the timer without announcing `active` again.
        waiting: { after: { inactiveAfter: { target: '#liveness.inactive' } } },
      },
      on: {
        heartbeat: { target: '.waiting' },
      },
    },
    inactive: {
      entry: ['armFailTimer', { type: 'announce', params: { state: 'inactive' } }, 'askForProbes'],
      initial: 'waiting',
      states: {
        waiting: { after: { failAfter: { target: '#liveness.failed' } } },
      },
      on: {
        heartbeat: { target: 'active' },
        gossip: { guard: 'freshGossip', target: '.waiting', actions: 'extendFailTimer' },
      },
    },
    failed: {
      entry: { type: 'announce', params: { state: 'failed' } },
      type: 'final',
    },
  },
});

export type LivenessMachine = typeof livenessMachine;
