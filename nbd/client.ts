/**
 * A small NBD client for FreEBS's own tools (the fault-injection verifier, scrub, eval):
 * fixed newstyle handshake with NBD_OPT_GO, simple replies, many requests in flight matched
 * by cookie. Not a general client: no TLS, no structured replies, no block status.
 */
import net from 'node:net';
import * as C from './constants.js';

export class NbdClientError extends Error {
  constructor(
    message: string,
    /** errno from the server's reply (EIO 5, EINVAL 22, ENOSPC 28, ...), or 0 for a client-side failure. */
    readonly errno: number,
  ) {
    super(message);
    this.name = 'NbdClientError';
  }
}

interface Pending {
  resolve: (data: Buffer | undefined) => void;
  reject: (err: Error) => void;
  readBytes: number;
}

const REQUEST_HEADER_BYTES = 28;
const SIMPLE_REPLY_BYTES = 16;

export class NbdClient {
  private buffered: Buffer = Buffer.alloc(0);
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private failure: Error | null = null;

  private constructor(
    private readonly socket: net.Socket,
    readonly sizeBytes: number,
    readonly flags: number,
  ) {
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    const fail = (err: Error) => this.failAll(err);
    socket.on('error', fail);
    socket.on('close', () => fail(new NbdClientError('connection closed', 0)));
  }

  /** Connect to nbd://host:port/export and negotiate with NBD_OPT_GO. */
  static async connect(uri: string, timeoutMs = 10_000): Promise<NbdClient> {
    const u = new URL(uri);
    if (u.protocol !== 'nbd:') throw new NbdClientError(`not an nbd:// URI: ${uri}`, 0);
    const exportName = decodeURIComponent(u.pathname.replace(/^\//, ''));
    const socket = net.connect({ host: u.hostname || '127.0.0.1', port: Number(u.port || 10809) });
    socket.setNoDelay(true);
    const reader = new HandshakeReader(socket, timeoutMs);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      const greeting = await reader.take(18);
      if (greeting.readBigUInt64BE(0) !== C.NBD_INIT_MAGIC || greeting.readBigUInt64BE(8) !== C.NBD_OPTS_MAGIC) {
        throw new NbdClientError(`${uri} is not a newstyle NBD server`, 0);
      }
      const serverFlags = greeting.readUInt16BE(16);
      if (!(serverFlags & C.NBD_FLAG_FIXED_NEWSTYLE)) throw new NbdClientError(`${uri} does not speak fixed newstyle`, 0);
      const noZeroes = serverFlags & C.NBD_FLAG_NO_ZEROES ? C.NBD_FLAG_C_NO_ZEROES : 0;
      const clientFlags = Buffer.alloc(4);
      clientFlags.writeUInt32BE(C.NBD_FLAG_C_FIXED_NEWSTYLE | noZeroes);
      const name = Buffer.from(exportName, 'utf8');
      const optData = Buffer.alloc(4 + name.length + 2);
      optData.writeUInt32BE(name.length, 0);
      name.copy(optData, 4);
      optData.writeUInt16BE(0, 4 + name.length); // no info requests: NBD_INFO_EXPORT always comes
      const opt = Buffer.alloc(16);
      opt.writeBigUInt64BE(C.NBD_OPTS_MAGIC, 0);
      opt.writeUInt32BE(C.NBD_OPT_GO, 8);
      opt.writeUInt32BE(optData.length, 12);
      socket.write(Buffer.concat([clientFlags, opt, optData]));
      let sizeBytes = -1;
      let flags = 0;
      for (;;) {
        const head = await reader.take(20);
        const type = head.readUInt32BE(12);
        const data = await reader.take(head.readUInt32BE(16));
        if (type === C.NBD_REP_ACK) break;
        if (type === C.NBD_REP_INFO && data.readUInt16BE(0) === C.NBD_INFO_EXPORT) {
          sizeBytes = Number(data.readBigUInt64BE(2));
          flags = data.readUInt16BE(10);
        } else if (type >= 2 ** 31) {
          throw new NbdClientError(`server refused export "${exportName}": ${data.toString('utf8') || `error ${type - 2 ** 31}`}`, 0);
        }
      }
      if (sizeBytes < 0) throw new NbdClientError('server sent no export size', 0);
      const client = new NbdClient(socket, sizeBytes, flags);
      const rest = reader.release();
      if (rest.length > 0) client.receive(rest);
      return client;
    } catch (err) {
      reader.release();
      socket.destroy();
      throw err;
    }
  }

  get readOnly(): boolean {
    return (this.flags & C.NBD_FLAG_READ_ONLY) !== 0;
  }

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    return this.request(C.NBD_CMD_READ, 0, offsetBytes, lengthBytes, undefined).then((d) => d!);
  }

