/**
 * actors/driver.ts in the simulator: the real driver machine with a dialed link per chain
 * member and a controller link. The NBD side (actors/replicated-volume.ts) is the workload: it
 * sends io.* events with its own request ids and gets the machine's `reply` intentions back.
 */
import { createActor, type Actor } from 'xstate';
import { driverMachine, type DriverEmitted, type DriverMachine } from '../machines/driver.js';
import type { AckFrame, ChainMember, Frame, MemberId, ReadReplyFrame } from '../protocol/frames.js';
import { Sightings, SimControllerLink } from './controller-link.js';
import { idOf, type SimEnv } from './env.js';
import { SimDialer } from './network.js';
import { describeFrames } from './trace.js';

export type DriverReply = Extract<DriverEmitted, { type: 'reply' }>;

export class SimDriver {
  alive = true;
  readonly actor: Actor<DriverMachine>;
  private readonly links = new Map<MemberId, SimDialer>();
  private readonly sightings: Sightings;
  private controller: SimControllerLink | null = null;
  /** The NBD side's waiters. */
  onReply: ((e: DriverReply) => void) | null = null;

  constructor(
    private readonly env: SimEnv,
    readonly id: MemberId,
  ) {
    const tickMs = env.params.heartbeatMs;
    this.sightings = new Sightings(() => env.sched.now);
    this.actor = createActor(driverMachine, {
      clock: env.sched.clock(this),
      input: {
        id,
        tickMs,
        // As actors/driver.ts: a write waits out a failover (4T) plus a resync before it gives up.
        writeTimeoutTicks: Math.ceil(30_000 / tickMs),
        readTimeoutTicks: Math.ceil(5_000 / tickMs),
        quorumGraceTicks: Math.ceil((4 * tickMs + 1000) / tickMs),
      },
    });
    this.actor.on('send', (e) => {
      if (this.alive) this.send(e);
    });
    this.actor.on('epochChanged', (e) => {
      if (!this.alive) return;
      env.trace.log(id, `config e${e.epoch} [${e.chain.map((m) => m.id).join(',')}]`);
      this.linkChain(e.chain);
    });
    this.actor.on('staleEpoch', (e) => env.trace.log(id, `${e.from} holds a newer epoch ${e.epoch}`));
    this.actor.on('reply', (e) => {
      if (this.alive) this.onReply?.(e);
    });
    let lastValue: unknown = null;
    this.actor.subscribe({
      next: (s) => {
        if (s.value !== lastValue) {
          lastValue = s.value;
          env.trace.log(id, `state ${String(s.value)} e${s.context.epoch}`);
        }
      },
      error: (err) => env.checker.fail(`the driver's machine threw: ${(err as Error)?.stack ?? String(err)}`),
    });
  }

  start(): void {
    this.actor.start();
    this.controller = new SimControllerLink(this.env, {
      owner: this,
      role: 'driver',
      sightings: this.sightings,
      state: () => {
        const s = this.actor.getSnapshot();
        return { epoch: s.context.epoch, state: String(s.value), appliedVersion: s.context.committedVersion, durableVersion: s.context.durableCommittedVersion };
      },
      onConfig: (config) => this.actor.send({ type: 'config', config }),
      machine: this.actor,
    });
  }

  /** kill -9: the process and its links are gone. */
  crash(): void {
    if (!this.alive) return;
    this.alive = false;
    this.actor.stop();
    this.env.net.crash(this.id);
  }

  get attached(): boolean {
    return this.actor.getSnapshot().matches('attached');
  }

  /** Keep one link per chain member: dial newcomers, drop those that left. */
  private linkChain(chain: ChainMember[]): void {
    for (const [id, link] of this.links) {
      const member = chain.find((m) => m.id === id);
      if (!member || member.url !== link.url) {
        this.links.delete(id);
        this.sightings.forget(id);
        link.close();
      }
    }
    for (const member of chain) if (!this.links.has(member.id)) this.dial(member);
  }

