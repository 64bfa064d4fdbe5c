/**
 * A fault-injecting TCP proxy in front of one member's listening port, for `freebs inject`.
 * Members are told (through the chain's URLs and their --controller address) to dial the proxy,
 * which forwards every connection to the member's real port — so a fault here acts on the
 * member's *inbound* links: everything that dials it.
 *
 * Who dials whom (and so which proxy a link goes through):
 *   driver → every replica (its writes and reads)        : the replica's proxy
 *   replica → its predecessor (SYNC, then live forwarding) : the predecessor's proxy
 *   every member → the controller (heartbeats, configs)    : the controller's proxy
 * A member's own outbound links (to its predecessor, to the controller) go through the other
 * end's proxy and are not touched by a fault on this one.
 *
 * Which member a connection comes from is read from its HTTP upgrade request: authenticated
 * dialers send `x-freebs-id` (protocol/auth.ts). A fault may name sources (`from`); a connection
 * whose source is not known (no secret, the challenge request, HTTP /status) is affected only by
 * faults on every source.
 *
 * Faults:
 *  - partition: nothing is forwarded either way until healed — as when packets vanish and TCP
 *    retransmits: no reset, the connection stays open, bytes wait (bounded by backpressure: the
 *    sender's socket is paused past maxHeldBytes). New connections are accepted and held; the
 *    member's port is not even dialed until the partition heals. On heal, what waited is delivered.
 *  - delay: every chunk waits `ms` before it is passed on, in each direction, order kept.
 *  - drop: the matching open connections are reset (RST) now, once; new ones go through.
 *  - heal: faults on those sources (or all) are lifted.
 */
import net from 'node:net';

export interface FaultProxyOptions {
  /** Who is behind it (for messages). */
  name: string;
  listenHost?: string;
  /** 0: any free port. */
  listenPort?: number;
  targetHost?: string;
  targetPort: number;
  /** Bytes held per direction before the sender is paused. */
  maxHeldBytes?: number;
}

/** Source ids a fault applies to; absent: every connection, known source or not. */
export type SourceFilter = readonly string[] | undefined;

interface Fault {
  partitioned: boolean;
  delayMs: number;
}

const ALL = '*';
/** How much of a connection's first bytes may be read looking for the upgrade request's headers. */
const SNIFF_MAX_BYTES = 16 * 1024;
const DEFAULT_MAX_HELD_BYTES = 4 * 1024 * 1024;

export interface FaultProxyStats {
  connections: number;
  open: number;
  resets: number;
  /** Bytes waiting (partitioned or delayed) right now. */
  heldBytes: number;
}

export class FaultProxy {
  private readonly server: net.Server;
  private readonly faults = new Map<string, Fault>();
  private readonly conns = new Set<ProxiedConnection>();
  private connections = 0;
  private resets = 0;
  private port = 0;
  readonly maxHeldBytes: number;

