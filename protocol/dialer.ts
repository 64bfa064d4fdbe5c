import { EventEmitter } from 'node:events';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import WebSocket from 'ws';
import { AuthHeaders, CHALLENGE_PATH, parseChallenge, upgradeHeaders, verifyServer, type LinkSecurity } from './auth.js';
import { LamportClock } from './clock.js';
import { ErrorCodes, type Batch, type Frame, type HelloFrame, type MemberId, type WelcomeFrame } from './frames.js';
import { CloseCodes, Link, type LinkCloseInfo } from './link.js';
import { resolveLimits, type Limits } from './limits.js';
import { stderrLogger, type Logger } from './logger.js';

export interface DialingLinkOptions {
  /** ws://host:port of the member to reach. */
  url: string;
  /** Sent first on every connection; a function so each redial carries the current epoch. */
  hello: HelloFrame | (() => HelloFrame);
  /** `from` of the batches sent; defaults to the hello's id. */
  localId?: MemberId;
  clock?: LamportClock;
  logger?: Logger;
  limits?: Partial<Limits>;
  /**
   * With a secret, every connection proves membership in its upgrade request and checks the
   * peer's proof before it sends anything (auth.ts); a peer without one is refused. tls.ca is
   * trusted for wss:// urls.
   */
  security?: LinkSecurity;
}

export interface DialFailure {
  /** The peer's error code when it refused us (e.g. ERR_WRONG_CLUSTER), else undefined. */
  code: string | undefined;
  reason: string;
  /** Consecutive failed attempts, this one included. */
  attempt: number;
  /** When the next attempt starts. */
  retryInMs: number;
}

export interface DialingLinkEvents {
  /** Welcome received: the link is usable. Resend what matters (nothing sent while down was kept). */
  up: [welcome: WelcomeFrame, link: Link];
  /** A link that was up is gone; redialing follows unless close() was called. */
  down: [info: LinkCloseInfo];
  /** An attempt failed before welcome (refused, unreachable, timed out). */
  'dial-error': [failure: DialFailure];
  /** A batch from the peer (frames after the welcome included). */
  batch: [batch: Batch];
  /** The current link's backpressure cleared. */
  drain: [];
}

type State = 'dialing' | 'greeting' | 'up' | 'waiting' | 'closed';

/**
 * A link to one address that stays up: dial, send hello, wait for welcome (or an error frame),
 * and after any loss redial with exponential backoff and jitter between limits.reconnectMinMs
 * and reconnectMaxMs, until close(). The backoff starts over after a link that stayed up for
 * limits.stableLinkMs.
 *
 * While down, send() returns false and the frame is dropped, not kept: after a reconnect the
 * peer's state is unknown, so callers resend what matters on 'up' (e.g. from their own
 * unacknowledged-write list, starting after the welcome's appliedVersion).
 *
 * Dialing starts in the constructor; attach listeners right after constructing.
 */
export class DialingLink extends EventEmitter<DialingLinkEvents> {
  readonly url: string;
  readonly clock: LamportClock;

  readonly #options: DialingLinkOptions;
  readonly #limits: Limits;
  readonly #logger: Logger;

