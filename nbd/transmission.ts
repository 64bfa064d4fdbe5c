/**
 * The transmission phase of one connection: parse requests off the chunk reader, check them,
 * hand them to the backend, and queue replies as they complete — in any order, matched by cookie.
 *
 * Flow control: before taking the next request, `process` checks the connection's bounds
 * (requests in flight, bytes in flight, reply bytes queued). Over any of them it pauses the
 * socket and stops parsing; a completion or a socket drain resumes it.
 */
import type { BlockBackend } from './backend.js';
import type { ChunkReader } from './chunk-reader.js';
import {
  COMMAND_NAMES,
  MAX_IN_FLIGHT_BYTES,
  MAX_IN_FLIGHT_REQUESTS,
  MAX_QUEUED_REPLY_BYTES,
  MAX_WRITE_SCRATCH_BYTES,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_EPERM,
  NBD_ESHUTDOWN,
  NBD_REQUEST_MAGIC,
  REQUEST_HEADER_BYTES,
} from './constants.js';
import { describeError, errnoForError, NbdError } from './errors.js';
import type { NegotiatedExport } from './handshake.js';
import type { NbdMetrics } from './metrics.js';
import type { ReadBufferPool } from './read-pool.js';
import { type Cookie, offsetDataHeader, simpleReply, structuredDone, structuredError } from './replies.js';
import type { ReplyWriter } from './reply-writer.js';

export interface TransmissionHost {
  readonly writer: ReplyWriter;
  /** Buffers for backends with readInto, shared by the server's connections. */
  readonly readPool: ReadBufferPool;
  readonly metrics: NbdMetrics;
  pauseInput(): void;
  resumeInput(): void;
  /**
   * Stop serving this client: no more requests are read; once in-flight requests are answered
   * (and the backend flushed, if asked), the connection closes.
   */
  finish(reason: string, options: { error?: NbdError; flushBackend: boolean }): void;
  /** Rate-limited warning about this client. */
  warn(obj: object, msg: string): void;
  /** An error worth a line even when rate limits apply (backend failures). */
  error(obj: object, msg: string): void;
  /** True once the server is closing: new requests get ESHUTDOWN. */
  isShuttingDown(): boolean;
}

/** A write whose header was read and whose payload is still arriving. */
interface PendingWrite {
  flags: number;
  cookie: Cookie;
  offsetBytes: number;
  lengthBytes: number;
}

const TWO_TO_32 = 0x1_0000_0000;

export class Transmission {
  private readonly backend: BlockBackend;
  private readonly sizeBytes: number;
  private readonly structured: boolean;
  private readonly alignment: number;
  private pendingWrite: PendingWrite | undefined;
  private stopped = false;
  private paused = false;
  private inFlight = 0;
  private inFlightBytes = 0;
  private idleWaiters: Array<() => void> = [];
  private reader: ChunkReader | undefined;
  /** Reused for write payloads that straddle chunks, when the backend copies write data. */
  private writeScratch: Buffer | undefined;

  constructor(
    private readonly negotiated: NegotiatedExport,
    private readonly host: TransmissionHost,
    private readonly maxRequestBytes: number,
  ) {
    this.backend = negotiated.backend;
    this.sizeBytes = negotiated.backend.sizeBytes;
    this.structured = negotiated.structuredReplies;
    this.alignment = negotiated.minimumBlockSizeBytes;
  }

  get inFlightRequests(): number {
    return this.inFlight;
  }

  /** Read no more requests (DISC, a protocol error, server shutdown, peer gone). */
  stop(): void {
    this.stopped = true;
    this.pendingWrite = undefined;
  }

  /** Resolves when no request is in flight. */
  whenIdle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** The socket drained: if reply bytes were what held us, go on. */
  onDrain(): void {
    this.maybeResume();
  }

  /** Parse and dispatch every complete request in `reader`, within the flow-control bounds. */
  process(reader: ChunkReader): void {
    this.reader = reader;
    while (!this.stopped) {
      const pending = this.pendingWrite;
      if (pending) {
        if (reader.length < pending.lengthBytes) return;
        this.pendingWrite = undefined;
        this.dispatchWrite(pending, this.takePayload(reader, pending.lengthBytes));
        continue;
      }
      if (this.overLimits()) {
        if (!this.paused) {
          this.paused = true;
          this.host.pauseInput();
        }
        return;
      }
      if (reader.length < REQUEST_HEADER_BYTES) return;
      this.parseRequest(reader, reader.take(REQUEST_HEADER_BYTES));
    }
  }

