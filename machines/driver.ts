/**
 * The driver as a pure state machine: it numbers writes, sends them to the head, counts
 * acks, routes reads and decides each NBD reply. actors/driver.ts carries out what it emits.
 *
 * Time is a tick (from XState's clock, `after`), never a wall clock, so the simulator can
 * drive it. Writes outstanding longer than `writeTimeoutTicks` fail with EIO: the driver
 * never reports a success it did not see a majority ack.
 */
import { assign, emit, enqueueActions, not, setup } from 'xstate';
import type { ChainMember, ConfigFrame, ErrorFrame, MemberId, ReadReplyFrame, RecordKind, WriteFrame } from '../protocol/frames.js';
import { ErrorCodes } from '../protocol/frames.js';
import { quorumSize, quorumVersion } from './chain.js';

export interface ReplicaView {
  link: 'up' | 'down';
  appliedVersion: number;
  durableVersion: number;
}

export interface PendingWrite {
  reqId: number;
  frame: WriteFrame;
  fua: boolean;
  sentAtTick: number;
}

export interface PendingFlush {
  reqId: number;
  v: number;
  sentAtTick: number;
}

export interface PendingRead {
  reqId: number;
  r: number;
  offsetBytes: number;
  lengthBytes: number;
  minVersion: number;
  target: MemberId;
  tried: MemberId[];
  sentAtTick: number;
  /** When the client asked: a read refused for a passing reason is retried until readTimeoutTicks after this. */
  startedAtTick: number;
  /** Every replica refused it for a passing reason (an epoch change in flight): resent next tick. */
  deferred: boolean;
}

/** Writes sent but not yet committed; past it new writes fail at once instead of piling up. */
export const maxUncommittedWrites = 65_536;
/**
 * Writes kept after their commit, until every member of the chain has them on disk (see
 * `writes`). Past this many (a member that never flushes, a long SYNC), the oldest committed
 * ones are let go: they are on a majority, and only a member restarting without them and a
 * reconfiguration that leaves out the others could still lose them.
 */
export const maxRetainedWrites = 65_536;

export interface DriverInput {
  id: MemberId;
  tickMs: number;
  /** Ticks a write, flush or read may wait for a quorum or answer before failing with EIO. */
  writeTimeoutTicks: number;
  readTimeoutTicks: number;
  /** Ticks with fewer than a majority of links up before pending and new writes fail fast. */
  quorumGraceTicks: number;
}

/**
 * Hot-path bookkeeping lives in mutable maps owned by the machine: copying them per event
 * would cost more than the IO they describe. Only machine actions touch them.
 */
export interface DriverContext {
  id: MemberId;
  tickMs: number;
  writeTimeoutTicks: number;
  readTimeoutTicks: number;
  quorumGraceTicks: number;
  tick: number;
  /** Tick since which fewer than a majority of links are up, or null while a majority is. */
  quorumLostSinceTick: number | null;
  epoch: number;
  chain: ChainMember[];
  volume: ConfigFrame['volume'] | null;
  replicas: Record<MemberId, ReplicaView>;
  /** Last version handed out. Versions are gapless: 1, 2, 3… */
  lastVersion: number;
  /** Highest version a majority has applied (never goes back) / made durable (a majority of the current chain). */
  committedVersion: number;
  durableCommittedVersion: number;
  /**
   * Writes by version, oldest first and gapless up to lastVersion, kept until every member of the
   * chain has made them durable (not only until a majority applied them): a member that restarts
   * recovers only what it had flushed, and a new chain may be led by a member that was behind in
   * the old one. Either way its head gets what it lacks from here. Committed ones are answered
   * (reqId -1) and only kept.
   */
  writes: Map<number, PendingWrite>;
  /** Every write up to here has been answered (or given up on); the ones after wait. */
  answeredVersion: number;
  flushes: PendingFlush[];
  reads: Map<number, PendingRead>;
  nextReadId: number;
  /** Highest version sent to the current head on its current link. */
  sentToHeadVersion: number;
  /** The head refused frames (e.g. it has not yet heard of our epoch): push again next tick. */
  headNeedsResend: boolean;
}

