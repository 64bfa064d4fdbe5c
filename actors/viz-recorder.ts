/**
 * Turns what the controller sees into the visualizer's trace records (protocol/trace.ts): its
 * machine's and its liveness children's state changes (XState inspection), what it decides
 * (emitted intentions: liveness changes, new epochs, replacements, alerts), the members'
 * heartbeats (their own machine state, versions, the driver's I/O), and once per heartbeat
 * period the whole picture.
 *
 * SYNC is seen from the syncing replica's heartbeats: start when it reports `syncing`, progress
 * at most once a second while its version moves, end when it reports anything else.
 *
 * No IO here and no timers: the owner calls `tick()` every T and passes a clock, so tests drive
 * it step by step.
 */
import type { InspectionEvent } from 'xstate';
import type { ControllerEmitted, ControllerStatus } from '../machines/controller.js';
import { failedAfterIntervals, inactiveAfterIntervals } from '../machines/liveness.js';
import type { ErrorFrame, HeartbeatFrame, IoStats, MemberId } from '../protocol/frames.js';
import {
  statePath,
  type ClusterView,
  type IoView,
  type LinkView,
  type MachineName,
  type NodeView,
  type StateRecord,
  type StatusRecord,
  type TraceEvent,
  type TraceEventType,
} from '../protocol/trace.js';

/** A record before the stream stamps it with seq and time. */
export type Unstamped = Omit<StatusRecord, 'seq' | 'atMs'> | Omit<StateRecord, 'seq' | 'atMs'> | Omit<TraceEvent, 'seq' | 'atMs'>;

export interface RecorderOptions {
  heartbeatMs: number;
  status: () => ControllerStatus;
  /** Members the controller holds a link to now. */
  linked: () => ReadonlySet<MemberId>;
  record: (r: Unstamped) => void;
  /** ms clock (performance.now() or a test's). */
  now?: () => number;
}

/** A heartbeat period without one, and a bit: the first sign of trouble, before `inactive` at 2T. */
const missedAfterIntervals = 1.5;
/** SYNC progress events at most this often per replica. */
const syncProgressEveryMs = 1000;

interface SyncWatch {
  startedAtMs: number;
  fromVersion: number;
  lastProgressAtMs: number;
  lastProgressVersion: number;
}

interface MemberWatch {
  atMs: number;
  frame: HeartbeatFrame;
  missed: boolean;
  sync: SyncWatch | null;
  /** The driver's previous I/O sample and when it came, for rates. */
  io: { atMs: number; stats: IoStats } | null;
}

/** Inspection event types are XState's; `xstate.after.failAfter.liveness.inactive.waiting` reads better as `after failAfter`. */
export function eventName(type: string): string {
  if (type.startsWith('xstate.after.')) return `after ${type.split('.')[2] ?? ''}`.trim();
  if (type.startsWith('xstate.')) return type.slice('xstate.'.length);
  return type;
}

export class ClusterRecorder {
  private readonly members = new Map<MemberId, MemberWatch>();
  /** Members declared inactive before their first heartbeat reached this controller (told once). */
  private readonly neverHeard = new Set<MemberId>();
  /** Last state recorded per machine instance, by `machine:node`. */
  private readonly machineValues = new Map<string, string>();
  private io: IoView | null = null;
  private ioAtMs = 0;
  private lastEpoch: number | null = null;
  private lastChain: MemberId[] = [];
  private readonly now: () => number;

  constructor(private readonly options: RecorderOptions) {
    this.now = options.now ?? (() => performance.now());
  }

  /** The `inspect` option of the controller's createActor. */
  inspect(ev: InspectionEvent): void {
    if (ev.type !== '@xstate.snapshot') return;
    const ref = ev.actorRef;
    let node: string;
    let machine: MachineName;
    if (ref.sessionId === ev.rootId) {
      node = 'controller';
      machine = 'controller';
    } else {
      const id = (ref as { id?: unknown }).id;
      if (typeof id !== 'string' || !id.startsWith('liveness:')) return;
      node = id.slice('liveness:'.length);
      machine = 'liveness';
    }
    const snapshot = ev.snapshot as { status?: string; value?: unknown };
    if (snapshot.status === 'stopped' || snapshot.status === 'error') return;
    this.machineState(machine, node, statePath(snapshot.value), eventName(ev.event.type));
  }

