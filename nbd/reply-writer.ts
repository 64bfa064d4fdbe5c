/**
 * Batches a connection's outgoing buffers: everything queued during one event-loop turn goes out
 * in one corked write (one writev syscall), flushed from setImmediate — which runs right after
 * the poll phase in which the backend's completions arrived, so batching adds no latency.
 */
import type { Socket } from 'node:net';

export class ReplyWriter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Called once the socket has written the batch they were queued in (buffers to reuse). */
  private onWritten: Array<() => void> = [];
  private scheduled = false;
  private closed = false;
  private bytesSent = 0;

  constructor(private socket: Socket) {}

  /** Write through another stream from now on (the TLS socket after STARTTLS). Call with nothing queued. */
  switchTo(socket: Socket): void {
    if (this.pending.length > 0) throw new Error('invariant: ReplyWriter.switchTo with replies still queued');
    this.socket = socket;
  }

  /** Bytes queued but not yet accepted by the kernel (ours + the socket's buffer). */
  get queuedBytes(): number {
    return this.pendingBytes + this.socket.writableLength;
  }

  get totalBytesSent(): number {
    return this.bytesSent;
  }

  send(buffer: Buffer): void {
    if (this.closed) return;
    this.pending.push(buffer);
    this.pendingBytes += buffer.length;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  }

  /**
   * Queue a header and its payload. onWritten runs once the socket has written them (not if the
   * connection goes away first: then the payload is simply left to the GC).
   */
  send2(header: Buffer, data: Buffer, onWritten?: () => void): void {
    if (this.closed) return;
    this.pending.push(header, data);
    if (onWritten) this.onWritten.push(onWritten);
    this.pendingBytes += header.length + data.length;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  }

  /** Write out whatever is queued now (before end(), or when the caller cannot wait a turn). */
  readonly flush = (): void => {
    this.scheduled = false;
    if (this.closed || this.pending.length === 0) return;
    const buffers = this.pending;
    this.pending = [];
    this.bytesSent += this.pendingBytes;
    this.pendingBytes = 0;
    const callbacks = this.onWritten;
    if (callbacks.length > 0) this.onWritten = [];
    if (this.socket.destroyed || !this.socket.writable) return;
    // Writes complete in order: the last buffer's callback covers the whole batch. An error
    // (the socket died) means libuv is done with the buffers all the same.
    const done = callbacks.length > 0 ? () => callbacks.forEach((cb) => cb()) : undefined;
    if (buffers.length === 1) {
      this.socket.write(buffers[0], done);
      return;
    }
    this.socket.cork();
    const last = buffers.length - 1;
    for (let i = 0; i < last; i++) this.socket.write(buffers[i]);
    this.socket.write(buffers[last], done);
    this.socket.uncork();
  };

  /** Drop anything queued and refuse more (the socket is gone). */
  close(): void {
    this.closed = true;
    this.pending = [];
    this.pendingBytes = 0;
    this.onWritten = [];
  }
}
