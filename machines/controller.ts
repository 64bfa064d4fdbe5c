/**
 * The replica controller as a pure state machine. It decides; an actor (actors/controller.ts,
 * not here) persists, sends and starts processes.
 *
 * In: heartbeats (with each member's gossip view), replacements reporting in, drivers asking to
 * attach, and the reports of one liveness child per member (machines/liveness.ts).
 * Out: emitted intentions — persist this state, broadcast this config, send a config to one
 * member, start or cancel a replacement replica, retire a member, refuse a driver, alert, and
 * the liveness changes and probe requests relayed for the runtime and the visualizer.
 *
 * The order of intentions is the contract with the actor, as in etcd-raft's Ready loop: a
 * `persist` must be durable before any intention after it is carried out. A restarted
 * controller resumes from the last persisted state, so it can never hand out an epoch it forgot.
 *
 * Time is a tick of T (heartbeatIntervalMs) from XState's clock, never a wall clock.
 */
import { enqueueActions, setup } from 'xstate';
import type { ChainMember, ConfigFrame, HeartbeatFrame, MemberId, Role } from '../protocol/frames.js';
import { quorumSize } from './chain.js';
import {
  defaultHeartbeatIntervalMs,
  livenessMachine,
  type LivenessEvent,
  type LivenessReport,
  type LivenessState,
} from './liveness.js';

/** Code of the refusal a driver gets while another driver holds the volume's lease. */
export const leaseHeldCode = 'ERR_LEASE_HELD';
/** Ticks (of T) a driver's lease lasts past its last heartbeat or attach. */
export const defaultLeaseTicks = 10;
/** Ticks a requested replacement may take to report in before another is started instead. */
export const defaultReplacementTimeoutTicks = 120;

export type AlertCode =
  /** Fewer than a majority of the chain is alive and caught up: writes run on less redundancy. */
  | 'REDUNDANCY_LOST'
  /** A failed member holds the only complete copy: it stays in the chain; no writes until it returns. */
  | 'NO_CAUGHT_UP_REPLICA'
  | 'DRIVER_FAILED'
  | 'REPLACEMENT_TIMEOUT'
  /** A member reported a newer epoch than this controller holds: state was lost; moving past it. */
  | 'EPOCH_AHEAD'
  /** A member failed while this controller hears too few of the others to tell that from its own isolation: no change yet. */
  | 'CONTROLLER_CUT_OFF';

/** What the controller must find again after a restart. */
export interface ControllerPersistedState {
  epoch: number;
  chain: ChainMember[];
  driverId: MemberId;
  /** Next sequence number for a replacement's id, so ids are never reused. */
  nextMemberSeq: number;
  pendingReplacements: Array<{ id: MemberId; afterEpoch: number }>;
}

export interface ControllerInput {
  clusterId: string;
  volume: ConfigFrame['volume'];
  chain: ChainMember[];
  driverId: MemberId;
  /** N: how many replicas the chain should have. */
  replicaCount: number;
  heartbeatIntervalMs?: number;
  leaseTicks?: number;
  replacementTimeoutTicks?: number;
  /**
   * Ticks after boot before members not yet heard from are watched (their 4T start then). A
   * controller that (re)starts finds its members still redialing with backoff: without a grace
   * it would fail them for its own absence. Default 0: watched from boot.
   */
  bootGraceTicks?: number;
  /** Replacement ids are `${prefix}${seq}`. */
  replicaIdPrefix?: string;
  /** The last persisted state; only epoch and chain are required. */
  resume?: Pick<ControllerPersistedState, 'epoch' | 'chain'> & Partial<ControllerPersistedState>;
}

export interface MemberRecord {
  id: MemberId;
  kind: Exclude<Role, 'controller'>;
  /** Where it accepts links; known once it was in a chain. */
  url: string | null;
  /** Liveness actor generation; 0 before one was spawned. Reports of older ones are ignored. */
  incarnation: number;
  liveness: LivenessState | null;
  /** Its own state from its heartbeats ('serving', 'syncing', ...); 'unknown' before any. */
  replicaState: string;
  appliedVersion: number;
  durableVersion: number;
  /** The epoch it last reported. */
  epoch: number;
  lastHeardTick: number | null;
  /** Set when told it is not a member; its heartbeats are then ignored until the epoch moves. */
  retiredAtEpoch: number | null;
  /**
   * The epoch that added it to the chain, or null for the chain the controller started or
   * resumed with. One added later has to SYNC first: only a heartbeat of that epoch or newer
   * saying 'serving' shows it holds a complete copy.
   */
  joinedEpoch: number | null;
}