  /** Every intention the controller machine emits, in order. */
  emitted(e: ControllerEmitted): void {
    const T = this.options.heartbeatMs;
    switch (e.type) {
      case 'stateChanged': {
        // The check runs a few times per T, but on a busy event loop the controller's own 2T
        // timer can fire first: the missed heartbeat is told first all the same.
        if (e.state === 'inactive') this.missed(e.member, this.now());
        const why =
          e.state === 'inactive'
            ? `: no heartbeat for ${inactiveAfterIntervals}T (${inactiveAfterIntervals * T} ms)`
            : e.state === 'failed'
              ? `: no heartbeat for ${failedAfterIntervals}T (${failedAfterIntervals * T} ms)`
              : '';
        this.event('liveness', e.member, `${e.member} is ${e.state}${why}`, { state: e.state });
        break;
      }
      case 'broadcast': {
        const chain = e.config.chain.map((m) => m.id);
        if (e.config.epoch === this.lastEpoch) break;
        const removed = this.lastChain.filter((id) => !chain.includes(id));
        const added = this.lastEpoch === null ? [] : chain.filter((id) => !this.lastChain.includes(id));
        const changes = [removed.length > 0 ? `without ${removed.join(', ')}` : '', added.length > 0 ? `with ${added.join(', ')}` : ''].filter(Boolean);
        this.event('epoch', null, `epoch ${e.config.epoch}: ${chain.join(' → ') || '(empty chain)'}${changes.length > 0 ? ` (${changes.join('; ')})` : ''}`, {
          epoch: e.config.epoch,
          chain,
          removed,
          added,
        });
        this.lastEpoch = e.config.epoch;
        this.lastChain = chain;
        break;
      }
      case 'spawnReplacement':
        this.event('replacement', e.id, `starting replacement replica ${e.id}`, { afterEpoch: e.afterEpoch });
        break;
      case 'cancelReplacement':
        this.event('replacement', e.id, `replacement ${e.id} cancelled: ${e.reason}`);
        break;
      case 'retire':
        this.event('retire', e.to, `${e.to} retired: ${e.reason}`, { epoch: e.epoch });
        break;
      case 'alert':
        this.event('alert', e.members[0] ?? null, `${e.code}: ${e.message}`, { code: e.code, epoch: e.epoch, members: e.members });
        break;
      case 'refuse':
        this.event('member-error', e.to, `refused ${e.to}: ${e.message}`, { code: e.code });
        break;
      default:
        break;
    }
  }

  /** A heartbeat the controller accepted from a linked member. */
  heartbeat(frame: HeartbeatFrame): void {
    const now = this.now();
    const prev = this.members.get(frame.id);
    const prevState = prev?.frame.state ?? null;
    const watch: MemberWatch = { atMs: now, frame, missed: false, sync: prev?.sync ?? null, io: prev?.io ?? null };
    this.members.set(frame.id, watch);
    if (frame.role === 'controller') return;
    this.machineState(frame.role === 'driver' ? 'driver' : 'replica', frame.id, frame.state, null);
    if (frame.role === 'replica') this.watchSync(watch, prev ?? null, prevState, now);
    if (frame.io) this.watchIo(frame.id, watch, frame.io, now);
  }

  /** An error frame a member sent the controller. */
  memberError(id: MemberId, frame: ErrorFrame): void {
    this.event('member-error', id, `${id} reported ${frame.code}: ${frame.message}`, { code: frame.code });
  }

  linkChanged(id: MemberId, up: boolean): void {
    this.event('link', id, up ? `${id} linked to the controller` : `${id} lost its link to the controller`, { up });
  }

  /** Every T: the whole picture. */
  tick(): void {
    this.checkHeartbeats();
    this.options.record({ kind: 'status', cluster: this.view() });
  }

  /**
   * A heartbeat missed: a member silent for more than 1.5T. Call it several times per T, so it
   * is seen before the controller calls the member inactive at 2T.
   */
  checkHeartbeats(): void {
    const now = this.now();
    const status = this.options.status();
    const T = this.options.heartbeatMs;
    for (const id of [...status.chain, status.driverId]) {
      const w = this.members.get(id);
      if (!w || status.members[id]?.liveness === 'failed') continue;
      if (now - w.atMs > missedAfterIntervals * T) this.missed(id, now);
    }
  }

