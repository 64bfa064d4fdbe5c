/**
 * The NBD server: accepts TCP clients and serves the exports of an ExportCatalog to each.
 *
 *   const server = new NbdServer({ catalog, logger });
 *   const { port } = await server.listen();
 *   ...
 *   await server.close();
 *
 * Events (for metrics and tests): 'connection' (ConnectionInfo), 'disconnect' (DisconnectInfo:
 * reason, and an NbdError with a stable code when the client was at fault). Counters: `metrics()`. The server never closes backends: the catalog owns them.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { ExportCatalog } from './backend.js';
import {
  CLOSE_GRACE_MS,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_REQUEST_BYTES,
  HANDSHAKE_TIMEOUT_MS,
  MAX_POOLED_READ_BYTES,
  MAX_STRING_BYTES,
  READ_POOL_FREE_BYTES,
} from './constants.js';
import { createSecureContext } from 'node:tls';
import { type ConnectionInfo, type DisconnectInfo, NbdConnection, type NbdTlsConfig } from './connection.js';
import type { NbdLogger } from './log.js';
import { type NbdMetrics, newMetrics } from './metrics.js';
import { ReadBufferPool } from './read-pool.js';

export interface NbdServerOptions {
  catalog: ExportCatalog;
  logger: NbdLogger;
  /** Default 127.0.0.1: exposing a disk to the network is a decision, not a default. */
  host?: string;
  /** Default 0: the OS picks; `listen()` says which. */
  port?: number;
  /** Largest READ/WRITE/CACHE length; advertised as the maximum block size. Default 32 MiB. */
  maxRequestBytes?: number;
  /** Concurrent connections; more are refused at accept. Default DEFAULT_MAX_CONNECTIONS. */
  maxConnections?: number;
  /** Time a client has to reach transmission. Default HANDSHAKE_TIMEOUT_MS. */
  handshakeTimeoutMs?: number;
  /** close() waits this long for in-flight requests before destroying sockets. Default CLOSE_GRACE_MS. */
  closeGraceMs?: number;
  /**
   * TLS through NBD_OPT_STARTTLS (PEM strings or buffers). With `ca`, clients must present a
   * certificate it signed. `required` (the default when TLS is configured): nothing is served
   * in the clear; false: TLS is offered, plaintext still served.
   */
  tls?: { key: string | Buffer; cert: string | Buffer; ca?: string | Buffer; required?: boolean };
}

export interface NbdServerEvents {
  connection: [ConnectionInfo];
  disconnect: [DisconnectInfo];
}

export class NbdServer extends EventEmitter<NbdServerEvents> {
  private readonly options: Required<Omit<NbdServerOptions, 'catalog' | 'logger' | 'tls'>> & Pick<NbdServerOptions, 'catalog' | 'logger'>;
  private readonly tls: NbdTlsConfig | undefined;
  private readonly connections = new Set<NbdConnection>();
  private readonly counters: NbdMetrics = newMetrics();
  private readonly readPool = new ReadBufferPool(READ_POOL_FREE_BYTES, MAX_POOLED_READ_BYTES);
  private server: net.Server | undefined;
  private nextConnectionId = 1;
  private shuttingDown = false;
  private closing: Promise<void> | undefined;

  constructor(options: NbdServerOptions) {
    super();
    if (!options || typeof options.catalog?.get !== 'function' || typeof options.catalog?.list !== 'function') {
      throw new TypeError('NbdServer: options.catalog must be an ExportCatalog');
    }
    if (!options.logger) throw new TypeError('NbdServer: options.logger is required');
    const maxRequestBytes = options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    if (!Number.isInteger(maxRequestBytes) || maxRequestBytes < 4096 || maxRequestBytes > 0xffffffff) {
      throw new RangeError(`NbdServer: maxRequestBytes must be an integer in [4096, 2^32-1], got ${maxRequestBytes}`);
    }
    for (const { name } of options.catalog.list()) {
      if (Buffer.byteLength(name) > MAX_STRING_BYTES) throw new RangeError(`NbdServer: export name longer than ${MAX_STRING_BYTES} bytes`);
    }
    this.options = {
      catalog: options.catalog,
      logger: options.logger,
      host: options.host ?? '127.0.0.1',
      port: options.port ?? 0,
      maxRequestBytes,
      maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS,
      closeGraceMs: options.closeGraceMs ?? CLOSE_GRACE_MS,
    };
    if (options.tls) {
      // Bad PEM fails here, at start, not at the first client.
      const { key, cert, ca } = options.tls;
      this.tls = { context: createSecureContext({ key, cert, ...(ca ? { ca } : {}) }), verifyClients: ca !== undefined, required: options.tls.required ?? true };
    }
  }

  listen(): Promise<{ host: string; port: number }> {
    if (this.server) return Promise.reject(new Error('NbdServer: already listening'));
    if (this.shuttingDown) return Promise.reject(new Error('NbdServer: closed'));
    // allowHalfOpen: a client that shuts down its sending side still gets the replies it is owed.
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.accept(socket));
    server.maxConnections = this.options.maxConnections;
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', reject);
        server.on('error', (err) => this.options.logger.error({ err: String(err) }, 'nbd: server socket error'));
        const address = server.address() as net.AddressInfo;
        this.options.logger.info({ host: address.address, port: address.port }, 'nbd: listening');
        resolve({ host: address.address, port: address.port });
      });
    });
  }

  /** Counters since start, plus the current connection and in-flight counts. */
  metrics(): NbdMetrics & { inFlightRequests: number } {
    let inFlightRequests = 0;
    for (const c of this.connections) inFlightRequests += c.inFlightRequests;
    return { ...this.counters, inFlightRequests };
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Stop accepting, let each client's in-flight requests finish (new ones get ESHUTDOWN), flush,
   * close every connection. Idempotent: later calls return the same promise.
   */
  close(): Promise<void> {
    if (!this.closing) this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.shuttingDown = true;
    const server = this.server;
    const stopped = server
      ? new Promise<void>((resolve) => server.close(() => resolve()))
      : Promise.resolve();
    await Promise.all([...this.connections].map((c) => c.shutdown(this.options.closeGraceMs)));
    await stopped;
    this.options.logger.info({}, 'nbd: server closed');
  }

  private accept(socket: net.Socket): void {
    if (this.shuttingDown) {
      socket.destroy();
      return;
    }
    const connection = new NbdConnection(socket, {
      id: this.nextConnectionId++,
      catalog: this.options.catalog,
      logger: this.options.logger,
      metrics: this.counters,
      maxRequestBytes: this.options.maxRequestBytes,
      handshakeTimeoutMs: this.options.handshakeTimeoutMs,
      isShuttingDown: () => this.shuttingDown,
      readPool: this.readPool,
      ...(this.tls ? { tls: this.tls } : {}),
    });
    this.connections.add(connection);
    this.counters.connectionsOpen++;
    this.counters.connectionsTotal++;
    this.options.logger.debug({ conn: connection.id, remote: connection.remoteAddress }, 'nbd: client connected');
    this.emit('connection', connection.info);
    void connection.closed.then((info) => {
      this.connections.delete(connection);
      this.counters.connectionsOpen--;
      this.emit('disconnect', info);
    });
    connection.start();
  }
}
