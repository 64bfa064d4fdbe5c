/**
 * A cluster member as a child process running a `freebs` subcommand: how `freebs up`, the
 * controller's local replica spawner and the tests start members, the same way an operator would.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, createWriteStream, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const cliPath = fileURLToPath(new URL('../cli/freebs.ts', import.meta.url));
/** tsx resolved from here, not from the working directory (a systemd unit's may be anywhere). */
const tsxLoader = import.meta.resolve('tsx');

export interface MemberProcess {
  id: string;
  child: ChildProcess;
  logPath: string;
}

/**
 * V8 flags every member runs with. A member moves megabytes of Buffers per second (write data
 * in, forwarded, written to the log); V8 counts their memory against a limit derived from a
 * small heap and runs a full mark-compact every few MiB. Starting with a larger old-space limit
 * halved the CPU of 1 MiB writes through a 3-replica cluster here (24 → 14 ms of CPU per MiB
 * across the members). Memory is committed only as used.
 */
export const memberV8Flags: readonly string[] = [
  '--initial-old-space-size=256',
  // Every request leaves short-lived objects (frames, promises, machine steps); V8's default young
  // generation (16 MiB semi-spaces at most, starting far smaller) scavenges thousands of times a
  // second under 4 KiB I/O. 32 MiB semi-spaces: 4k randread through a 3-replica cluster 70 → 60 µs
  // of CPU per read here (A/B, 4 runs each); young memory is committed only as it is used.
  '--max-semi-space-size=32',
];

/**
 * Extra node options for members, from FREEBS_MEMBER_NODE_ARGS (whitespace-separated): e.g.
 * `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile a whole cluster, or a heap limit. Node refuses
 * --cpu-prof in NODE_OPTIONS, hence a variable of our own.
 */
function memberNodeArgs(): string[] {
  return (process.env.FREEBS_MEMBER_NODE_ARGS ?? '').split(/\s+/).filter((a) => a.length > 0);
}

/**
 * Start `freebs ARGS…` as a child; its output (JSON log lines) is appended to logDir/ID.log.
 * The child gets its own process group so a terminal's Ctrl-C reaches only the parent, which
 * stops members in a safe order; its log goes straight to the file so it outlives the parent.
 */
export function spawnMember(id: string, args: string[], logDir: string): MemberProcess {
  mkdirSync(logDir, { recursive: true });
  const logPath = path.join(logDir, `${id}.log`);
  const logFd = openSync(logPath, 'a');
  const child = spawn(process.execPath, [...memberV8Flags, ...memberNodeArgs(), '--import', tsxLoader, cliPath, ...args], { stdio: ['ignore', 'pipe', logFd], detached: true });
  closeSync(logFd);
  child.stdout!.pipe(createWriteStream(logPath, { flags: 'a' }));
  return { id, child, logPath };
}

/** Resolves with the first stdout line matching `ready`; rejects if the child exits first or times out. */
export function waitForLine(member: MemberProcess, ready: RegExp, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const cleanup = () => {
      clearTimeout(timer);
      member.child.stdout!.off('data', onData);
      member.child.off('exit', onExit);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${member.id} was not ready within ${timeoutMs} ms; see ${member.logPath}`));
    }, timeoutMs);
    const onData = (chunk: Buffer) => {
      seen += chunk.toString();
      const line = seen.split('\n').find((l) => ready.test(l));
      if (line !== undefined) {
        cleanup();
        resolve(line);
      }
    };
    const onExit = (code: number | null, signal: string | null) => {
      cleanup();
      reject(new Error(`${member.id} exited (${signal ?? code}) before it was ready; see ${member.logPath}`));
    };
    member.child.stdout!.on('data', onData);
    member.child.once('exit', onExit);
  });
}

export function hasExited(member: MemberProcess): boolean {
  return member.child.exitCode !== null || member.child.signalCode !== null;
}

/** SIGTERM (after SIGCONT, in case it was stopped), then SIGKILL if it lingers. */
export function stopMember(member: MemberProcess, timeoutMs = 15_000): Promise<void> {
  return new Promise((resolve) => {
    if (hasExited(member)) return resolve();
    const timer = setTimeout(() => member.child.kill('SIGKILL'), timeoutMs);
    member.child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    member.child.kill('SIGCONT');
    member.child.kill('SIGTERM');
  });
}