export type DriverEvent =
  | { type: 'config'; config: ConfigFrame }
  | { type: 'link.up'; id: MemberId; appliedVersion: number }
  | { type: 'link.down'; id: MemberId }
  | { type: 'io.write'; reqId: number; kind: RecordKind; offsetBytes: number; lengthBytes: number; data?: Uint8Array; fua: boolean }
  | { type: 'io.flush'; reqId: number }
  | { type: 'io.read'; reqId: number; offsetBytes: number; lengthBytes: number }
  /**
   * The requests of one event-loop turn, in arrival order: the same as sending each as its own
   * event, at the cost of one machine step (and one frame batch to the head) instead of one each.
   */
  | { type: 'io.batch'; requests: DriverIoRequest[] }
  | { type: 'ack'; id: MemberId; epoch: number; appliedVersion: number; durableVersion: number }
  | { type: 'read.reply'; from: MemberId; frame: ReadReplyFrame }
  /** The read replies of one received batch, in order (one machine step for all). */
  | { type: 'read.replies'; from: MemberId; frames: ReadReplyFrame[] }
  | { type: 'peer.error'; from: MemberId; frame: ErrorFrame }
  /** Raised after a new configuration was adopted. */
  | { type: 'chain.changed' }
  | { type: 'stop' };

export type DriverEmitted =
  | { type: 'send'; to: MemberId; frames: Array<WriteFrame | { t: 'flush'; epoch: number; v: number } | { t: 'read'; epoch: number; r: number; offsetBytes: number; lengthBytes: number; minVersion: number }> }
  | { type: 'reply'; reqId: number; ok: true; data?: Uint8Array }
  | { type: 'reply'; reqId: number; ok: false; code: string; message: string }
  | { type: 'epochChanged'; epoch: number; chain: ChainMember[] }
  | { type: 'staleEpoch'; epoch: number; from: MemberId };

/** An NBD request as the machine takes it, alone or in an io.batch. */
export type DriverIoRequest = Extract<DriverEvent, { type: 'io.write' | 'io.flush' | 'io.read' }>;

type Enqueue = { emit: (e: DriverEmitted) => void };

function headOf(context: DriverContext): MemberId | null {
  return context.chain.length > 0 ? context.chain[0].id : null;
}

/** Recompute the majority versions and answer every request they complete. */
function settle(context: DriverContext, enqueue: Enqueue): void {
  const quorum = quorumSize(context.chain.length);
  const members = context.chain.map((m) => context.replicas[m.id]).filter((r): r is ReplicaView => r !== undefined);
  context.committedVersion = Math.max(context.committedVersion, quorumVersion(members.map((r) => r.appliedVersion), quorum));
  // Not kept from an earlier chain: a flush answered now must be on disk on a majority of this
  // one (a chain of one that grew to two needs both).
  context.durableCommittedVersion = quorumVersion(members.map((r) => r.durableVersion), quorum);
  // Answer in version order what a majority holds (and made durable, for FUA).
  for (let v = context.answeredVersion + 1; v <= context.committedVersion; v++) {
    const w = context.writes.get(v);
    if (w) {
      // A FUA write the client stopped waiting for (timed out) needs a majority, not durability.
      if (w.fua && w.reqId >= 0 && v > context.durableCommittedVersion) break;
      if (w.reqId >= 0) enqueue.emit({ type: 'reply', reqId: w.reqId, ok: true });
      w.reqId = -1;
    }
    context.answeredVersion = v;
  }
  // Let go of what every member has on disk, and of the oldest answered ones past the bound.
  const everywhere = members.length === context.chain.length && members.length > 0 ? Math.min(...members.map((r) => r.durableVersion)) : 0;
  for (const v of context.writes.keys()) {
    if (v > context.answeredVersion) break;
    if (v > everywhere && context.writes.size <= maxRetainedWrites) break;
    context.writes.delete(v);
  }
  while (context.flushes.length > 0 && context.flushes[0].v <= context.durableCommittedVersion) {
    enqueue.emit({ type: 'reply', reqId: context.flushes.shift()!.reqId, ok: true });
  }
}

/** Send the head every write it has not got on this link, in order. */
function pushToHead(context: DriverContext, enqueue: Enqueue): void {
  const head = headOf(context);
  if (!head || context.replicas[head]?.link !== 'up') return;
  const frames: WriteFrame[] = [];
  const oldest = context.writes.keys().next().value ?? context.lastVersion + 1;
  for (let v = Math.max(context.sentToHeadVersion + 1, oldest); v <= context.lastVersion; v++) {
    const w = context.writes.get(v)!;
    w.frame.epoch = context.epoch;
    frames.push(w.frame);
  }
  if (frames.length === 0) return;
  context.sentToHeadVersion = frames[frames.length - 1].v;
  enqueue.emit({ type: 'send', to: head, frames });
}