  async write(offsetBytes: number, data: Buffer, options: { fua?: boolean } = {}): Promise<void> {
    await this.request(C.NBD_CMD_WRITE, options.fua ? C.NBD_CMD_FLAG_FUA : 0, offsetBytes, data.length, data);
  }

  async flush(): Promise<void> {
    await this.request(C.NBD_CMD_FLUSH, 0, 0, 0, undefined);
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** NBD_CMD_DISC after the replies in flight, then close. */
  async disconnect(): Promise<void> {
    if (this.failure) return;
    await Promise.allSettled([...this.pending.values()].map((p) => new Promise<void>((r) => {
      const { resolve, reject } = p;
      p.resolve = (d) => { resolve(d); r(); };
      p.reject = (e) => { reject(e); r(); };
    })));
    const header = Buffer.alloc(REQUEST_HEADER_BYTES);
    header.writeUInt32BE(C.NBD_REQUEST_MAGIC, 0);
    header.writeUInt16BE(C.NBD_CMD_DISC, 6);
    this.socket.end(header);
    this.failure = new NbdClientError('disconnected', 0);
  }

  destroy(): void {
    this.socket.destroy();
  }

  private request(type: number, flags: number, offsetBytes: number, lengthBytes: number, data: Buffer | undefined): Promise<Buffer | undefined> {
    if (this.failure) return Promise.reject(this.failure);
    const cookie = this.nextCookie++;
    const header = Buffer.alloc(REQUEST_HEADER_BYTES);
    header.writeUInt32BE(C.NBD_REQUEST_MAGIC, 0);
    header.writeUInt16BE(flags, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(cookie, 8);
    header.writeBigUInt64BE(BigInt(offsetBytes), 16);
    header.writeUInt32BE(lengthBytes, 24);
    return new Promise((resolve, reject) => {
      this.pending.set(cookie, { resolve, reject, readBytes: type === C.NBD_CMD_READ ? lengthBytes : 0 });
      if (data) {
        this.socket.cork();
        this.socket.write(header);
        this.socket.write(data);
        this.socket.uncork();
      } else this.socket.write(header);
    });
  }

  private receive(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    while (this.buffered.length >= SIMPLE_REPLY_BYTES) {
      const magic = this.buffered.readUInt32BE(0);
      if (magic !== C.NBD_SIMPLE_REPLY_MAGIC) {
        this.socket.destroy();
        this.failAll(new NbdClientError(`bad reply magic 0x${magic.toString(16)}`, 0));
        return;
      }
      const errno = this.buffered.readUInt32BE(4);
      const cookie = this.buffered.readBigUInt64BE(8);
      const p = this.pending.get(cookie);
      if (!p) {
        this.socket.destroy();
        this.failAll(new NbdClientError(`reply for unknown cookie ${cookie}`, 0));
        return;
      }
      const payload = errno === 0 ? p.readBytes : 0;
      if (this.buffered.length < SIMPLE_REPLY_BYTES + payload) return;
      const data = payload > 0 ? Buffer.from(this.buffered.subarray(SIMPLE_REPLY_BYTES, SIMPLE_REPLY_BYTES + payload)) : undefined;
      this.buffered = this.buffered.subarray(SIMPLE_REPLY_BYTES + payload);
      this.pending.delete(cookie);
      if (errno === 0) p.resolve(data);
      else p.reject(new NbdClientError(`server answered errno ${errno}`, errno));
    }
  }

  private failAll(err: Error): void {
    this.failure ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}

/** Reads exact byte counts from a socket during the handshake. */
class HandshakeReader {
  private buffered: Buffer = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  private error: Error | null = null;
  private readonly onData = (c: Buffer) => {
    this.buffered = Buffer.concat([this.buffered, c]);
    this.wake?.();
  };
  private readonly onEnd = () => {
    this.error ??= new NbdClientError('server closed the connection during the handshake', 0);
    this.wake?.();
  };

  constructor(
    private readonly socket: net.Socket,
    private readonly timeoutMs: number,
  ) {
    socket.on('data', this.onData);
    socket.on('close', this.onEnd);
    socket.on('error', this.onEnd);
  }

  async take(n: number): Promise<Buffer> {
    const deadline = Date.now() + this.timeoutMs;
    while (this.buffered.length < n) {
      if (this.error) throw this.error;
      const left = deadline - Date.now();
      if (left <= 0) throw new NbdClientError(`handshake timed out after ${this.timeoutMs} ms`, 0);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return out;
  }

  /** Stop listening; returns bytes read past the handshake. */
  release(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onEnd);
    return this.buffered;
  }
}