  /** Once per silence: cleared by the member's next heartbeat. */
  private missed(id: MemberId, now: number): void {
    const w = this.members.get(id);
    if (!w) {
      // Never heard since this controller started (a member that was down, or still dialing).
      if (this.neverHeard.has(id)) return;
      this.neverHeard.add(id);
      this.event('heartbeat-missed', id, `no heartbeat from ${id} since the controller started`, { silentMs: null });
      return;
    }
    if (w.missed) return;
    w.missed = true;
    const silentMs = Math.round(now - w.atMs);
    this.event('heartbeat-missed', id, `${id} missed a heartbeat (last heard ${silentMs} ms ago)`, { silentMs });
  }

  /** The picture now, from the controller's status and the last heartbeats. */
  view(status: ControllerStatus = this.options.status(), now: number = this.now()): ClusterView {
    const linked = this.options.linked();
    const T = this.options.heartbeatMs;
    const headApplied = this.headApplied(status);
    const nodes: Record<MemberId, NodeView> = {};
    for (const [id, m] of Object.entries(status.members)) {
      const w = this.members.get(id);
      const state = w?.frame.state ?? m.replicaState;
      nodes[id] = {
        id,
        kind: m.role === 'driver' || w?.frame.role === 'driver' ? 'driver' : 'replica',
        role: m.role,
        liveness: m.liveness,
        state,
        caughtUp: m.caughtUp,
        appliedVersion: w?.frame.appliedVersion ?? m.appliedVersion,
        durableVersion: w?.frame.durableVersion ?? m.durableVersion,
        lagVersions: m.lagVersions === null ? null : Math.max(0, headApplied - (w?.frame.appliedVersion ?? m.appliedVersion)),
        epoch: w?.frame.epoch ?? m.epoch,
        msSinceHeartbeat: w ? Math.round(now - w.atMs) : m.msSinceHeartbeat,
        syncProgress: state === 'syncing' && w?.sync ? progress(w.sync.fromVersion, w.frame.appliedVersion, headApplied) : null,
        controllerLink: linked.has(id),
      };
    }
    for (const id of status.pendingReplacements) {
      if (nodes[id]) continue;
      const w = this.members.get(id);
      nodes[id] = {
        id,
        kind: 'replica',
        role: 'pending',
        liveness: null,
        state: w?.frame.state ?? 'starting',
        caughtUp: false,
        appliedVersion: w?.frame.appliedVersion ?? 0,
        durableVersion: w?.frame.durableVersion ?? 0,
        lagVersions: null,
        epoch: w?.frame.epoch ?? 0,
        msSinceHeartbeat: w ? Math.round(now - w.atMs) : null,
        syncProgress: null,
        controllerLink: linked.has(id),
      };
    }
    const links: LinkView[] = [];
    const path = [status.driverId, ...status.chain];
    for (let i = 0; i + 1 < path.length; i++) links.push(this.link(path[i], path[i + 1], nodes, status.epoch, now));
    const driverWatch = this.members.get(status.driverId);
    // A driver silent for 4T reports no I/O we can trust.
    const io = this.io && driverWatch && now - this.ioAtMs <= failedAfterIntervals * T ? this.io : null;
    return {
      clusterId: status.clusterId,
      volume: status.volume,
      epoch: status.epoch,
      heartbeatMs: T,
      inactiveAfterMs: inactiveAfterIntervals * T,
      failedAfterMs: failedAfterIntervals * T,
      chain: status.chain,
      driverId: status.driverId,
      quorum: status.quorum,
      replicaCount: status.replicaCount,
      pendingReplacements: status.pendingReplacements,
      nodes,
      links,
      io,
    };
  }

  private link(from: MemberId, to: MemberId, nodes: Record<MemberId, NodeView>, epoch: number, now: number): LinkView {
    const a = nodes[from];
    const b = nodes[to];
    if (a?.liveness !== 'active' || b?.liveness !== 'active') return { from, to, state: 'down' };
    // Gossip: how long ago each end last heard the other, aged by how old its heartbeat is.
    const heardAgo = (by: MemberId, about: MemberId): number => {
      const w = this.members.get(by);
      const ms = w?.frame.view[about];
      return w && ms !== undefined ? ms + (now - w.atMs) : Infinity;
    };
    const ms = Math.min(heardAgo(to, from), heardAgo(from, to));
    if (ms < inactiveAfterIntervals * this.options.heartbeatMs) return { from, to, state: 'up' };
    return { from, to, state: a.epoch === epoch && b.epoch === epoch ? 'idle' : 'down' };
  }