/**
 * The highest version someone waits to see durable: the newest pending flush, or a FUA write
 * still waiting. What a replica that (re)joins or a new chain is asked to make durable.
 */
function durabilityWanted(context: DriverContext): number {
  let v = context.flushes.length > 0 ? context.flushes[context.flushes.length - 1].v : 0;
  for (const [version, w] of context.writes) if (w.fua && w.reqId >= 0 && version > v) v = version;
  return v > context.durableCommittedVersion ? v : 0;
}

/** Flushes go to every replica at once: each fsyncs in parallel instead of one after another. */
function broadcastFlush(context: DriverContext, v: number, enqueue: Enqueue): void {
  for (const m of context.chain) {
    if (context.replicas[m.id]?.link === 'up') enqueue.emit({ type: 'send', to: m.id, frames: [{ t: 'flush', epoch: context.epoch, v }] });
  }
}

/** Best replica for a read: newest version first (normally the head), skipping those tried. */
function pickReader(context: DriverContext, tried: readonly MemberId[]): MemberId | null {
  let best: MemberId | null = null;
  let bestVersion = -1;
  for (const m of context.chain) {
    const r = context.replicas[m.id];
    if (!r || r.link !== 'up' || tried.includes(m.id)) continue;
    if (r.appliedVersion > bestVersion) {
      best = m.id;
      bestVersion = r.appliedVersion;
    }
  }
  // One behind minVersion still gets the read: it parks it until it catches up.
  return best;
}

function linksUp(context: DriverContext): number {
  return context.chain.filter((m) => context.replicas[m.id]?.link === 'up').length;
}

/** Why a new write cannot be taken now, or null if it can. */
function writeRefusal(context: DriverContext): string | null {
  // quorumLostSinceTick is brought up to date once a tick: links that came back since count now,
  // or a write right after they did is refused with a majority up (simulator, seed 8923).
  if (
    context.quorumLostSinceTick !== null &&
    context.tick - context.quorumLostSinceTick >= context.quorumGraceTicks &&
    linksUp(context) < quorumSize(context.chain.length)
  ) {
    return `only ${linksUp(context)} of ${context.chain.length} replicas reachable; a write needs ${quorumSize(context.chain.length)}`;
  }
  if (context.lastVersion - context.committedVersion >= maxUncommittedWrites) {
    return `${context.lastVersion - context.committedVersion} writes await a majority ack; refusing more until replicas catch up`;
  }
  return null;
}

function sendRead(context: DriverContext, read: PendingRead, enqueue: Enqueue): void {
  enqueue.emit({
    type: 'send',
    to: read.target,
    frames: [{ t: 'read', epoch: context.epoch, r: read.r, offsetBytes: read.offsetBytes, lengthBytes: read.lengthBytes, minVersion: read.minVersion }],
  });
}

/**
 * Refusals that pass on their own: a replica that has not yet heard of our epoch (or we of its),
 * or one with too many reads parked. During a reconfiguration every replica may say so at once.
 */
function isPassingRefusal(code: string | undefined): boolean {
  return code === ErrorCodes.epochStale || code === ErrorCodes.notServing;
}

/**
 * Retry a read on the next replica, or fail it when none is left — unless every refusal was a
 * passing one and the read has time left: then it waits for the next tick and tries them all again.
 */
function retryRead(context: DriverContext, read: PendingRead, why: string, enqueue: Enqueue, passing = false): void {
  read.tried.push(read.target);
  const next = pickReader(context, read.tried);
  if (next === null && passing && context.tick - read.startedAtTick < context.readTimeoutTicks) {
    read.deferred = true;
    read.tried = [];
    return;
  }
  if (next === null) {
    context.reads.delete(read.r);
    enqueue.emit({ type: 'reply', reqId: read.reqId, ok: false, code: ErrorCodes.readFailed, message: `read failed on every replica: ${why}` });
    return;
  }
  read.target = next;
  read.sentAtTick = context.tick;
  sendRead(context, read, enqueue);
}