export interface PendingReplacement {
  id: MemberId;
  afterEpoch: number;
  requestedAtTick: number;
}

export interface ControllerContext {
  clusterId: string;
  volume: ConfigFrame['volume'];
  replicaCount: number;
  heartbeatIntervalMs: number;
  leaseTicks: number;
  replacementTimeoutTicks: number;
  bootGraceTicks: number;
  replicaIdPrefix: string;
  tick: number;
  epoch: number;
  chain: ChainMember[];
  driverId: MemberId;
  lease: { driverId: MemberId; expiresAtTick: number };
  members: Record<MemberId, MemberRecord>;
  pendingReplacements: PendingReplacement[];
  nextMemberSeq: number;
}

export type ControllerEvent =
  | { type: 'heartbeat'; frame: HeartbeatFrame }
  /** A replacement replica started and is ready to take its place at the tail. */
  | { type: 'member.joined'; member: ChainMember }
  /** A driver dialed in and wants the volume. */
  | { type: 'driver.attach'; id: MemberId }
  | LivenessReport
  | { type: 'stop' };

export type ControllerEmitted =
  | { type: 'persist'; state: ControllerPersistedState }
  /** Send `config` to every id in `to` (the chain, the driver, and anyone it concerns). */
  | { type: 'broadcast'; to: MemberId[]; config: ConfigFrame }
  | { type: 'send'; to: MemberId; frame: ConfigFrame }
  | { type: 'spawnReplacement'; id: MemberId; afterEpoch: number }
  | { type: 'cancelReplacement'; id: MemberId; reason: string }
  /** `to` is not a member of the current chain: it should stop and drop its copy. */
  | { type: 'retire'; to: MemberId; epoch: number; reason: string }
  | { type: 'refuse'; to: MemberId; code: typeof leaseHeldCode; message: string }
  | { type: 'alert'; code: AlertCode; epoch: number; message: string; members: MemberId[] }
  | { type: 'probe'; member: MemberId; via: MemberId[] }
  | { type: 'stateChanged'; member: MemberId; state: LivenessState };

export interface MemberStatus {
  role: 'head' | 'middle' | 'tail' | 'driver' | 'retired';
  liveness: LivenessState | null;
  replicaState: string;
  /** Holds a complete copy: counts toward the driver's quorum. */
  caughtUp: boolean;
  appliedVersion: number;
  durableVersion: number;
  /** Versions behind the head (chain members only). */
  lagVersions: number | null;
  epoch: number;
  msSinceHeartbeat: number | null;
}

export interface ControllerStatus {
  clusterId: string;
  volume: ConfigFrame['volume'];
  epoch: number;
  tick: number;
  chain: MemberId[];
  driverId: MemberId;
  lease: { driverId: MemberId; expiresAtTick: number; expiresInMs: number };
  replicaCount: number;
  quorum: number;
  pendingReplacements: MemberId[];
  members: Record<MemberId, MemberStatus>;
}

export function livenessChildId(member: MemberId): string {
  return `liveness:${member}`;
}

/**
 * Whether a member holds a complete copy: only once it says so ('serving'). A controller that
 * resumes from its state file knows nothing of the members' progress (a replacement may never
 * have synced): presuming them complete let it drop the one member that held the data. A
 * failure that waits on this is looked at again every tick (onTick).
 */
export function isCaughtUp(rec: MemberRecord): boolean {
  return rec.replicaState === 'serving';
}

/**
 * Whether a member may hold writes that no other member has: all but those known to be catching
 * up (a syncing or joining member holds a prefix of its predecessor's history). One not heard
 * from since the controller (re)started may.
 */
function mayHoldTheOnlyCopy(rec: MemberRecord): boolean {
  return rec.replicaState !== 'syncing' && rec.replicaState !== 'joining';
}