  private overLimits(): boolean {
    return (
      this.inFlight >= MAX_IN_FLIGHT_REQUESTS ||
      this.inFlightBytes >= MAX_IN_FLIGHT_BYTES ||
      this.host.writer.queuedBytes >= MAX_QUEUED_REPLY_BYTES
    );
  }

  private maybeResume(): void {
    if (!this.paused || this.stopped || this.overLimits()) return;
    this.paused = false;
    this.host.resumeInput();
    // Requests may already be buffered: a paused socket only stops new chunks.
    if (this.reader) this.process(this.reader);
  }

  private parseRequest(reader: ChunkReader, header: Buffer): void {
    const magic = header.readUInt32BE(0);
    if (magic !== NBD_REQUEST_MAGIC) {
      // Without a valid header there is no telling where the next request starts.
      this.host.metrics.protocolErrors++;
      this.host.warn({ magic: `0x${magic.toString(16)}` }, 'nbd: bad request magic, disconnecting client');
      this.stopped = true;
      this.host.finish('bad request magic', { error: new NbdError('ERR_NBD_BAD_MAGIC', 'bad request magic'), flushBackend: false });
      return;
    }
    const flags = header.readUInt16BE(4);
    const type = header.readUInt16BE(6);
    const cookie: Cookie = { hi: header.readUInt32BE(8), lo: header.readUInt32BE(12) };
    const offsetBytes = header.readUInt32BE(16) * TWO_TO_32 + header.readUInt32BE(20);
    const lengthBytes = header.readUInt32BE(24);

    if (type === NBD_CMD_WRITE) {
      if (lengthBytes > this.maxRequestBytes) {
        // The payload follows the header whatever we answer; skipping up to 4 GiB of it is what a
        // denial of service looks like, so refuse and hang up (the spec allows it past 32 MiB).
        this.host.metrics.protocolErrors++;
        this.replyError(type, cookie, NBD_EINVAL, `write of ${lengthBytes} bytes exceeds the maximum of ${this.maxRequestBytes}`);
        this.host.warn({ lengthBytes, maxRequestBytes: this.maxRequestBytes }, 'nbd: oversized write payload, disconnecting client');
        this.stopped = true;
        this.host.finish('oversized write', { error: new NbdError('ERR_NBD_TOO_LARGE', `write of ${lengthBytes} bytes`), flushBackend: false });
        return;
      }
      const pending: PendingWrite = { flags, cookie, offsetBytes, lengthBytes };
      if (reader.length >= lengthBytes) this.dispatchWrite(pending, this.takePayload(reader, lengthBytes));
      else this.pendingWrite = pending;
      return;
    }
    this.dispatch(type, flags, cookie, offsetBytes, lengthBytes);
  }

  /**
   * A write's payload. Safe to receive into the reused scratch buffer only because such a
   * backend is done with `data` when write() returns, and dispatchWrite calls it before the
   * next payload is taken.
   */
  private takePayload(reader: ChunkReader, lengthBytes: number): Buffer {
    if (!this.backend.copiesWriteData || lengthBytes > MAX_WRITE_SCRATCH_BYTES) return reader.take(lengthBytes);
    if (!this.writeScratch || this.writeScratch.length < lengthBytes) {
      // Grow in powers of two, so a run of slightly different sizes allocates once.
      this.writeScratch = Buffer.allocUnsafeSlow(Math.min(MAX_WRITE_SCRATCH_BYTES, 2 ** Math.ceil(Math.log2(Math.max(lengthBytes, 4096)))));
    }
    return reader.take(lengthBytes, this.writeScratch);
  }

  private dispatchWrite(request: PendingWrite, data: Buffer): void {
    const { flags, cookie, offsetBytes, lengthBytes } = request;
    const errno = this.checkFlags(NBD_CMD_WRITE, flags) ?? this.checkWritable() ?? this.checkRange(offsetBytes, lengthBytes, NBD_ENOSPC);
    if (errno !== undefined) return this.refuse(NBD_CMD_WRITE, cookie, errno, offsetBytes, lengthBytes);
    if (this.host.isShuttingDown()) return this.refuse(NBD_CMD_WRITE, cookie, NBD_ESHUTDOWN, offsetBytes, lengthBytes);
    this.host.metrics.bytesWritten += lengthBytes;
    this.run(NBD_CMD_WRITE, cookie, lengthBytes, () => this.backend.write(offsetBytes, data, { fua: (flags & NBD_CMD_FLAG_FUA) !== 0 }));
  }

