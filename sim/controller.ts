/**
 * actors/controller.ts in the simulator: the real controller machine (and its liveness
 * children) with members' links, a state file that survives a crash (a `persist` is durable
 * before anything after it is carried out), and a spawner that starts replacement replicas.
 */
import { createActor, type Actor } from 'xstate';
import { controllerMachine, type ControllerEmitted, type ControllerMachine, type ControllerPersistedState } from '../machines/controller.js';
import type { ChainMember, ConfigFrame, Frame, HelloFrame, MemberId } from '../protocol/frames.js';
import { controllerId } from './controller-link.js';
import { between, driverId, urlOf, type SimEnv } from './env.js';
import type { LinkEnd, Listener } from './network.js';

export class SimController implements Listener {
  alive = true;
  readonly id = controllerId;
  readonly actor: Actor<ControllerMachine>;
  private readonly links = new Map<MemberId, LinkEnd>();

  constructor(
    private readonly env: SimEnv,
    initialChain: ChainMember[],
    resume: ControllerPersistedState | null,
  ) {
    const p = env.params;
    this.actor = createActor(controllerMachine, {
      clock: env.sched.clock(this),
      input: {
        clusterId: p.clusterId,
        volume: { name: p.volumeName, sizeBytes: p.blocks * p.blockBytes },
        chain: initialChain,
        driverId,
        replicaCount: p.replicaCount,
        heartbeatIntervalMs: p.heartbeatMs,
        bootGraceTicks: Math.ceil(p.reconnectMaxMs / p.heartbeatMs) + 1,
        ...(resume ? { resume } : {}),
      },
    });
    this.actor.on('*', (e) => {
      if (this.alive) this.carryOut(e as ControllerEmitted);
    });
    this.actor.subscribe({
      error: (err) => env.checker.fail(`the controller's machine threw: ${(err as Error)?.stack ?? String(err)}`),
    });
  }

  start(): void {
    this.actor.start();
    this.env.net.listen(this.id, this);
  }

  crash(): void {
    if (!this.alive) return;
    this.alive = false;
    this.actor.stop();
    this.env.net.crash(this.id);
  }

  get epoch(): number {
    return this.actor.getSnapshot().context.epoch;
  }

  get chain(): ChainMember[] {
    return this.actor.getSnapshot().context.chain;
  }

  accept(link: LinkEnd, hello: HelloFrame): void {
    const ctx = this.actor.getSnapshot().context;
    link.send({ t: 'welcome', role: 'controller', id: 'controller', epoch: ctx.epoch, appliedVersion: 0 });
    const previous = this.links.get(hello.id);
    if (previous && previous !== link) previous.close('replaced by a new link');
    this.links.set(hello.id, link);
    if (hello.role === 'driver') this.actor.send({ type: 'driver.attach', id: hello.id });
    if (hello.epoch < ctx.epoch && this.isConcerned(hello.id)) link.send(this.currentConfig());
    link.onBatch = (frames) => {
      if (this.alive) this.receive(hello, frames);
    };
    link.onClose = () => {
      if (this.alive && this.links.get(hello.id) === link) this.links.delete(hello.id);
    };
  }

  private receive(hello: HelloFrame, frames: Frame[]): void {
    for (const frame of frames) {
      if (frame.t === 'heartbeat') {
        if (frame.id !== hello.id) continue;
        this.actor.send({ type: 'heartbeat', frame });
      }
    }
  }

  private isConcerned(id: MemberId): boolean {
    const ctx = this.actor.getSnapshot().context;
    return ctx.driverId === id || ctx.chain.some((m) => m.id === id);
  }

  private currentConfig(): ConfigFrame {
    const c = this.actor.getSnapshot().context;
    return { t: 'config', epoch: c.epoch, chain: c.chain, driverId: c.driverId, volume: c.volume };
  }

  private carryOut(e: ControllerEmitted): void {
    const { env } = this;
    switch (e.type) {
      case 'persist':
        env.persisted = structuredClone(e.state);
        break;
      case 'broadcast':
        env.trace.log(this.id, `broadcast config e${e.config.epoch} [${e.config.chain.map((m) => m.id).join(',')}] to ${e.to.join(',')}`);
        for (const id of e.to) this.links.get(id)?.send(e.config);
        break;
      case 'send':
        this.links.get(e.to)?.send(e.frame);
        break;
      case 'spawnReplacement':
        this.spawnReplacement(e.id);
        break;
      case 'cancelReplacement':
        env.trace.log(this.id, `cancel replacement ${e.id}: ${e.reason}`);
        env.replicas.get(e.id)?.stop();
        break;
      case 'retire':
        env.trace.log(this.id, `retire ${e.to}: ${e.reason}`);
        this.links.get(e.to)?.send({ t: 'error', code: 'ERR_NOT_MEMBER', message: e.reason, epoch: e.epoch });
        break;
      case 'refuse':
        this.links.get(e.to)?.send({ t: 'error', code: e.code, message: e.message, epoch: this.actor.getSnapshot().context.epoch });
        break;
      case 'alert':
        env.trace.log(this.id, `ALERT ${e.code} e${e.epoch}: ${e.message}`);
        break;
      case 'probe':
        break;
      case 'stateChanged':
        env.trace.log(this.id, `liveness ${e.member} ${e.state}`);
        break;
    }
  }

  /** LocalSpawner: stop a leftover process of that id, start one on its disk, report it once it listens. */
  private spawnReplacement(id: MemberId): void {
    const { env } = this;
    env.trace.log(this.id, `spawn replacement ${id}`);
    // The child process outlives a controller that dies meanwhile; only its report is lost.
    env.sched.after(between(env, env.params.spawnMs), () => {
      env.replicas.get(id)?.stop();
      env.startReplica(id);
      env.sched.after(between(env, [1, 20]), () => {
        if (!this.alive) return;
        this.actor.send({ type: 'member.joined', member: { id, url: urlOf(id) } });
      });
    });
  }
}