/** A read every replica refused for a passing reason: try the best replica again. */
function resendDeferredRead(context: DriverContext, read: PendingRead, enqueue: Enqueue): void {
  const target = pickReader(context, []);
  if (target === null) {
    context.reads.delete(read.r);
    enqueue.emit({ type: 'reply', reqId: read.reqId, ok: false, code: ErrorCodes.readFailed, message: 'no replica is reachable' });
    return;
  }
  read.deferred = false;
  read.target = target;
  read.sentAtTick = context.tick;
  sendRead(context, read, enqueue);
}

/**
 * Number a write and keep it: 'queued' when it waits to be sent to the head (the caller
 * pushes), 'sent' for a FUA write, pushed here with everything before it, ahead of its flush.
 */
function submitWrite(context: DriverContext, event: Extract<DriverEvent, { type: 'io.write' }>, enqueue: Enqueue): 'queued' | 'sent' | 'refused' {
  const refusal = writeRefusal(context);
  if (refusal) {
    enqueue.emit({ type: 'reply', reqId: event.reqId, ok: false, code: ErrorCodes.quorumLost, message: refusal });
    return 'refused';
  }
  const v = ++context.lastVersion;
  const frame: WriteFrame = { t: 'write', epoch: context.epoch, v, kind: event.kind, offsetBytes: event.offsetBytes, lengthBytes: event.lengthBytes };
  if (event.data) frame.data = event.data;
  context.writes.set(v, { reqId: event.reqId, frame, fua: event.fua, sentAtTick: context.tick });
  if (!event.fua) return 'queued';
  pushToHead(context, enqueue);
  broadcastFlush(context, v, enqueue);
  return 'sent';
}

function submitFlush(context: DriverContext, event: Extract<DriverEvent, { type: 'io.flush' }>, enqueue: Enqueue): void {
  const v = context.lastVersion;
  const refusal = writeRefusal(context);
  if (refusal && v > context.durableCommittedVersion) {
    enqueue.emit({ type: 'reply', reqId: event.reqId, ok: false, code: ErrorCodes.quorumLost, message: refusal });
    return;
  }
  if (v <= context.durableCommittedVersion) {
    enqueue.emit({ type: 'reply', reqId: event.reqId, ok: true });
    return;
  }
  context.flushes.push({ reqId: event.reqId, v, sentAtTick: context.tick });
  broadcastFlush(context, v, enqueue);
}

function submitRead(context: DriverContext, event: Extract<DriverEvent, { type: 'io.read' }>, enqueue: Enqueue): void {
  // Every write already answered has v ≤ committedVersion: a replica at least that new
  // returns what the client last saw acknowledged.
  const minVersion = context.committedVersion;
  const target = pickReader(context, []);
  if (target === null) {
    enqueue.emit({ type: 'reply', reqId: event.reqId, ok: false, code: ErrorCodes.readFailed, message: 'no replica is reachable' });
    return;
  }
  const r = ++context.nextReadId;
  const read: PendingRead = {
    reqId: event.reqId, r, offsetBytes: event.offsetBytes, lengthBytes: event.lengthBytes, minVersion, target, tried: [],
    sentAtTick: context.tick, startedAtTick: context.tick, deferred: false,
  };
  context.reads.set(r, read);
  sendRead(context, read, enqueue);
}

function noteReadReply(context: DriverContext, from: MemberId, frame: ReadReplyFrame, enqueue: Enqueue): void {
  const read = context.reads.get(frame.r);
  if (!read || read.target !== from) return;
  if (frame.ok) {
    context.reads.delete(read.r);
    enqueue.emit({ type: 'reply', reqId: read.reqId, ok: true, data: frame.data });
    return;
  }
  retryRead(context, read, `${from}: ${frame.message ?? frame.code ?? 'error'}`, enqueue, isPassingRefusal(frame.code));
}

function notAttachedReply(reqId: number): DriverEmitted {
  return { type: 'reply', reqId, ok: false, code: ErrorCodes.notServing, message: 'the driver is not attached to a majority of its chain yet' };
}