export function configOf(context: ControllerContext): ConfigFrame {
  return { t: 'config', epoch: context.epoch, chain: [...context.chain], driverId: context.driverId, volume: context.volume };
}

export function persistedStateOf(context: ControllerContext): ControllerPersistedState {
  return {
    epoch: context.epoch,
    chain: [...context.chain],
    driverId: context.driverId,
    nextMemberSeq: context.nextMemberSeq,
    pendingReplacements: context.pendingReplacements.map((p) => ({ id: p.id, afterEpoch: p.afterEpoch })),
  };
}

/** What `freebs status` and the visualizer show. */
export function controllerStatus(context: ControllerContext): ControllerStatus {
  const headApplied = context.chain.length > 0 ? (context.members[context.chain[0].id]?.appliedVersion ?? 0) : 0;
  const members: Record<MemberId, MemberStatus> = {};
  for (const rec of Object.values(context.members)) {
    const index = context.chain.findIndex((m) => m.id === rec.id);
    const role: MemberStatus['role'] =
      rec.id === context.driverId
        ? 'driver'
        : index < 0
          ? 'retired'
          : index === 0
            ? 'head'
            : index === context.chain.length - 1
              ? 'tail'
              : 'middle';
    members[rec.id] = {
      role,
      liveness: rec.liveness,
      replicaState: rec.replicaState,
      caughtUp: index >= 0 && isCaughtUp(rec),
      appliedVersion: rec.appliedVersion,
      durableVersion: rec.durableVersion,
      lagVersions: index >= 0 ? Math.max(0, headApplied - rec.appliedVersion) : null,
      epoch: rec.epoch,
      msSinceHeartbeat: rec.lastHeardTick === null ? null : (context.tick - rec.lastHeardTick) * context.heartbeatIntervalMs,
    };
  }
  return {
    clusterId: context.clusterId,
    volume: context.volume,
    epoch: context.epoch,
    tick: context.tick,
    chain: context.chain.map((m) => m.id),
    driverId: context.driverId,
    lease: {
      ...context.lease,
      expiresInMs: Math.max(0, context.lease.expiresAtTick - context.tick) * context.heartbeatIntervalMs,
    },
    replicaCount: context.replicaCount,
    quorum: quorumSize(context.chain.length),
    pendingReplacements: context.pendingReplacements.map((p) => p.id),
    members,
  };
}

// ---------------------------------------------------------------------------------------------
// One step: handlers work on a private copy of the context and queue what to do, in order.
// The controller is off the data path (a few events per T), so copying is cheap, and it keeps
// every snapshot immutable for the visualizer and the trace recorder.

type Op =
  | { op: 'emit'; e: ControllerEmitted }
  | { op: 'spawnLiveness'; member: MemberId; incarnation: number }
  | { op: 'stopLiveness'; member: MemberId }
  | { op: 'toLiveness'; member: MemberId; event: LivenessEvent };

class Step {
  readonly ctx: ControllerContext;
  readonly ops: Op[] = [];

  constructor(context: ControllerContext) {
    const members: Record<MemberId, MemberRecord> = {};
    for (const [id, rec] of Object.entries(context.members)) members[id] = { ...rec };
    this.ctx = {
      ...context,
      chain: [...context.chain],
      lease: { ...context.lease },
      members,
      pendingReplacements: [...context.pendingReplacements],
    };
  }

  emit(e: ControllerEmitted): void {
    this.ops.push({ op: 'emit', e });
  }

  alert(code: AlertCode, message: string, members: MemberId[]): void {
    this.emit({ type: 'alert', code, epoch: this.ctx.epoch, message, members });
  }

  inChain(id: MemberId): boolean {
    return this.ctx.chain.some((m) => m.id === id);
  }

  /** Members whose liveness we track now: the chain and the driver. */
  participants(): MemberId[] {
    const ids = this.ctx.chain.map((m) => m.id);
    if (!ids.includes(this.ctx.driverId)) ids.push(this.ctx.driverId);
    return ids;
  }

