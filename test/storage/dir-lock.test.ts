/**
 * One open store per directory (storage/dir-lock.ts): a second open — in this process or another
 * — is refused, naming who has it; a lock left by a process that died is taken over at once.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Lsvd, type StorageError } from '../../storage/index.js';
import { LOCK_FILE } from '../../storage/dir-lock.js';
import { tempDir } from './helpers.js';

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

async function refusal(dir: string): Promise<StorageError> {
  try {
    const s = await Lsvd.open({ dir });
    await s.close();
  } catch (err) {
    return err as StorageError;
  }
  throw new Error('open was not refused');
}

describe('store directory lock', () => {
  it('refuses a second open in the same process until the first is closed', async () => {
    const dir = await tempDir('lsvd-lock-');
    cleanups.push(dir.remove);
    const first = await Lsvd.open({ dir: dir.path, sizeBytes: 1 << 20 });
    const err = await refusal(dir.path);
    expect(err.code).toBe('ERR_LOCKED');
    expect(err.message).toContain('already open in this process');
    await first.close();
    const again = await Lsvd.open({ dir: dir.path });
    await again.close();
  });

  it('refuses while another process has it open, and takes over once that process was killed', async () => {
    const dir = await tempDir('lsvd-lock-child-');
    cleanups.push(dir.remove);
    const script = `import { Lsvd } from './storage/index.ts'; await Lsvd.open({ dir: ${JSON.stringify(dir.path)}, sizeBytes: 1 << 20 }); console.log('open'); setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: join(import.meta.dirname, '../..'), stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (c: Buffer) => c.toString().includes('open') && resolve());
        child.once('exit', (code) => reject(new Error(`child exited ${code}`)));
      });
      const err = await refusal(dir.path);
      expect(err.code).toBe('ERR_LOCKED');
      expect(err.message).toContain(`in use by process ${child.pid}`);
    } finally {
      child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
    }
    // The lock file is still there, its process is not: the next open takes over.
    const store = await Lsvd.open({ dir: dir.path });
    expect(store.version).toBe(0);
    await store.close();
  });

  it('takes over a lock whose pid now names another process (pid reuse after a crash)', async () => {
    const dir = await tempDir('lsvd-lock-stale-');
    cleanups.push(dir.remove);
    await (await Lsvd.open({ dir: dir.path, sizeBytes: 1 << 20 })).close();
    // Our parent runs, but it did not start 10 ms after boot: the lock is a dead process's.
    writeFileSync(join(dir.path, LOCK_FILE), `${process.ppid} 1\n`);
    const store = await Lsvd.open({ dir: dir.path });
    await store.close();
  });
});
