/**
 * Wrappers around a real backend for protocol tests: hold a call until the test releases it,
 * fail calls on demand, or require alignment. They change timing and failures, never data.
 */
import type { BlockBackend } from '../../nbd/backend.js';

type Op = 'read' | 'write' | 'trim' | 'writeZeroes' | 'flush' | 'cache';

export class ControlledBackend implements BlockBackend {
  /** Calls matching a gate wait for it to open. */
  private gates: Array<{ match: (op: Op, offsetBytes: number) => boolean; open: Promise<void>; release: () => void }> = [];
  /** Next calls of an op fail with this error. */
  failWith: Partial<Record<Op, Error>> = {};
  readonly calls: Array<{ op: Op; offsetBytes: number; lengthBytes: number }> = [];

  constructor(
    private readonly inner: BlockBackend,
    private readonly overrides: Partial<Pick<BlockBackend, 'readOnly' | 'canMultiConn' | 'minimumBlockSizeBytes' | 'preferredBlockSizeBytes'>> = {},
  ) {}

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }
  get readOnly(): boolean {
    return this.overrides.readOnly ?? this.inner.readOnly;
  }
  get canMultiConn(): boolean {
    return this.overrides.canMultiConn ?? this.inner.canMultiConn;
  }
  get minimumBlockSizeBytes(): number | undefined {
    return this.overrides.minimumBlockSizeBytes ?? this.inner.minimumBlockSizeBytes;
  }
  get preferredBlockSizeBytes(): number | undefined {
    return this.overrides.preferredBlockSizeBytes ?? this.inner.preferredBlockSizeBytes;
  }

  /** Hold matching calls until the returned function is called. */
  hold(match: (op: Op, offsetBytes: number) => boolean): () => void {
    let release!: () => void;
    const open = new Promise<void>((r) => (release = r));
    const gate = { match, open, release };
    this.gates.push(gate);
    return () => {
      this.gates = this.gates.filter((g) => g !== gate);
      release();
    };
  }

  private async enter(op: Op, offsetBytes: number, lengthBytes: number): Promise<void> {
    this.calls.push({ op, offsetBytes, lengthBytes });
    for (const g of this.gates) if (g.match(op, offsetBytes)) await g.open;
    const err = this.failWith[op];
    if (err) throw err;
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    await this.enter('read', offsetBytes, lengthBytes);
    return this.inner.read(offsetBytes, lengthBytes);
  }
  async write(offsetBytes: number, data: Buffer, options: { fua: boolean }): Promise<void> {
    await this.enter('write', offsetBytes, data.length);
    return this.inner.write(offsetBytes, data, options);
  }
  async trim(offsetBytes: number, lengthBytes: number, options: { fua: boolean }): Promise<void> {
    await this.enter('trim', offsetBytes, lengthBytes);
    return this.inner.trim(offsetBytes, lengthBytes, options);
  }
  async writeZeroes(offsetBytes: number, lengthBytes: number, options: { fua: boolean; noHole: boolean }): Promise<void> {
    await this.enter('writeZeroes', offsetBytes, lengthBytes);
    return this.inner.writeZeroes(offsetBytes, lengthBytes, options);
  }
  async flush(): Promise<void> {
    await this.enter('flush', 0, 0);
    return this.inner.flush();
  }
  async cache(offsetBytes: number, lengthBytes: number): Promise<void> {
    await this.enter('cache', offsetBytes, lengthBytes);
  }
}

export function codedError(code: string, message = code): Error {
  return Object.assign(new Error(message), { code });
}
