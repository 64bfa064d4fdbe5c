import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import { LamportClock } from './clock.js';
import { decodeBatchParts, encodeBatchParts } from './codec.js';
import { ProtocolError } from './errors.js';
import { ErrorCodes, type Batch, type Frame, type MemberId } from './frames.js';
import { resolveLimits, type Limits } from './limits.js';
import { stderrLogger, type Logger } from './logger.js';
import { validateFrame } from './validate.js';

/** WebSocket close codes used by the protocol layer (4000–4999 are the application's). */
export const CloseCodes = {
  normal: 1000,
  goingAway: 1001,
  /** ws's own code for a message over maxPayload. */
  messageTooBig: 1009,
  wrongCluster: 4001,
  helloTimeout: 4002,
  badHello: 4003,
  welcomeTimeout: 4004,
  refused: 4005,
  /** The hello does not match the credential of the upgrade request. */
  authFailed: 4006,
  /** More than limits.sendMaxPendingBytes pending: the peer stopped reading, the link is dropped. */
  peerNotReading: 4007,
} as const;

export interface LinkCloseInfo {
  code: number;
  reason: string;
}

export interface LinkEvents {
  /** One received message, decoded and validated, frames in the order sent. */
  batch: [batch: Batch];
  /** After send() returned false: queued + socket-buffered bytes fell below limits.sendLowWaterBytes. */
  drain: [];
  /** Exactly once. */
  close: [info: LinkCloseInfo];
  /** A received message was rejected (undecodable or invalid); the link stays open. */
  'bad-message': [error: ProtocolError];
}

export interface LinkOptions {
  /** Sent as `from` in every batch. */
  localId: MemberId;
  /** Shared per process; a private one when absent. */
  clock?: LamportClock;
  logger?: Logger;
  limits?: Partial<Limits>;
  /** Names the peer in logs (e.g. its address). */
  label?: string;
  /** Validate frames in send() (throws ProtocolError on a malformed frame, at the caller). Default true. */
  validateOutgoing?: boolean;
}

export interface LinkStats {
  batchesSent: number;
  framesSent: number;
  bytesSent: number;
  batchesReceived: number;
  framesReceived: number;
  bytesReceived: number;
  badMessages: number;
  errorRepliesDropped: number;
}

/** Rough wire size of a frame, for batch and backpressure accounting (exact size is unknown until encoded). */
function estimateBytes(frame: Frame): number {
  const data = (frame as { data?: Uint8Array }).data;
  return data === undefined ? 48 : data.length + 64;
}

/** Close reasons are limited to 123 bytes by RFC 6455. */
function closeReason(text: string): string {
  let out = text;
  while (Buffer.byteLength(out) > 123) out = out.slice(0, out.length - 8);
  return out;
}

/**
 * One WebSocket, either side, speaking batches.
 *
 * Frames sent in one event-loop turn leave as one message (one Batch), flushed from
 * setImmediate, or at once when the queue reaches limits.batchFlushBytes or batchMaxFrames.
 * Order is FIFO across turns. Every batch carries a Lamport stamp; received stamps advance the clock.
 *
 * A received message that fails to decode or validate is dropped whole: the peer gets an error
 * frame (ERR_BAD_FRAME with the reason, at most limits.errorRepliesPerSecond per second), one
 * warn line is logged, and the link stays open. Messages over limits.maxMessageBytes are refused
 * by ws itself, which closes the link with 1009.
 *
 * Attach 'batch' listeners synchronously when the link is handed over; messages that arrive with
 * no listener are dropped.
 */
export class Link extends EventEmitter<LinkEvents> {
  readonly localId: MemberId;
  readonly clock: LamportClock;
  readonly label: string;
  readonly stats: LinkStats = {
    batchesSent: 0,
    framesSent: 0,
    bytesSent: 0,
    batchesReceived: 0,
    framesReceived: 0,
    bytesReceived: 0,
    badMessages: 0,
    errorRepliesDropped: 0,
  };

  readonly #ws: WebSocket;
  readonly #limits: Limits;
  readonly #logger: Logger;
  readonly #validateOutgoing: boolean;

  #queue: Frame[] = [];
  #queuedBytes = 0;
  #flushScheduled = false;
  #needDrain = false;

