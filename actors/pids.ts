/**
 * Member processes by PID, for the runs and tools that signal processes they did not start
 * themselves (replacements started by the controller): each replica keeps its pid in
 * DIR/ID/replica.pid, and a pid is trusted only after /proc says it runs `freebs replica` on a
 * directory under DIR (a pid file left by a crash may name an unrelated process by now).
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Whether pid runs `freebs replica` with a --dir under `clusterDir`. */
export function isReplicaUnder(pid: number, clusterDir: string): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.includes('replica') && argv.some((a) => a.startsWith(clusterDir + path.sep));
  } catch {
    return false;
  }
}

/** The running replica whose data directory is `replicaDir` (DIR/ID), or null. */
export function replicaPidIn(replicaDir: string): number | null {
  try {
    const pid = Number(readFileSync(path.join(replicaDir, 'replica.pid'), 'utf8'));
    if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return null;
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.includes('replica') && argv.includes(replicaDir) ? pid : null;
  } catch {
    return null;
  }
}

/**
 * Every running `freebs replica` on the data directory `replicaDir`, found by command line: from
 * the moment it starts, before it has written replica.pid or taken the store's lock.
 */
export function replicaPidsOn(replicaDir: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      if (argv.includes('replica') && argv.includes(replicaDir)) pids.push(Number(name));
    } catch {
      // Exited meanwhile.
    }
  }
  return pids;
}

/** Every running replica of a cluster directory, replacements included. */
export function replicaPidsUnder(clusterDir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync(clusterDir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const pid = replicaPidIn(path.join(clusterDir, entry.name));
    if (pid !== null) pids.push(pid);
  }
  return pids;
}

/** SIGCONT (a stopped process handles SIGTERM only once it runs), SIGTERM, then SIGKILL after timeoutMs. */
export async function stopPid(pid: number, timeoutMs = 15_000): Promise<void> {
  if (!isAlive(pid)) return;
  try {
    process.kill(pid, 'SIGCONT');
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  if (isAlive(pid)) process.kill(pid, 'SIGKILL');
}
