import { createServer, type IncomingMessage, type Server, type ServerOptions, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { AuthHeaders, CHALLENGE_PATH, ChallengeAuthority, RateLimitedLog, type Claim, type LinkSecurity } from './auth.js';
import type { LamportClock } from './clock.js';
import { ErrorCodes, type Batch, type ErrorCode, type HelloFrame, type MemberId } from './frames.js';
import { CloseCodes, Link } from './link.js';
import { resolveLimits, type Limits } from './limits.js';
import { stderrLogger, type Logger } from './logger.js';

export interface LinkServerOptions {
  /** This member's id (`from` of the batches it sends). */
  localId: MemberId;
  /** Hellos with another clusterId are refused with ERR_WRONG_CLUSTER. */
  clusterId: string;
  /**
   * A link whose hello was accepted. The owner replies with a `welcome` frame (it knows its epoch
   * and version) and attaches its 'batch' listener before returning: frames that followed the
   * hello in the same message are delivered right after this returns.
   */
  onLink: (link: Link, hello: HelloFrame) => void;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (any free port). */
  port?: number;
  /** Plain HTTP requests on the same port (status JSON, web page). Without it: 426. */
  httpHandler?: (req: IncomingMessage, res: ServerResponse) => void;
  /**
   * Other WebSocket endpoints on the same port (the visualizer's event stream): offered every
   * upgrade request first; return true when it took the socket. Member links are the rest.
   */
  upgradeHandler?: (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean;
  clock?: LamportClock;
  logger?: Logger;
  limits?: Partial<Limits>;
  /**
   * The cluster secret (every upgrade must prove it holds it, see auth.ts) and TLS (wss://).
   * Without a secret any peer that knows the cluster id may link: single-host development only.
   */
  security?: LinkSecurity;
}

export interface ListenAddress {
  host: string;
  port: number;
  /** ws://host:port, or wss:// with TLS */
  url: string;
}

/** Identifies a TCP connection across its raw and TLS sockets. */
const socketKey = (socket: Socket): string => `${socket.remoteAddress}|${socket.remotePort}`;

/**
 * Accepts links. With a secret, a peer must prove membership in its upgrade request (auth.ts) or
 * gets 401/403 and no WebSocket. Each new link must then send `hello` first, within
 * limits.helloTimeoutMs; a wrong clusterId, a hello that is not who authenticated, a first frame
 * that is not hello, or silence gets an error frame and a close. Nothing a peer sends before its
 * hello is accepted reaches the owner.
 *
 * Bounds against strangers: a connection that does not complete its HTTP request (or TLS
 * handshake) within helloTimeoutMs is dropped; at most limits.maxPendingLinksPerAddress
 * connections per address may be in their handshake, limits.maxConnections in all; refusals are
 * logged at most limits.refusalLogsPerSecond a second.
 */
export class LinkServer {
  readonly #options: LinkServerOptions;
  readonly #limits: Limits;
  readonly #logger: Logger;
  readonly #http: Server;
  readonly #wss: WebSocketServer;
  readonly #scheme: 'ws' | 'wss';
  readonly #auth: ChallengeAuthority | null;
  /** Upgrade requests that proved membership, until their connection event. */
  readonly #authenticated = new WeakMap<IncomingMessage, { claim: Claim; challenge: Buffer; nonce: Buffer }>();
  /** Connections still in their handshake, by socketKey. */
  readonly #pending = new Map<string, { address: string; socket: Socket }>();
  readonly #pendingByAddress = new Map<string, number>();
  readonly #refusals: RateLimitedLog;
  /** Every open link, greeted or not. */
  readonly #links = new Set<Link>();
  #closing: Promise<void> | undefined;

  constructor(options: LinkServerOptions) {
    this.#options = options;
    this.#limits = resolveLimits(options.limits);
    this.#logger = options.logger ?? stderrLogger;
    this.#refusals = new RateLimitedLog(this.#limits.refusalLogsPerSecond);
    const secret = options.security?.secret;
    this.#auth = secret
      ? new ChallengeAuthority({ secret, clusterId: options.clusterId, ttlMs: this.#limits.helloTimeoutMs, maxUsed: this.#limits.maxUsedChallenges })
      : null;
    const handshakeMs = this.#limits.helloTimeoutMs;
    const httpOptions: ServerOptions = {
      // Slow loris: a connection that has not sent its whole request by then gets 408 and is closed.
      headersTimeout: handshakeMs,
      requestTimeout: 2 * handshakeMs,
      // Node checks those timeouts every 30 s by default, far too late for a 5 s bound.
      connectionsCheckingInterval: Math.max(20, Math.min(1000, Math.floor(handshakeMs / 5))),
    };
    const onRequest = (req: IncomingMessage, res: ServerResponse) => this.#onRequest(req, res);
    const tls = options.security?.tls;
    if (tls?.cert !== undefined && tls.key !== undefined) {
      this.#http = createTlsServer({ ...httpOptions, cert: tls.cert, key: tls.key, handshakeTimeout: handshakeMs }, onRequest);
      this.#scheme = 'wss';
      this.#http.on('tlsClientError', (err: Error, socket: Socket) => {
        this.#refused(`${socket.remoteAddress}:${socket.remotePort}`, 'ERR_TLS', err.message, null);
      });
    } else {
      this.#http = createServer(httpOptions, onRequest);
      this.#scheme = 'ws';
    }
    this.#http.maxConnections = this.#limits.maxConnections;
    this.#http.on('connection', this.#onSocket);
    // A plain request (status, metrics, a challenge) arrived whole: Node's request and keep-alive
    // timeouts bound it from here, not the handshake's idle bound.
    this.#http.on('request', (req: IncomingMessage) => this.#settle(socketKey(req.socket)));
    this.#wss = new WebSocketServer({
      // Upgrades are routed by #onUpgrade: other endpoints may share the port.
      noServer: true,
      maxPayload: this.#limits.maxMessageBytes,
      perMessageDeflate: false,
      clientTracking: false,
      verifyClient: (info: { req: IncomingMessage }, done: (ok: boolean, status?: number, message?: string, headers?: Record<string, string>) => void) =>
        this.#verifyUpgrade(info.req, done),
    });
    this.#wss.on('headers', (headers: string[], req: IncomingMessage) => {
      const authed = this.#authenticated.get(req);
      if (authed && this.#auth) headers.push(...this.#auth.proofHeaders(authed.challenge, authed.nonce, this.#options.localId));
    });
    this.#wss.on('connection', this.#onConnection);
    this.#http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.#onUpgrade(req, socket, head));
    // With an external http server, ws re-emits its errors here; never let them go unhandled.
    this.#wss.on('error', (err) => this.#logger.warn({ err: err.message }, 'protocol: link server error'));
  }

  /** True when every link must prove it holds the cluster secret. */
  get authenticates(): boolean {
    return this.#auth !== null;
  }

  /** Connections in their handshake now (HTTP upgrade, auth, hello), for tests and status. */
  get pendingConnections(): number {
    return this.#pending.size;
  }

  /** Links open now (including those still waiting for hello). */
  get links(): ReadonlySet<Link> {
    return this.#links;
  }

  listen(): Promise<ListenAddress> {
    const host = this.#options.host ?? '127.0.0.1';
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.#http.once('error', onError);
      this.#http.listen(this.#options.port ?? 0, host, () => {
        this.#http.off('error', onError);
        this.#http.on('error', (err) => this.#logger.error({ err: err.message }, 'protocol: http server error'));
        const { port } = this.#http.address() as AddressInfo;
        resolve({ host, port, url: `${this.#scheme}://${host.includes(':') ? `[${host}]` : host}:${port}` });
      });
    });
  }

  /** Close every link (flushing what each has queued), then stop listening. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.all([...this.#links].map((link) => link.close(CloseCodes.goingAway, 'server closing')));
      this.#wss.close();
      await new Promise<void>((resolve) => {
        if (!this.#http.listening) return resolve();
        this.#http.close(() => resolve());
        this.#http.closeAllConnections();
      });
    })();
    return this.#closing;
  }

  #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    if (this.#options.upgradeHandler?.(req, socket, head)) {
      // Not a member link: no hello to wait for, so it does not count as a pending handshake.
      this.#settle(socketKey(req.socket));
      return;
    }
    this.#wss.handleUpgrade(req, socket, head, (ws) => this.#wss.emit('connection', ws, req));
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    if (req.url === CHALLENGE_PATH) {
      if (!this.#auth) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('this member runs without a cluster secret\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end(`${this.#auth.mint()}\n`);
      return;
    }
    if (this.#options.httpHandler) return this.#options.httpHandler(req, res);
    res.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket' }).end('FreEBS link: WebSocket only\n');
  }

  /** Every TCP connection starts out pending; a few per address at most. */
  readonly #onSocket = (socket: Socket): void => {
    const address = socket.remoteAddress ?? 'unknown';
    const count = (this.#pendingByAddress.get(address) ?? 0) + 1;
    if (count > this.#limits.maxPendingLinksPerAddress) {
      this.#refused(`${address}:${socket.remotePort}`, ErrorCodes.overloaded, `more than ${this.#limits.maxPendingLinksPerAddress} connections from ${address} in their handshake`, null);
      socket.destroy();
      return;
    }
    const key = socketKey(socket);
    this.#pending.set(key, { address, socket });
    this.#pendingByAddress.set(address, count);
    socket.once('close', () => this.#settle(key));
    // Node's headersTimeout starts at the first byte: a connection that sends nothing at all
    // needs its own bound. Idle this long while in its handshake, it is dropped. (ws clears the
    // timeout at the upgrade; the hello timer takes over from there.)
    socket.setTimeout(this.#limits.helloTimeoutMs);
    socket.on('timeout', () => {
      if (!this.#pending.has(key)) return;
      this.#refused(`${address}:${socket.remotePort}`, ErrorCodes.helloTimeout, `silent for ${this.#limits.helloTimeoutMs} ms in its handshake`, null);
      socket.destroy();
    });
    // And an absolute bound: a peer trickling a byte now and then is never idle, and Node's
    // headersTimeout check is not to be relied on under load.
    const deadline = setTimeout(() => {
      if (!this.#pending.has(key)) return;
      this.#refused(`${address}:${socket.remotePort}`, ErrorCodes.helloTimeout, `handshake not finished within ${2 * this.#limits.helloTimeoutMs} ms`, null);
      socket.destroy();
    }, 2 * this.#limits.helloTimeoutMs);
    deadline.unref();
    socket.once('close', () => clearTimeout(deadline));
  };

  /** The connection finished its handshake (or closed): it no longer counts as pending. */
  #settle(key: string): void {
    const entry = this.#pending.get(key);
    if (entry === undefined) return;
    const { address, socket } = entry;
    if (!socket.destroyed) socket.setTimeout(0);
    this.#pending.delete(key);
    const count = (this.#pendingByAddress.get(address) ?? 1) - 1;
    if (count > 0) this.#pendingByAddress.set(address, count);
    else this.#pendingByAddress.delete(address);
  }

  #refused(peer: string, code: string, reason: string, claimedId: string | null): void {
    this.#refusals.emit(code, (suppressed) =>
      this.#logger.warn(
        { peer, code, reason, ...(claimedId !== null ? { claimedId } : {}), ...(suppressed > 0 ? { suppressed } : {}) },
        'protocol: refused a link',
      ),
    );
  }

  #verifyUpgrade(req: IncomingMessage, done: (ok: boolean, status?: number, message?: string, headers?: Record<string, string>) => void): void {
    if (this.#closing) return done(false, 503, 'closing');
    if (!this.#auth) return done(true);
    const outcome = this.#auth.verify(req.headers);
    if (!outcome.ok) {
      this.#refused(`${req.socket.remoteAddress}:${req.socket.remotePort}`, outcome.code, outcome.reason, outcome.claimedId);
      // The reason goes back in the body: it names no secret, and tells an operator what to fix.
      return done(false, outcome.status, outcome.reason, { [AuthHeaders.error]: outcome.code, connection: 'close' });
    }
    this.#authenticated.set(req, { claim: outcome.claim, challenge: outcome.challenge, nonce: outcome.nonce });
    done(true);
  }

  readonly #onConnection = (ws: WebSocket, req: IncomingMessage): void => {
    const label = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    if (this.#closing) {
      ws.terminate();
      return;
    }
    const authed = this.#authenticated.get(req);
    this.#authenticated.delete(req);
    const key = socketKey(req.socket);
    const link = new Link(ws, {
      localId: this.#options.localId,
      clock: this.#options.clock,
      logger: this.#logger,
      limits: this.#options.limits,
      label,
    });
    this.#links.add(link);

    const refuse = (code: ErrorCode, closeCode: number, message: string, claimedId: string | null = null): void => {
      this.#refused(label, code, message, claimedId);
      link.send({ t: 'error', code, message });
      void link.close(closeCode, message);
    };

    const helloTimer = setTimeout(() => {
      refuse(ErrorCodes.helloTimeout, CloseCodes.helloTimeout, `no hello within ${this.#limits.helloTimeoutMs} ms`);
    }, this.#limits.helloTimeoutMs);

    link.once('close', () => {
      clearTimeout(helloTimer);
      link.off('batch', onFirstBatch);
      this.#links.delete(link);
    });

    const onFirstBatch = (batch: Batch): void => {
      clearTimeout(helloTimer);
      const first = batch.frames[0];
      if (first === undefined || first.t !== 'hello') {
        refuse(ErrorCodes.badFrame, CloseCodes.badHello, `first frame must be hello, got ${first === undefined ? 'an empty batch' : first.t}`);
        return;
      }
      if (first.clusterId !== this.#options.clusterId) {
        refuse(
          ErrorCodes.wrongCluster,
          CloseCodes.wrongCluster,
          `wrong cluster: this member is in ${JSON.stringify(this.#options.clusterId)}, hello says ${JSON.stringify(first.clusterId)}`,
        );
        return;
      }
      if (authed && (first.id !== authed.claim.id || first.role !== authed.claim.role)) {
        refuse(
          ErrorCodes.authFailed,
          CloseCodes.authFailed,
          `hello says ${first.role} ${JSON.stringify(first.id)}, but the link authenticated as ${authed.claim.role} ${JSON.stringify(authed.claim.id)}`,
          first.id,
        );
        return;
      }
      this.#settle(key);
      this.#options.onLink(link, first);
      if (batch.frames.length > 1 && link.isOpen) {
        link.emit('batch', { from: batch.from, lc: batch.lc, frames: batch.frames.slice(1) });
      }
    };
    link.once('batch', onFirstBatch);
  };
}
