import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
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
  clock?: LamportClock;
  logger?: Logger;
  limits?: Partial<Limits>;
}

export interface ListenAddress {
  host: string;
  port: number;
  /** ws://host:port */
  url: string;
}

/**
 * Accepts links. Each new link must send `hello` first, within limits.helloTimeoutMs; a wrong
 * clusterId, a first frame that is not hello, or silence gets an error frame and a close.
 */
export class LinkServer {
  readonly #options: LinkServerOptions;
  readonly #limits: Limits;
  readonly #logger: Logger;
  readonly #http: Server;
  readonly #wss: WebSocketServer;
  /** Every open link, greeted or not. */
  readonly #links = new Set<Link>();
  #closing: Promise<void> | undefined;

  constructor(options: LinkServerOptions) {
    this.#options = options;
    this.#limits = resolveLimits(options.limits);
    this.#logger = options.logger ?? stderrLogger;
    this.#http = createServer((req, res) => {
      if (this.#options.httpHandler) return this.#options.httpHandler(req, res);
      res.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket' }).end('FreEBS link: WebSocket only\n');
    });
    this.#wss = new WebSocketServer({
      server: this.#http,
      maxPayload: this.#limits.maxMessageBytes,
      perMessageDeflate: false,
      clientTracking: false,
    });
    this.#wss.on('connection', this.#onConnection);
    // With an external http server, ws re-emits its errors here; never let them go unhandled.
    this.#wss.on('error', (err) => this.#logger.warn({ err: err.message }, 'protocol: link server error'));
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
        resolve({ host, port, url: `ws://${host.includes(':') ? `[${host}]` : host}:${port}` });
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

  readonly #onConnection = (ws: WebSocket, req: IncomingMessage): void => {
    const label = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    if (this.#closing) {
      ws.terminate();
      return;
    }
    const link = new Link(ws, {
      localId: this.#options.localId,
      clock: this.#options.clock,
      logger: this.#logger,
      limits: this.#options.limits,
      label,
    });
    this.#links.add(link);

    const refuse = (code: ErrorCode, closeCode: number, message: string): void => {
      this.#logger.warn({ peer: label, code, reason: message }, 'protocol: refused a link');
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
      this.#options.onLink(link, first);
      if (batch.frames.length > 1 && link.isOpen) {
        link.emit('batch', { from: batch.from, lc: batch.lc, frames: batch.frames.slice(1) });
      }
    };
    link.once('batch', onFirstBatch);
  };
}
