/**
 * The cluster of a `freebs inject` run: the controller (with its local spawner), N replicas and
 * the driver, each started with the real `freebs` commands, on 127.0.0.1, with a fault proxy
 * (actors/fault-proxy.ts) in front of the controller's and every replica's port. The chain the
 * controller is given, and every member's --controller address, point at the proxies; the inject
 * process itself reads /status on the real ports, so its view is never cut off.
 *
 * Replacements the controller starts listen on a port of their own and dial the controller's
 * real port (its spawner knows no better): they have no proxy, so network faults cannot target
 * them; process faults (kill, stop, restart…) can.
 *
 * Every process is addressed by PID: our own children directly, replacements through their
 * DIR/ID/replica.pid, checked against /proc before any signal (actors/pids.ts).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { ControllerStatus } from '../machines/controller.js';
import type { DiskDelays } from '../storage/disk-faults.js';
import { isAlive, replicaPidIn, replicaPidsUnder, stopPid } from './pids.js';
import { FaultProxy } from './fault-proxy.js';
import { hasExited, spawnMember, waitForLine, type MemberProcess } from './member-process.js';

export interface FaultClusterOptions {
  dir: string;
  replicas: number;
  sizeBytes: number;
  heartbeatMs: number;
  /** Replicas whose data directory is a tmpfs of this many bytes (needs root). */
  tmpfs?: Record<string, number>;
  /** Unexpected exits of the members it started (a crash is news). */
  onExit?: (id: string, how: string) => void;
}

/** How a member was started, so it can be started again the same way. */
interface Launch {
  id: string;
  args: string[];
  ready: RegExp;
  proc: MemberProcess | null;
  proxy: FaultProxy | null;
  realPort: number | null;
  /** We signalled it (kill/term): its exit is no news. */
  expectExit: boolean;
}

const host = '127.0.0.1';
const readyLines = {
  controller: /^controller listening/,
  driver: /^driver ready/,
  replica: /^replica \S+ listening on wss?:\/\/\S+:(\d+)/,
};

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** What a replica logs when its disk delays change (storage/disk-faults.ts), and how long that may take (it polls every 100 ms). */
const DISK_FAULT_LOG = '"msg":"disk faults: disk';
const DISK_FAULT_APPLY_MS = 3000;

export class FaultCluster {
  readonly logDir: string;
  readonly secretFile: string;
  readonly nbdUri: string;
  /** http:// of the controller's real port. */
  readonly controllerUrl: string;
  private readonly launches = new Map<string, Launch>();
  private readonly mounts: string[] = [];
  /** Replicas whose disk is slowed now. */
  private readonly slowDisks = new Set<string>();
  private lastStatus: ControllerStatus | null = null;
  private stopped = false;

  private constructor(
    readonly options: FaultClusterOptions,
    private readonly ports: { controller: number; nbd: number; driverHttp: number },
  ) {
    this.logDir = path.join(options.dir, 'logs');
    this.secretFile = path.join(options.dir, 'secret');
    this.nbdUri = `nbd://${host}:${ports.nbd}/freebs`;
    this.controllerUrl = `http://${host}:${ports.controller}`;
  }

  static async start(options: FaultClusterOptions): Promise<FaultCluster> {
    mkdirSync(options.dir, { recursive: true });
    const [controllerPort, nbd, driverHttp] = [await freePort(), await freePort(), await freePort()];
    const cluster = new FaultCluster(options, { controller: controllerPort, nbd, driverHttp });
    try {
      await cluster.launchAll();
    } catch (err) {
      await cluster.stop();
      cluster.unmount();
      throw new Error(`the cluster did not start (logs in ${cluster.logDir}): ${(err as Error).message}`);
    }
    return cluster;
  }