  #state: State = 'dialing';
  #ws: WebSocket | undefined;
  #link: Link | undefined;
  /** pause() was called: links that come up stop reading once welcomed. */
  #paused = false;
  #welcome: WelcomeFrame | undefined;
  #failures = 0;
  #upSinceMs = 0;
  #timer: NodeJS.Timeout | undefined;
  /** Why the attempt in progress failed, when known before the socket closes. */
  #failure: { code: string | undefined; reason: string } | undefined;
  /** The challenge request of the attempt in progress. */
  #challengeRequest: ClientRequest | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: DialingLinkOptions) {
    super();
    this.#options = options;
    this.url = options.url;
    this.clock = options.clock ?? new LamportClock();
    this.#limits = resolveLimits(options.limits);
    this.#logger = options.logger ?? stderrLogger;
    this.#dial();
  }

  /** The link while up, else undefined. */
  get link(): Link | undefined {
    return this.#state === 'up' ? this.#link : undefined;
  }

  get isUp(): boolean {
    return this.#state === 'up';
  }

  /** The welcome of the current link while up. */
  get welcome(): WelcomeFrame | undefined {
    return this.#state === 'up' ? this.#welcome : undefined;
  }

  /** Stop reading from the peer, on this link and on every later one, until resume(). */
  pause(): void {
    this.#paused = true;
    if (this.#state === 'up') this.#link?.pause();
  }

  resume(): void {
    this.#paused = false;
    if (this.#state === 'up') this.#link?.resume();
  }

  /** Send on the current link. False while down (the frame is dropped) or under backpressure (kept). */
  send(frame: Frame): boolean {
    return this.#state === 'up' && this.#link !== undefined ? this.#link.send(frame) : false;
  }

  /** Stop redialing and close the current link (flushing it). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const wasUp = this.#state === 'up';
      this.#state = 'closed';
      if (this.#timer) clearTimeout(this.#timer);
      const link = this.#link;
      const ws = this.#ws;
      this.#link = undefined;
      this.#ws = undefined;
      this.#challengeRequest?.destroy();
      if (link) {
        await link.close(CloseCodes.normal, 'closed by owner');
      } else if (ws) {
        ws.terminate();
      }
      if (wasUp) this.emit('down', { code: CloseCodes.normal, reason: 'closed by owner' });
    })();
    return this.#closing;
  }

  #dial(): void {
    this.#state = 'dialing';
    this.#failure = undefined;
    const secret = this.#options.security?.secret;
    if (!secret) {
      this.#open(undefined);
      return;
    }
    this.#fetchChallenge().then(
      (challenge) => {
        this.#challengeRequest = undefined;
        if (this.#state === 'dialing') this.#open({ secret, challenge });
      },
      (failure: { code: string | undefined; reason: string }) => {
        this.#challengeRequest = undefined;
        if (this.#state !== 'dialing') return;
        this.#failure = failure;
        this.#attemptFailed();
      },
    );
  }

  /** GET the peer's challenge (a small text body), within helloTimeoutMs. */
  #fetchChallenge(): Promise<Buffer> {
    const url = new URL(this.url);
    const secure = url.protocol === 'wss:';
    url.protocol = secure ? 'https:' : 'http:';
    url.pathname = CHALLENGE_PATH;
    url.search = '';
    return new Promise((resolve, reject) => {
      const timeoutMs = this.#limits.helloTimeoutMs;
      const fail = (code: string | undefined, reason: string) => {
        clearTimeout(timer);
        req.destroy();
        reject({ code, reason });
      };
      const timer = setTimeout(() => fail(undefined, `no challenge within ${timeoutMs} ms`), timeoutMs);
      const options = { agent: false as const, headers: { connection: 'close' }, ...this.#tlsOptions() };
      const req = (secure ? httpsRequest : httpRequest)(url, options, (res: IncomingMessage) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
          if (body.length > 1024) fail(ErrorCodes.authFailed, 'challenge too long');
        });
        res.on('error', (err) => fail(undefined, err.message));
        res.on('end', () => {
          clearTimeout(timer);
          if (res.statusCode === 404) {
            return reject({ code: ErrorCodes.authFailed, reason: 'the peer offers no challenge (it runs without a cluster secret): refusing an unauthenticated link' });
          }
          const challenge = res.statusCode === 200 ? parseChallenge(body) : null;
          if (challenge === null) return reject({ code: undefined, reason: `challenge request: HTTP ${res.statusCode}` });
          resolve(challenge);
        });
      });
      this.#challengeRequest = req;
      req.on('error', (err) => fail(undefined, err.message));
      req.end();
    });
  }

  #tlsOptions(): { ca?: Buffer | string } {
    const ca = this.#options.security?.tls?.ca;
    return ca === undefined ? {} : { ca };
  }

  #open(auth: { secret: Uint8Array; challenge: Buffer } | undefined): void {
    const hello = this.#helloFrame();
    const credential = auth ? upgradeHeaders(auth.secret, auth.challenge, { clusterId: hello.clusterId, id: hello.id, role: hello.role }) : undefined;
    const ws = new WebSocket(this.url, {
      maxPayload: this.#limits.maxMessageBytes,
      perMessageDeflate: false,
      handshakeTimeout: this.#limits.helloTimeoutMs,
      // Masking guards browsers' proxies against cache poisoning; between cluster members it
      // only costs an XOR pass over every byte on both ends. A zero mask makes ws skip it.
      generateMask: zeroMask,
      ...(credential ? { headers: credential.headers } : {}),
      ...this.#tlsOptions(),
    });
    this.#ws = ws;
    if (auth && credential) {
      // Nothing is sent to a peer that cannot prove membership: check before 'open'.
      ws.once('upgrade', (res: IncomingMessage) => {
        const verdict = verifyServer(auth.secret, auth.challenge, credential.nonce, hello.clusterId, res.headers);
        if (!verdict.ok) {
          this.#failure = { code: ErrorCodes.authFailed, reason: verdict.reason };
          ws.terminate();
        }
      });
    }
    ws.once('unexpected-response', (req: ClientRequest, res: IncomingMessage) => {
      // A refusal (401/403/503) says why in a header and a short body.
      const code = res.headers[AuthHeaders.error];
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (body.length < 512) body += chunk;
      });
      const done = () => {
        this.#failure ??= {
          code: typeof code === 'string' ? code : undefined,
          reason: `refused: HTTP ${res.statusCode}${body ? `: ${body.trim().slice(0, 512)}` : ''}`,
        };
        if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
        else req.destroy();
      };
      res.once('end', done);
      res.once('error', done);
    });
    const onError = (err: Error) => {
      this.#failure ??= { code: undefined, reason: err.message };
    };
    const onCloseBeforeOpen = () => this.#attemptFailed();
    ws.on('error', onError);
    ws.once('close', onCloseBeforeOpen);
    ws.once('open', () => {
      ws.off('error', onError);
      ws.off('close', onCloseBeforeOpen);
      if (this.#state === 'closed') {
        ws.terminate();
        return;
      }
      this.#greet(ws);
    });
  }

  #greet(ws: WebSocket): void {
    this.#state = 'greeting';
    const link = new Link(ws, {
      localId: this.#options.localId ?? this.#helloFrame().id,
      clock: this.clock,
      logger: this.#logger,
      limits: this.#options.limits,
      label: this.url,
    });
    this.#link = link;
    const welcomeTimer = setTimeout(() => {
      this.#failure ??= { code: undefined, reason: `no welcome within ${this.#limits.helloTimeoutMs} ms` };
      void link.close(CloseCodes.welcomeTimeout, 'no welcome');
    }, this.#limits.helloTimeoutMs);

    const onFirstBatch = (batch: Batch): void => {
      clearTimeout(welcomeTimer);
      const first = batch.frames[0];
      if (first?.t === 'welcome') {
        this.#up(link, first, batch);
        return;
      }
      this.#failure =
        first?.t === 'error'
          ? { code: first.code, reason: `refused: ${first.code}: ${first.message}` }
          : { code: undefined, reason: `first frame must be welcome, got ${first === undefined ? 'an empty batch' : first.t}` };
      void link.close(first?.t === 'error' ? CloseCodes.refused : CloseCodes.badHello, this.#failure.reason);
    };
    link.once('batch', onFirstBatch);
    link.once('close', (info) => {
      clearTimeout(welcomeTimer);
      link.off('batch', onFirstBatch);
      if (this.#link !== link) return; // closed by close()
      this.#link = undefined;
      this.#ws = undefined;
      if (this.#state === 'up') this.#down(info);
      else {
        this.#failure ??= { code: undefined, reason: info.reason };
        this.#attemptFailed();
      }
    });
    link.send(this.#helloFrame());
  }

  #up(link: Link, welcome: WelcomeFrame, batch: Batch): void {
    this.#state = 'up';
    this.#welcome = welcome;
    this.#upSinceMs = Date.now();
    link.on('batch', (b) => this.emit('batch', b));
    link.on('drain', () => this.emit('drain'));
    this.#logger.info({ peer: this.url, id: welcome.id, epoch: welcome.epoch }, 'protocol: link up');
    this.emit('up', welcome, link);
    if (batch.frames.length > 1 && this.#link === link && link.isOpen) {
      this.emit('batch', { from: batch.from, lc: batch.lc, frames: batch.frames.slice(1) });
    }
    if (this.#paused && this.#link === link) link.pause();
  }

  #down(info: LinkCloseInfo): void {
    // A link that held long enough proves the peer healthy: start the backoff over.
    // One that dropped quickly counts as a failure, so a flapping peer is not hammered.
    if (Date.now() - this.#upSinceMs >= this.#limits.stableLinkMs) this.#failures = 0;
    else this.#failures++;
    this.#welcome = undefined;
    this.#state = 'waiting';
    const delayMs = this.#nextDelayMs();
    this.#logger.warn({ peer: this.url, code: info.code, reason: info.reason, retryInMs: Math.round(delayMs) }, 'protocol: link down');
    this.emit('down', info);
    if (this.#state === 'waiting') this.#timer = setTimeout(() => this.#dial(), delayMs);
  }

  #attemptFailed(): void {
    if (this.#state === 'closed') return;
    this.#ws = undefined;
    this.#state = 'waiting';
    this.#failures++;
    const delayMs = this.#nextDelayMs();
    const failure: DialFailure = {
      code: this.#failure?.code,
      reason: this.#failure?.reason ?? 'connection closed before welcome',
      attempt: this.#failures,
      retryInMs: Math.round(delayMs),
    };
    this.#logger.warn({ peer: this.url, ...failure }, 'protocol: dial failed');
    this.emit('dial-error', failure);
    if (this.#state === 'waiting') this.#timer = setTimeout(() => this.#dial(), delayMs);
  }

  /**
   * Exponential in consecutive failures, capped, with "equal jitter" (half fixed, half random) so
   * members that lost the same peer do not redial in lockstep; never below reconnectMinMs.
   */
  #nextDelayMs(): number {
    const exp = Math.min(this.#failures, 20);
    const baseMs = Math.min(this.#limits.reconnectMaxMs, this.#limits.reconnectMinMs * 2 ** exp);
    return Math.max(this.#limits.reconnectMinMs, baseMs / 2 + Math.random() * (baseMs / 2));
  }

  #helloFrame(): HelloFrame {
    const hello = this.#options.hello;
    return typeof hello === 'function' ? hello() : hello;
  }
}

function zeroMask(mask: Buffer): void {
  mask.fill(0);
}
