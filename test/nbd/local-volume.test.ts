/**
 * `freebs serve`'s backend: the NBD server over LocalVolume over a real LSVD. The LSVD here has
 * a small write buffer, so a client writing faster than the log writer meets its ERR_BUSY bound
 * within seconds: the volume must slow that client down, never fail its writes, and keep every
 * byte — also when the server reuses payload buffers (copiesWriteData).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { LocalVolume } from '../../actors/local-volume.js';
import { LsvdStore } from '../../actors/lsvd-store.js';
import { Lsvd } from '../../storage/lsvd.js';
import { fioJobs } from '../helpers/fio.js';
import { startNbdServer, type TestNbdServer } from '../helpers/nbd-server.js';
import { ProcessTracker } from '../helpers/processes.js';
import { itWith, requirements } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const procs = new ProcessTracker();
const dirs: string[] = [];
let srv: TestNbdServer | undefined;

afterEach(async () => {
  await procs.stopAll();
  await srv?.close();
  srv = undefined;
});

afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function volume(options: { maxBufferedBytes: number; sizeBytes?: number }) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-local-volume-'));
  dirs.push(dir);
  const lsvd = await Lsvd.open({ dir, sizeBytes: options.sizeBytes ?? 64 * MiB, maxBufferedBytes: options.maxBufferedBytes, segmentSizeBytes: 4 * MiB });
  const vol = new LocalVolume(new LsvdStore(lsvd), { readOnly: false });
  return { lsvd, vol };
}

describe('LocalVolume backpressure', () => {
  it('holds writes the store refuses as busy, in arrival order, and applies them as the log makes room', async () => {
    const { lsvd, vol } = await volume({ maxBufferedBytes: 3 * MiB });
    const payload = Buffer.alloc(MiB);
    const writes = [];
    for (let i = 0; i < 8; i++) {
      payload.fill(i + 1);
      writes.push(vol.write(i * MiB, payload, { fua: false }));
    }
    // Sent in one turn: the store took what fit in its buffer, the rest waits (copied, since the
    // server may reuse the payload buffer once write() returns).
    expect(lsvd.version).toBeLessThan(8);
    expect(vol.heldWrites).toBe(8 - lsvd.version);
    await Promise.all(writes);
    expect(lsvd.version).toBe(8);
    expect(vol.heldWrites).toBe(0);
    for (let i = 0; i < 8; i++) expect((await vol.read(i * MiB, MiB)).equals(Buffer.alloc(MiB, i + 1))).toBe(true);
    await vol.close();
  });

  it('a write larger than the store bound waits for the buffer to empty, then goes alone', async () => {
    const { lsvd, vol } = await volume({ maxBufferedBytes: MiB });
    const small = vol.write(0, Buffer.alloc(512 * 1024, 1), { fua: false });
    const big = vol.write(MiB, Buffer.alloc(2 * MiB, 2), { fua: false });
    expect(vol.heldWrites).toBe(1);
    await Promise.all([small, big]);
    expect(lsvd.version).toBe(2);
    expect((await vol.read(0, 512 * 1024)).equals(Buffer.alloc(512 * 1024, 1))).toBe(true);
    expect((await vol.read(MiB, 2 * MiB)).equals(Buffer.alloc(2 * MiB, 2))).toBe(true);
    await vol.close();
  }, 20_000);
});

describe('NBD over LocalVolume', () => {
  itWith(requirements({ commands: ['fio'] }), '1 MiB sequential writes at QD8 past the store bound: no errors, verified', async () => {
    // 4 MiB of LSVD buffer against 48 MiB written as fast as fio can: without backpressure the
    // store refuses appends (ERR_BUSY → EIO) after a few requests.
    const { vol } = await volume({ maxBufferedBytes: 4 * MiB });
    srv = await startNbdServer({ exports: [{ name: '', backend: vol }] });
    const { stdout } = await procs.runOk(
      'fio',
      ['--name=seq', '--ioengine=nbd', `--uri=${srv.uri}`, '--rw=write', '--bs=1m', '--iodepth=8', '--size=48M',
        '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json'],
      { timeoutMs: 90_000, cwd: srv.dir },
    );
    const job = fioJobs(stdout)[0];
    expect(job.error).toBe(0);
    expect(job.write.io_bytes).toBe(48 * MiB);
    expect(job.read.io_bytes).toBe(48 * MiB);
    expect(srv.logs.filter((l) => l.level === 'error')).toEqual([]);
    await vol.close();
  });

  itWith(requirements({ commands: ['fio'] }), 'mixed sizes at QD32 through reused payload buffers verify', async () => {
    const { vol } = await volume({ maxBufferedBytes: 16 * MiB });
    srv = await startNbdServer({ exports: [{ name: '', backend: vol }] });
    const { stdout } = await procs.runOk(
      'fio',
      ['--name=mixed', '--ioengine=nbd', `--uri=${srv.uri}`, '--rw=randwrite', '--bsrange=4k-2m', '--iodepth=32', '--size=32M',
        '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json'],
      { timeoutMs: 90_000, cwd: srv.dir },
    );
    expect(fioJobs(stdout)[0].error).toBe(0);
    await vol.close();
  });
});
