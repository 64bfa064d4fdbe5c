/**
 * The simulated network: links with the semantics of protocol/link.ts and dialer.ts, in memory.
 *
 * A link is a TCP/WebSocket connection: reliable and FIFO each way while it lasts; frames sent in
 * one turn (one scheduler step) travel as one batch. Faults do what they do to TCP: a link breaks
 * (frames in flight are lost, each side notices after its own delay), a partition breaks every
 * link across it and refuses new ones until it heals, a slow link delays everything behind it.
 * Reordering happens between links (an ack on one, a config on another), never within one.
 */
import type { Frame, HelloFrame, MemberId, WelcomeFrame } from '../protocol/frames.js';
import type { Rng } from './rng.js';
import type { Scheduler, Task } from './scheduler.js';
import { describeFrames, type Trace } from './trace.js';

/** A process that accepts links (replicas, the controller). */
export interface Listener {
  readonly alive: boolean;
  /** A peer dialed and said hello: answer with a welcome (or an error) on `end`, first. */
  accept(end: LinkEnd, hello: HelloFrame): void;
}

export interface NetworkOptions {
  /** Base one-way latency of a directed pair, drawn once per pair. */
  baseLatencyMs: [number, number];
  /** Chance that one batch is delayed by a spike of spikeMs. */
  spikeChance: number;
  spikeMs: [number, number];
  /** How long a side takes to notice a broken link (RST at once … a keepalive timeout). */
  detectMs: [number, number];
  /** A dial into a partition fails after this long (no SYN-ACK, no welcome). */
  connectTimeoutMs: number;
}

export const defaultNetworkOptions: NetworkOptions = {
  baseLatencyMs: [0.05, 1.5],
  spikeChance: 0.01,
  spikeMs: [2, 60],
  detectMs: [1, 1500],
  connectTimeoutMs: 5000,
};

function pairKey(a: MemberId, b: MemberId): string {
  return a < b ? `${a}|${b}` : `${b}|${a}`;
}

export class Conn {
  /** False once broken or closed: nothing more is delivered (except what a graceful close drains). */
  open = true;
  readonly a: LinkEnd;
  readonly b: LinkEnd;

  constructor(
    readonly net: Network,
    readonly id: number,
    dialer: MemberId,
    acceptor: MemberId,
  ) {
    this.a = new LinkEnd(this, dialer, acceptor);
    this.b = new LinkEnd(this, acceptor, dialer);
  }

  other(end: LinkEnd): LinkEnd {
    return end === this.a ? this.b : this.a;
  }
}

/** One side of a link: what the process holds (the Link of protocol/link.ts). */
export class LinkEnd {
  onBatch: ((frames: Frame[]) => void) | null = null;
  onClose: ((reason: string) => void) | null = null;
  /** This side knows the link is gone (its 'close' fired, or it closed it). */
  private closedSeen = false;
  private closeNotified = false;
  private outbox: Frame[] = [];
  /** FIFO: the last delivery time scheduled from this side. */
  lastDeliverAt = 0;
  /** After a graceful close from this side: batches already sent still arrive up to here. */
  drainUntil = -1;

  constructor(
    readonly conn: Conn,
    readonly self: MemberId,
    readonly peer: MemberId,
  ) {}

  get isOpen(): boolean {
    return !this.closedSeen;
  }

  /** Queue a frame for this turn's batch. Silently lost if the link broke and we do not know yet. */
  send(frame: Frame): boolean {
    if (this.closedSeen) return false;
    if (!this.conn.open) return true;
    // A copy: the sender may change its object later (the driver restamps epochs on resend).
    this.outbox.push({ ...frame } as Frame);
    if (this.outbox.length === 1) this.conn.net.sched.defer(() => this.flushOutbox());
    return true;
  }

  /** Close from this side: what was sent still arrives, then both sides see 'close'. */
  close(reason = 'closed'): void {
    if (this.closedSeen) return;
    this.flushOutbox();
    this.closedSeen = true;
    if (!this.conn.open) return;
    const net = this.conn.net;
    this.conn.open = false;
    net.forget(this.conn);
    this.drainUntil = this.lastDeliverAt;
    const other = this.conn.other(this);
    const rtt = net.latency(this.self, this.peer) + net.latency(this.peer, this.self);
    net.sched.after(Math.max(this.lastDeliverAt - net.sched.now, 0) + rtt, () => this.notifyClose(reason));
    net.sched.after(Math.max(this.lastDeliverAt - net.sched.now, 0) + net.latency(this.self, this.peer), () => other.notifyClose(reason));
  }

  /** The link is gone: tell this side's owner (once). */
  notifyClose(reason: string): void {
    if (this.closeNotified) return;
    this.closeNotified = true;
    this.closedSeen = true;
    this.outbox.length = 0;
    this.onClose?.(reason);
  }

