/**
 * The driver process: the driver machine wired to a link per replica and to the NBD server
 * the kernel (or qemu, fio, nbdfuse) talks to.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { createActor, waitFor, type Actor } from 'xstate';
import { driverMachine, type DriverEmitted, type DriverMachine } from '../machines/driver.js';
import type { AckFrame, ChainMember, ConfigFrame, Frame, MemberId, ReadReplyFrame } from '../protocol/frames.js';
import type { LinkSecurity } from '../protocol/auth.js';
import { DialingLink } from '../protocol/dialer.js';
import { LamportClock } from '../protocol/clock.js';
import { NbdServer, type NbdServerOptions } from '../nbd/server.js';
import { ControllerLink, PeerSightings } from './controller-link.js';
import { driverGauges, instrumentVolume, MemberMetrics } from './metrics.js';
import { IoMeter } from './io-meter.js';
import { ReplicatedVolume } from './replicated-volume.js';

export interface DriverOptions {
  id: MemberId;
  clusterId: string;
  /** Cluster secret and TLS for every link (protocol/auth.ts); none: unauthenticated, dev only. */
  security?: LinkSecurity;
  /** Static chain, head first, when there is no controller. */
  chain: ChainMember[];
  /** ws:// address of the controller; with one, the chain comes from its configurations. */
  controllerUrl?: string;
  volume: { name: string; sizeBytes: number };
  nbdHost: string;
  nbdPort: number;
  /** TLS for NBD clients (STARTTLS; see NbdServerOptions.tls). */
  nbdTls?: NbdServerOptions['tls'];
  /** Heartbeat period T; the driver's clock ticks at T. */
  tickMs: number;
  /** Serve GET /status and /metrics here (port 0: any free port; absent: no HTTP). */
  httpPort?: number;
  log: Logger;
}

export class DriverProcess {
  readonly actor: Actor<DriverMachine>;
  readonly volume: ReplicatedVolume;
  private readonly links = new Map<MemberId, DialingLink>();
  private readonly clock = new LamportClock();
  private nbd: NbdServer | null = null;
  private closed = false;
  /** Without a controller the driver hands replicas their (static) configuration. */
  private readonly staticConfig: ConfigFrame | null;
  private controller: ControllerLink | null = null;
  private readonly sightings = new PeerSightings();
  private readonly metrics: MemberMetrics;
  private http: Server | null = null;
  /** IOPS, bytes and latency for the heartbeat (the visualizer's chart). */
  private readonly io = new IoMeter();

  private constructor(private readonly options: DriverOptions) {
    const { tickMs } = options;
    this.metrics = new MemberMetrics('driver', options.id);
    this.actor = createActor(driverMachine, {
      input: {
        id: options.id,
        tickMs,
        // A write waits out a failover (4T) plus a resync before it gives up.
        writeTimeoutTicks: Math.ceil(30_000 / tickMs),
        readTimeoutTicks: Math.ceil(5_000 / tickMs),
        quorumGraceTicks: Math.ceil((4 * tickMs + 1000) / tickMs),
      },
    });
    this.volume = new ReplicatedVolume(this.actor, options.volume.sizeBytes);
    this.actor.on('send', (e) => this.send(e));
    this.actor.on('staleEpoch', (e) => this.log.warn({ epoch: e.epoch, from: e.from }, 'a replica holds a newer epoch than this driver'));
    this.actor.on('epochChanged', (e) => this.linkChain(e.chain));
    this.staticConfig = options.controllerUrl
      ? null
      : { t: 'config', epoch: 1, chain: options.chain, driverId: options.id, volume: options.volume };
  }

  static async start(options: DriverOptions): Promise<{ driver: DriverProcess; nbdPort: number; httpPort: number | null }> {
    const driver = new DriverProcess(options);
    driverGauges(driver.metrics, () => driver.status);
    const httpPort = options.httpPort === undefined ? null : await driver.serveHttp(options.nbdHost, options.httpPort);
    driver.actor.start();
    if (driver.staticConfig) driver.actor.send({ type: 'config', config: driver.staticConfig });
    else driver.linkController(options.controllerUrl!);
    options.log.info('waiting for a configuration and a majority of its replicas');
    await waitFor(driver.actor, (s) => s.matches('attached'), { timeout: Infinity });
    const volume = driver.io.wrap(instrumentVolume(driver.volume, driver.metrics));
    const nbd = new NbdServer({
      catalog: {
        list: () => [{ name: options.volume.name, description: `FreEBS volume ${options.volume.name}` }],
        get: (name) => (name === '' || name === options.volume.name ? volume : undefined),
      },
      logger: options.log.child({ component: 'nbd' }),
      host: options.nbdHost,
      port: options.nbdPort,
      ...(options.nbdTls ? { tls: options.nbdTls } : {}),
    });
    const { port } = await nbd.listen();
    driver.nbd = nbd;
    options.log.info({ port, version: driver.actor.getSnapshot().context.lastVersion }, 'driver attached; NBD export ready');
    return { driver, nbdPort: port, httpPort };
  }