  constructor(readonly options: FaultProxyOptions) {
    this.maxHeldBytes = options.maxHeldBytes ?? DEFAULT_MAX_HELD_BYTES;
    // Half-open allowed: each direction ends on its own, after what waits in it was delivered.
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
  }

  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.listenPort ?? 0, this.options.listenHost ?? '127.0.0.1', () => {
        this.server.off('error', reject);
        this.port = (this.server.address() as net.AddressInfo).port;
        resolve(this.port);
      });
    });
  }

  get listenPort(): number {
    return this.port;
  }

  get stats(): FaultProxyStats {
    let heldBytes = 0;
    for (const c of this.conns) heldBytes += c.heldBytes;
    return { connections: this.connections, open: this.conns.size, resets: this.resets, heldBytes };
  }

  /** Sources seen on the open connections (null: not known). */
  get openSources(): Array<string | null> {
    return [...this.conns].map((c) => c.source);
  }

  /** Hold everything from `from` (default: everyone) until heal(). */
  partition(from?: SourceFilter): void {
    for (const key of keys(from)) this.faultFor(key).partitioned = true;
    this.kick();
  }

  /** Pass every chunk from and to `from` (default: everyone) on `ms` late. */
  delay(ms: number, from?: SourceFilter): void {
    if (!(ms >= 0)) throw new RangeError(`delay must be ≥ 0 ms, got ${ms}`);
    for (const key of keys(from)) this.faultFor(key).delayMs = ms;
    this.kick();
  }

  /** Reset the matching open connections now; returns how many. */
  drop(from?: SourceFilter): number {
    let n = 0;
    for (const c of [...this.conns]) {
      if (from === undefined || (c.source !== null && from.includes(c.source))) {
        c.reset();
        n++;
      }
    }
    this.resets += n;
    return n;
  }

  /** Lift the faults on `from` (default: all faults, on every source). */
  heal(from?: SourceFilter): void {
    if (from === undefined) this.faults.clear();
    else for (const key of from) this.faults.delete(key);
    this.kick();
  }

  /** The fault in force for a connection from `source`. */
  effective(source: string | null): Fault {
    const all = this.faults.get(ALL);
    const own = source === null ? undefined : this.faults.get(source);
    return {
      partitioned: (all?.partitioned ?? false) || (own?.partitioned ?? false),
      delayMs: Math.max(all?.delayMs ?? 0, own?.delayMs ?? 0),
    };
  }

  async close(): Promise<void> {
    for (const c of [...this.conns]) c.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private faultFor(key: string): Fault {
    let f = this.faults.get(key);
    if (!f) this.faults.set(key, (f = { partitioned: false, delayMs: 0 }));
    return f;
  }

  private kick(): void {
    for (const c of this.conns) c.pump();
  }

  private accept(client: net.Socket): void {
    this.connections++;
    const conn = new ProxiedConnection(this, client, () => this.conns.delete(conn));
    this.conns.add(conn);
  }
}

function keys(from: SourceFilter): string[] {
  return from === undefined ? [ALL] : [...from];
}

interface Chunk {
  data: Buffer;
  arrivedAtMs: number;
}

/** One direction of a connection: what arrived and waits to be written, in order. */
class Pipe {
  readonly queue: Chunk[] = [];
  bytes = 0;
  timer: ReturnType<typeof setTimeout> | null = null;
  /** The destination said write() → false: wait for its 'drain'. */
  blocked = false;
  /** The source ended; end the destination once the queue is empty. */
  ended = false;
}

class ProxiedConnection {
  source: string | null = null;
  private sniffing = true;
  private sniffed = Buffer.alloc(0);
  private upstream: net.Socket | null = null;
  private upstreamReady = false;
  private readonly up = new Pipe(); // client → member
  private readonly down = new Pipe(); // member → client
  private done = false;

  constructor(
    private readonly proxy: FaultProxy,
    private readonly client: net.Socket,
    private readonly onDone: () => void,
  ) {
    client.setNoDelay(true);
    client.on('data', (data: Buffer) => this.fromClient(data));
    client.on('end', () => {
      this.up.ended = true;
      this.finishSniffing();
      this.pump();
    });
    client.on('error', () => this.destroy());
    client.on('close', (hadError) => (hadError ? this.destroy() : this.closedCleanly()));
    client.on('drain', () => {
      this.down.blocked = false;
      this.pump();
    });
  }

  get heldBytes(): number {
    return this.up.bytes + this.down.bytes;
  }

  /** RST both sides, as a peer that lost the connection would see it. */
  reset(): void {
    if (this.done) return;
    this.client.resetAndDestroy();
    this.upstream?.resetAndDestroy();
    this.destroy();
  }

  destroy(): void {
    if (this.done) return;
    this.done = true;
    for (const pipe of [this.up, this.down]) if (pipe.timer) clearTimeout(pipe.timer);
    this.client.destroy();
    this.upstream?.destroy();
    this.onDone();
  }

