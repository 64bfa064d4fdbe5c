/**
 * The replicated volume as the NBD server sees it: each request becomes an event for the
 * driver machine, and the machine's `reply` intention settles the request's promise.
 */
import type { Actor } from 'xstate';
import type { BlockBackend } from '../nbd/backend.js';
import type { DriverEmitted, DriverIoRequest, DriverMachine } from '../machines/driver.js';

/** An error the driver decided on, with the machine's stable code. */
export class VolumeError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'VolumeError';
  }
}

interface Waiter {
  resolve: (data: Uint8Array | undefined) => void;
  reject: (err: Error) => void;
}

export class ReplicatedVolume implements BlockBackend {
  readonly readOnly = false;
  /** One driver orders every write and flush, whichever connection sent it. */
  readonly canMultiConn = true;
  readonly minimumBlockSizeBytes = 512;
  readonly preferredBlockSizeBytes = 4096;
  private nextReqId = 1;
  private readonly waiters = new Map<number, Waiter>();
  /**
   * Requests of this turn not yet handed to the machine. The NBD server parses every request
   * of a received chunk in one synchronous pass; they reach the machine together at the next
   * microtask, as one event, so a deep queue costs one machine step and one frame batch.
   */
  private queued: DriverIoRequest[] = [];
  private submitScheduled = false;

  constructor(
    private readonly driver: Actor<DriverMachine>,
    readonly sizeBytes: number,
  ) {
    driver.on('reply', (e) => this.settle(e));
  }

  get inFlight(): number {
    return this.waiters.size;
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    if (lengthBytes === 0) return Buffer.alloc(0);
    const data = await this.request((reqId) => ({ type: 'io.read', reqId, offsetBytes, lengthBytes }));
    if (!data || data.length !== lengthBytes) {
      throw new VolumeError('ERR_READ_FAILED', `replica returned ${data?.length ?? 0} bytes for a ${lengthBytes}-byte read`);
    }
    return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  }

  async write(offsetBytes: number, data: Buffer, options: { fua: boolean }): Promise<void> {
    await this.request((reqId) => ({ type: 'io.write', reqId, kind: 'write', offsetBytes, lengthBytes: data.length, data, fua: options.fua }));
  }

  async trim(offsetBytes: number, lengthBytes: number, options: { fua: boolean }): Promise<void> {
    await this.request((reqId) => ({ type: 'io.write', reqId, kind: 'trim', offsetBytes, lengthBytes, fua: options.fua }));
  }

  /** Zero records keep the range allocated in the LSVD, so NO_HOLE needs nothing more. */
  async writeZeroes(offsetBytes: number, lengthBytes: number, options: { fua: boolean; noHole: boolean }): Promise<void> {
    await this.request((reqId) => ({ type: 'io.write', reqId, kind: 'zero', offsetBytes, lengthBytes, fua: options.fua }));
  }

  async flush(): Promise<void> {
    await this.request((reqId) => ({ type: 'io.flush', reqId }));
  }

  private request(make: (reqId: number) => DriverIoRequest): Promise<Uint8Array | undefined> {
    const reqId = this.nextReqId++;
    return new Promise((resolve, reject) => {
      this.waiters.set(reqId, { resolve, reject });
      this.queued.push(make(reqId));
      if (!this.submitScheduled) {
        this.submitScheduled = true;
        queueMicrotask(this.submit);
      }
    });
  }

  /** Hand this turn's requests to the machine, in arrival order. */
  private readonly submit = (): void => {
    this.submitScheduled = false;
    const requests = this.queued;
    if (requests.length === 0) return;
    this.queued = [];
    this.driver.send(requests.length === 1 ? requests[0] : { type: 'io.batch', requests });
  };

  private settle(e: Extract<DriverEmitted, { type: 'reply' }>): void {
    const waiter = this.waiters.get(e.reqId);
    if (!waiter) return;
    this.waiters.delete(e.reqId);
    if (e.ok) waiter.resolve(e.data);
    else waiter.reject(new VolumeError(e.code, e.message));
  }
}
