/**
 * A read cursor over the socket's chunks. Bytes are never copied one by one: `take(n)` returns a
 * view into a chunk when the n bytes lie inside one, and copies once (like Buffer.concat) only
 * when they straddle chunks — which, for a 1 MiB write arriving in 64 KiB chunks, is the one copy
 * per request that a contiguous payload costs.
 */
export class ChunkReader {
  private chunks: Buffer[] = [];
  /** Index of the first chunk with unread bytes. */
  private head = 0;
  /** Read position inside chunks[head]. */
  private offset = 0;
  private unread = 0;

  /** Bytes received and not yet taken. */
  get length(): number {
    return this.unread;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.unread += chunk.length;
  }

  /**
   * The next n bytes (n <= length). The result may share memory with a received chunk, or with
   * `scratch`: bytes that straddle chunks are copied into scratch when it is long enough (the
   * caller then owns reuse), else into a new buffer.
   */
  take(n: number, scratch?: Buffer): Buffer {
    if (n > this.unread) throw new RangeError(`take(${n}) with only ${this.unread} bytes buffered`);
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[this.head];
    const inFirst = first.length - this.offset;
    if (n <= inFirst) {
      const out = first.subarray(this.offset, this.offset + n);
      this.advance(n);
      return out;
    }
    const out = scratch && scratch.length >= n ? scratch.subarray(0, n) : Buffer.allocUnsafe(n);
    let copied = 0;
    while (copied < n) {
      const chunk = this.chunks[this.head];
      const part = Math.min(chunk.length - this.offset, n - copied);
      chunk.copy(out, copied, this.offset, this.offset + part);
      copied += part;
      this.advance(part);
    }
    return out;
  }

  /** Drop the next n bytes (n <= length) without materialising them. */
  skip(n: number): void {
    if (n > this.unread) throw new RangeError(`skip(${n}) with only ${this.unread} bytes buffered`);
    let left = n;
    while (left > 0) {
      const part = Math.min(this.chunks[this.head].length - this.offset, left);
      this.advance(part);
      left -= part;
    }
  }

  /** Forget everything buffered (the connection is going away). */
  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.offset = 0;
    this.unread = 0;
  }

  private advance(n: number): void {
    this.offset += n;
    this.unread -= n;
    if (this.offset === this.chunks[this.head].length) {
      this.head++;
      this.offset = 0;
      // Compact now and then, not on every chunk, so the array does not grow without bound
      // and the shift cost stays amortised.
      if (this.head === this.chunks.length) {
        this.chunks.length = 0;
        this.head = 0;
      } else if (this.head >= 64) {
        this.chunks = this.chunks.slice(this.head);
        this.head = 0;
      }
    }
  }
}