  private dispatch(type: number, flags: number, cookie: Cookie, offsetBytes: number, lengthBytes: number): void {
    const fua = (flags & NBD_CMD_FLAG_FUA) !== 0;
    if (type === NBD_CMD_DISC) {
      this.stopped = true;
      this.host.finish('client disconnected (NBD_CMD_DISC)', { flushBackend: true });
      return;
    }
    const name = COMMAND_NAMES[type];
    if (name === undefined || type === 7 /* BLOCK_STATUS: no meta context is ever negotiated */) {
      this.host.metrics.protocolErrors++;
      this.host.warn({ command: type }, 'nbd: unknown command');
      return this.replyError(type, cookie, NBD_EINVAL, `unknown or unnegotiated command ${type}`);
    }
    const flagErrno = this.checkFlags(type, flags);
    if (flagErrno !== undefined) return this.refuse(type, cookie, flagErrno, offsetBytes, lengthBytes);
    if (this.host.isShuttingDown()) return this.refuse(type, cookie, NBD_ESHUTDOWN, offsetBytes, lengthBytes);

    switch (type) {
      case NBD_CMD_READ: {
        const errno = this.checkLength(lengthBytes) ?? this.checkRange(offsetBytes, lengthBytes, NBD_EINVAL);
        if (errno !== undefined) return this.refuse(type, cookie, errno, offsetBytes, lengthBytes);
        this.host.metrics.bytesRead += lengthBytes;
        return this.runRead(cookie, offsetBytes, lengthBytes);
      }
      case NBD_CMD_FLUSH:
        return this.run(type, cookie, 0, () => this.backend.flush());
      case NBD_CMD_TRIM: {
        const errno = this.checkWritable() ?? this.checkRange(offsetBytes, lengthBytes, NBD_EINVAL);
        if (errno !== undefined) return this.refuse(type, cookie, errno, offsetBytes, lengthBytes);
        if (lengthBytes === 0) return this.run(type, cookie, 0, () => (fua ? this.backend.flush() : Promise.resolve()));
        return this.run(type, cookie, 0, () => this.backend.trim(offsetBytes, lengthBytes, { fua }));
      }
      case NBD_CMD_WRITE_ZEROES: {
        const errno = this.checkWritable() ?? this.checkRange(offsetBytes, lengthBytes, NBD_ENOSPC);
        if (errno !== undefined) return this.refuse(type, cookie, errno, offsetBytes, lengthBytes);
        const noHole = (flags & NBD_CMD_FLAG_NO_HOLE) !== 0;
        if (lengthBytes === 0) return this.run(type, cookie, 0, () => (fua ? this.backend.flush() : Promise.resolve()));
        return this.run(type, cookie, 0, () => this.backend.writeZeroes(offsetBytes, lengthBytes, { fua, noHole }));
      }
      case NBD_CMD_CACHE: {
        const errno = this.checkLength(lengthBytes) ?? this.checkRange(offsetBytes, lengthBytes, NBD_EINVAL);
        if (errno !== undefined) return this.refuse(type, cookie, errno, offsetBytes, lengthBytes);
        const cache = this.backend.cache;
        return this.run(type, cookie, 0, () => (cache && lengthBytes > 0 ? cache.call(this.backend, offsetBytes, lengthBytes) : Promise.resolve()));
      }
    }
  }

  // ---- Checks: each returns an NBD errno, or undefined when the request passes. ----

  private checkFlags(type: number, flags: number): number | undefined {
    // FUA is valid on every command once SEND_FUA is advertised (clients set it on flush and reads).
    let allowed = NBD_CMD_FLAG_FUA;
    if (type === NBD_CMD_WRITE_ZEROES) allowed |= NBD_CMD_FLAG_NO_HOLE;
    if (type === NBD_CMD_READ && this.structured) allowed |= NBD_CMD_FLAG_DF;
    return (flags & ~allowed) === 0 ? undefined : NBD_EINVAL;
  }

  private checkWritable(): number | undefined {
    return this.backend.readOnly ? NBD_EPERM : undefined;
  }

  private checkLength(lengthBytes: number): number | undefined {
    return lengthBytes > this.maxRequestBytes ? NBD_EINVAL : undefined;
  }