  private headApplied(status: ControllerStatus): number {
    const head = status.chain[0];
    if (head === undefined) return 0;
    return this.members.get(head)?.frame.appliedVersion ?? status.members[head]?.appliedVersion ?? 0;
  }

  private watchSync(w: MemberWatch, prev: MemberWatch | null, prevState: string | null, now: number): void {
    const { frame } = w;
    const id = frame.id;
    const head = this.headApplied(this.options.status());
    if (frame.state === 'syncing' && prevState !== 'syncing') {
      const fromVersion = prev?.frame.appliedVersion ?? frame.appliedVersion;
      w.sync = { startedAtMs: now, fromVersion, lastProgressAtMs: now, lastProgressVersion: frame.appliedVersion };
      this.event('sync-start', id, `${id} syncing from v${fromVersion} (head at v${head})`, { fromVersion, targetVersion: head });
      return;
    }
    if (frame.state === 'syncing' && w.sync) {
      const s = w.sync;
      if (now - s.lastProgressAtMs >= syncProgressEveryMs && frame.appliedVersion > s.lastProgressVersion) {
        const share = progress(s.fromVersion, frame.appliedVersion, head);
        s.lastProgressAtMs = now;
        s.lastProgressVersion = frame.appliedVersion;
        this.event('sync-progress', id, `${id} at v${frame.appliedVersion} of v${head} (${Math.round(share * 100)}%)`, {
          appliedVersion: frame.appliedVersion,
          targetVersion: head,
          progress: share,
        });
      }
      return;
    }
    if (prevState === 'syncing' && w.sync) {
      const durationMs = Math.round(now - w.sync.startedAtMs);
      const done = frame.state === 'serving';
      this.event(
        'sync-end',
        id,
        done ? `${id} caught up at v${frame.appliedVersion} after ${durationMs} ms: serving` : `${id} stopped syncing (${frame.state}) at v${frame.appliedVersion}`,
        { appliedVersion: frame.appliedVersion, durationMs, caughtUp: done },
      );
      w.sync = null;
    }
  }

  private watchIo(id: MemberId, w: MemberWatch, stats: IoStats, now: number): void {
    const prev = w.io;
    w.io = { atMs: now, stats };
    if (!prev) return;
    const newErrors = stats.errors - prev.stats.errors;
    if (newErrors > 0) {
      this.event('io-error', id, `${newErrors} I/O request${newErrors === 1 ? '' : 's'} failed at ${id} (${stats.errors} in all)`, {
        errors: newErrors,
        total: stats.errors,
      });
    }
    const seconds = (now - prev.atMs) / 1000;
    // An extra heartbeat right after another (on a state change) makes a poor rate: keep the last.
    if (seconds < 0.05) return;
    const rate = (a: number, b: number) => Math.max(0, a - b) / seconds;
    this.io = {
      iops: round2(rate(stats.ops, prev.stats.ops)),
      readMBps: round2(rate(stats.readBytes, prev.stats.readBytes) / 1e6),
      writeMBps: round2(rate(stats.writeBytes, prev.stats.writeBytes) / 1e6),
      latencyMsP50: stats.latencyMsP50,
      latencyMsP99: stats.latencyMsP99,
      errors: stats.errors,
    };
    this.ioAtMs = now;
  }

  private machineState(machine: MachineName, node: string, value: string, event: string | null): void {
    const key = `${machine}:${node}`;
    const from = this.machineValues.get(key) ?? null;
    if (from === value) return;
    this.machineValues.set(key, value);
    this.options.record({ kind: 'state', node, machine, value, from, event });
  }

  private event(type: TraceEventType, node: string | null, text: string, data?: TraceEvent['data']): void {
    this.options.record({ kind: 'event', type, node, text, ...(data ? { data } : {}) });
  }
}

function progress(from: number, at: number, target: number): number {
  if (target <= from) return 1;
  return Math.min(1, Math.max(0, (at - from) / (target - from)));
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