  /** A fresh liveness actor: the member starts over as `active`, as a new incarnation. */
  track(id: MemberId): void {
    const rec = this.ctx.members[id];
    if (rec.incarnation > 0) this.ops.push({ op: 'stopLiveness', member: id });
    rec.incarnation += 1;
    // The new actor's own first report says `active` too; it is deduplicated against this.
    if (rec.liveness !== 'active') this.emit({ type: 'stateChanged', member: id, state: 'active' });
    rec.liveness = 'active';
    rec.retiredAtEpoch = null;
    this.ops.push({ op: 'spawnLiveness', member: id, incarnation: rec.incarnation });
  }

  untrack(id: MemberId): void {
    const rec = this.ctx.members[id];
    if (!rec) return;
    if (rec.incarnation === 0) {
      // Never watched (boot grace): no actor to stop.
      rec.liveness = null;
      return;
    }
    if (rec.liveness === 'failed') return; // its actor is done; status keeps showing `failed`
    this.ops.push({ op: 'stopLiveness', member: id });
    rec.liveness = null;
  }

  record(id: MemberId, kind: MemberRecord['kind'], url: string | null, joinedEpoch: number | null): MemberRecord {
    const existing = this.ctx.members[id];
    const rec: MemberRecord = existing
      ? { ...existing, kind, url: url ?? existing.url, joinedEpoch: joinedEpoch ?? existing.joinedEpoch }
      : {
          id,
          kind,
          url,
          incarnation: 0,
          liveness: null,
          replicaState: 'unknown',
          appliedVersion: 0,
          durableVersion: 0,
          epoch: 0,
          lastHeardTick: null,
          retiredAtEpoch: null,
          joinedEpoch,
        };
    if (joinedEpoch !== null) rec.replicaState = 'joining';
    this.ctx.members[id] = rec;
    return rec;
  }

  allocateReplacementId(): MemberId {
    for (;;) {
      const id = `${this.ctx.replicaIdPrefix}${this.ctx.nextMemberSeq++}`;
      if (!this.ctx.members[id] && !this.ctx.pendingReplacements.some((p) => p.id === id)) return id;
    }
  }

  /**
   * Make a change official: a new epoch if asked, replacements to fill the chain up to N, then
   * persist, broadcast, start the replacements — in that order.
   */
  publish(opts: { newEpoch: boolean; alsoTo?: MemberId[] }): void {
    if (opts.newEpoch) this.ctx.epoch += 1;
    const deficit = this.ctx.replicaCount - this.ctx.chain.length - this.ctx.pendingReplacements.length;
    const started: MemberId[] = [];
    for (let i = 0; i < deficit; i++) {
      const id = this.allocateReplacementId();
      this.ctx.pendingReplacements.push({ id, afterEpoch: this.ctx.epoch, requestedAtTick: this.ctx.tick });
      started.push(id);
    }
    this.emit({ type: 'persist', state: persistedStateOf(this.ctx) });
    const to = this.participants();
    for (const id of opts.alsoTo ?? []) if (!to.includes(id)) to.push(id);
    this.emit({ type: 'broadcast', to, config: configOf(this.ctx) });
    for (const id of started) this.emit({ type: 'spawnReplacement', id, afterEpoch: this.ctx.epoch });
  }

  retire(id: MemberId, reason: string): void {
    this.emit({ type: 'send', to: id, frame: configOf(this.ctx) });
    this.emit({ type: 'retire', to: id, epoch: this.ctx.epoch, reason });
    const rec = this.ctx.members[id];
    if (rec) rec.retiredAtEpoch = this.ctx.epoch;
  }
}

function boot(s: Step): void {
  // Replacements a previous run asked for and never saw report in: whatever was started is
  // unknown to this run (its report went to the old process), so ask for them again.
  const resumed = s.ctx.pendingReplacements.map((p) => ({ ...p }));
  for (const id of s.participants()) {
    if (s.ctx.bootGraceTicks > 0) {
      // Presumed active; watched from its first heartbeat or the end of the grace.
      s.ctx.members[id].liveness = 'active';
      s.emit({ type: 'stateChanged', member: id, state: 'active' });
    } else s.track(id);
  }
  s.publish({ newEpoch: false });
  for (const p of resumed) s.emit({ type: 'spawnReplacement', id: p.id, afterEpoch: p.afterEpoch });
}