  private dial(member: ChainMember): void {
    const p = this.env.params;
    const link = new SimDialer(
      this.env.net,
      this,
      member.url,
      idOf(member.url),
      () => ({ t: 'hello', role: 'driver', id: this.id, epoch: this.actor.getSnapshot().context.epoch, clusterId: p.clusterId }),
      this.env.rng,
      { reconnectMinMs: p.reconnectMinMs, reconnectMaxMs: p.reconnectMaxMs, stableLinkMs: p.stableLinkMs, helloTimeoutMs: p.helloTimeoutMs },
    );
    this.links.set(member.id, link);
    link.handlers.up = (welcome) => {
      if (this.links.get(member.id) !== link) return;
      this.env.trace.log(this.id, `link to ${member.id} up (a${welcome.appliedVersion} e${welcome.epoch})`);
      this.actor.send({ type: 'link.up', id: member.id, appliedVersion: welcome.appliedVersion });
    };
    link.handlers.down = (reason) => {
      if (this.links.get(member.id) !== link) return;
      this.env.trace.log(this.id, `link to ${member.id} down: ${reason}`);
      this.actor.send({ type: 'link.down', id: member.id });
    };
    link.handlers.batch = (frames) => {
      if (!this.alive) return;
      this.sightings.heard(member.id);
      this.receive(member.id, frames);
    };
  }

  private receive(from: MemberId, frames: Frame[]): void {
    let ack: AckFrame | null = null;
    // As actors/driver.ts: a run of read replies is one event, in order with the rest.
    let replies: ReadReplyFrame[] | null = null;
    const sendReplies = () => {
      if (!replies) return;
      this.actor.send(replies.length === 1 ? { type: 'read.reply', from, frame: replies[0] } : { type: 'read.replies', from, frames: replies });
      replies = null;
    };
    for (const frame of frames) {
      if (frame.t !== 'read-reply' && frame.t !== 'ack') sendReplies();
      switch (frame.t) {
        case 'ack':
          ack = frame;
          break;
        case 'read-reply':
          (replies ??= []).push(frame);
          break;
        case 'error':
          this.actor.send({ type: 'peer.error', from, frame });
          if (frame.epoch !== undefined && frame.epoch < this.actor.getSnapshot().context.epoch) this.passConfigOn(from);
          break;
        case 'config':
          this.actor.send({ type: 'config', config: frame });
          break;
        default:
          break;
      }
    }
    sendReplies();
    if (ack) this.actor.send({ type: 'ack', id: from, epoch: ack.epoch, appliedVersion: ack.appliedVersion, durableVersion: ack.durableVersion });
  }

  private passConfigOn(to: MemberId): void {
    const c = this.actor.getSnapshot().context;
    if (!c.volume || c.chain.length === 0) return;
    this.links.get(to)?.send({ t: 'config', epoch: c.epoch, chain: c.chain, driverId: this.id, volume: c.volume });
  }

  private send(e: Extract<DriverEmitted, { type: 'send' }>): void {
    const link = this.links.get(e.to);
    if (!link?.isUp) {
      this.env.trace.log(this.id, () => `not sent to ${e.to} (link down): ${describeFrames(e.frames as Frame[])}`);
      return;
    }
    for (const frame of e.frames) link.send(frame);
  }

  describe(): string {
    const s = this.actor.getSnapshot();
    const c = s.context;
    const views = Object.entries(c.replicas)
      .map(([id, r]) => `${id}:${r.link}/a${r.appliedVersion}/d${r.durableVersion}`)
      .join(' ');
    return `driver: ${String(s.value)} e${c.epoch} chain [${c.chain.map((m) => m.id).join(',')}] last ${c.lastVersion} committed ${c.committedVersion} durable ${c.durableCommittedVersion} sentToHead ${c.sentToHeadVersion} writes ${c.writes.size} flushes ${c.flushes.length} reads ${c.reads.size} | ${views}`;
  }
}