  /** One socket closed without error: the connection is done once both are. */
  private closedCleanly(): void {
    if (this.client.destroyed && (this.upstream === null || this.upstream.destroyed)) this.destroy();
  }

  private fromClient(data: Buffer): void {
    if (this.sniffing) {
      this.sniffed = Buffer.concat([this.sniffed, data]);
      // Not an HTTP request (TLS, say): nothing to learn; never wait for headers that will not come.
      const looksHttp = /^[A-Z]{0,10}( |$)/.test(this.sniffed.subarray(0, 11).toString('latin1'));
      const headerEnd = this.sniffed.indexOf('\r\n\r\n');
      if (looksHttp && headerEnd < 0 && this.sniffed.length < SNIFF_MAX_BYTES) return;
      this.finishSniffing();
    } else this.enqueue(this.up, data, this.client);
    this.pump();
  }

  /** The source is whatever the request's x-freebs-id says (null if it says nothing). */
  private finishSniffing(): void {
    if (!this.sniffing) return;
    this.sniffing = false;
    const head = this.sniffed.subarray(0, Math.min(this.sniffed.length, SNIFF_MAX_BYTES)).toString('latin1');
    const m = /\r\nx-freebs-id:[ \t]*([^\r\n]+)/i.exec(head);
    this.source = m ? m[1].trim() : null;
    if (this.sniffed.length > 0) this.enqueue(this.up, this.sniffed, this.client);
    this.sniffed = Buffer.alloc(0);
  }

  private enqueue(pipe: Pipe, data: Buffer, from: net.Socket): void {
    pipe.queue.push({ data, arrivedAtMs: Date.now() });
    pipe.bytes += data.length;
    // Past the bound the sender waits, like a full TCP window.
    if (pipe.bytes > this.proxy.maxHeldBytes) from.pause();
  }

  /** Move what may move now, in both directions. */
  pump(): void {
    if (this.done || this.sniffing) return;
    const fault = this.proxy.effective(this.source);
    if (fault.partitioned) return;
    if (!this.upstream) {
      this.connectUpstream();
      return;
    }
    if (!this.upstreamReady) return;
    this.flow(this.up, this.upstream, this.client, fault.delayMs);
    this.flow(this.down, this.client, this.upstream, fault.delayMs);
  }

  private flow(pipe: Pipe, to: net.Socket, from: net.Socket, delayMs: number): void {
    if (pipe.timer) return;
    const now = Date.now();
    while (pipe.queue.length > 0 && !pipe.blocked) {
      const head = pipe.queue[0];
      const dueAtMs = head.arrivedAtMs + delayMs;
      if (dueAtMs > now) {
        pipe.timer = setTimeout(() => {
          pipe.timer = null;
          this.pump();
        }, dueAtMs - now);
        return;
      }
      pipe.queue.shift();
      pipe.bytes -= head.data.length;
      if (to.destroyed) continue;
      if (!to.write(head.data)) pipe.blocked = true;
    }
    if (pipe.bytes <= this.proxy.maxHeldBytes / 2 && from.isPaused()) from.resume();
    if (pipe.queue.length === 0 && pipe.ended && !to.writableEnded && !to.destroyed) to.end();
  }

  private connectUpstream(): void {
    const { targetHost, targetPort } = this.proxy.options;
    const upstream = net.connect({ host: targetHost ?? '127.0.0.1', port: targetPort, allowHalfOpen: true });
    this.upstream = upstream;
    upstream.setNoDelay(true);
    upstream.on('connect', () => {
      this.upstreamReady = true;
      this.pump();
    });
    upstream.on('data', (data: Buffer) => {
      this.enqueue(this.down, data, upstream);
      this.pump();
    });
    upstream.on('end', () => {
      this.down.ended = true;
      this.pump();
    });
    upstream.on('drain', () => {
      this.up.blocked = false;
      this.pump();
    });
    upstream.on('error', () => this.destroy());
    upstream.on('close', (hadError) => (hadError ? this.destroy() : this.closedCleanly()));
  }
}
