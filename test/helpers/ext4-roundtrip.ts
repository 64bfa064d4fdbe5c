/**
 * A real kernel filesystem on an NBD export: nbdfuse exposes it as DIR/fuse/nbd, a loop device
 * turns that file into a block device, and ext4 goes on it. Files are written, everything is
 * detached, attached again (no page cache survives) and read back; fsck finds nothing. Every
 * mount, loop device and process is registered with the cleanup stack, so a failed step
 * leaves nothing behind.
 *
 * If the NBD server runs in the calling process, that process must never do file IO on the
 * mount itself (a write blocked in dirty-page throttling waits for writeback, which needs the
 * same event loop to serve NBD): files go in and out with child processes (cp, sha256sum).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'vitest';
import type { CleanupStack } from './cleanup.js';
import { type ProcessTracker, waitUntil } from './processes.js';
import { requirements } from './tools.js';

const MiB = 1024 * 1024;

export const ext4Needs = requirements({
  commands: ['nbdfuse', 'fusermount3', 'losetup', 'mkfs.ext4', 'fsck.ext4', 'mount', 'umount'],
  root: true,
  devices: ['/dev/fuse', '/dev/loop-control'],
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export interface RoundTripHooks {
  /** After the files are written and everything is detached. */
  written?(totalBytes: number): void | Promise<void>;
  /** After the files were read back and checked, before fsck. */
  readBack?(totalBytes: number): void | Promise<void>;
}

export async function ext4RoundTrip(
  options: { uri: string; sizeBytes: number; dir: string; procs: ProcessTracker; cleanup: CleanupStack },
  hooks: RoundTripHooks = {},
): Promise<void> {
  const { uri, sizeBytes, dir, procs, cleanup } = options;
  const fuseDir = path.join(dir, 'fuse');
  const mnt = path.join(dir, 'mnt');
  mkdirSync(fuseDir, { recursive: true });
  mkdirSync(mnt, { recursive: true });

  /** nbdfuse + loop device; returns the loop device and a function undoing both. */
  const attach = async (): Promise<{ loop: string; detach: () => Promise<void> }> => {
    const fuse = procs.start('nbdfuse', [fuseDir, uri]);
    const stopFuse = cleanup.defer('stop nbdfuse', () => fuse.stop());
    const unmountFuse = cleanup.defer('fusermount3 -u', () => procs.run('fusermount3', ['-u', '-z', fuseDir], { timeoutMs: 10_000 }));
    const disk = path.join(fuseDir, 'nbd');
    await waitUntil(async () => (await stat(disk).catch(() => undefined))?.size === sizeBytes, `nbdfuse to expose ${disk} (${fuse.output()})`, 15_000);
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
      const r = await procs.run('umount', [mnt], { timeoutMs: 60_000 }).catch(() => undefined);
      if (r?.code !== 0) await procs.run('umount', ['-l', mnt], { timeoutMs: 10_000 });
    });
  };

  // Source files outside the mount.
  const src = path.join(dir, 'src');
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
  await procs.runOk('mkfs.ext4', ['-q', '-F', dev.loop], { timeoutMs: 120_000 });
  let umount = await mount(dev.loop);
  await procs.runOk('cp', ['-a', `${src}/.`, mnt], { timeoutMs: 120_000 });
  await umount(); // unmount syncs everything through loop → FUSE → NBD
  // New FUSE mount and loop device: no page cache survives, reads must come over NBD.
  await dev.detach();
  await hooks.written?.(totalBytes);

  dev = await attach();
  umount = await mount(dev.loop);
  const sums = await procs.runOk('sha256sum', [...files.keys()], { cwd: mnt, timeoutMs: 120_000 });
  const seen = new Map(
    sums.stdout
      .trim()
      .split('\n')
      .map((l) => {
        const [digest, name] = l.split(/\s+/);
        return [name, digest] as const;
      }),
  );
  expect(seen).toEqual(files);
  await umount();
  await hooks.readBack?.(totalBytes);

  const fsck = await procs.run('fsck.ext4', ['-n', '-f', dev.loop], { timeoutMs: 120_000 });
  expect(fsck.code, `${fsck.stdout}\n${fsck.stderr}`).toBe(0);
  await dev.detach();
}