  private flushOutbox(): void {
    if (this.outbox.length === 0) return;
    const frames = this.outbox;
    this.outbox = [];
    if (!this.conn.open) return;
    const net = this.conn.net;
    const at = Math.max(net.sched.now + net.latency(this.self, this.peer), this.lastDeliverAt);
    this.lastDeliverAt = at;
    const other = this.conn.other(this);
    net.sched.at(at, () => {
      if (!this.conn.open && at > this.drainUntil) return;
      if (other.closeNotified) return;
      net.trace.log(other.self, () => `← ${this.self} #${this.conn.id}: ${describeFrames(frames)}`);
      other.onBatch?.(frames);
    });
  }
}

export class Network {
  private readonly listeners = new Map<MemberId, Listener>();
  private readonly blocked = new Set<string>();
  /** Partitions: each set is cut off from every node outside it (nodes started later included). */
  private readonly islands = new Set<ReadonlySet<MemberId>>();
  private readonly conns = new Set<Conn>();
  private readonly baseLatency = new Map<string, number>();
  /** Directed pairs made slow by a fault: latency × factor until a time. */
  private readonly slow = new Map<string, { factor: number; untilMs: number }>();
  private nextConnId = 1;

  constructor(
    readonly sched: Scheduler,
    private readonly rng: Rng,
    readonly trace: Trace,
    readonly options: NetworkOptions = defaultNetworkOptions,
  ) {}

  listen(id: MemberId, listener: Listener): void {
    this.listeners.set(id, listener);
  }

  unlisten(id: MemberId, listener: Listener): void {
    if (this.listeners.get(id) === listener) this.listeners.delete(id);
  }

  isBlocked(a: MemberId, b: MemberId): boolean {
    if (this.blocked.has(pairKey(a, b))) return true;
    for (const island of this.islands) if (island.has(a) !== island.has(b)) return true;
    return false;
  }

  /** One-way latency of the next batch from `from` to `to`. */
  latency(from: MemberId, to: MemberId): number {
    const key = `${from}>${to}`;
    let base = this.baseLatency.get(key);
    if (base === undefined) {
      base = this.rng.real(this.options.baseLatencyMs[0], this.options.baseLatencyMs[1]);
      this.baseLatency.set(key, base);
    }
    let ms = base * (1 + this.rng.next());
    if (this.rng.chance(this.options.spikeChance)) ms += this.rng.real(this.options.spikeMs[0], this.options.spikeMs[1]);
    const slow = this.slow.get(key);
    if (slow && slow.untilMs > this.sched.now) ms *= slow.factor;
    return ms;
  }

  /** Make from→to slow for a while. */
  slowDown(from: MemberId, to: MemberId, factor: number, forMs: number): void {
    this.slow.set(`${from}>${to}`, { factor, untilMs: this.sched.now + forMs });
  }

  /** Dial: calls `done` with the dialer's end once the acceptor has it, or with null and why. */
  connect(from: MemberId, to: MemberId, hello: HelloFrame, done: (end: LinkEnd | null, reason: string) => void): void {
    const blockedNow = this.isBlocked(from, to);
    const oneWay = this.latency(from, to);
    this.sched.after(blockedNow ? this.options.connectTimeoutMs : oneWay, () => {
      if (this.isBlocked(from, to)) {
        if (blockedNow) done(null, 'connect timed out (partition)');
        else this.sched.after(this.options.connectTimeoutMs, () => done(null, 'connect timed out (partition)'));
        return;
      }
      const listener = this.listeners.get(to);
      if (!listener || !listener.alive) {
        const back = this.latency(to, from);
        this.sched.after(back, () => done(null, 'connection refused'));
        return;
      }
      const conn = new Conn(this, this.nextConnId++, from, to);
      this.conns.add(conn);
      this.trace.log(to, () => `accepts #${conn.id} from ${from} (${hello.role} e${hello.epoch})`);
      done(conn.a, '');
      listener.accept(conn.b, hello);
    });
  }

  /** Break a link as a fault: frames in flight are lost; each side notices after its own delay. */
  breakConn(conn: Conn, reason: string): void {
    if (!conn.open) return;
    conn.open = false;
    this.conns.delete(conn);
    this.trace.log('net', `link #${conn.id} ${conn.a.self}→${conn.b.self} breaks: ${reason}`);
    for (const end of [conn.a, conn.b]) {
      this.sched.after(this.rng.real(this.options.detectMs[0], this.options.detectMs[1]), () => end.notifyClose(reason));
    }
  }

  /** A process died: its links break; a peer notices soon (the host answers RST) or late (host gone). */
  crash(id: MemberId): void {
    this.listeners.delete(id);
    for (const conn of [...this.conns]) {
      if (conn.a.self !== id && conn.b.self !== id) continue;
      conn.open = false;
      this.conns.delete(conn);
      const peer = conn.a.self === id ? conn.b : conn.a;
      const rst = this.rng.chance(0.7);
      this.sched.after(rst ? this.latency(id, peer.self) : this.rng.real(this.options.detectMs[0], this.options.detectMs[1]), () =>
        peer.notifyClose(`${id} crashed`),
      );
    }
  }