export const driverMachine = setup({
  types: {
    context: {} as DriverContext,
    events: {} as DriverEvent,
    input: {} as DriverInput,
    emitted: {} as DriverEmitted,
  },
  delays: {
    tick: ({ context }) => context.tickMs,
  },
  guards: {
    /**
     * A (re)started driver may number writes only after the newest version any replica holds.
     * Every version enters the chain at the head, so the head has the newest one: a majority
     * without it may all be behind it, and the versions between would be handed out again with
     * other data (the head keeps its own: a resend of a version it has is a no-op).
     */
    majorityAndHeadUp: ({ context }) =>
      context.chain.length > 0 && linksUp(context) >= quorumSize(context.chain.length) && context.replicas[context.chain[0].id]?.link === 'up',
    isNewerConfig: ({ context, event }) => event.type === 'config' && event.config.epoch > context.epoch,
  },
  actions: {
    refuseIo: emit(({ event }) => notAttachedReply('reqId' in event ? event.reqId : -1)),
    resumeVersions: assign(({ context }) => {
      const held = context.chain.map((m) => context.replicas[m.id]).filter((r) => r?.link === 'up').map((r) => r.appliedVersion);
      const newest = Math.max(context.lastVersion, ...held);
      const committedVersion = Math.max(context.committedVersion, quorumVersion(held, quorumSize(context.chain.length)));
      return { lastVersion: newest, committedVersion, answeredVersion: Math.max(context.answeredVersion, committedVersion) };
    }),
    adoptConfig: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'config') return;
      const oldHead = headOf(context);
      const replicas: Record<MemberId, ReplicaView> = {};
      for (const m of event.config.chain) replicas[m.id] = context.replicas[m.id] ?? { link: 'down', appliedVersion: 0, durableVersion: 0 };
      const newHead = event.config.chain[0]?.id ?? null;
      // A new head gets everything uncommitted again, starting from what it reported holding.
      const sentToHeadVersion =
        newHead === oldHead ? context.sentToHeadVersion : newHead ? replicas[newHead].appliedVersion : 0;
      enqueue.assign({ epoch: event.config.epoch, chain: event.config.chain, volume: event.config.volume, replicas, sentToHeadVersion });
      enqueue.emit({ type: 'epochChanged', epoch: event.config.epoch, chain: event.config.chain });
      enqueue.raise({ type: 'chain.changed' });
    }),
    afterReconfig: enqueueActions(({ context, enqueue }) => {
      // A smaller chain needs fewer acks: what its members already hold may complete writes.
      // Uncommitted writes go to the (possibly new) head; waiting flushes to every member; reads aimed at a member that
      // left go elsewhere, and reads waiting out the epoch change are tried again.
      settle(context, enqueue);
      pushToHead(context, enqueue);
      const wanted = durabilityWanted(context);
      if (wanted > 0) broadcastFlush(context, wanted, enqueue);
      for (const read of [...context.reads.values()]) {
        if (read.deferred) resendDeferredRead(context, read, enqueue);
        else if (!context.chain.some((m) => m.id === read.target)) retryRead(context, read, `${read.target} left the chain`, enqueue);
      }
    }),
    linkUp: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'link.up') return;
      const r = context.replicas[event.id];
      if (!r) return;
      r.link = 'up';
      // What it holds now, even if less than it acked before: a replica that restarted recovered
      // only what it had flushed, and the head must be sent again what it lost, not what follows.
      r.appliedVersion = event.appliedVersion;
      if (event.id === headOf(context)) context.sentToHeadVersion = event.appliedVersion;
      // The welcome says what the replica holds, as an ack would. Its acks may have been lost
      // with the old link (or sent before we linked to it at all, after a SYNC): without this,
      // writes a majority holds would wait for an ack that no later write ever brings.
      settle(context, enqueue);
      pushToHead(context, enqueue);
      // Flushes (and FUA writes) still waiting need this replica's durability too.
      const wanted = durabilityWanted(context);
      if (wanted > 0) enqueue.emit({ type: 'send', to: event.id, frames: [{ t: 'flush', epoch: context.epoch, v: wanted }] });
    }),
    linkDown: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'link.down') return;
      const r = context.replicas[event.id];
      if (!r) return;
      r.link = 'down';
      for (const read of [...context.reads.values()]) {
        if (read.target === event.id && !read.deferred) retryRead(context, read, `link to ${event.id} went down`, enqueue);
      }
    }),
    submitWrite: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'io.write') return;
      if (submitWrite(context, event, enqueue) === 'queued') pushToHead(context, enqueue);
    }),
    submitFlush: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'io.flush') return;
      submitFlush(context, event, enqueue);
    }),
    submitRead: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'io.read') return;
      submitRead(context, event, enqueue);
    }),
    submitBatch: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'io.batch') return;
      // Writes go to the head together, once per batch; a flush or FUA write first sends what
      // precedes it, so the head's link still carries every write before the flush covering it.
      let unsent = false;
      for (const request of event.requests) {
        switch (request.type) {
          case 'io.write': {
            const outcome = submitWrite(context, request, enqueue);
            if (outcome === 'queued') unsent = true;
            else if (outcome === 'sent') unsent = false;
            break;
          }
          case 'io.flush':
            if (unsent) pushToHead(context, enqueue);
            unsent = false;
            submitFlush(context, request, enqueue);
            break;
          case 'io.read':
            submitRead(context, request, enqueue);
            break;
        }
      }
      if (unsent) pushToHead(context, enqueue);
    }),
    refuseBatch: enqueueActions(({ event, enqueue }) => {
      if (event.type !== 'io.batch') return;
      for (const request of event.requests) enqueue.emit(notAttachedReply(request.reqId));
    }),
    noteAck: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'ack') return;
      // An ack states what a replica holds of this driver's writes, whatever epoch it was sent
      // in, so it counts for any member of the current chain. Around a reconfiguration acks and
      // the driver's copy of the new config race (a replica syncs and acks in the new epoch
      // before the driver adopts it, or acks in the old one after): dropping those could leave
      // writes waiting for an ack that never comes again (no new write, no new ack).
      const r = context.replicas[event.id];
      if (!r) return;
      r.appliedVersion = Math.max(r.appliedVersion, event.appliedVersion);
      r.durableVersion = Math.max(r.durableVersion, event.durableVersion);
      settle(context, enqueue);
    }),
    noteReadReply: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'read.reply') return;
      noteReadReply(context, event.from, event.frame, enqueue);
    }),
    noteReadReplies: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'read.replies') return;
      for (const frame of event.frames) noteReadReply(context, event.from, frame, enqueue);
    }),
    notePeerError: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'peer.error') return;
      if (event.frame.code === ErrorCodes.epochStale && (event.frame.epoch ?? 0) > context.epoch) {
        enqueue.emit({ type: 'staleEpoch', epoch: event.frame.epoch!, from: event.from });
      }
      // The head dropped frames (a gap, or an epoch it has not heard of yet): send again from
      // what it holds, next tick. Not at once: a head that lacks versions we no longer hold (it
      // lost them) refuses again, and the two would bounce frames at network speed.
      if (event.from === headOf(context) && event.frame.code !== ErrorCodes.badFrame) {
        context.sentToHeadVersion = context.replicas[event.from]?.appliedVersion ?? 0;
        context.headNeedsResend = true;
      }
    }),
    expire: enqueueActions(({ context, enqueue }) => {
      context.tick++;
      if (context.headNeedsResend) {
        context.headNeedsResend = false;
        pushToHead(context, enqueue);
      }
      // Once a tick, ask the members that lag for durability: what a flush or FUA write waits
      // for (its flush frame may have been lost with a link), and what we keep only until every
      // member has it on disk (without a client's flush nothing else would make it durable).
      const oldest = context.writes.keys().next().value;
      const durableTarget = Math.max(durabilityWanted(context), oldest !== undefined && oldest <= context.answeredVersion ? context.answeredVersion : 0);
      if (durableTarget > 0) {
        for (const m of context.chain) {
          const r = context.replicas[m.id];
          if (r?.link === 'up' && r.durableVersion < durableTarget) {
            enqueue.emit({ type: 'send', to: m.id, frames: [{ t: 'flush', epoch: context.epoch, v: durableTarget }] });
          }
        }
      }
      if (linksUp(context) >= quorumSize(context.chain.length)) context.quorumLostSinceTick = null;
      else context.quorumLostSinceTick ??= context.tick;
      const quorumGone = context.quorumLostSinceTick !== null && context.tick - context.quorumLostSinceTick >= context.quorumGraceTicks;
      // Without a reachable majority nothing can commit: answer now rather than at the timeout.
      const writeDeadline = quorumGone ? context.tick : context.tick - context.writeTimeoutTicks;
      const failed: PendingWrite[] = [];
      for (let v = context.answeredVersion + 1; v <= context.lastVersion; v++) {
        const w = context.writes.get(v);
        if (!w) continue;
        if (w.sentAtTick > writeDeadline) break;
        if (w.reqId >= 0) failed.push(w);
      }
      for (const w of failed) {
        // The version stays in the log to resend: only the client's answer is given up on.
        enqueue.emit({ type: 'reply', reqId: w.reqId, ok: false, code: ErrorCodes.quorumLost, message: `write v${w.frame.v} not acknowledged by a majority of ${context.chain.length} replicas in time` });
        w.reqId = -1;
      }
      while (context.flushes.length > 0 && context.flushes[0].sentAtTick <= writeDeadline) {
        const f = context.flushes.shift()!;
        enqueue.emit({ type: 'reply', reqId: f.reqId, ok: false, code: ErrorCodes.quorumLost, message: `flush to v${f.v} not made durable by a majority in time` });
      }
      const readDeadline = context.tick - context.readTimeoutTicks;
      for (const read of [...context.reads.values()]) {
        if (read.deferred) resendDeferredRead(context, read, enqueue);
        else if (read.sentAtTick <= readDeadline) retryRead(context, read, `${read.target} timed out`, enqueue);
      }
    }),
    failEverything: enqueueActions(({ context, enqueue }) => {
      for (const w of context.writes.values()) {
        if (w.reqId >= 0) enqueue.emit({ type: 'reply', reqId: w.reqId, ok: false, code: ErrorCodes.linkDown, message: 'driver stopping' });
      }
      for (const f of context.flushes) enqueue.emit({ type: 'reply', reqId: f.reqId, ok: false, code: ErrorCodes.linkDown, message: 'driver stopping' });
      for (const r of context.reads.values()) enqueue.emit({ type: 'reply', reqId: r.reqId, ok: false, code: ErrorCodes.linkDown, message: 'driver stopping' });
      context.writes.clear();
      context.flushes.length = 0;
      context.reads.clear();
    }),
  },
}).createMachine({
  id: 'driver',
  context: ({ input }) => ({
    id: input.id,
    tickMs: input.tickMs,
    writeTimeoutTicks: input.writeTimeoutTicks,
    readTimeoutTicks: input.readTimeoutTicks,
    quorumGraceTicks: input.quorumGraceTicks,
    tick: 0,
    quorumLostSinceTick: null,
    epoch: 0,
    chain: [],
    volume: null,
    replicas: {},
    lastVersion: 0,
    answeredVersion: 0,
    committedVersion: 0,
    durableCommittedVersion: 0,
    writes: new Map(),
    flushes: [],
    reads: new Map(),
    nextReadId: 0,
    sentToHeadVersion: 0,
    headNeedsResend: false,
  }),
  initial: 'detached',
  on: {
    stop: { target: '.stopped' },
  },
  states: {
    /** No configuration yet: no chain to send to. */
    detached: {
      on: {
        config: { target: 'attaching', actions: 'adoptConfig' },
        'io.write': { actions: 'refuseIo' },
        'io.flush': { actions: 'refuseIo' },
        'io.read': { actions: 'refuseIo' },
        'io.batch': { actions: 'refuseBatch' },
      },
    },
    /**
     * Waiting to hear from a majority and the head: a driver that (re)starts must number its
     * writes after the newest version any replica holds, or it would reuse versions.
     */
    attaching: {
      always: { guard: 'majorityAndHeadUp', target: 'attached', actions: 'resumeVersions' },
      on: {
        config: [{ guard: not('isNewerConfig') }, { actions: 'adoptConfig' }],
        'link.up': { actions: 'linkUp' },
        'link.down': { actions: 'linkDown' },
        'io.write': { actions: 'refuseIo' },
        'io.flush': { actions: 'refuseIo' },
        'io.read': { actions: 'refuseIo' },
        'io.batch': { actions: 'refuseBatch' },
      },
    },
    attached: {
      after: { tick: { target: 'attached', reenter: true, actions: 'expire' } },
      on: {
        config: [{ guard: not('isNewerConfig') }, { actions: 'adoptConfig' }],
        'link.up': { actions: 'linkUp' },
        'link.down': { actions: 'linkDown' },
        'io.write': { actions: 'submitWrite' },
        'io.flush': { actions: 'submitFlush' },
        'io.read': { actions: 'submitRead' },
        'io.batch': { actions: 'submitBatch' },
        ack: { actions: 'noteAck' },
        'read.reply': { actions: 'noteReadReply' },
        'read.replies': { actions: 'noteReadReplies' },
        'peer.error': { actions: 'notePeerError' },
        'chain.changed': { actions: 'afterReconfig' },
      },
    },
    stopped: {
      entry: 'failEverything',
      type: 'final',
    },
  },
});

export type DriverMachine = typeof driverMachine;
