/**
 * The controller process: the controller machine wired to the members' links, its persisted
 * state, and a spawner for replacement replicas. Members dial the controller and heartbeat
 * every T; the controller answers with configurations.
 *
 * Order, as the machine requires: a `persist` is written (synchronously, fsync'd) before
 * anything emitted after it is carried out.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { createActor, type Actor } from 'xstate';
import { controllerMachine, controllerStatus, type ControllerEmitted, type ControllerMachine } from '../machines/controller.js';
import { LamportClock } from '../protocol/clock.js';
import type { ChainMember, ConfigFrame, Frame, HelloFrame, MemberId } from '../protocol/frames.js';
import type { Link } from '../protocol/link.js';
import type { LinkSecurity } from '../protocol/auth.js';
import { limits } from '../protocol/limits.js';
import { LinkServer } from '../protocol/server.js';
import { loadControllerState, saveControllerState } from './controller-state.js';
import { controllerGauges, MemberMetrics } from './metrics.js';
import { Visualizer } from './visualizer.js';

/** What GET /status answers (and `freebs status` prints). */
export type { ControllerStatus, MemberStatus } from '../machines/controller.js';

/** Starts replacement replicas. Local processes by default; other environments plug in their own. */
export interface ReplicaSpawner {
  /** Start a replica with this id; resolve with where it accepts links once it listens. */
  spawn(id: MemberId): Promise<ChainMember>;
  /** Stop a replacement that is no longer wanted (best effort). */
  cancel(id: MemberId): void;
}

export interface ControllerOptions {
  clusterId: string;
  /** Cluster secret and TLS for every link (protocol/auth.ts); none: unauthenticated, dev only. */
  security?: LinkSecurity;
  /** Where the controller keeps controller.json. */
  stateDir: string;
  host: string;
  port: number;
  volume: ConfigFrame['volume'];
  /** The chain to start with when there is no persisted state. */
  chain: ChainMember[];
  driverId: MemberId;
  replicaCount: number;
  heartbeatMs: number;
  spawner: ReplicaSpawner | null;
  log: Logger;
  /** Extra HTTP routes (the visualizer's page); /status is always served. */
  httpHandler?: (req: IncomingMessage, res: ServerResponse) => boolean;
}

export class ControllerProcess {
  readonly actor: Actor<ControllerMachine>;
  private readonly server: LinkServer;
  private readonly links = new Map<MemberId, Link>();
  private readonly clock = new LamportClock();
  private readonly metrics = new MemberMetrics('controller', 'controller');
  private readonly heartbeatsMissed = this.metrics.counter('freebs_heartbeats_missed_total', 'Times a member went inactive (2T without a heartbeat)', ['peer']);
  private readonly reconfigurations = this.metrics.counter('freebs_reconfigurations_total', 'New chain configurations (epochs) broadcast');
  private closed = false;
  /** The page at / and its live trace (actors/visualizer.ts). */
  readonly viz: Visualizer;
  private listenUrl = '';

  private constructor(private readonly options: ControllerOptions) {
    const resume = loadControllerState(options.stateDir);
    if (resume) options.log.info({ epoch: resume.epoch, chain: resume.chain.map((m) => m.id) }, 'resuming from persisted state');
    this.viz = new Visualizer({
      heartbeatMs: options.heartbeatMs,
      status: () => this.status(),
      linked: () => new Set(this.links.keys()),
      source: () => this.listenUrl,
      log: options.log.child({ component: 'viz' }),
    });
    this.actor = createActor(controllerMachine, {
      inspect: this.viz.inspect,
      input: {
        clusterId: options.clusterId,
        volume: options.volume,
        chain: options.chain,
        driverId: options.driverId,
        replicaCount: options.replicaCount,
        heartbeatIntervalMs: options.heartbeatMs,
        // Members redial a lost controller with backoff (at most limits.reconnectMaxMs apart): give
        // them that long, plus a beat, to report in before their silence counts.
        bootGraceTicks: Math.ceil(limits.reconnectMaxMs / options.heartbeatMs) + 1,
        ...(resume ? { resume } : {}),
      },
    });
    this.actor.on('*', (e) => {
      this.carryOut(e as ControllerEmitted);
      this.viz.emitted(e as ControllerEmitted);
    });
    controllerGauges(this.metrics, () => this.status());
    this.server = new LinkServer({
      localId: 'controller',
      clusterId: options.clusterId,
      security: options.security,
      host: options.host,
      port: options.port,
      clock: this.clock,
      logger: options.log,
      onLink: (link, hello) => this.accept(link, hello),
      httpHandler: (req, res) => this.http(req, res),
      upgradeHandler: (req, socket, head) => this.viz.upgrade(req, socket, head),
    });
  }

  static async start(options: ControllerOptions): Promise<{ controller: ControllerProcess; port: number }> {
    const controller = new ControllerProcess(options);
    controller.actor.start();
    const { port } = await controller.server.listen();
    controller.listenUrl = `http://${options.host.includes(':') ? `[${options.host}]` : options.host}:${port}/`;
    controller.viz.start();
    options.log.info({ port, epoch: controller.actor.getSnapshot().context.epoch }, 'controller listening');
    return { controller, port };
  }