  #closed = false;
  #closing: Promise<void> | undefined;
  #closeInfo: LinkCloseInfo | undefined;
  #wsError: string | undefined;
  #graceTimer: NodeJS.Timeout | undefined;

  #errorWindowStartMs = 0;
  #errorRepliesInWindow = 0;

  constructor(ws: WebSocket, options: LinkOptions) {
    super();
    if (ws.readyState !== WebSocket.OPEN) throw new Error(`Link needs an open WebSocket (readyState ${ws.readyState})`);
    this.#ws = ws;
    this.localId = options.localId;
    this.clock = options.clock ?? new LamportClock();
    this.label = options.label ?? 'peer';
    this.#limits = resolveLimits(options.limits);
    this.#logger = options.logger ?? stderrLogger;
    this.#validateOutgoing = options.validateOutgoing ?? true;
    // Fragments unjoined: a detached payload is used where it lies (codec.ts).
    ws.binaryType = 'fragments';
    ws.on('message', this.#onMessage);
    ws.on('error', this.#onError);
    ws.on('close', this.#onClose);
  }

  /** True until close() is called or the socket starts closing. */
  get isOpen(): boolean {
    return !this.#closed && this.#closing === undefined && this.#ws.readyState === WebSocket.OPEN;
  }

  /**
   * Stop reading from the socket (received messages wait in the kernel, and TCP pushes back on
   * the sender) until resume(). For a receiver whose consumer fell behind.
   */
  pause(): void {
    this.#ws.pause();
  }

  resume(): void {
    this.#ws.resume();
  }

  /** Bytes queued here plus bytes ws and the socket have not written yet. */
  get pendingBytes(): number {
    return this.#queuedBytes + this.#ws.bufferedAmount;
  }

  /**
   * Queue a frame for the next batch. Returns false when the frame was dropped (link closing or
   * closed) or when pending bytes are past limits.sendHighWaterBytes (the frame is queued; wait for
   * 'drain' before sending more). Throws ProtocolError(ERR_BAD_FRAME) for a malformed frame.
   */
  send(frame: Frame): boolean {
    if (!this.isOpen) return false;
    if (this.#validateOutgoing) validateFrame(frame);
    this.#queue.push(frame);
    this.#queuedBytes += estimateBytes(frame);
    if (this.#queue.length >= this.#limits.batchMaxFrames || this.#queuedBytes >= this.#limits.batchFlushBytes) {
      this.flush();
    } else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flushFromTimer);
    }
    const pendingBytes = this.#queuedBytes + this.#ws.bufferedAmount;
    if (pendingBytes >= this.#limits.sendHighWaterBytes) {
      if (pendingBytes > this.#limits.sendMaxPendingBytes) this.#dropNotReading(pendingBytes);
      this.#needDrain = true;
      return false;
    }
    return true;
  }

  /** A peer that does not read must not make us buffer without end: drop the link, queue and all. */
  #dropNotReading(pendingBytes: number): void {
    const reason = `peer not reading: ${pendingBytes} bytes pending, limit ${this.#limits.sendMaxPendingBytes}`;
    this.#logger.error({ peer: this.label, pendingBytes }, `protocol: dropping link, ${reason}`);
    this.#closeInfo ??= { code: CloseCodes.peerNotReading, reason };
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#ws.terminate();
  }

  /** Send what is queued now, as one message. */
  flush(): void {
    if (this.#queue.length === 0) return;
    const frames = this.#queue;
    this.#queue = [];
    this.#queuedBytes = 0;
    if (this.#ws.readyState !== WebSocket.OPEN) return;
    this.#sendMessage(frames);
  }

  #sendMessage(frames: Frame[]): void {
    const parts = encodeBatchParts({ from: this.localId, lc: this.clock.tick(), frames });
    let length = 0;
    for (const p of parts) length += p.length;
    if (length > this.#limits.maxMessageBytes && frames.length > 1) {
      // Size estimates ignore text and maps (a batch of big heartbeats or configs); the peer would
      // refuse the message, so split it, keeping order. A single frame always fits: validation
      // bounds data to maxIoBytes and text to maxTextChars.
      const half = frames.length >>> 1;
      this.#sendMessage(frames.slice(0, half));
      this.#sendMessage(frames.slice(half));
      return;
    }
    this.stats.batchesSent++;
    this.stats.framesSent += frames.length;
    this.stats.bytesSent += length;
    // The parts go out as fragments of one message; ws writes each from its buffer.
    const last = parts.length - 1;
    for (let i = 0; i < last; i++) this.#ws.send(parts[i], { binary: true, compress: false, fin: false });
    this.#ws.send(parts[last], { binary: true, compress: false, fin: true }, this.#onWritten);
  }

  /**
   * Flush what is queued, then close with the peer's handshake; after limits.closeGraceMs the
   * socket is dropped. Idempotent; resolves once the link has emitted 'close'.
   */
  close(code: number = CloseCodes.normal, reason = 'closed'): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closing = new Promise((resolve) => {
      if (this.#closed) return resolve();
      this.once('close', () => resolve());
      this.#closeInfo ??= { code, reason };
      this.flush();
      this.#ws.close(code, closeReason(reason));
      this.#graceTimer = setTimeout(() => this.#ws.terminate(), this.#limits.closeGraceMs);
      this.#graceTimer.unref();
    });
    return this.#closing;
  }

  /** Drop the socket now, without flushing. Idempotent. */
  terminate(reason = 'terminated'): void {
    if (this.#closed) return;
    this.#closeInfo ??= { code: CloseCodes.goingAway, reason };
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#ws.terminate();
  }

  readonly #flushFromTimer = (): void => {
    this.#flushScheduled = false;
    this.flush();
  };

  readonly #onWritten = (err?: Error): void => {
    if (err || !this.#needDrain || this.#closed) return;
    if (this.#queuedBytes + this.#ws.bufferedAmount < this.#limits.sendLowWaterBytes) {
      this.#needDrain = false;
      this.emit('drain');
    }
  };

  readonly #onMessage = (data: WebSocket.RawData, isBinary: boolean): void => {
    let batch: Batch;
    try {
      if (!isBinary) throw new ProtocolError(ErrorCodes.badFrame, 'text message: frames travel as binary msgpack');
      const parts = Array.isArray(data) ? data : [data as Buffer];
      for (const p of parts) this.stats.bytesReceived += p.length;
      batch = decodeBatchParts(parts);
    } catch (err) {
      this.#reject(err instanceof ProtocolError ? err : new ProtocolError(ErrorCodes.badFrame, String(err), { cause: err }));
      return;
    }
    this.clock.observe(batch.lc);
    this.stats.batchesReceived++;
    this.stats.framesReceived += batch.frames.length;
    this.emit('batch', batch);
  };

  #reject(err: ProtocolError): void {
    this.stats.badMessages++;
    const nowMs = Date.now();
    if (nowMs - this.#errorWindowStartMs >= 1000) {
      this.#errorWindowStartMs = nowMs;
      this.#errorRepliesInWindow = 0;
    }
    if (this.#errorRepliesInWindow < this.#limits.errorRepliesPerSecond) {
      this.#errorRepliesInWindow++;
      this.#logger.warn(
        { peer: this.label, code: err.code, reason: err.message, badMessages: this.stats.badMessages, repliesDropped: this.stats.errorRepliesDropped },
        'protocol: rejected a bad message from peer',
      );
      this.send({ t: 'error', code: err.code, message: err.message.slice(0, this.#limits.maxTextChars) });
    } else {
      this.stats.errorRepliesDropped++;
    }
    this.emit('bad-message', err);
  }

  readonly #onError = (err: Error & { code?: string }): void => {
    // ws reports protocol violations and over-long messages here, then closes; without this
    // listener the error would be thrown and take the process down.
    this.#wsError = err.message;
    this.#logger.warn({ peer: this.label, err: err.message, code: err.code }, 'protocol: link socket error');
  };

  readonly #onClose = (code: number, reason: Buffer): void => {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#graceTimer) clearTimeout(this.#graceTimer);
    this.#queue = [];
    this.#queuedBytes = 0;
    const info = this.#closeInfo ?? { code, reason: this.#wsError ?? (reason.length > 0 ? reason.toString() : `closed by peer (${code})`) };
    this.emit('close', info);
  };
}
