/**
 * A member's link to the controller: a heartbeat every T carrying this member's state and its
 * view of the peers it hears from (gossip: a member the controller cannot hear but whose
 * neighbours can is not dead), and configurations coming back.
 */
import type { Logger } from 'pino';
import type { LamportClock } from '../protocol/clock.js';
import type { LinkSecurity } from '../protocol/auth.js';
import { DialingLink } from '../protocol/dialer.js';
import { limits } from '../protocol/limits.js';
import type { ConfigFrame, ErrorFrame, HeartbeatFrame, IoStats, MemberId, Role } from '../protocol/frames.js';

/** When this process last heard each peer, for the gossip view in its heartbeats. */
export class PeerSightings {
  private readonly lastHeardMs = new Map<MemberId, number>();

  heard(id: MemberId): void {
    this.lastHeardMs.set(id, performance.now());
  }

  forget(id: MemberId): void {
    this.lastHeardMs.delete(id);
  }

  /** ms since each peer was last heard. */
  view(): Record<MemberId, number> {
    const now = performance.now();
    const view: Record<MemberId, number> = {};
    for (const [id, t] of this.lastHeardMs) view[id] = Math.round(now - t);
    return view;
  }
}

export interface ControllerLinkOptions {
  url: string;
  id: MemberId;
  role: Exclude<Role, 'controller'>;
  clusterId: string;
  /** Cluster secret and TLS trust for the link. */
  security?: LinkSecurity;
  heartbeatMs: number;
  clock: LamportClock;
  log: Logger;
  /** This member's state for its heartbeat. */
  state: () => Pick<HeartbeatFrame, 'epoch' | 'state' | 'appliedVersion' | 'durableVersion'>;
  sightings: PeerSightings;
  onConfig: (config: ConfigFrame) => void;
  onError?: (error: ErrorFrame) => void;
  /**
   * This member's machine: when its state changes, a heartbeat goes out at once instead of up
   * to T later, so the controller (and the visualizer) see every state, even a brief `syncing`.
   */
  machine?: {
    getSnapshot(): { value: unknown };
    subscribe(listener: (snapshot: { value: unknown }) => void): { unsubscribe(): void };
  };
  /** The driver's I/O counters for the visualizer (HeartbeatFrame.io); sampled once per heartbeat. */
  io?: () => IoStats;
}

export class ControllerLink {
  private readonly link: DialingLink;
  private readonly timer: NodeJS.Timeout;
  private readonly subscription: { unsubscribe(): void } | null;

  constructor(private readonly options: ControllerLinkOptions) {
    const { id, role, clusterId } = options;
    this.link = new DialingLink({
      url: options.url,
      hello: () => ({ t: 'hello', role, id, clusterId, epoch: options.state().epoch }),
      clock: options.clock,
      logger: options.log.child({ peer: 'controller' }),
      security: options.security,
      // A restarted controller should hear from every member within a beat or two, not after the
      // link's usual backoff (up to seconds): redial it at most T apart.
      limits: { reconnectMaxMs: Math.max(limits.reconnectMinMs, options.heartbeatMs) },
    });
    this.link.on('up', () => {
      options.log.info({ url: options.url }, 'linked to the controller');
      this.beat();
    });
    this.link.on('down', ({ reason }) => options.log.warn({ reason }, 'lost the controller; I/O goes on, reconfiguration waits for it'));
    this.link.on('batch', (batch) => {
      for (const frame of batch.frames) {
        if (frame.t === 'config') options.onConfig(frame);
        else if (frame.t === 'error') {
          options.log.warn({ code: frame.code, message: frame.message }, 'controller says');
          options.onError?.(frame);
        }
      }
    });
    this.timer = setInterval(() => this.beat(), options.heartbeatMs);
    this.timer.unref();
    let lastValue = options.machine?.getSnapshot().value;
    this.subscription =
      options.machine?.subscribe((snapshot) => {
        // Identity first: this runs on every snapshot (every write), and a flat state is a string.
        if (snapshot.value === lastValue) return;
        const changed = typeof snapshot.value === 'string' || JSON.stringify(snapshot.value) !== JSON.stringify(lastValue);
        lastValue = snapshot.value;
        if (changed) this.beat();
      }) ?? null;
  }

  get isUp(): boolean {
    return this.link.isUp;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.subscription?.unsubscribe();
    await this.link.close();
  }

  private beat(): void {
    if (!this.link.isUp) return;
    const io = this.options.io?.();
    this.link.send({ t: 'heartbeat', id: this.options.id, role: this.options.role, ...this.options.state(), view: this.options.sightings.view(), ...(io ? { io } : {}) });
  }
}
