/**
 * actors/controller-link.ts in the simulator: a member dials the controller, heartbeats every T
 * with its state and its gossip view, beats at once when its machine changes state, and takes
 * the configurations that come back.
 */
import type { ConfigFrame, HeartbeatFrame, MemberId, Role } from '../protocol/frames.js';
import type { SimEnv } from './env.js';
import { SimDialer } from './network.js';
import type { Task } from './scheduler.js';

export const controllerId = 'ctl';

/** When this process last heard each peer (PeerSightings). */
export class Sightings {
  private readonly lastHeardMs = new Map<MemberId, number>();

  constructor(private readonly now: () => number) {}

  heard(id: MemberId): void {
    this.lastHeardMs.set(id, this.now());
  }

  forget(id: MemberId): void {
    this.lastHeardMs.delete(id);
  }

  view(): Record<MemberId, number> {
    const view: Record<MemberId, number> = {};
    for (const [id, t] of this.lastHeardMs) view[id] = Math.round(this.now() - t);
    return view;
  }
}

export interface ControllerLinkOptions {
  owner: { readonly alive: boolean; readonly id: MemberId };
  role: Exclude<Role, 'controller'>;
  state: () => Pick<HeartbeatFrame, 'epoch' | 'state' | 'appliedVersion' | 'durableVersion'>;
  sightings: Sightings;
  onConfig: (config: ConfigFrame) => void;
  machine: { getSnapshot(): { value: unknown }; subscribe(listener: (snapshot: { value: unknown }) => void): { unsubscribe(): void } };
}

export class SimControllerLink {
  private readonly link: SimDialer;
  private timer: Task | null = null;
  private readonly subscription: { unsubscribe(): void };
  private closed = false;

  constructor(
    private readonly env: SimEnv,
    private readonly options: ControllerLinkOptions,
  ) {
    const { owner, role } = options;
    const T = env.params.heartbeatMs;
    this.link = new SimDialer(
      env.net,
      owner,
      'sim://controller',
      controllerId,
      () => ({ t: 'hello', role, id: owner.id, clusterId: env.params.clusterId, epoch: options.state().epoch }),
      env.rng,
      {
        reconnectMinMs: env.params.reconnectMinMs,
        // As the real link: a restarted controller hears from every member within a beat or two.
        reconnectMaxMs: Math.max(env.params.reconnectMinMs, T),
        stableLinkMs: env.params.stableLinkMs,
        helloTimeoutMs: env.params.helloTimeoutMs,
      },
    );
    this.link.handlers.up = () => this.beat();
    this.link.handlers.batch = (frames) => {
      for (const frame of frames) {
        if (frame.t === 'config') options.onConfig(frame);
      }
    };
    // setInterval: a little drift, so members do not beat in lockstep.
    const arm = () => {
      this.timer = env.sched.after(T * env.rng.real(0.98, 1.02), () => {
        if (!owner.alive || this.closed) return;
        this.beat();
        arm();
      });
    };
    arm();
    let lastValue = options.machine.getSnapshot().value;
    this.subscription = options.machine.subscribe((snapshot) => {
      if (snapshot.value === lastValue) return;
      const changed = typeof snapshot.value === 'string' || JSON.stringify(snapshot.value) !== JSON.stringify(lastValue);
      lastValue = snapshot.value;
      if (changed && owner.alive && !this.closed) this.beat();
    });
  }

  get isUp(): boolean {
    return this.link.isUp;
  }

  close(): void {
    this.closed = true;
    this.env.sched.cancel(this.timer);
    this.subscription.unsubscribe();
    this.link.close();
  }

  private beat(): void {
    if (!this.link.isUp) return;
    this.link.send({ t: 'heartbeat', id: this.options.owner.id, role: this.options.role, ...this.options.state(), view: this.options.sightings.view() });
  }
}