  private async launchAll(): Promise<void> {
    const o = this.options;
    // Members prove it on every link; it also tells the proxies who dials (x-freebs-id).
    if (!existsSync(this.secretFile)) writeFileSync(this.secretFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    const common = ['--cluster', 'freebs', '--heartbeat-ms', String(o.heartbeatMs), '--secret-file', this.secretFile];
    const controllerProxy = new FaultProxy({ name: 'controller', targetPort: this.ports.controller });
    const controllerWs = `ws://${host}:${await controllerProxy.listen()}`;
    const ids = Array.from({ length: o.replicas }, (_, i) => `r${i + 1}`);
    const chain: string[] = [];
    for (const id of ids) {
      const realPort = await freePort();
      const proxy = new FaultProxy({ name: id, targetPort: realPort });
      chain.push(`${id}=ws://${host}:${await proxy.listen()}`);
      const dir = path.join(o.dir, id);
      mkdirSync(dir, { recursive: true });
      const tmpfsBytes = o.tmpfs?.[id];
      if (tmpfsBytes !== undefined) this.mountTmpfs(dir, tmpfsBytes);
      this.launches.set(id, {
        id,
        args: [
          'replica', '--id', id, '--dir', dir, '--size', String(o.sizeBytes), '--host', host, '--port', String(realPort), '--controller', controllerWs,
          '--disk-faults', this.diskFaultsFile(id), ...common,
        ],
        ready: readyLines.replica,
        proc: null,
        proxy,
        realPort,
        expectExit: false,
      });
    }
    this.launches.set('controller', {
      id: 'controller',
      args: ['controller', '--dir', o.dir, '--chain', chain.join(','), '--size', String(o.sizeBytes), '--replicas', String(o.replicas), '--host', host, '--port', String(this.ports.controller), ...common],
      ready: readyLines.controller,
      proc: null,
      proxy: controllerProxy,
      realPort: this.ports.controller,
      expectExit: false,
    });
    this.launches.set('driver', {
      id: 'driver',
      args: ['driver', '--controller', controllerWs, '--size', String(o.sizeBytes), '--host', host, '--nbd-port', String(this.ports.nbd), '--http-port', String(this.ports.driverHttp), ...common],
      ready: readyLines.driver,
      proc: null,
      proxy: null,
      realPort: null,
      expectExit: false,
    });
    // All at once: members dial the controller (through its proxy) until it listens, and the
    // driver is ready once a majority of the chain answers.
    await Promise.all([...this.launches.keys()].map((id) => this.launch(id)));
  }

  private mountTmpfs(dir: string, sizeBytes: number): void {
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes}`, 'tmpfs', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      const why = String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim();
      throw new Error(`cannot mount a ${sizeBytes}-byte tmpfs on ${dir} (disk-full scenarios need root): ${why}`);
    }
    this.mounts.push(dir);
  }

  /** Grow or shrink a replica's tmpfs (`mount -o remount,size=…`). */
  resizeTmpfs(id: string, sizeBytes: number): void {
    const dir = this.replicaDir(id);
    if (!this.mounts.includes(dir)) throw new Error(`${id} has no tmpfs (give it one under "tmpfs:" in the scenario)`);
    execFileSync('mount', ['-o', `remount,size=${sizeBytes}`, dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  }

  private async launch(id: string): Promise<void> {
    const l = this.launches.get(id)!;
    const proc = spawnMember(id, l.args, this.logDir);
    l.proc = proc;
    l.expectExit = false;
    proc.child.once('exit', (code, signal) => {
      if (l.proc === proc && !l.expectExit && !this.stopped) this.options.onExit?.(id, signal ?? `code ${code}`);
    });
    await waitForLine(proc, l.ready, 60_000);
  }

  /** Outside the replica's directory: a scrub repair moves that aside, a tmpfs may fill. */
  private diskFaultsFile(id: string): string {
    return path.join(this.options.dir, 'disk-faults', `${id}.json`);
  }

  /**
   * Slow a replica's disk (zeros: healthy again). Its store polls the file every 100 ms
   * (storage/disk-faults.ts); replacements the controller starts have no such file.
   */
  async setDiskDelays(id: string, delays: Partial<DiskDelays>): Promise<void> {
    if (!this.launches.get(id)?.args.includes('--disk-faults')) {
      throw new Error(`${id} was started by the controller (a replacement): its disk cannot be slowed`);
    }
    const file = this.diskFaultsFile(id);
    const text = `${JSON.stringify(delays)}\n`;
    const before = existsSync(file) ? readFileSync(file, 'utf8') : '{}\n';
    mkdirSync(path.dirname(file), { recursive: true });
    const logLines = () => (this.logText(id) ?? '').split(DISK_FAULT_LOG).length - 1;
    const seen = logLines();
    // Whole or not at all: the replica may read the file at any moment.
    writeFileSync(`${file}.tmp`, text);
    renameSync(`${file}.tmp`, file);
    if (Object.values(delays).some((ms) => ms > 0)) this.slowDisks.add(id);
    else this.slowDisks.delete(id);
    // A running replica says when the new delays are in force; a stopped one reads them at start.
    if (text === before || !this.isRunning(id)) return;
    const deadline = Date.now() + DISK_FAULT_APPLY_MS;
    while (logLines() === seen) {
      if (Date.now() > deadline) throw new Error(`${id} did not take up the disk delays within ${DISK_FAULT_APPLY_MS} ms (nothing in its log)`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Whether a replica's disk is slowed now (set by setDiskDelays, lifted by zeros). */
  isDiskSlowed(id: string): boolean {
    return this.slowDisks.has(id);
  }

  /** Every replica whose disk is slowed, healthy again; returns their ids. */
  async healDisks(): Promise<string[]> {
    const healed = [...this.slowDisks];
    for (const id of healed) await this.setDiskDelays(id, {});
    return healed;
  }

  /** A member's log so far, or null when it has none yet. */
  private logText(id: string): string | null {
    try {
      return readFileSync(path.join(this.logDir, `${id}.log`), 'utf8');
    } catch {
      return null;
    }
  }

  get heartbeatMs(): number {
    return this.options.heartbeatMs;
  }

  replicaDir(id: string): string {
    return path.join(this.options.dir, id);
  }

  /** The controller's /status on its real port; null while it does not answer. */
  async status(timeoutMs = 1000): Promise<ControllerStatus | null> {
    try {
      const res = await fetch(`${this.controllerUrl}/status`, { signal: AbortSignal.timeout(timeoutMs) });
      if (!res.ok) return null;
      const s = (await res.json()) as ControllerStatus;
      this.lastStatus = s;
      return s;
    } catch {
      return null;
    }
  }

  /** The last status the controller answered with. */
  get knownStatus(): ControllerStatus | null {
    return this.lastStatus;
  }

  /** head/middle/tail → the member in that place of the chain now; anything else is itself. */
  async resolve(target: string): Promise<string> {
    if (!/^(head|middle|tail)$/.test(target)) return target;
    const s = (await this.status()) ?? this.lastStatus;
    if (!s) throw new Error(`cannot tell who the ${target} is: the controller has not answered yet`);
    const chain = s.chain;
    if (chain.length === 0) throw new Error(`the chain of epoch ${s.epoch} is empty`);
    if (target === 'head') return chain[0];
    if (target === 'tail') return chain[chain.length - 1];
    if (chain.length < 3) throw new Error(`the chain of epoch ${s.epoch} (${chain.join(' → ')}) has no middle`);
    return chain[Math.floor((chain.length - 1) / 2)];
  }

  /** PID of a running member: one we started, or a replacement by its pid file. */
  pidOf(id: string): number | null {
    const own = this.launches.get(id);
    if (own?.proc && !hasExited(own.proc)) return own.proc.child.pid ?? null;
    if (id === 'controller' || id === 'driver') return null;
    return replicaPidIn(this.replicaDir(id));
  }

  isRunning(id: string): boolean {
    return this.pidOf(id) !== null;
  }

  proxyOf(id: string): FaultProxy {
    const proxy = this.launches.get(id)?.proxy;
    if (!proxy) {
      throw new Error(
        id === 'driver'
          ? 'the driver accepts no member links (it dials every replica): fault its links at the replicas, e.g. "partition: head, from: [driver]"'
          : `${id} has no fault proxy: replacements the controller starts listen on their own port`,
      );
    }
    return proxy;
  }

  get proxies(): FaultProxy[] {
    return [...this.launches.values()].flatMap((l) => (l.proxy ? [l.proxy] : []));
  }

  /**
   * Remember how a member we did not start (a replacement) runs, before it is killed, so it can
   * be started again the same way — on the port it had, not on "any free port".
   */
  private adopt(id: string, pid: number): void {
    if (this.launches.has(id)) return;
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
    const at = argv.indexOf('replica');
    if (at < 0) throw new Error(`pid ${pid} is not a freebs replica`);
    const args = argv.slice(at);
    const portAt = args.indexOf('--port');
    if (portAt >= 0 && args[portAt + 1] === '0') {
      const port = this.listeningPortFromLog(id);
      if (port !== null) args[portAt + 1] = String(port);
    }
    this.launches.set(id, { id, args, ready: readyLines.replica, proc: null, proxy: null, realPort: null, expectExit: true });
  }

  private listeningPortFromLog(id: string): number | null {
    const lines = this.logText(id)?.split('\n') ?? [];
    for (let i = lines.length - 1; i >= 0; i--) {
      const m = readyLines.replica.exec(lines[i]);
      if (m) return Number(m[1]);
    }
    return null;
  }

  /** Send a signal to a running member; returns its pid. */
  signal(id: string, signal: NodeJS.Signals): number {
    const pid = this.pidOf(id);
    if (pid === null) throw new Error(`${id} is not running`);
    if (signal === 'SIGKILL' || signal === 'SIGTERM') {
      this.adopt(id, pid);
      this.launches.get(id)!.expectExit = true;
    }
    if (signal === 'SIGTERM') process.kill(pid, 'SIGCONT');
    process.kill(pid, signal);
    return pid;
  }

  /** SIGKILL, and wait until the process is gone (its files are then ours to damage). */
  async kill(id: string): Promise<number> {
    const pid = this.signal(id, 'SIGKILL');
    const deadline = Date.now() + 5000;
    while (isAlive(pid) && Date.now() < deadline) await sleep(5);
    return pid;
  }

  /** Someone else stops this member: its exit is no news. */
  expectExit(id: string): void {
    const l = this.launches.get(id);
    if (l) l.expectExit = true;
  }

  /** SIGTERM (after SIGCONT) and wait for the exit. */
  async terminate(id: string, timeoutMs = 15_000): Promise<number> {
    const pid = this.signal(id, 'SIGTERM');
    const deadline = Date.now() + timeoutMs;
    while (isAlive(pid) && Date.now() < deadline) await sleep(20);
    if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    return pid;
  }

  /**
   * Start a member again with the arguments it had (same port, same directory). Waits for the
   * old process to be gone and the new one to be ready; with expectRefused, for it to exit
   * instead, and resolves with the reason it gave.
   */
  async restart(id: string, options: { expectRefused?: boolean; timeoutMs?: number } = {}): Promise<string> {
    const l = this.launches.get(id);
    if (!l) throw new Error(`${id} was never started by this run, nor killed by it: nothing to restart`);
    const deadline = Date.now() + 5000;
    while (this.pidOf(id) !== null && Date.now() < deadline) await sleep(20);
    if (this.pidOf(id) !== null) throw new Error(`${id} is still running`);
    const proc = spawnMember(id, l.args, this.logDir);
    l.proc = proc;
    l.expectExit = options.expectRefused ?? false;
    proc.child.once('exit', (code, signal) => {
      if (l.proc === proc && !l.expectExit && !this.stopped) this.options.onExit?.(id, signal ?? `code ${code}`);
    });
    try {
      const line = await waitForLine(proc, l.ready, options.timeoutMs ?? 60_000);
      if (options.expectRefused) throw new Error(`${id} started although it should have refused: ${line}`);
      return line;
    } catch (err) {
      if (!options.expectRefused || !hasExited(proc)) throw err;
      const why = this.lastError(id);
      return `refused to start (exit ${proc.child.exitCode ?? proc.child.signalCode}): ${why}`;
    }
  }

  /** The member's last `freebs: …` line (a refusal to start) from its log. */
  lastError(id: string): string {
    const text = this.logText(id);
    if (text === null) return '(no log)';
    const lines = text.trimEnd().split('\n');
    return lines.reverse().find((l) => l.startsWith('freebs: ')) ?? lines[0] ?? '';
  }

  /** Driver first (it flushes), then the controller and every replica, replacements included. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const stopOne = async (id: string) => {
      const pid = this.pidOf(id);
      if (pid !== null) await stopPid(pid);
    };
    await stopOne('driver');
    // The driver flushed; the rest have nothing to hand over to each other.
    await Promise.all([...this.launches.keys()].filter((id) => id !== 'driver').map(stopOne));
    if (existsSync(this.options.dir)) await Promise.all(replicaPidsUnder(this.options.dir).map((pid) => stopPid(pid)));
    await Promise.all(this.proxies.map((p) => p.close()));
  }

  /** Unmount the tmpfs directories (after stop and after reading them). */
  unmount(): void {
    for (const dir of this.mounts.splice(0)) {
      try {
        execFileSync('umount', [dir], { stdio: 'ignore' });
        rmdirSync(dir);
      } catch {
        // best effort: a busy mount is reported by the caller's cleanup
      }
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
