/**
 * A real kernel filesystem on the volume: nbdfuse exposes the export as DIR/nbd, a loop device
 * turns that file into a block device, and ext4 goes on it. Files written, unmounted, mounted
 * again and read back; fsck finds nothing. Needs root, /dev/fuse and loop devices; every mount,
 * loop device and process is undone in afterAll even when a step fails.
 *
 * The NBD server runs in this process, so this process must never do file IO on the mount
 * itself: a synchronous write blocked in the kernel's dirty-page throttling waits for writeback,
 * which needs this very event loop to serve NBD — a deadlock. Files go in and out with child
 * processes (cp, sha256sum) instead.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { CleanupStack } from '../helpers/cleanup.js';
import { startNbdServer, type TestNbdServer } from '../helpers/nbd-server.js';
import { ProcessTracker, waitUntil } from '../helpers/processes.js';
import { itWith, requirements } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const procs = new ProcessTracker();
const cleanup = new CleanupStack();
const needs = requirements({
  commands: ['nbdfuse', 'fusermount3', 'losetup', 'mkfs.ext4', 'fsck.ext4', 'mount', 'umount'],
  root: true,
  devices: ['/dev/fuse', '/dev/loop-control'],
});
let srv: TestNbdServer | undefined;

beforeAll(async () => {
  if (needs.missing === undefined) srv = await startNbdServer({ sizeBytes: 256 * MiB });
});

afterAll(async () => {
  try {
    await cleanup.runAll();
  } finally {
    await procs.stopAll();
    await srv?.close();
  }
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('ext4 over nbdfuse + loop', () => {
  itWith(needs, 'mkfs, write, detach everything, re-attach, read back, fsck clean', async () => {
    const s = srv!;
    const fuseDir = path.join(s.dir, 'fuse');
    const mnt = path.join(s.dir, 'mnt');
    mkdirSync(fuseDir);
    mkdirSync(mnt);

    /** nbdfuse + loop device; returns the loop device and a function undoing both. */
    const attach = async (): Promise<{ loop: string; detach: () => Promise<void> }> => {
      const fuse = procs.start('nbdfuse', [fuseDir, s.uri]);
      const stopFuse = cleanup.defer('stop nbdfuse', () => fuse.stop());
      const unmountFuse = cleanup.defer('fusermount3 -u', () => procs.run('fusermount3', ['-u', '-z', fuseDir], { timeoutMs: 10_000 }));
      const disk = path.join(fuseDir, 'nbd');
      await waitUntil(
        async () => (await stat(disk).catch(() => undefined))?.size === 256 * MiB,
        `nbdfuse to expose ${disk} (${fuse.output()})`,
        15_000,
      );
      const loop = (await procs.runOk('losetup', ['-f', '--show', disk], { timeoutMs: 15_000 })).stdout.trim();
      expect(loop).toMatch(/^\/dev\/loop\d+$/);
      const detachLoop = cleanup.defer(`losetup -d ${loop}`, () => procs.run('losetup', ['-d', loop], { timeoutMs: 15_000 }));
      return {
        loop,
        detach: async () => {
          await detachLoop();
          await unmountFuse();
          await fuse.exited;
          await stopFuse();
        },
      };
    };

    const mount = async (loop: string) => {
      await procs.runOk('mount', ['-t', 'ext4', loop, mnt], { timeoutMs: 30_000 });
      return cleanup.defer(`umount ${mnt}`, async () => {
        const r = await procs.run('umount', [mnt], { timeoutMs: 30_000 }).catch(() => undefined);
        if (r?.code !== 0) await procs.run('umount', ['-l', mnt], { timeoutMs: 10_000 });
      });
    };

    // Source files outside the mount, written by this process (safe: not on the volume).
    const src = path.join(s.dir, 'src');
    mkdirSync(path.join(src, 'dir'), { recursive: true });
    const files = new Map<string, string>();
    let totalBytes = 0;
    for (let i = 0; i < 16; i++) {
      const data = randomBytes(1 + Math.floor(Math.random() * 2 * MiB));
      const name = `dir/f${i}.bin`;
      await writeFile(path.join(src, name), data);
      files.set(name, sha(data));
      totalBytes += data.length;
    }
    const big = randomBytes(24 * MiB);
    await writeFile(path.join(src, 'big.bin'), big);
    files.set('big.bin', sha(big));
    totalBytes += big.length;

    let dev = await attach();
    await procs.runOk('mkfs.ext4', ['-q', '-F', dev.loop], { timeoutMs: 60_000 });
    let umount = await mount(dev.loop);
    await procs.runOk('cp', ['-a', `${src}/.`, mnt], { timeoutMs: 60_000 });
    await umount(); // unmount syncs everything through loop → FUSE → NBD
    expect(s.server.metrics().bytesWritten).toBeGreaterThan(totalBytes);
    // New FUSE mount and loop device: no page cache survives, reads must come over NBD.
    await dev.detach();

    const readBefore = s.server.metrics().bytesRead;
    dev = await attach();
    umount = await mount(dev.loop);
    const sums = await procs.runOk('sha256sum', [...files.keys()], { cwd: mnt, timeoutMs: 60_000 });
    const seen = new Map(sums.stdout.trim().split('\n').map((l) => {
      const [digest, name] = l.split(/\s+/);
      return [name, digest];
    }));
    expect(seen).toEqual(files);
    await umount();
    expect(s.server.metrics().bytesRead - readBefore).toBeGreaterThan(totalBytes);

    const fsck = await procs.run('fsck.ext4', ['-n', '-f', dev.loop], { timeoutMs: 60_000 });
    expect(fsck.code, `${fsck.stdout}\n${fsck.stderr}`).toBe(0);
    await dev.detach();
    expect(s.server.metrics().requestErrors).toBe(0);
  });
});
