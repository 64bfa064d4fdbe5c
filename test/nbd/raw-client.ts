/**
 * A deliberately low-level NBD client over net.Socket for protocol tests: it sends exactly the
 * bytes a test asks for (including garbage) and reads replies without trusting them.
 */
import net from 'node:net';
import tls from 'node:tls';
import * as C from '../../nbd/constants.js';

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface Reply {
  cookie: bigint;
  error: number;
  /** READ payload (simple or structured OFFSET_DATA chunks, reassembled). */
  data?: Buffer;
  /** Structured error message. */
  message?: string;
  structured: boolean;
}

export class RawNbdClient {
  socket: net.Socket;
  private buffered: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private ended = false;
  /** Resolves when the server closes the connection (or it errors). */
  readonly closed: Promise<void>;
  private readonly pendingReadBytes = new Map<bigint, number>();
  private readonly readOffsets = new Map<bigint, number>();
  structured = false;

  private readonly onData = (c: Buffer): void => {
    this.buffered = this.buffered.length === 0 ? c : Buffer.concat([this.buffered, c]);
    this.wake();
  };

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', this.onData);
    this.closed = new Promise((resolve) => {
      const done = () => {
        this.ended = true;
        this.wake();
        resolve();
      };
      socket.once('close', done);
      socket.once('end', done);
    });
    socket.on('error', () => {});
  }

  static connect(port: number): Promise<RawNbdClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port }, () => resolve(new RawNbdClient(socket)));
      socket.once('error', reject);
    });
  }

  /** Connect, read the greeting, send client flags, negotiate structured replies if asked and GO. */
  static async open(port: number, options: { exportName?: string; structured?: boolean } = {}): Promise<{ client: RawNbdClient; sizeBytes: number; flags: number }> {
    const client = await RawNbdClient.connect(port);
    await client.greeting();
    client.write(u32(C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES));
    if (options.structured) {
      client.sendOption(C.NBD_OPT_STRUCTURED_REPLY);
      const r = await client.optionReply();
      if (r.type !== C.NBD_REP_ACK) throw new Error(`structured reply refused: ${r.type}`);
      client.structured = true;
    }
    const info = await client.go(options.exportName ?? '');
    return { client, ...info };
  }

  /** After the server ACKed NBD_OPT_STARTTLS: run TLS over the socket; later reads and writes go through it. */
  startTls(options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
    const raw = this.socket;
    raw.off('data', this.onData);
    return new Promise((resolve, reject) => {
      const secure = tls.connect({ ...options, socket: raw }, () => resolve(secure));
      secure.once('error', reject);
      secure.on('data', this.onData);
      this.socket = secure;
    });
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  /** Read exactly n bytes; rejects if the connection ends first. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffered.length < n) {
      if (this.ended) throw new Error(`connection closed with ${this.buffered.length}/${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out reading ${n} bytes (have ${this.buffered.length})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return out;
  }

  /** True if the server closed the connection within timeoutMs (whatever it sent first is dropped). */
  async closedWithin(timeoutMs = 3000): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([
      this.closed.then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    return closed;
  }

  async greeting(): Promise<void> {
    const g = await this.read(18);
    if (g.readBigUInt64BE(0) !== C.NBD_INIT_MAGIC || g.readBigUInt64BE(8) !== C.NBD_OPTS_MAGIC) throw new Error('bad greeting');
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(C.NBD_OPTS_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(data.length, 12);
    this.write(Buffer.concat([h, data]));
  }

  async optionReply(): Promise<OptionReply> {
    const h = await this.read(20);
    if (h.readBigUInt64BE(0) !== C.NBD_REP_MAGIC) throw new Error('bad option reply magic');
    const length = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: Buffer.from(await this.read(length)) };
  }

  /** NBD_OPT_GO; throws on an error reply. */
  async go(name: string, infos: number[] = []): Promise<{ sizeBytes: number; flags: number }> {
    this.sendOption(C.NBD_OPT_GO, infoRequest(name, infos));
    let sizeBytes = -1;
    let flags = 0;
    for (;;) {
      const r = await this.optionReply();
      if (r.type === C.NBD_REP_ACK) break;
      if (r.type === C.NBD_REP_INFO && r.data.readUInt16BE(0) === C.NBD_INFO_EXPORT) {
        sizeBytes = Number(r.data.readBigUInt64BE(2));
        flags = r.data.readUInt16BE(10);
      } else if (r.type !== C.NBD_REP_INFO) {
        throw Object.assign(new Error(`GO refused with 0x${r.type.toString(16)}: ${r.data.toString()}`), { replyType: r.type });
      }
    }
    return { sizeBytes, flags };
  }

  request(type: number, cookie: bigint, offsetBytes: number | bigint, lengthBytes: number, options: { flags?: number; data?: Buffer; magic?: number } = {}): void {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(options.magic ?? C.NBD_REQUEST_MAGIC, 0);
    h.writeUInt16BE(options.flags ?? 0, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(cookie, 8);
    h.writeBigUInt64BE(BigInt(offsetBytes), 16);
    h.writeUInt32BE(lengthBytes, 24);
    if (type === C.NBD_CMD_READ) {
      this.pendingReadBytes.set(cookie, lengthBytes);
      this.readOffsets.set(cookie, Number(offsetBytes));
    }
    this.write(options.data ? Buffer.concat([h, options.data]) : h);
  }

  /** The next complete reply (all structured chunks up to DONE). */
  async reply(timeoutMs = 5000): Promise<Reply> {
    const magic = (await this.read(4, timeoutMs)).readUInt32BE(0);
    if (magic === C.NBD_SIMPLE_REPLY_MAGIC) {
      const h = await this.read(12, timeoutMs);
      const error = h.readUInt32BE(0);
      const cookie = h.readBigUInt64BE(4);
      const readBytes = this.pendingReadBytes.get(cookie);
      this.pendingReadBytes.delete(cookie);
      const data = readBytes !== undefined && error === 0 ? Buffer.from(await this.read(readBytes, timeoutMs)) : undefined;
      return { cookie, error, data, structured: false };
    }
    if (magic !== C.NBD_STRUCTURED_REPLY_MAGIC) throw new Error(`bad reply magic 0x${magic.toString(16)}`);
    // Structured: gather chunks of this cookie until DONE (tests keep one structured reply in flight at a time).
    let first = true;
    let cookie = 0n;
    let error = 0;
    let message: string | undefined;
    let data: Buffer | undefined;
    for (;;) {
      if (!first) {
        const m = (await this.read(4, timeoutMs)).readUInt32BE(0);
        if (m !== C.NBD_STRUCTURED_REPLY_MAGIC) throw new Error(`bad chunk magic 0x${m.toString(16)}`);
      }
      first = false;
      const h = await this.read(16, timeoutMs);
      const flags = h.readUInt16BE(0);
      const type = h.readUInt16BE(2);
      cookie = h.readBigUInt64BE(4);
      const payload = Buffer.from(await this.read(h.readUInt32BE(12), timeoutMs));
      if (type === C.NBD_REPLY_TYPE_OFFSET_DATA) {
        const total = this.pendingReadBytes.get(cookie) ?? 0;
        const base = this.readOffsets.get(cookie) ?? 0;
        data ??= Buffer.alloc(total);
        payload.copy(data, Number(payload.readBigUInt64BE(0)) - base, 8);
      } else if (type === C.NBD_REPLY_TYPE_ERROR) {
        error = payload.readUInt32BE(0);
        message = payload.toString('utf8', 6, 6 + payload.readUInt16BE(4));
      } else if (type !== C.NBD_REPLY_TYPE_NONE) {
        throw new Error(`unexpected chunk type ${type}`);
      }
      if (flags & C.NBD_REPLY_FLAG_DONE) break;
    }
    this.pendingReadBytes.delete(cookie);
    this.readOffsets.delete(cookie);
    return { cookie, error, data: error === 0 ? data : undefined, message, structured: true };
  }

  /** NBD_CMD_DISC then wait for the server to close. */
  async disconnect(): Promise<void> {
    this.request(C.NBD_CMD_DISC, 0n, 0, 0);
    await this.closedWithin(5000);
    this.socket.destroy();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }
}

export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
}

export function infoRequest(name: string, infos: number[] = []): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + n.length + 2 * i));
  return b;
}
