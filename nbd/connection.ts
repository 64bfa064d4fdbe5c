/**
 * One client's socket, from greeting to close: feeds received chunks to the handshake, then to
 * the transmission phase, and owns the ending — graceful (DISC, peer FIN, server close: answer
 * in-flight requests first) or not (the peer vanished). Whatever a client does, it only ever
 * ends its own connection.
 */
import type { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { ExportCatalog } from './backend.js';
import { ChunkReader } from './chunk-reader.js';
import { NbdError } from './errors.js';
import { greeting, Handshake, type NegotiatedExport } from './handshake.js';
import { type NbdLogger, RateLimitedLog } from './log.js';
import type { NbdMetrics } from './metrics.js';
import type { ReadBufferPool } from './read-pool.js';
import { ReplyWriter } from './reply-writer.js';
import { Transmission, type TransmissionHost } from './transmission.js';

export interface ConnectionOptions {
  id: number;
  catalog: ExportCatalog;
  logger: NbdLogger;
  metrics: NbdMetrics;
  maxRequestBytes: number;
  handshakeTimeoutMs: number;
  isShuttingDown: () => boolean;
  readPool: ReadBufferPool;
  /** STARTTLS on offer (see NbdServerOptions.tls). */
  tls?: NbdTlsConfig;
}

/** The server's TLS: its certificate (in the context), client certificates, and whether TLS is a must. */
export interface NbdTlsConfig {
  context: SecureContext;
  /** Clients must present a certificate signed by the context's CA. */
  verifyClients: boolean;
  required: boolean;
}

export interface ConnectionInfo {
  id: number;
  remoteAddress: string;
  exportName?: string;
}

export interface DisconnectInfo extends ConnectionInfo {
  reason: string;
  /** Set when the server ended the session because of the client (stable `code`). */
  error?: NbdError;
}

export class NbdConnection {
  readonly id: number;
  readonly remoteAddress: string;
  /** Resolves once the socket is closed, with why. */
  readonly closed: Promise<DisconnectInfo>;

  private readonly reader = new ChunkReader();
  private readonly writer: ReplyWriter;
  private readonly warnLog: RateLimitedLog;
  private readonly errorLog: RateLimitedLog;
  private handshake: Handshake | undefined;
  private transmission: Transmission | undefined;
  private negotiated: NegotiatedExport | undefined;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private finishing = false;
  private closeReason = 'peer closed the connection';
  private closeError: NbdError | undefined;
  private resolveClosed!: (info: DisconnectInfo) => void;
  /** The stream we talk through: the TCP socket, or the TLS socket over it after STARTTLS. */
  private socket: Socket;
  private closedOnce = false;

  constructor(
    socket: Socket,
    private readonly options: ConnectionOptions,
  ) {
    this.socket = socket;
    this.id = options.id;
    this.remoteAddress = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    this.writer = new ReplyWriter(socket);
    const fields = { conn: this.id, remote: this.remoteAddress };
    this.warnLog = new RateLimitedLog(options.logger, fields, 'warn');
    this.errorLog = new RateLimitedLog(options.logger, fields, 'error');
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  get info(): ConnectionInfo {
    return { id: this.id, remoteAddress: this.remoteAddress, exportName: this.negotiated?.name };
  }

  get inFlightRequests(): number {
    return this.transmission?.inFlightRequests ?? 0;
  }

  start(): void {
    // Replies are batched per event-loop turn already; Nagle would only add latency.
    this.socket.setNoDelay(true);
    this.listen(this.socket);
    this.handshake = new Handshake({
      catalog: this.options.catalog,
      maxRequestBytes: this.options.maxRequestBytes,
      send: (b) => this.writer.send(b),
      isShuttingDown: this.options.isShuttingDown,
      ...(this.options.tls ? { tls: { required: this.options.tls.required } } : {}),
    });
    this.handshakeTimer = setTimeout(
      () => this.finish('handshake timed out', { error: new NbdError('ERR_NBD_TIMEOUT', 'handshake timed out'), flushBackend: false }),
      this.options.handshakeTimeoutMs,
    );
    this.handshakeTimer.unref();
    this.writer.send(greeting());
  }

  private readonly onErrorListener = (err: NodeJS.ErrnoException): void => {
    this.closeReason = `socket error ${err.code ?? err.message}`;
    // A failed TLS handshake (no or a bad client certificate, a client that speaks no TLS) is the client's doing.
    if (this.socket instanceof TLSSocket && !this.negotiated && !this.closeError) {
      this.closeError = new NbdError('ERR_NBD_TLS', `TLS handshake failed: ${err.message}`);
      this.warnLog.log({ reason: err.message, code: 'ERR_NBD_TLS' }, 'nbd: TLS handshake failed');
    }
  };
  private readonly onCloseListener = (): void => this.onClose();

  /** What the connection listens to on its stream; moved over to the TLS socket by STARTTLS. */
  private readonly listeners: ReadonlyArray<readonly [string, Parameters<EventEmitter['on']>[1]]> = [
    ['data', (chunk: Buffer) => this.onData(chunk)],
    ['end', () => this.finish('peer closed its side', { flushBackend: false })],
    ['drain', () => this.transmission?.onDrain()],
    ['error', this.onErrorListener],
    ['close', this.onCloseListener],
  ];

  private listen(stream: Socket): void {
    for (const [event, fn] of this.listeners) stream.on(event, fn);
  }

  private unlisten(stream: Socket): void {
    for (const [event, fn] of this.listeners) stream.off(event, fn);
  }

  /**
   * NBD_OPT_STARTTLS was accepted: send the ACK in the clear, then run TLS over the socket and read
   * the rest of the haggling from it. The client must wait for the ACK; bytes already here were
   * sent in the clear after STARTTLS, which the protocol forbids.
   */
  private startTls(reply: Buffer): void {
    const tlsConfig = this.options.tls!;
    if (this.reader.length > 0) {
      this.finish('data after NBD_OPT_STARTTLS before the TLS handshake', { error: new NbdError('ERR_NBD_HANDSHAKE', 'data after NBD_OPT_STARTTLS before the TLS handshake'), flushBackend: false });
      return;
    }
    const raw = this.socket;
    raw.pause();
    this.writer.flush();
    raw.write(reply, () => {
      if (this.finishing || raw.destroyed) return;
      this.unlisten(raw);
      const secure = new TLSSocket(raw, {
        isServer: true,
        secureContext: tlsConfig.context,
        requestCert: tlsConfig.verifyClients,
        rejectUnauthorized: tlsConfig.verifyClients,
      });
      this.socket = secure;
      this.writer.switchTo(secure);
      this.listen(secure);
      // The raw socket's own close still ends us if TLS never gets going.
      raw.once('close', this.onCloseListener);
      raw.on('error', this.onErrorListener);
      secure.once('secure', () => this.options.logger.debug({ conn: this.id, remote: this.remoteAddress, protocol: secure.getProtocol() }, 'nbd: TLS started'));
      this.handshake?.tlsStarted();
    });
  }

  /**
   * Stop serving: no new requests; in-flight ones are answered (their backend calls complete),
   * the backend is flushed, then the socket closes. After `graceMs`, the socket is destroyed
   * regardless.
   */
  shutdown(graceMs: number): Promise<DisconnectInfo> {
    this.finish('server closing', { flushBackend: true });
    const timer = setTimeout(() => this.socket.destroy(), graceMs);
    timer.unref();
    return this.closed.finally(() => clearTimeout(timer));
  }

  private onData(chunk: Buffer): void {
    if (this.finishing) return;
    this.reader.push(chunk);
    if (this.transmission) {
      this.transmission.process(this.reader);
      return;
    }
    if (!this.handshake) return;
    const step = this.handshake.step(this.reader);
    if (step.kind === 'more') return;
    if (step.kind === 'starttls') {
      this.startTls(step.reply);
      return;
    }
    if (step.kind === 'close') {
      this.finish(step.reason, { error: step.error, flushBackend: false });
      return;
    }
    clearTimeout(this.handshakeTimer);
    this.handshake = undefined;
    this.negotiated = step.negotiated;
    this.options.logger.debug(
      { conn: this.id, remote: this.remoteAddress, export: step.negotiated.name, structured: step.negotiated.structuredReplies },
      'nbd: client entered transmission',
    );
    this.transmission = new Transmission(step.negotiated, this.host(), this.options.maxRequestBytes);
    this.transmission.process(this.reader);
  }

  private host(): TransmissionHost {
    return {
      writer: this.writer,
      readPool: this.options.readPool,
      metrics: this.options.metrics,
      pauseInput: () => this.socket.pause(),
      resumeInput: () => {
        if (!this.finishing) this.socket.resume();
      },
      finish: (reason, opts) => this.finish(reason, opts),
      warn: (obj, msg) => this.warnLog.log(obj, msg),
      error: (obj, msg) => this.errorLog.log(obj, msg),
      isShuttingDown: this.options.isShuttingDown,
    };
  }

  private finish(reason: string, opts: { error?: NbdError; flushBackend: boolean }): void {
    if (this.finishing) return;
    this.finishing = true;
    this.closeReason = reason;
    this.closeError = opts.error;
    clearTimeout(this.handshakeTimer);
    this.reader.clear();
    this.socket.pause();
    this.transmission?.stop();
    if (opts.error) {
      // Transmission counts its own protocol errors when it detects them.
      this.options.metrics.protocolErrors += this.transmission ? 0 : 1;
      this.warnLog.log({ reason, code: opts.error.code }, 'nbd: closing connection');
    } else {
      this.options.logger.debug({ conn: this.id, remote: this.remoteAddress, reason }, 'nbd: closing connection');
    }
    void this.drainAndEnd(opts.flushBackend);
  }

  private async drainAndEnd(flushBackend: boolean): Promise<void> {
    if (this.transmission) await this.transmission.whenIdle();
    if (flushBackend && this.negotiated && !this.negotiated.backend.readOnly) {
      try {
        await this.negotiated.backend.flush();
      } catch (err) {
        this.errorLog.log({ err: String(err) }, 'nbd: flush on disconnect failed');
      }
    }
    this.writer.flush();
    if (this.socket.destroyed) return;
    // Destroy once our side is written out: a peer that never closes does not keep us open.
    this.socket.end(() => this.socket.destroy());
  }

  private onClose(): void {
    if (this.closedOnce) return;
    this.closedOnce = true;
    clearTimeout(this.handshakeTimer);
    this.writer.close();
    this.reader.clear();
    this.transmission?.stop();
    this.finishing = true;
    this.resolveClosed({ ...this.info, reason: this.closeReason, error: this.closeError });
  }
}