function onTick(s: Step): void {
  const c = s.ctx;
  c.tick += 1;
  if (c.tick === c.bootGraceTicks) {
    // The grace is over: whoever has not spoken yet gets its 4T from now.
    for (const id of s.participants()) if (c.members[id]?.incarnation === 0 && c.members[id].liveness === 'active') s.track(id);
  }
  // Failures held while the controller heard too few members: act once it hears enough again.
  for (const m of [...c.chain]) {
    if (c.members[m.id]?.liveness === 'failed' && s.inChain(m.id) && hearsMajority(s, m.id)) memberFailed(s, m.id, true);
  }
  const expired = c.pendingReplacements.filter((p) => c.tick - p.requestedAtTick >= c.replacementTimeoutTicks);
  if (expired.length === 0) return;
  c.pendingReplacements = c.pendingReplacements.filter((p) => !expired.includes(p));
  for (const p of expired) {
    s.emit({ type: 'cancelReplacement', id: p.id, reason: `did not report in within ${c.replacementTimeoutTicks} ticks` });
  }
  s.alert('REPLACEMENT_TIMEOUT', `replacement(s) ${expired.map((p) => p.id).join(', ')} never reported in; starting others`, expired.map((p) => p.id));
  s.publish({ newEpoch: false });
}

/**
 * Whether the controller hears enough of the cluster to trust its verdict that `id` failed: a
 * majority of the other participants (chain members and the driver) active. A controller cut
 * off from everyone sees every member fall silent at once; acting on that removed member after
 * member down to the last, while the driver went on committing in the old epoch with the ones
 * removed, and the new chain lacked those writes.
 */
function hearsMajority(s: Step, id: MemberId): boolean {
  const others = s.participants().filter((p) => p !== id);
  const heard = others.filter((p) => s.ctx.members[p]?.liveness === 'active').length;
  return heard >= quorumSize(others.length);
}

/**
 * A member's liveness reached `failed`: reconfigure around it, unless that would lose data or
 * the controller may be the one cut off. `again`: a held failure looked at once more (no alerts
 * repeated).
 */
function memberFailed(s: Step, id: MemberId, again = false): void {
  const c = s.ctx;
  const rec = c.members[id];
  if (id === c.driverId) {
    s.alert(
      'DRIVER_FAILED',
      `driver ${id} failed; its lease holds until tick ${c.lease.expiresAtTick}, the chain is unchanged`,
      [id],
    );
    return;
  }
  if (!s.inChain(id)) return;
  const before = c.chain.map((m) => m.id);
  const remaining = c.chain.filter((m) => m.id !== id);
  const usable = (m: ChainMember) => {
    const r = c.members[m.id];
    return r !== undefined && r.liveness !== 'failed' && isCaughtUp(r);
  };
  if (!hearsMajority(s, id)) {
    if (!again) {
      s.alert(
        'CONTROLLER_CUT_OFF',
        `${id} failed, but this controller hears too few of the other members to tell that from its own isolation; epoch ${c.epoch} stands until it does`,
        [id],
      );
    }
    return;
  }
  // A syncing member holds a prefix of its predecessor's history: dropping it loses nothing.
  // Dropping the last caught-up one would (or one we know nothing of yet, which may be it):
  // keep it and wait for it to come back, or for another to report a complete copy.
  if (mayHoldTheOnlyCopy(rec) && !remaining.some(usable)) {
    if (again) return;
    s.alert(
      'NO_CAUGHT_UP_REPLICA',
      `${id} failed but holds the only complete copy of ${c.volume.name}; keeping it in epoch ${c.epoch} until it returns`,
      [id],
    );
    return;
  }
  c.chain = remaining;
  s.untrack(id);
  s.publish({ newEpoch: true });
  const alive = remaining.filter((m) => usable(m) && c.members[m.id].liveness === 'active').map((m) => m.id);
  if (alive.length < quorumSize(before.length)) {
    s.alert(
      'REDUNDANCY_LOST',
      `${id} failed: only ${alive.length} of the ${before.length} members of epoch ${c.epoch - 1} are alive and caught up (a majority is ${quorumSize(before.length)}); epoch ${c.epoch} runs on ${remaining.length}`,
      alive,
    );
  }
}

