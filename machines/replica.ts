/**
 * The replica (the paper's sdaemon) as a pure state machine. It decides; actors/replica.ts does.
 *
 * In: frames that arrived (already decoded and validated), store results, link changes.
 * Out: emitted intentions — append these records, flush the store, ack the driver, serve or
 * answer a read, forward to the successor from a version, sync from the predecessor.
 *
 * The order that matters for safety is the actor's: append to the store, then ack and forward.
 */
import { assign, emit, enqueueActions, not, setup } from 'xstate';
import type {
  ChainMember,
  ConfigFrame,
  ErrorFrame,
  FlushFrame,
  MemberId,
  ReadFrame,
  SyncFrame,
  SyncStartFrame,
  WriteFrame,
} from '../protocol/frames.js';
import { ErrorCodes } from '../protocol/frames.js';
import { positionIn } from './chain.js';

/** Reads waiting for this replica to reach their minVersion; past it the oldest is refused. */
export const maxParkedReads = 1024;

export interface ReplicaInput {
  id: MemberId;
  /** What the store recovered to on open. */
  appliedVersion: number;
  durableVersion: number;
  /** Epoch persisted from an earlier run, so a restarted replica still refuses older peers. */
  epoch?: number;
}

export interface SyncProgress {
  mode: 'log' | 'image';
  fromVersion: number;
  targetVersion: number;
}

export interface ReplicaContext {
  id: MemberId;
  epoch: number;
  chain: ChainMember[];
  driverId: MemberId | null;
  volume: ConfigFrame['volume'] | null;
  /** Highest version handed to the store (appends are ordered, so this runs ahead of applied). */
  acceptedVersion: number;
  appliedVersion: number;
  durableVersion: number;
  /** Highest version some peer asked to make durable. */
  flushWantedVersion: number;
  flushInFlight: boolean;
  predecessor: ChainMember | null;
  successor: ChainMember | null;
  /** Successor we currently forward to (it asked us with sync). */
  forwardingTo: MemberId | null;
  sync: SyncProgress | null;
  parkedReads: Array<{ from: MemberId; frame: ReadFrame }>;
  fault: { code: string; message: string } | null;
}

export type ReplicaEvent =
  | { type: 'config'; config: ConfigFrame }
  | { type: 'writes'; from: MemberId; frames: WriteFrame[] }
  | { type: 'flush'; from: MemberId; frame: FlushFrame }
  | { type: 'read'; from: MemberId; frame: ReadFrame }
  /** The reads of one received batch, in order: as many 'read' events, in one machine step. */
  | { type: 'reads'; from: MemberId; frames: ReadFrame[] }
  | { type: 'sync.request'; from: MemberId; frame: SyncFrame }
  | { type: 'sync.start'; frame: SyncStartFrame }
  | { type: 'upstream.down'; reason: string }
  | { type: 'successor.down'; id: MemberId }
  | { type: 'store.applied'; appliedVersion: number }
  /**
   * The store's content was replaced by an image at imageVersion (committed durably): whatever
   * the state or the epoch of the stream it came on, the store now holds that and nothing past it.
   */
  | { type: 'store.image'; imageVersion: number }
  | { type: 'store.durable'; durableVersion: number }
  | { type: 'store.failed'; code: string; message: string }
  | { type: 'stop' };

export type ReplicaEmitted =
  | { type: 'append'; frames: WriteFrame[] }
  | { type: 'storeFlush' }
  | { type: 'ack'; to: MemberId; appliedVersion: number; durableVersion: number }
  | { type: 'serveRead'; to: MemberId; frame: ReadFrame }
  | { type: 'refuse'; to: MemberId; frame: ErrorFrame; readId?: number }
  | { type: 'forwardFrom'; to: MemberId; fromVersion: number }
  | { type: 'forwardStop' }
  | { type: 'syncFrom'; predecessor: ChainMember; fromVersion: number }
  | { type: 'syncStop' }
  | { type: 'epochChanged'; epoch: number; chain: ChainMember[] };

/**
 * Which of a batch to hand to the store: duplicates (already accepted) are dropped — resends
 * after a reconnect are idempotent — and a gap stops the batch there.
 */