  /** Partition a from b (both ways): links between them break, new ones fail until healed. */
  block(a: MemberId, b: MemberId): void {
    this.blocked.add(pairKey(a, b));
    for (const conn of [...this.conns]) {
      if ((conn.a.self === a && conn.b.self === b) || (conn.a.self === b && conn.b.self === a)) this.breakConn(conn, 'partition');
    }
  }

  unblock(a: MemberId, b: MemberId): void {
    this.blocked.delete(pairKey(a, b));
  }

  /** Cut `members` off from everyone else until the returned function is called. */
  isolate(members: readonly MemberId[]): () => void {
    const island: ReadonlySet<MemberId> = new Set(members);
    this.islands.add(island);
    for (const conn of [...this.conns]) {
      if (island.has(conn.a.self) !== island.has(conn.b.self)) this.breakConn(conn, 'partition');
    }
    return () => {
      this.islands.delete(island);
    };
  }

  healAll(): void {
    this.blocked.clear();
    this.islands.clear();
    this.slow.clear();
  }

  /** Open links, oldest first (for faults that pick one). */
  openConns(): Conn[] {
    return [...this.conns].filter((c) => c.open);
  }

  forget(conn: Conn): void {
    this.conns.delete(conn);
  }
}

export interface DialerOptions {
  reconnectMinMs: number;
  reconnectMaxMs: number;
  stableLinkMs: number;
  helloTimeoutMs: number;
}

export interface DialerHandlers {
  up?: (welcome: WelcomeFrame, end: LinkEnd) => void;
  down?: (reason: string) => void;
  batch?: (frames: Frame[]) => void;
}

/**
 * protocol/dialer.ts's DialingLink: dial, hello, wait for welcome, and after any loss redial with
 * exponential backoff and equal jitter until close(). Frames sent while down are dropped.
 */
export class SimDialer {
  private state: 'dialing' | 'greeting' | 'up' | 'waiting' | 'closed' = 'dialing';
  private end: LinkEnd | null = null;
  private failures = 0;
  private upSinceMs = 0;
  private timer: Task | null = null;
  readonly handlers: DialerHandlers = {};

  constructor(
    private readonly net: Network,
    private readonly owner: { readonly alive: boolean; readonly id: MemberId },
    readonly url: string,
    readonly target: MemberId,
    private readonly hello: () => HelloFrame,
    private readonly rng: Rng,
    private readonly options: DialerOptions,
  ) {
    this.dial();
  }

  get isUp(): boolean {
    return this.state === 'up';
  }

  send(frame: Frame): boolean {
    return this.state === 'up' && this.end !== null ? this.end.send(frame) : false;
  }

  /** Stop redialing and close the current link; no 'down' follows. */
  close(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.net.sched.cancel(this.timer);
    const end = this.end;
    this.end = null;
    end?.close('dialer closed');
  }

  private dial(): void {
    if (!this.owner.alive || this.state === 'closed') return;
    this.state = 'dialing';
    this.net.connect(this.owner.id, this.target, this.hello(), (end, reason) => {
      if (!this.owner.alive) return;
      if (this.state === 'closed') {
        end?.close('dialer closed');
        return;
      }
      if (!end) return this.attemptFailed(reason);
      this.state = 'greeting';
      this.end = end;
      const welcomeTimer = this.net.sched.after(this.options.helloTimeoutMs, () => {
        if (this.end === end && this.state === 'greeting') end.close('no welcome');
      });
      end.onBatch = (frames) => {
        if (!this.owner.alive || this.end !== end) return;
        if (this.state === 'greeting') {
          this.net.sched.cancel(welcomeTimer);
          const first = frames[0];
          if (first?.t !== 'welcome') {
            end.close(first?.t === 'error' ? `refused: ${first.code}` : 'bad first frame');
            return;
          }
          this.state = 'up';
          this.upSinceMs = this.net.sched.now;
          this.handlers.up?.(first, end);
          if (frames.length > 1 && this.end === end && end.isOpen) this.handlers.batch?.(frames.slice(1));
          return;
        }
        this.handlers.batch?.(frames);
      };
      end.onClose = (why) => {
        this.net.sched.cancel(welcomeTimer);
        if (!this.owner.alive || this.end !== end) return;
        this.end = null;
        if (this.state === 'up') this.down(why);
        else this.attemptFailed(why);
      };
    });
  }

  private down(reason: string): void {
    if (this.net.sched.now - this.upSinceMs >= this.options.stableLinkMs) this.failures = 0;
    else this.failures++;
    this.state = 'waiting';
    const delayMs = this.nextDelayMs();
    this.handlers.down?.(reason);
    if (this.state === 'waiting') this.timer = this.net.sched.after(delayMs, () => this.dial());
  }

  private attemptFailed(_reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'waiting';
    this.failures++;
    this.timer = this.net.sched.after(this.nextDelayMs(), () => this.dial());
  }

  private nextDelayMs(): number {
    const exp = Math.min(this.failures, 20);
    const baseMs = Math.min(this.options.reconnectMaxMs, this.options.reconnectMinMs * 2 ** exp);
    return Math.max(this.options.reconnectMinMs, baseMs / 2 + this.rng.next() * (baseMs / 2));
  }
}