function onLivenessReport(s: Step, event: LivenessReport): void {
  const report = event.report;
  const rec = s.ctx.members[report.member];
  if (!rec || rec.incarnation !== event.incarnation || rec.liveness === null) return;
  if (report.type === 'probe') {
    const via = s.participants().filter((p) => p !== report.member && s.ctx.members[p]?.liveness === 'active');
    s.emit({ type: 'probe', member: report.member, via });
    return;
  }
  if (rec.liveness === report.state) return;
  rec.liveness = report.state;
  s.emit({ type: 'stateChanged', member: report.member, state: report.state });
  if (report.state === 'failed') memberFailed(s, report.member);
}

/** Note a heartbeat of a tracked member and pass it and its gossip view to the liveness actors. */
function noteHeartbeat(s: Step, frame: HeartbeatFrame): void {
  const rec = s.ctx.members[frame.id];
  // A member added in epoch E reports its state in E's terms only once it got E's config.
  if (rec.joinedEpoch === null || frame.epoch >= rec.joinedEpoch) rec.replicaState = frame.state;
  rec.appliedVersion = frame.appliedVersion;
  rec.durableVersion = frame.durableVersion;
  rec.epoch = frame.epoch;
  rec.lastHeardTick = s.ctx.tick;
  // failed is final for an incarnation: one that speaks again is tracked anew; one not yet
  // watched (boot grace) is watched from now.
  if (rec.liveness === 'failed' || rec.liveness === null || rec.incarnation === 0) s.track(frame.id);
  else s.ops.push({ op: 'toLiveness', member: frame.id, event: { type: 'heartbeat' } });
  for (const [about, heardAgoMs] of Object.entries(frame.view)) {
    if (about === frame.id || !Number.isFinite(heardAgoMs)) continue;
    const target = s.ctx.members[about];
    if (!target || target.incarnation === 0 || (target.liveness !== 'active' && target.liveness !== 'inactive')) continue;
    s.ops.push({ op: 'toLiveness', member: about, event: { type: 'gossip', from: frame.id, heardAgoMs } });
  }
  if (frame.epoch < s.ctx.epoch) s.emit({ type: 'send', to: frame.id, frame: configOf(s.ctx) });
}

function driverAttach(s: Step, id: MemberId): void {
  const c = s.ctx;
  if (id === c.lease.driverId) {
    c.lease.expiresAtTick = c.tick + c.leaseTicks;
    s.emit({ type: 'send', to: id, frame: configOf(c) });
    return;
  }
  if (c.tick < c.lease.expiresAtTick) {
    const leftMs = (c.lease.expiresAtTick - c.tick) * c.heartbeatIntervalMs;
    s.emit({
      type: 'refuse',
      to: id,
      code: leaseHeldCode,
      message: `volume ${c.volume.name} is attached to driver ${c.lease.driverId}; its lease runs ${leftMs} ms more`,
    });
    return;
  }
  // The old lease ran out: the new driver gets the volume in a new epoch, which fences the old
  // one (replicas refuse its older-epoch frames).
  const old = c.driverId;
  s.untrack(old);
  c.driverId = id;
  c.lease = { driverId: id, expiresAtTick: c.tick + c.leaseTicks };
  s.record(id, 'driver', null, null);
  s.track(id);
  s.publish({ newEpoch: true, alsoTo: [old] });
}