  status() {
    return controllerStatus(this.actor.getSnapshot().context);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.viz.close();
    this.actor.stop();
    await this.server.close();
  }

  private get log(): Logger {
    return this.options.log;
  }

  private accept(link: Link, hello: HelloFrame): void {
    const ctx = this.actor.getSnapshot().context;
    link.send({ t: 'welcome', role: 'controller', id: 'controller', epoch: ctx.epoch, appliedVersion: 0 });
    const previous = this.links.get(hello.id);
    if (previous && previous !== link) void previous.close();
    this.links.set(hello.id, link);
    this.viz.linkChanged(hello.id, true);
    this.log.info({ member: hello.id, role: hello.role, epoch: hello.epoch }, 'member linked');
    if (hello.role === 'driver') this.actor.send({ type: 'driver.attach', id: hello.id });
    // A member with an older epoch learns the current configuration at once.
    if (hello.epoch < ctx.epoch && this.isConcerned(hello.id)) link.send(this.currentConfig());
    link.on('batch', (batch) => this.receive(hello, batch.frames));
    link.on('close', () => {
      if (this.links.get(hello.id) !== link) return;
      this.links.delete(hello.id);
      this.viz.linkChanged(hello.id, false);
    });
  }

  private receive(hello: HelloFrame, frames: Frame[]): void {
    for (const frame of frames) {
      if (frame.t === 'heartbeat') {
        // The link says who this is; a heartbeat claiming another id is not believed.
        if (frame.id !== hello.id) {
          this.log.warn({ link: hello.id, claimed: frame.id }, 'heartbeat with another member id ignored');
          continue;
        }
        this.viz.heartbeat(frame);
        this.actor.send({ type: 'heartbeat', frame });
      } else if (frame.t === 'error') {
        this.log.warn({ member: hello.id, code: frame.code, message: frame.message }, 'member reported an error');
        this.viz.memberError(hello.id, frame);
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
    switch (e.type) {
      case 'persist':
        saveControllerState(this.options.stateDir, e.state);
        break;
      case 'broadcast':
        this.reconfigurations.inc();
        this.log.info({ epoch: e.config.epoch, chain: e.config.chain.map((m) => m.id) }, 'new configuration');
        for (const id of e.to) this.links.get(id)?.send(e.config);
        break;
      case 'send':
        this.links.get(e.to)?.send(e.frame);
        break;
      case 'spawnReplacement':
        this.spawnReplacement(e.id);
        break;
      case 'cancelReplacement':
        this.log.info({ member: e.id, reason: e.reason }, 'replacement cancelled');
        this.options.spawner?.cancel(e.id);
        break;
      case 'retire':
        this.log.warn({ member: e.to, reason: e.reason }, 'member is not in the chain');
        this.links.get(e.to)?.send({ t: 'error', code: 'ERR_NOT_MEMBER', message: e.reason, epoch: e.epoch });
        break;
      case 'refuse':
        this.log.warn({ member: e.to, code: e.code }, e.message);
        this.links.get(e.to)?.send({ t: 'error', code: e.code, message: e.message, epoch: this.actor.getSnapshot().context.epoch });
        break;
      case 'alert':
        this.log.error({ code: e.code, epoch: e.epoch, members: e.members }, e.message);
        break;
      case 'probe':
        // Gossip in heartbeats is the indirect evidence; nothing more to send.
        this.log.info({ member: e.member, via: e.via }, 'member inactive; waiting on gossip from its peers');
        break;
      case 'stateChanged':
        if (e.state === 'inactive') this.heartbeatsMissed.inc({ peer: e.member });
        this.log.info({ member: e.member, liveness: e.state }, 'liveness changed');
        break;
    }
  }

  private spawnReplacement(id: MemberId): void {
    const spawner = this.options.spawner;
    if (!spawner) {
      this.log.warn({ member: id }, 'a replacement replica is needed but no spawner is configured; start one with `freebs replica --id ' + id + '`');
      return;
    }
    this.log.info({ member: id }, 'starting a replacement replica');
    spawner.spawn(id).then(
      (member) => {
        if (this.closed) return;
        this.log.info({ member: member.id, url: member.url }, 'replacement replica is listening');
        this.actor.send({ type: 'member.joined', member });
      },
      (err: unknown) => this.log.error({ member: id, err: (err as Error).message }, 'replacement replica failed to start'),
    );
  }

  private http(req: IncomingMessage, res: ServerResponse): void {
    if (req.method === 'GET' && (req.url === '/status' || req.url === '/status.json')) {
      const body = JSON.stringify(this.status(), null, 2);
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(body);
      return;
    }
    if (req.method === 'GET' && req.url === '/chain') {
      // Where each chain member accepts links (/status has no addresses): `freebs scrub` reads the
      // replicas' /checksums there.
      const c = this.actor.getSnapshot().context;
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify({ epoch: c.epoch, chain: c.chain }));
      return;
    }
    if (this.metrics.serve(req, res)) return;
    if (this.options.httpHandler?.(req, res)) return;
    if (this.viz.http(req, res)) return;
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found: try / (the visualizer), /status or /metrics\n');
  }
}
