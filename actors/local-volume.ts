/**
 * One local LSVD as an NBD backend (`freebs serve`): no replication, versions assigned here.
 * The single-node mode to compare against `nbdkit file`.
 */
import type { BlockBackend } from '../nbd/backend.js';
import type { RecordKind } from '../protocol/frames.js';
import type { ReplicaStore } from './replica-store.js';

export class LocalVolume implements BlockBackend {
  readonly readOnly: boolean;
  /** One process orders every write: a flush on any connection covers all of them. */
  readonly canMultiConn = true;
  readonly minimumBlockSizeBytes = 512;
  readonly preferredBlockSizeBytes = 4096;

  constructor(
    private readonly store: ReplicaStore,
    options: { readOnly: boolean },
  ) {
    this.readOnly = options.readOnly;
  }

  get sizeBytes(): number {
    return this.store.sizeBytes;
  }

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    return this.store.read(offsetBytes, lengthBytes);
  }

  async write(offsetBytes: number, data: Buffer, options: { fua: boolean }): Promise<void> {
    await this.apply('write', offsetBytes, data.length, data, options.fua);
  }

  async trim(offsetBytes: number, lengthBytes: number, options: { fua: boolean }): Promise<void> {
    await this.apply('trim', offsetBytes, lengthBytes, undefined, options.fua);
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, options: { fua: boolean; noHole: boolean }): Promise<void> {
    await this.apply('zero', offsetBytes, lengthBytes, undefined, options.fua);
  }

  async flush(): Promise<void> {
    await this.store.flush();
  }

  close(): Promise<void> {
    return this.store.close();
  }

  private async apply(kind: RecordKind, offsetBytes: number, lengthBytes: number, data: Buffer | undefined, fua: boolean): Promise<void> {
    const v = this.store.version + 1;
    this.store.append({ t: 'write', epoch: 0, v, kind, offsetBytes, lengthBytes, ...(data ? { data } : {}) });
    if (fua) await this.store.flush();
  }
}