/** A replica outside the chain heartbeats: a failed member come back, or a stranger. */
function outsider(s: Step, frame: HeartbeatFrame): void {
  const c = s.ctx;
  const rec = c.members[frame.id];
  if (c.pendingReplacements.some((p) => p.id === frame.id)) return; // waits for member.joined
  if (rec) {
    // Not watched (no liveness actor), but status shows what it says: alive again, its epoch.
    rec.replicaState = frame.state;
    rec.appliedVersion = frame.appliedVersion;
    rec.durableVersion = frame.durableVersion;
    rec.epoch = frame.epoch;
    rec.lastHeardTick = c.tick;
  }
  if (rec?.retiredAtEpoch === c.epoch) return; // already told in this epoch
  if (!rec?.url || c.chain.length >= c.replicaCount) {
    s.record(frame.id, 'replica', null, null);
    s.retire(frame.id, rec?.url ? `the chain of epoch ${c.epoch} is full` : `${frame.id} was never a member of this chain`);
    return;
  }
  // It comes back as a new member at the tail, SYNCs like a replacement, and takes the slot of
  // a pending one (a delta sync from what it still holds beats a full copy).
  if (c.chain.length + c.pendingReplacements.length >= c.replicaCount && c.pendingReplacements.length > 0) {
    const cancelled = c.pendingReplacements.pop()!;
    s.emit({ type: 'cancelReplacement', id: cancelled.id, reason: `${frame.id} came back and takes its place` });
  }
  const url = rec.url;
  const back = s.record(frame.id, 'replica', url, c.epoch + 1);
  back.appliedVersion = frame.appliedVersion;
  back.durableVersion = frame.durableVersion;
  back.epoch = frame.epoch;
  back.lastHeardTick = c.tick;
  c.chain.push({ id: frame.id, url });
  s.track(frame.id);
  s.publish({ newEpoch: true });
}

function onHeartbeat(s: Step, frame: HeartbeatFrame): void {
  const c = s.ctx;
  if (frame.role === 'controller') return;
  if (frame.epoch > c.epoch) {
    // Persist-before-send makes this impossible unless persisted state was lost: never reuse
    // an epoch someone has seen; move past it.
    s.alert('EPOCH_AHEAD', `${frame.id} holds epoch ${frame.epoch}, newer than this controller's ${c.epoch}`, [frame.id]);
    c.epoch = frame.epoch;
    s.publish({ newEpoch: true });
  }
  if (frame.role === 'driver') {
    if (frame.id !== c.driverId) {
      driverAttach(s, frame.id);
      return;
    }
    c.lease.expiresAtTick = Math.max(c.lease.expiresAtTick, c.tick + c.leaseTicks);
    noteHeartbeat(s, frame);
    return;
  }
  if (s.inChain(frame.id)) {
    noteHeartbeat(s, frame);
    return;
  }
  outsider(s, frame);
}


function onJoined(s: Step, member: ChainMember): void {
  const c = s.ctx;
  if (s.inChain(member.id)) {
    s.emit({ type: 'send', to: member.id, frame: configOf(c) });
    return;
  }
  const pending = c.pendingReplacements.findIndex((p) => p.id === member.id);
  if (pending >= 0) c.pendingReplacements.splice(pending, 1);
  const full = pending >= 0 ? c.chain.length >= c.replicaCount : c.chain.length + c.pendingReplacements.length >= c.replicaCount;
  if (full) {
    s.record(member.id, 'replica', member.url, null);
    s.retire(member.id, `the chain of epoch ${c.epoch} is full`);
    return;
  }
  s.record(member.id, 'replica', member.url, c.epoch + 1);
  c.chain.push(member);
  s.track(member.id);
  s.publish({ newEpoch: true });
}

