/**
 * One store directory, one open store: DIR/lsvd.lock names the process that has it open. Two
 * processes appending to one log (a replica started twice on one directory, `freebs serve` on a
 * replica's directory) would interleave records and corrupt it, so the second open is refused.
 *
 * The lock file holds "PID START" (START: the process's start time in clock ticks, from
 * /proc/PID/stat), so a lock left by a process that died (SIGKILL, power loss) is recognised as
 * stale and taken over at once, even when its pid has been reused since: a killed replica
 * restarts without an operator. Without /proc, START is 0 and a live pid alone holds the lock.
 */
import { readFileSync } from 'node:fs';
import { open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { StorageError, wrapFsError } from './errors.js';

export const LOCK_FILE = 'lsvd.lock';

/** Directories this process holds: a second open in the same process is refused too. */
const heldHere = new Set<string>();

function startTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime); fields are counted after the command name, which may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[19]);
    return Number.isFinite(ticks) ? ticks : 0;
  } catch {
    return 0;
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, it is someone else's.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface DirLock {
  release(): Promise<void>;
}

export async function lockDirectory(dir: string): Promise<DirLock> {
  const path = join(dir, LOCK_FILE);
  if (heldHere.has(path)) throw new StorageError('ERR_LOCKED', `${dir} is already open in this process; close it first`);
  const mine = `${process.pid} ${startTicks(process.pid)}\n`;
  for (let attempt = 0; ; attempt++) {
    try {
      const fh = await open(path, 'wx');
      try {
        await fh.writeFile(mine);
      } finally {
        await fh.close();
      }
      heldHere.add(path);
      return {
        release: async () => {
          if (!heldHere.delete(path)) return;
          // Only our own: a lock taken over as stale meanwhile is not ours to remove.
          const now = await readFile(path, 'utf8').catch(() => '');
          if (now === mine) await unlink(path).catch(() => undefined);
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw wrapFsError(err, `lock ${dir}`);
    }
    const text = await readFile(path, 'utf8').catch(() => '');
    const [pidText, startText] = text.trim().split(' ');
    const pid = Number(pidText);
    const start = Number(startText ?? 0);
    const theirStart = Number.isInteger(pid) && pid > 0 && pid !== process.pid && isRunning(pid) ? startTicks(pid) : undefined;
    // Without a start time on either side, a running pid holds the lock.
    const alive = theirStart !== undefined && (start === 0 || theirStart === 0 || theirStart === start);
    if (alive) {
      throw new StorageError(
        'ERR_LOCKED',
        `${dir} is in use by process ${pid} (its ${LOCK_FILE}); stop that process first — two processes on one log would corrupt it`,
      );
    }
    if (attempt > 0) throw new StorageError('ERR_LOCKED', `${dir}: could not take over the stale ${LOCK_FILE} (another process raced for it)`);
    // Left by a process that is gone (or by this process before it forgot it): take it over.
    await unlink(path).catch(() => undefined);
  }
}