  private serveHttp(host: string, port: number): Promise<number> {
    const http = createServer((req, res) => {
      if (this.metrics.serve(req, res)) return;
      if (req.method === 'GET' && req.url === '/status') {
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(JSON.stringify(this.status));
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found: try /status or /metrics\n');
    });
    this.http = http;
    return new Promise((resolve, reject) => {
      http.once('error', reject);
      http.listen(port, host, () => resolve((http.address() as AddressInfo).port));
    });
  }

  get status() {
    const c = this.actor.getSnapshot().context;
    return {
      id: this.options.id,
      state: String(this.actor.getSnapshot().value),
      epoch: c.epoch,
      lastVersion: c.lastVersion,
      committedVersion: c.committedVersion,
      durableCommittedVersion: c.durableCommittedVersion,
      replicas: c.replicas,
      inFlight: this.volume.inFlight,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Stop taking requests, answer what is pending, then drop the links.
    await this.nbd?.close();
    this.http?.close();
    await this.volume.flush().catch((err: unknown) => this.log.warn({ err }, 'final flush failed'));
    this.actor.send({ type: 'stop' });
    await this.controller?.close();
    await Promise.all([...this.links.values()].map((link) => link.close()));
  }

  private get log(): Logger {
    return this.options.log;
  }

  private linkController(url: string): void {
    this.controller = new ControllerLink({
      url,
      id: this.options.id,
      role: 'driver',
      clusterId: this.options.clusterId,
      security: this.options.security,
      heartbeatMs: this.options.tickMs,
      clock: this.clock,
      log: this.log,
      sightings: this.sightings,
      state: () => {
        const s = this.actor.getSnapshot();
        return { epoch: s.context.epoch, state: String(s.value), appliedVersion: s.context.committedVersion, durableVersion: s.context.durableCommittedVersion };
      },
      onConfig: (config) => this.actor.send({ type: 'config', config }),
      machine: this.actor,
      io: () => this.io.sample(),
    });
  }

  /** Keep one link per chain member: dial newcomers, drop those that left. */
  private linkChain(chain: ChainMember[]): void {
    for (const [id, link] of this.links) {
      const member = chain.find((m) => m.id === id);
      if (!member || member.url !== link.url) {
        this.links.delete(id);
        this.sightings.forget(id);
        void link.close();
      }
    }
    for (const member of chain) if (!this.links.has(member.id)) this.dial(member);
  }

  private dial(member: ChainMember): void {
    const link = new DialingLink({
      url: member.url,
      hello: () => ({ t: 'hello', role: 'driver', id: this.options.id, epoch: this.actor.getSnapshot().context.epoch, clusterId: this.options.clusterId }),
      clock: this.clock,
      logger: this.log.child({ replica: member.id }),
      security: this.options.security,
    });
    this.links.set(member.id, link);
    link.on('up', (welcome) => {
      if (this.links.get(member.id) !== link) return;
      if (this.staticConfig) link.send(this.staticConfig);
      this.actor.send({ type: 'link.up', id: member.id, appliedVersion: welcome.appliedVersion });
    });
    link.on('down', () => {
      if (this.links.get(member.id) === link) this.actor.send({ type: 'link.down', id: member.id });
    });
    link.on('batch', (batch) => {
      this.sightings.heard(member.id);
      this.receive(member.id, batch.frames);
    });
  }

  private receive(from: MemberId, frames: Frame[]): void {
    // Acks are cumulative: only the newest in a batch matters.
    let ack: AckFrame | null = null;
    // Read replies go to the machine together (one step for a batch), in order with the rest.
    let replies: ReadReplyFrame[] | null = null;
    const sendReplies = () => {
      if (!replies) return;
      this.actor.send(replies.length === 1 ? { type: 'read.reply', from, frame: replies[0] } : { type: 'read.replies', from, frames: replies });
      replies = null;
    };
    for (const frame of frames) {
      switch (frame.t) {
        case 'ack':
          ack = frame;
          break;
        case 'read-reply':
          (replies ??= []).push(frame);
          break;
        case 'error':
          sendReplies();
          this.log.warn({ replica: from, code: frame.code, message: frame.message }, 'replica refused');
          this.actor.send({ type: 'peer.error', from, frame });
          // A replica on an older epoch may have missed the controller's config: pass ours on.
          if (!this.staticConfig && frame.epoch !== undefined && frame.epoch < this.actor.getSnapshot().context.epoch) this.passConfigOn(from);
          break;
        case 'config':
          sendReplies();
          // With a refusal, a replica passes on a newer config of the controller's that we missed
          // (the controller died before it reached us); the machine adopts only a newer one.
          if (!this.staticConfig) this.actor.send({ type: 'config', config: frame });
          break;
        default:
          break;
      }
    }
    sendReplies();
    // The link says who sent it; a frame's own id field is not trusted.
    if (ack) this.actor.send({ type: 'ack', id: from, epoch: ack.epoch, appliedVersion: ack.appliedVersion, durableVersion: ack.durableVersion });
  }

  private passConfigOn(to: MemberId): void {
    const c = this.actor.getSnapshot().context;
    if (!c.volume || c.chain.length === 0) return;
    this.links.get(to)?.send({ t: 'config', epoch: c.epoch, chain: c.chain, driverId: this.options.id, volume: c.volume });
  }

  private send(e: Extract<DriverEmitted, { type: 'send' }>): void {
    const link = this.links.get(e.to);
    // A frame that cannot go now is not lost: the machine resends uncommitted writes on link.up.
    if (!link?.isUp) return;
    for (const frame of e.frames) {
      try {
        link.send(frame);
      } catch (err) {
        // A frame the wire refuses is a bug here, not the peer's: keep serving everyone else;
        // the request it carried times out with EIO.
        this.log.error({ err: (err as Error).message, to: e.to, frame: frame.t }, 'could not send a frame');
      }
    }
  }
}