export function admitWrites(
  acceptedVersion: number,
  frames: readonly WriteFrame[],
): { admitted: WriteFrame[]; gapAt: number | null } {
  const admitted: WriteFrame[] = [];
  let next = acceptedVersion + 1;
  for (const frame of frames) {
    if (frame.v < next) continue;
    if (frame.v > next) return { admitted, gapAt: next };
    admitted.push(frame);
    next++;
  }
  return { admitted, gapAt: null };
}

function refusal(code: string, message: string, epoch: number): ErrorFrame {
  return { t: 'error', code, message, epoch };
}

/** Why a frame of epoch `theirs` is refused by a replica at `mine`, or null if it is current. */
function epochMismatch(mine: number, theirs: number): ErrorFrame | null {
  if (theirs === mine) return null;
  if (theirs < mine) {
    return refusal(ErrorCodes.epochStale, `frame epoch ${theirs} is older than this replica's epoch ${mine}`, mine);
  }
  return refusal(ErrorCodes.notServing, `frame epoch ${theirs} is newer than this replica's epoch ${mine}; config not yet received`, mine);
}

type Enqueue = {
  emit: (e: ReplicaEmitted) => void;
  assign: (a: Partial<ReplicaContext>) => void;
};

/** Serve what this replica's version covers, park the rest until it does (bounded, oldest refused first). */
function handleReads(context: ReplicaContext, from: MemberId, frames: readonly ReadFrame[], enqueue: Enqueue): void {
  let parked: ReplicaContext['parkedReads'] | null = null;
  for (const frame of frames) {
    const mismatch = epochMismatch(context.epoch, frame.epoch);
    if (mismatch) {
      enqueue.emit({ type: 'refuse', to: from, frame: mismatch, readId: frame.r });
      continue;
    }
    if (context.appliedVersion >= frame.minVersion) {
      enqueue.emit({ type: 'serveRead', to: from, frame });
      continue;
    }
    parked ??= [...context.parkedReads];
    parked.push({ from, frame });
    if (parked.length > maxParkedReads) {
      const dropped = parked.shift()!;
      enqueue.emit({
        type: 'refuse',
        to: dropped.from,
        readId: dropped.frame.r,
        frame: refusal(ErrorCodes.notServing, `${context.id} is behind (version ${context.appliedVersion}) and has too many reads waiting`, context.epoch),
      });
    }
  }
  if (parked) enqueue.assign({ parkedReads: parked });
}