  private checkRange(offsetBytes: number, lengthBytes: number, beyondEndErrno: number): number | undefined {
    if (offsetBytes + lengthBytes > this.sizeBytes) return beyondEndErrno;
    if (this.alignment > 1 && (offsetBytes % this.alignment !== 0 || lengthBytes % this.alignment !== 0)) return NBD_EINVAL;
    return undefined;
  }

  // ---- Execution and replies ----

  private refuse(type: number, cookie: Cookie, errno: number, offsetBytes: number, lengthBytes: number): void {
    this.host.warn({ command: COMMAND_NAMES[type] ?? type, errno, offsetBytes, lengthBytes, sizeBytes: this.sizeBytes }, 'nbd: request refused');
    this.replyError(type, cookie, errno, refusalMessage(errno, type));
  }

  private replyError(type: number, cookie: Cookie, errno: number, message: string): void {
    this.host.metrics.requestErrors++;
    // Structured replies carry the reason; a simple error reply to a READ carries no payload.
    if (this.structured) this.host.writer.send(structuredError(cookie, errno, message));
    else this.host.writer.send(simpleReply(errno, cookie));
  }

  private begin(lengthBytes: number): void {
    this.host.metrics.requests++;
    this.inFlight++;
    this.inFlightBytes += lengthBytes;
  }

  private end(lengthBytes: number): void {
    this.inFlight--;
    this.inFlightBytes -= lengthBytes;
    if (this.inFlight === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
    this.maybeResume();
  }

  /** Run a command without reply payload; reply success or the mapped error. */
  private run(type: number, cookie: Cookie, lengthBytes: number, op: () => Promise<void>): void {
    this.begin(lengthBytes);
    let promise: Promise<void>;
    try {
      promise = op();
    } catch (err) {
      promise = Promise.reject(err);
    }
    promise.then(
      () => {
        this.host.writer.send(simpleReply(0, cookie));
        this.end(lengthBytes);
      },
      (err: unknown) => {
        this.backendFailed(type, cookie, err);
        this.end(lengthBytes);
      },
    );
  }

  private runRead(cookie: Cookie, offsetBytes: number, lengthBytes: number): void {
    this.begin(lengthBytes);
    let promise: Promise<Buffer>;
    // A pooled buffer goes back once the socket has written it; on failure it is dropped.
    const pooled = this.backend.readInto ? this.host.readPool.take(lengthBytes) : undefined;
    try {
      if (lengthBytes === 0) promise = Promise.resolve(Buffer.alloc(0));
      else if (pooled) promise = this.backend.readInto!(offsetBytes, pooled).then(() => pooled);
      else promise = this.backend.read(offsetBytes, lengthBytes);
    } catch (err) {
      promise = Promise.reject(err);
    }
    promise.then(
      (data) => {
        const release = pooled && (() => this.host.readPool.give(pooled));
        if (data.length !== lengthBytes) {
          // A backend bug, not a client's: never send a short payload, the stream would desync.
          this.backendFailed(NBD_CMD_READ, cookie, new Error(`backend returned ${data.length} bytes for a ${lengthBytes}-byte read`));
        } else if (this.structured) {
          if (lengthBytes === 0) this.host.writer.send(structuredDone(cookie));
          else this.host.writer.send2(offsetDataHeader(cookie, offsetBytes, lengthBytes), data, release);
        } else {
          this.host.writer.send2(simpleReply(0, cookie), data, release);
        }
        this.end(lengthBytes);
      },
      (err: unknown) => {
        this.backendFailed(NBD_CMD_READ, cookie, err);
        this.end(lengthBytes);
      },
    );
  }

  private backendFailed(type: number, cookie: Cookie, err: unknown): void {
    const errno = errnoForError(err);
    this.host.error({ command: COMMAND_NAMES[type], errno, err: describeError(err) }, 'nbd: backend request failed');
    this.replyError(type, cookie, errno === 0 ? NBD_EIO : errno, describeError(err));
  }
}

function refusalMessage(errno: number, type: number): string {
  const command = COMMAND_NAMES[type] ?? String(type);
  switch (errno) {
    case NBD_EPERM:
      return `${command}: export is read-only`;
    case NBD_ENOSPC:
      return `${command}: beyond the end of the export`;
    case NBD_ESHUTDOWN:
      return `${command}: server is shutting down`;
    default:
      return `${command}: invalid request (range, alignment, length or flags)`;
  }
}
