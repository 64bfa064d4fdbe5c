/**
 * What the evaluation measures against: a FreEBS cluster of N replicas (started with the real
 * `freebs up`), `nbdkit file`, and ext4 file systems on top of either (nbdfuse + loop) or on a
 * plain loop file on the local disk. Every process is started here and stopped by PID.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface Target {
  name: string;
  uri: string;
  stop(): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves with the first output line matching `ready`; rejects if the child exits first. */
function waitForOutput(child: ChildProcess, ready: RegExp, what: string, timeoutMs = 60_000): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`${what} not ready within ${timeoutMs} ms:\n${seen.slice(-2000)}`)), timeoutMs);
    const onData = (c: Buffer) => {
      seen += c.toString();
      const m = ready.exec(seen);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${signal ?? code}) before it was ready:\n${seen.slice(-2000)}`));
    });
  });
}

function stopChild(child: ChildProcess, signal: NodeJS.Signals, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill(signal);
  });
}

export interface ClusterTarget extends Target {
  dir: string;
  controllerUrl: string;
  /** PID of a replica by id, from its pid file. */
  replicaPid(id: string): number;
}

/** `freebs up` with N replicas in `dir`, on free ports. */
export async function startCluster(dir: string, replicas: number, sizeBytes: number, heartbeatMs = 500): Promise<ClusterTarget> {
  mkdirSync(dir, { recursive: true });
  const [nbdPort, controllerPort, driverHttpPort] = [await freePort(), await freePort(), await freePort()];
  const basePort = 20000 + Math.floor(Math.random() * 20000);
  const child = spawn(process.execPath, [
    '--import', 'tsx', path.join(repo, 'cli/freebs.ts'), 'up', '--dir', dir, '--replicas', String(replicas), '--size', String(sizeBytes),
    '--nbd-port', String(nbdPort), '--base-port', String(basePort), '--controller-port', String(controllerPort),
    '--driver-http-port', String(driverHttpPort), '--heartbeat-ms', String(heartbeatMs),
  ], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  const m = await waitForOutput(child, /NBD export:\s+(nbd:\/\/\S+)/, `freebs up (${replicas} replicas)`);
  return {
    name: `freebs ×${replicas}`,
    uri: m[1],
    dir,
    controllerUrl: `http://127.0.0.1:${controllerPort}`,
    replicaPid: (id) => Number(readFileSync(path.join(dir, id, 'replica.pid'), 'utf8')),
    stop: () => stopChild(child, 'SIGINT', 60_000),
  };
}

/** `nbdkit file` on a sparse file in `dir`. */
export async function startNbdkit(dir: string, sizeBytes: number): Promise<Target> {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'nbdkit.img');
  writeFileSync(file, '');
  await run('truncate', ['-s', String(sizeBytes), file]);
  const port = await freePort();
  const child = spawn('nbdkit', ['--foreground', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), 'file', `file=${file}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  for (let i = 0; i < 100; i++) {
    if (await canConnect(port)) return { name: 'nbdkit file', uri: `nbd://127.0.0.1:${port}`, stop: () => stopChild(child, 'SIGTERM') };
    await new Promise((r) => setTimeout(r, 50));
  }
  await stopChild(child, 'SIGKILL');
  throw new Error('nbdkit did not start');
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export interface MountedFs {
  name: string;
  mountpoint: string;
  unmount(): Promise<void>;
}

/**
 * ext4 on a block device: an NBD export through nbdfuse + losetup, or (uri null) a plain file
 * on the local disk through losetup.
 */
export async function mountExt4(name: string, dir: string, uri: string | null, sizeBytes: number): Promise<MountedFs> {
  mkdirSync(dir, { recursive: true });
  const mountpoint = path.join(dir, 'mnt');
  mkdirSync(mountpoint, { recursive: true });
  // Undo steps, last first; run on failure half-way or on unmount.
  const undo: Array<() => Promise<unknown>> = [];
  const unwind = async () => {
    while (undo.length > 0) await undo.pop()!().catch(() => undefined);
  };
  try {
    let backingFile: string;
    if (uri) {
      const fuseDir = path.join(dir, 'fuse');
      mkdirSync(fuseDir, { recursive: true });
      const fuse = spawn('nbdfuse', [fuseDir, uri], { stdio: ['ignore', 'pipe', 'pipe'] });
      let fuseOutput = '';
      fuse.stderr!.on('data', (c: Buffer) => (fuseOutput += c.toString()));
      undo.push(() => stopChild(fuse, 'SIGTERM'));
      undo.push(() => run('fusermount3', ['-u', '-z', fuseDir]));
      backingFile = path.join(fuseDir, 'nbd');
      for (let i = 0; ; i++) {
        const size = await stat(backingFile).then((st) => st.size, () => -1);
        if (size === sizeBytes) break;
        if (i > 300 || fuse.exitCode !== null) throw new Error(`nbdfuse did not expose ${uri} at ${backingFile}: ${fuseOutput}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    } else {
      backingFile = path.join(dir, 'local.img');
      writeFileSync(backingFile, '');
      await run('truncate', ['-s', String(sizeBytes), backingFile]);
    }
    const loop = (await run('losetup', ['-f', '--show', backingFile])).stdout.trim();
    undo.push(() => run('losetup', ['-d', loop]));
    await run('mkfs.ext4', ['-q', '-F', loop]);
    await run('mount', [loop, mountpoint]);
    undo.push(() => run('umount', [mountpoint]));
  } catch (err) {
    await unwind();
    throw err;
  }
  return { name, mountpoint, unmount: unwind };
}