export const replicaMachine = setup({
  types: {
    context: {} as ReplicaContext,
    events: {} as ReplicaEvent,
    input: {} as ReplicaInput,
    emitted: {} as ReplicaEmitted,
  },
  guards: {
    /** A config of our epoch or older is a resend: applying it again would restart a SYNC for nothing. */
    isNewerConfig: ({ context, event }) =>
      event.type === 'config' &&
      (event.config.epoch > context.epoch || (event.config.epoch === context.epoch && context.chain.length === 0)),
    isHeadOfNewConfig: ({ context, event }) =>
      event.type === 'config' && positionIn(event.config.chain, context.id)?.index === 0,
    inNewConfig: ({ context, event }) => event.type === 'config' && positionIn(event.config.chain, context.id) !== null,
    caughtUp: ({ context, event }) =>
      event.type === 'store.applied' && context.sync !== null && event.appliedVersion >= context.sync.targetVersion,
    /**
     * The answer to a SYNC of another epoch: we asked again since (a new config came), and that
     * SYNC's answer, or its refusal, is still to come (simulator, seed 3537).
     */
    syncStartIsStale: ({ context, event }) => event.type === 'sync.start' && event.frame.epoch !== context.epoch,
    /** The predecessor has nothing we lack (log mode, target ≤ what we applied). */
    syncHasNothingNew: ({ context, event }) =>
      event.type === 'sync.start' && event.frame.mode === 'log' && event.frame.targetVersion <= context.appliedVersion,
  },
  actions: {
    adoptConfig: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'config') return;
      const pos = positionIn(event.config.chain, context.id);
      const predecessor = pos?.predecessor ?? null;
      const successor = pos?.successor ?? null;
      if (context.forwardingTo && context.forwardingTo !== successor?.id) enqueue.emit({ type: 'forwardStop' });
      enqueue.assign({
        epoch: event.config.epoch,
        chain: event.config.chain,
        driverId: event.config.driverId,
        volume: event.config.volume,
        predecessor,
        successor,
        forwardingTo: context.forwardingTo === successor?.id ? context.forwardingTo : null,
      });
      enqueue.emit({ type: 'epochChanged', epoch: event.config.epoch, chain: event.config.chain });
    }),
    startSync: enqueueActions(({ context, enqueue }) => {
      if (!context.predecessor) return;
      enqueue.assign({ sync: null });
      enqueue.emit({ type: 'syncFrom', predecessor: context.predecessor, fromVersion: context.acceptedVersion });
    }),
    stopSync: emit({ type: 'syncStop' }),
    clearSync: assign({ sync: null }),
    noteSyncStart: assign({
      sync: ({ event }) =>
        event.type === 'sync.start'
          ? { mode: event.frame.mode, fromVersion: event.frame.fromVersion, targetVersion: event.frame.targetVersion }
          : null,
      // An image replaces everything: what we had no longer counts as accepted.
      acceptedVersion: ({ context, event }) =>
        event.type === 'sync.start' && event.frame.mode === 'image' ? event.frame.imageVersion : context.acceptedVersion,
      // Nor as durable: the store now holds the image (committed durably) and nothing past it, and
      // acks must not go on claiming the old durable version (a flush the driver counted on).
      durableVersion: ({ context, event }) =>
        event.type === 'sync.start' && event.frame.mode === 'image' ? event.frame.imageVersion : context.durableVersion,
    }),
    admit: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'writes') return;
      const expectedFrom = context.predecessor ? context.predecessor.id : context.driverId;
      if (event.from !== expectedFrom) {
        enqueue.emit({
          type: 'refuse',
          to: event.from,
          frame: refusal(ErrorCodes.notServing, `${context.id} takes writes from ${expectedFrom ?? 'nobody yet'}, not ${event.from}`, context.epoch),
        });
        return;
      }
      const mismatch = event.frames.length > 0 ? epochMismatch(context.epoch, event.frames[0].epoch) : null;
      if (mismatch) {
        enqueue.emit({ type: 'refuse', to: event.from, frame: mismatch });
        return;
      }
      const { admitted, gapAt } = admitWrites(context.acceptedVersion, event.frames);
      if (admitted.length > 0) {
        enqueue.assign({ acceptedVersion: admitted[admitted.length - 1].v });
        enqueue.emit({ type: 'append', frames: admitted });
      }
      if (gapAt !== null) {
        enqueue.emit({
          type: 'refuse',
          to: event.from,
          frame: refusal(ErrorCodes.versionGap, `${context.id} expected version ${gapAt} next`, context.epoch),
        });
        // From a predecessor a gap means the stream lost frames: start it over from what we hold.
        if (context.predecessor) enqueue.raise({ type: 'upstream.down', reason: `version gap at ${gapAt}` });
      }
    }),
    /**
     * An image replaced the store: accepted and durable are its version now, even below what
     * they were (an image of an older stream that finished committing late, seed 8750); acks must
     * not go on claiming versions the store no longer holds.
     */
    noteImage: assign({
      acceptedVersion: ({ context, event }) => (event.type === 'store.image' ? event.imageVersion : context.acceptedVersion),
      durableVersion: ({ context, event }) => (event.type === 'store.image' ? event.imageVersion : context.durableVersion),
    }),
    noteApplied: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'store.applied') return;
      const appliedVersion = event.appliedVersion;
      enqueue.assign({ appliedVersion });
      if (context.driverId) {
        enqueue.emit({ type: 'ack', to: context.driverId, appliedVersion, durableVersion: context.durableVersion });
      }
      const ready = context.parkedReads.filter((p) => p.frame.minVersion <= appliedVersion);
      if (ready.length > 0) {
        enqueue.assign({ parkedReads: context.parkedReads.filter((p) => p.frame.minVersion > appliedVersion) });
        for (const p of ready) enqueue.emit({ type: 'serveRead', to: p.from, frame: p.frame });
      }
      if (!context.flushInFlight && context.flushWantedVersion > context.durableVersion && appliedVersion >= context.flushWantedVersion) {
        enqueue.assign({ flushInFlight: true });
        enqueue.emit({ type: 'storeFlush' });
      }
    }),
    noteDurable: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'store.durable') return;
      const durableVersion = Math.max(context.durableVersion, event.durableVersion);
      enqueue.assign({ durableVersion, flushInFlight: false });
      if (context.driverId) {
        enqueue.emit({ type: 'ack', to: context.driverId, appliedVersion: context.appliedVersion, durableVersion });
      }
      // Flushes that arrived while this one ran need another round.
      if (context.flushWantedVersion > durableVersion && context.appliedVersion >= context.flushWantedVersion) {
        enqueue.assign({ flushInFlight: true });
        enqueue.emit({ type: 'storeFlush' });
      }
    }),
    requestFlush: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'flush') return;
      const mismatch = epochMismatch(context.epoch, event.frame.epoch);
      if (mismatch) {
        enqueue.emit({ type: 'refuse', to: event.from, frame: mismatch });
        return;
      }
      const wanted = Math.max(context.flushWantedVersion, event.frame.v);
      enqueue.assign({ flushWantedVersion: wanted });
      if (wanted <= context.durableVersion) {
        // Already durable: answer at once so the driver is not left waiting.
        if (context.driverId) {
          enqueue.emit({ type: 'ack', to: context.driverId, appliedVersion: context.appliedVersion, durableVersion: context.durableVersion });
        }
      } else if (!context.flushInFlight && context.appliedVersion >= wanted) {
        enqueue.assign({ flushInFlight: true });
        enqueue.emit({ type: 'storeFlush' });
      }
    }),
    handleRead: enqueueActions(({ context, event, enqueue }) => {
      if (event.type === 'read') handleReads(context, event.from, [event.frame], enqueue);
      else if (event.type === 'reads') handleReads(context, event.from, event.frames, enqueue);
    }),
    refuseRead: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'read' && event.type !== 'reads') return;
      for (const frame of event.type === 'read' ? [event.frame] : event.frames) {
        enqueue.emit({
          type: 'refuse',
          to: event.from,
          readId: frame.r,
          frame: refusal(ErrorCodes.notServing, `${context.id} is not serving reads in this state`, context.epoch),
        });
      }
    }),
    handleSyncRequest: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'sync.request') return;
      const mismatch = epochMismatch(context.epoch, event.frame.epoch);
      if (mismatch) {
        enqueue.emit({ type: 'refuse', to: event.from, frame: mismatch });
        return;
      }
      if (context.successor?.id !== event.from) {
        enqueue.emit({
          type: 'refuse',
          to: event.from,
          frame: refusal(ErrorCodes.notServing, `${event.from} is not ${context.id}'s successor in epoch ${context.epoch}`, context.epoch),
        });
        return;
      }
      if (event.frame.fromVersion > context.appliedVersion) {
        // The successor holds versions we lack (we restarted and lost un-flushed ones, or it
        // came back with more). One writer numbers every version, so its history is ours plus
        // more, not a different one: answering with our older image would throw away writes
        // that may be acknowledged. It asks again; we answer once we have caught up.
        enqueue.emit({
          type: 'refuse',
          to: event.from,
          frame: refusal(
            ErrorCodes.notServing,
            `${context.id} is at version ${context.appliedVersion}, behind ${event.from}'s ${event.frame.fromVersion}; ask again once it has caught up`,
            context.epoch,
          ),
        });
        return;
      }
      enqueue.assign({ forwardingTo: event.from });
      enqueue.emit({ type: 'forwardFrom', to: event.from, fromVersion: event.frame.fromVersion });
    }),
    /**
     * Only a serving replica answers SYNC. One still syncing would answer with its own target,
     * and its successor would call itself caught up ('serving', so the controller counts it as a
     * complete copy) while holding less than the chain has.
     */
    refuseSyncRequest: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'sync.request') return;
      enqueue.emit({
        type: 'refuse',
        to: event.from,
        frame: refusal(ErrorCodes.notServing, `${context.id} is not caught up itself; ask again shortly`, context.epoch),
      });
    }),
    noteSuccessorDown: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'successor.down' || context.forwardingTo !== event.id) return;
      enqueue.assign({ forwardingTo: null });
      enqueue.emit({ type: 'forwardStop' });
    }),
    noteFault: assign({
      fault: ({ event }) => (event.type === 'store.failed' ? { code: event.code, message: event.message } : null),
    }),
    refuseWrites: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'writes' && event.type !== 'flush') return;
      enqueue.emit({
        type: 'refuse',
        to: event.from,
        frame: refusal(ErrorCodes.notServing, context.fault ? `${context.id} is faulted: ${context.fault.message}` : `${context.id} has no configuration yet`, context.epoch),
      });
    }),
  },
}).createMachine({
  id: 'replica',
  context: ({ input }) => ({
    id: input.id,
    epoch: input.epoch ?? 0,
    chain: [],
    driverId: null,
    volume: null,
    acceptedVersion: input.appliedVersion,
    appliedVersion: input.appliedVersion,
    durableVersion: input.durableVersion,
    flushWantedVersion: 0,
    flushInFlight: false,
    predecessor: null,
    successor: null,
    forwardingTo: null,
    sync: null,
    parkedReads: [],
    fault: null,
  }),
  initial: 'joining',
  on: {
    'store.applied': { actions: 'noteApplied' },
    'store.image': { actions: 'noteImage' },
    'store.durable': { actions: 'noteDurable' },
    'store.failed': { target: '.faulted', actions: 'noteFault' },
    'sync.request': { actions: 'refuseSyncRequest' },
    'successor.down': { actions: 'noteSuccessorDown' },
    stop: { target: '.stopped' },
  },
  states: {
    /** No configuration yet: we do not know our place in the chain. */
    joining: {
      on: {
        config: [
          { guard: not('isNewerConfig') },
          { guard: 'isHeadOfNewConfig', target: 'serving', actions: 'adoptConfig' },
          { guard: 'inNewConfig', target: 'syncing', actions: 'adoptConfig' },
        ],
        writes: { actions: 'refuseWrites' },
        flush: { actions: 'refuseWrites' },
        read: { actions: 'refuseRead' },
        reads: { actions: 'refuseRead' },
      },
    },
    /** Catching up from the predecessor; its stream then continues as live forwarding. */
    syncing: {
      entry: 'startSync',
      on: {
        config: [
          { guard: not('isNewerConfig') },
          { guard: 'isHeadOfNewConfig', target: 'serving', actions: ['stopSync', 'adoptConfig'] },
          { guard: 'inNewConfig', target: 'syncing', reenter: true, actions: 'adoptConfig' },
          { target: 'joining', actions: ['stopSync', 'adoptConfig'] },
        ],
        'sync.start': [
          { guard: 'syncStartIsStale' },
          { guard: 'syncHasNothingNew', target: 'serving', actions: 'noteSyncStart' },
          { actions: 'noteSyncStart' },
        ],
        'store.applied': [
          { guard: 'caughtUp', target: 'serving', actions: 'noteApplied' },
          { actions: 'noteApplied' },
        ],
        writes: { actions: 'admit' },
        flush: { actions: 'requestFlush' },
        read: { actions: 'handleRead' },
        reads: { actions: 'handleRead' },
        'upstream.down': { target: 'syncing', reenter: true },
      },
    },
    /** Caught up: applying, acking, forwarding and answering reads. */
    serving: {
      entry: 'clearSync',
      on: {
        config: [
          { guard: not('isNewerConfig') },
          { guard: 'isHeadOfNewConfig', target: 'serving', actions: ['stopSync', 'adoptConfig'] },
          // A new predecessor (or a new epoch) means a new upstream link and a fresh SYNC.
          { guard: 'inNewConfig', target: 'syncing', actions: 'adoptConfig' },
          { target: 'joining', actions: ['stopSync', 'adoptConfig'] },
        ],
        writes: { actions: 'admit' },
        flush: { actions: 'requestFlush' },
        read: { actions: 'handleRead' },
        reads: { actions: 'handleRead' },
        'sync.request': { actions: 'handleSyncRequest' },
        'upstream.down': { target: 'syncing' },
      },
    },
    /** The store failed (disk full, IO error): stop taking writes; the controller replaces us. */
    faulted: {
      on: {
        writes: { actions: 'refuseWrites' },
        flush: { actions: 'refuseWrites' },
        read: { actions: 'handleRead' },
        reads: { actions: 'handleRead' },
      },
    },
    stopped: {
      entry: ['stopSync', emit({ type: 'forwardStop' })],
      type: 'final',
    },
  },
});

export type ReplicaMachine = typeof replicaMachine;