function initialContext(input: ControllerInput): ControllerContext {
  const heartbeatIntervalMs = input.heartbeatIntervalMs ?? defaultHeartbeatIntervalMs;
  if (!(heartbeatIntervalMs > 0)) throw new RangeError(`heartbeatIntervalMs must be > 0, got ${heartbeatIntervalMs}`);
  if (!(input.replicaCount >= 1)) throw new RangeError(`replicaCount must be ≥ 1, got ${input.replicaCount}`);
  const resume = input.resume;
  const chain = [...(resume?.chain ?? input.chain)];
  if (new Set(chain.map((m) => m.id)).size !== chain.length) throw new Error('chain member ids must be unique');
  const driverId = resume?.driverId ?? input.driverId;
  const leaseTicks = input.leaseTicks ?? defaultLeaseTicks;
  const members: Record<MemberId, MemberRecord> = {};
  const blank = (id: MemberId, kind: MemberRecord['kind'], url: string | null): MemberRecord => ({
    id,
    kind,
    url,
    incarnation: 0,
    liveness: null,
    replicaState: 'unknown',
    appliedVersion: 0,
    durableVersion: 0,
    epoch: 0,
    lastHeardTick: null,
    retiredAtEpoch: null,
    joinedEpoch: null,
  });
  for (const m of chain) members[m.id] = blank(m.id, 'replica', m.url);
  members[driverId] = blank(driverId, 'driver', null);
  return {
    clusterId: input.clusterId,
    volume: input.volume,
    replicaCount: input.replicaCount,
    heartbeatIntervalMs,
    leaseTicks,
    replacementTimeoutTicks: input.replacementTimeoutTicks ?? defaultReplacementTimeoutTicks,
    bootGraceTicks: input.bootGraceTicks ?? 0,
    replicaIdPrefix: input.replicaIdPrefix ?? 'r',
    tick: 0,
    // A fresh volume starts at epoch 1; a restarted controller continues where it persisted.
    epoch: resume?.epoch ?? 1,
    chain,
    driverId,
    // After a restart the old holder gets a whole lease again: we cannot know how much was left.
    lease: { driverId, expiresAtTick: leaseTicks },
    members,
    pendingReplacements: (resume?.pendingReplacements ?? []).map((p) => ({ ...p, requestedAtTick: 0 })),
    nextMemberSeq: resume?.nextMemberSeq ?? chain.length + 1,
  };
}

type StepKind = 'boot' | 'tick' | 'event';

/** Route one input to its handler. */
function handle(s: Step, kind: StepKind, event: ControllerEvent): void {
  if (kind === 'boot') return boot(s);
  if (kind === 'tick') return onTick(s);
  switch (event.type) {
    case 'heartbeat':
      return onHeartbeat(s, event.frame);
    case 'member.joined':
      return onJoined(s, event.member);
    case 'driver.attach':
      return driverAttach(s, event.id);
    case 'liveness.report':
      return onLivenessReport(s, event);
    case 'stop':
      return;
  }
}

export const controllerMachine = setup({
  types: {
    context: {} as ControllerContext,
    events: {} as ControllerEvent,
    input: {} as ControllerInput,
    emitted: {} as ControllerEmitted,
  },
  actors: { liveness: livenessMachine },
  delays: {
    tick: ({ context }) => context.heartbeatIntervalMs,
  },
  actions: {
    /**
     * Every input goes through one Step: handlers change a copy of the context and queue their
     * intentions and child operations, which are then enqueued here in that same order.
     */
    step: enqueueActions(({ context, event, enqueue }, params: { kind: StepKind }) => {
      const s = new Step(context);
      handle(s, params.kind, event);
      enqueue.assign(s.ctx);
      for (const op of s.ops) {
        switch (op.op) {
          case 'emit':
            enqueue.emit(op.e);
            break;
          case 'spawnLiveness':
            enqueue.spawnChild('liveness', {
              id: livenessChildId(op.member),
              input: { member: op.member, heartbeatIntervalMs: s.ctx.heartbeatIntervalMs, incarnation: op.incarnation },
            });
            break;
          case 'stopLiveness':
            enqueue.stopChild(livenessChildId(op.member));
            break;
          case 'toLiveness':
            enqueue.sendTo(livenessChildId(op.member), op.event);
            break;
        }
      }
    }),
  },
}).createMachine({
  id: 'controller',
  context: ({ input }) => initialContext(input),
  entry: { type: 'step', params: { kind: 'boot' } },
  initial: 'running',
  states: {
    running: {
      after: { tick: { target: 'running', reenter: true, actions: { type: 'step', params: { kind: 'tick' } } } },
      on: {
        heartbeat: { actions: { type: 'step', params: { kind: 'event' } } },
        'member.joined': { actions: { type: 'step', params: { kind: 'event' } } },
        'driver.attach': { actions: { type: 'step', params: { kind: 'event' } } },
        'liveness.report': { actions: { type: 'step', params: { kind: 'event' } } },
        stop: { target: 'stopped' },
      },
    },
    /** Final: the liveness children stop with the machine. */
    stopped: { type: 'final' },
  },
});

export type ControllerMachine = typeof controllerMachine;
